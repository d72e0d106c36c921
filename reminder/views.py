"""What the CLI prints: ledger summaries, task tables and the JSON contract."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from reminder.contacts import Contacts
from reminder.ledger.model import Deadline, DeadlineKind, Role, Task
from reminder.recipients import Item
from reminder.records import StoredLedger, StoredTask, StoredUnit
from reminder.store.importer import ImportReport
from reminder.store.models import OutboxRow
from reminder.text import printable, shorten
from reminder.tick import Preview

KIND_ORDER = [kind.value for kind in DeadlineKind]


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    tasks: int
    sections: int
    units: list[str]
    by_kind: Counter[str]
    unreadable: list[tuple[int, str]]
    without_contact: list[str]


def summarise(tasks: Iterable[Task], sections: int, contacts: Contacts) -> LedgerSummary:
    tasks = list(tasks)
    units: list[str] = []
    for task in tasks:
        units += [unit.name for unit in task.units if unit.name not in units]
    return LedgerSummary(
        tasks=len(tasks),
        sections=sections,
        units=units,
        by_kind=Counter(task.deadline.kind.value for task in tasks),
        unreadable=[
            (task.no, task.deadline.raw)
            for task in tasks
            if task.deadline.kind is DeadlineKind.UNKNOWN
        ],
        without_contact=[name for name in units if not contacts.has_contact(name)],
    )


def summary_lines(summary: LedgerSummary) -> list[str]:
    kinds = ", ".join(
        f"{kind} {summary.by_kind[kind]}" for kind in KIND_ORDER if summary.by_kind[kind]
    )
    unreadable = (
        "; ".join(f"task {no}: {raw!r}" for no, raw in summary.unreadable)
        if summary.unreadable
        else "none"
    )
    without = ", ".join(map(printable, summary.without_contact)) or "none"
    return [
        f"  {summary.tasks} tasks in {summary.sections} sections, {len(summary.units)} units",
        f"  deadlines: {kinds}",
        f"  unreadable deadlines: {unreadable}",
        f"  units without contacts: {without}",
    ]


def import_lines(report: ImportReport, summary: LedgerSummary, seconds: float) -> list[str]:
    ledger = report.ledger
    lines = [
        f"Imported {ledger.source} ({ledger.format}) in {seconds:.2f} s",
        f"  {ledger.title} — year {ledger.year}",
        *summary_lines(summary),
    ]
    unowned = [str(task.no) for task in ledger.tasks if not task.units]
    if unowned:  # imported, but nobody is ever reminded of them (`check` says so too)
        lines.append(f"  tasks without a responsible unit: {', '.join(unowned)} (never reminded)")
    if report.first:
        lines.append(f"  changes: first import, {len(report.added)} tasks added")
        return lines
    lines.append(
        f"  changes: {len(report.added)} added, {len(report.removed)} removed, "
        f"{len(report.changed)} changed, {report.kept_done} done tasks kept done"
    )
    lines += [f"    + {task.no} {shorten(task.text, 40)}" for task in report.added]
    lines += [f"    - {no} {shorten(text, 40)}" for no, text in report.removed]
    lines += [f"    ~ {change.no}: {'; '.join(change.what)}" for change in report.changed]
    lines += [f"  warning: {warning}" for warning in ledger.warnings]
    return lines


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def deadline_json(deadline: Deadline) -> dict[str, Any]:
    return {
        "kind": deadline.kind.value,
        "raw": deadline.raw,
        "start": _iso(deadline.start),
        "due": _iso(deadline.due),
        "milestones": [day.isoformat() for day in deadline.milestones],
        "recurrence": deadline.recurrence,
        "action": deadline.action,
    }


def _part(unit: StoredUnit, task_status: str) -> dict[str, Any]:
    """A unit's own state in `tasks --json`: its status, and its due date if an approved
    extension moved it."""
    found: dict[str, Any] = {"status": unit.state(task_status)}
    if unit.due is not None:
        found["due"] = unit.due.isoformat()
    return found


def ledger_json_text(ledger: StoredLedger, tasks: Iterable[StoredTask]) -> Iterator[str]:
    """The contract of `reminder tasks --json` (DESIGN.md): the title, the year and the
    tasks (``task_json``), as ``json.dumps(..., ensure_ascii=False, indent=2)`` writes
    them, in pieces: a task at a time, whatever the size of the ledger."""
    head = json.dumps({"title": ledger.title, "year": ledger.year}, ensure_ascii=False, indent=2)
    yield head[:-2] + ',\n  "tasks": ['
    first = True
    for stored in tasks:
        text = json.dumps(task_json(ledger, stored), ensure_ascii=False, indent=2)
        yield ("\n" if first else ",\n") + textwrap.indent(text, "    ")
        first = False
    yield "]\n}" if first else "\n  ]\n}"


def task_json(ledger: StoredLedger, stored: StoredTask) -> dict[str, Any]:
    """One task of `reminder tasks --json`."""
    return {
        "no": stored.task.no,
        "section": ledger.section_title(stored.task.section_no),
        "text": stored.task.text,
        "units": [
            {
                "name": unit.ref.name,
                "role": unit.ref.role.value,
                "kind": unit.ref.kind.value,
                **_part(unit, stored.status),
                **(
                    {
                        "members": [
                            {"name": m.ref.name, **_part(m, stored.status)}
                            for m in stored.members
                            if m.via == unit.ref.name
                        ]
                    }
                    if any(m.via == unit.ref.name for m in stored.members)
                    else {}
                ),
            }
            for unit in stored.units
        ],
        "deadline": deadline_json(stored.task.deadline),
        "status": stored.status,
    }


def deadline_text(deadline: Deadline) -> str:
    raw = " ".join(deadline.raw.split()) or "—"
    if deadline.kind is DeadlineKind.UNKNOWN:
        return f"{raw} (?)"
    span = ""
    if deadline.start and deadline.due:
        span = f"{deadline.start:%m-%d}→{deadline.due:%m-%d}"
    elif deadline.due:
        span = " ".join(f"{day:%m-%d}" for day in deadline.milestones[-3:])
    elif deadline.start:
        span = f"{deadline.start:%m-%d}→"
    return f"{raw} [{span}]" if span and span != raw else raw


def task_table(ledger: StoredLedger, tasks: Iterable[StoredTask]) -> Table:
    """One line per task: number, section, task, lead (+ cooperating count), deadline."""
    table = Table(title=f"{ledger.title}（{ledger.year}）", box=None, pad_edge=False)
    table.add_column("No", justify="right", no_wrap=True)
    table.add_column("节", no_wrap=True)
    table.add_column("任务 Task", no_wrap=True, max_width=28)
    table.add_column("牵头 Lead", no_wrap=True, max_width=16)
    table.add_column("配合", justify="right", no_wrap=True)
    table.add_column("完成时限 Deadline", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    numerals = {section.no: section.numeral for section in ledger.sections}
    for stored in tasks:
        task = stored.task
        lead = [unit.name for unit in task.units if unit.role is Role.LEAD]
        others = sum(1 for unit in task.units if unit.role is Role.COOPERATING)
        table.add_row(
            str(task.no),
            numerals.get(task.section_no, ""),
            shorten(task.text, 28),
            "、".join(lead),
            f"+{others}" if others else "",
            deadline_text(task.deadline),
            stored.status,
        )
    return table


def print_lines(console: Console, lines: Iterable[str]) -> None:
    for line in lines:
        console.print(line, markup=False, highlight=False)


def plan_json(found: Preview, zone: ZoneInfo) -> list[dict[str, Any]]:
    """The contract of `reminder plan --json` (DESIGN.md): one entry per item, with the
    letter it goes in (null: unreachable)."""
    return [
        {
            "key": item.key,
            "kind": item.kind.value,
            "task": item.task_no,
            "unit": item.unit,
            "role": item.role,
            "channel": item.channel,
            "to": item.to,
            "scheduled_for": item.scheduled_for.astimezone(zone).isoformat(),
            "letter": found.letters.get(item.key),
            "problem": undeliverable(item),
        }
        for item in found.items
    ]


def undeliverable(item: Item) -> str | None:
    """Why an item cannot go out (no contact, an invalid address), or None."""
    if item.status != "unreachable":
        return None
    return str(item.payload.get("problem") or "no contact")


def _to(item: Item) -> str:
    if not item.to:
        return "— no contact —"
    invalid = " — invalid, not sent" if item.status == "unreachable" else ""
    return f"{item.channel}:{item.to}{invalid}"


def plan_table(found: Preview, zone: ZoneInfo) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("When", "Kind", "No", "Unit", "Role", "To", "Letter"):
        table.add_column(name, no_wrap=True)
    for item in found.items:
        letter = found.letters.get(item.key, "")
        table.add_row(
            f"{item.scheduled_for.astimezone(zone):%Y-%m-%d %H:%M}",
            item.kind.value,
            str(item.task_no or ""),
            item.unit or "",
            item.role or "",
            _to(item),
            f"#{letter.rsplit(':', 1)[-1]}" if letter else "",
        )
    return table


def outbox_json(row: OutboxRow, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "key": row.key,
        "kind": row.kind,
        "status": row.status,
        "task": row.task_no,
        "unit": row.unit,
        "recipient": row.recipient_name,
        "channel": row.channel,
        "to": row.recipient,
        "scheduled_for": row.scheduled_for.astimezone(zone).isoformat(),
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at.astimezone(zone).isoformat(),
        "sent_at": row.sent_at.astimezone(zone).isoformat() if row.sent_at else None,
        "last_error": row.last_error,
    }


def outbox_table(rows: Iterable[OutboxRow], zone: ZoneInfo) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("Scheduled", "Status", "Kind", "No", "Recipient", "To", "Tries", "Last error"):
        table.add_column(name, no_wrap=True)
    # the key last and whole (folded, never cut short): `reminder retry KEY` takes it
    table.add_column("Key", overflow="fold", min_width=20)
    for row in rows:
        table.add_row(
            f"{row.scheduled_for.astimezone(zone):%Y-%m-%d %H:%M}",
            row.status,
            row.kind,
            str(row.task_no or ""),
            row.recipient_name,
            f"{row.channel}:{row.recipient}" if row.recipient else row.channel,
            str(row.attempts),
            shorten(row.last_error, 40),
            row.key,
        )
    return table
