"""Putting a ledger into the store in one transaction, keeping what was already done.

Re-importing a revised ledger matches each new task to a stored one:

1. same number and same text: the same task;
2. among the rest, same text under another number: renumbered;
3. among the rest, same number and similar text (difflib ratio ≥ 0.5): edited;
4. what is left is added (new) or removed (stored, no longer in the ledger).

A matched task keeps its status, completion and each remaining unit's completion;
its text, section, deadline and units are updated and the differences reported.
Removed tasks are kept with ``removed_at`` so that their history stays readable.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass, field

from sqlmodel import Session, delete

from reminder.ledger.model import Ledger, Task
from reminder.store.models import EventRow, ImportRun, SectionRow, TaskRow, TaskUnitRow
from reminder.store.tasks import active_task_rows, deadline_of, units_by_task

SIMILAR_TEXT = 0.5


@dataclass(slots=True)
class Change:
    no: int
    what: list[str]


@dataclass(slots=True)
class ImportReport:
    ledger: Ledger
    first: bool  # the store had no tasks before
    added: list[Task] = field(default_factory=list)
    removed: list[tuple[int, str]] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    kept_done: int = 0  # tasks whose done status survived the re-import
    sha256: str = ""


def _match(
    old: list[TaskRow], new: list[Task]
) -> tuple[list[tuple[TaskRow, Task]], list[TaskRow], list[Task]]:
    """Steps 1–3 of the module docstring; returns pairs, unmatched old, unmatched new."""
    pairs: list[tuple[TaskRow, Task]] = []
    old_left = list(old)
    new_left = list(new)

    def take(matches: bool | None, row: TaskRow, task: Task) -> bool:
        if matches:
            pairs.append((row, task))
            old_left.remove(row)
            new_left.remove(task)
            return True
        return False

    for task in list(new_left):
        for row in old_left:
            if take(row.no == task.no and row.text == task.text, row, task):
                break
    for task in list(new_left):
        for row in old_left:
            if take(row.text == task.text, row, task):
                break
    for task in list(new_left):
        for row in old_left:
            similar = difflib.SequenceMatcher(None, row.text, task.text).ratio() >= SIMILAR_TEXT
            if take(row.no == task.no and similar, row, task):
                break
    return pairs, old_left, new_left


def _apply(row: TaskRow, task: Task) -> None:
    """Copy what the ledger says about a task onto its row (status is left alone)."""
    row.no = task.no
    row.section_no = task.section_no
    row.text = task.text
    row.deadline_raw = task.deadline.raw
    row.deadline_kind = task.deadline.kind.value
    row.deadline_start = task.deadline.start
    row.deadline_due = task.deadline.due
    row.milestones = [day.isoformat() for day in task.deadline.milestones]
    row.recurrence = task.deadline.recurrence
    row.action = task.deadline.action
    row.remarks = task.remarks
    row.source_line = task.line


def _unit_row(task_id: int, position: int, task: Task) -> TaskUnitRow:
    unit = task.units[position]
    return TaskUnitRow(
        task_id=task_id,
        unit=unit.name,
        role=unit.role.value,
        kind=unit.kind.value,
        raw=unit.raw,
        position=position,
    )


def _differences(row: TaskRow, units: list[TaskUnitRow], task: Task) -> list[str]:
    what: list[str] = []
    if row.no != task.no:
        what.append(f"renumbered from {row.no}")
    if row.text != task.text:
        what.append("text changed")
    if row.section_no != task.section_no:
        what.append(f"moved from section {row.section_no} to {task.section_no}")
    if deadline_of(row) != task.deadline:
        what.append(f"deadline {row.deadline_raw!r} → {task.deadline.raw!r}")
    old_units = {unit.unit: unit.role for unit in units}
    new_units = {unit.name: unit.role.value for unit in task.units}
    what += [f"unit added: {name}" for name in new_units if name not in old_units]
    what += [f"unit removed: {name}" for name in old_units if name not in new_units]
    what += [
        f"{name} now {role}"
        for name, role in new_units.items()
        if name in old_units and old_units[name] != role
    ]
    if row.remarks != task.remarks:
        what.append("remarks changed")
    return what


def _update_units(session: Session, task_id: int, rows: list[TaskUnitRow], task: Task) -> None:
    """Listed units as the ledger now says; member rows are left to ``sync_members``.

    A unit that was a group's member and is now listed itself keeps its row (and so its
    completion and planning state).
    """
    listed = {row.unit: row for row in rows if row.via is None}
    members = {row.unit: row for row in rows if row.via is not None}
    wanted = {ref.name for ref in task.units}
    for name, row in listed.items():
        if name not in wanted:
            session.delete(row)
    for position, ref in enumerate(task.units):
        kept = listed.get(ref.name) or members.get(ref.name)
        if kept is None:
            session.add(_unit_row(task_id, position, task))
            continue
        kept.role, kept.kind, kept.raw = ref.role.value, ref.kind.value, ref.raw
        kept.position, kept.via = position, None
        session.add(kept)


def import_ledger(
    session: Session, ledger: Ledger, sha256: str, now: dt.datetime, actor: str
) -> ImportReport:
    """Apply ``ledger`` (whose file hashes to ``sha256``) inside the caller's transaction."""
    old = active_task_rows(session)
    report = ImportReport(ledger=ledger, first=not old, sha256=sha256)
    pairs, removed, added = _match(old, list(ledger.tasks))
    units = units_by_task(session, [row.id for row in old if row.id is not None])

    for row, task in sorted(pairs, key=lambda pair: pair[1].no):
        assert row.id is not None
        what = _differences(row, [u for u in units[row.id] if u.via is None], task)
        if what:
            report.changed.append(Change(task.no, what))
    # numbers must stay unique among active tasks: park matched rows on temporary ones
    for row, _task in pairs:
        assert row.id is not None
        row.no = -row.id
        session.add(row)
    for row in removed:
        assert row.id is not None
        row.removed_at = now
        session.add(row)
        report.removed.append((row.no, row.text))
        for unit in units[row.id]:
            unit.next_at = None
            session.add(unit)
    session.flush()

    for row, task in pairs:
        assert row.id is not None
        _apply(row, task)
        row.updated_at = now
        session.add(row)
        _update_units(session, row.id, units[row.id], task)
        if row.status == "done":
            report.kept_done += 1
    for task in added:
        row = TaskRow(
            no=task.no,
            section_no=task.section_no,
            text=task.text,
            deadline_raw=task.deadline.raw,
            deadline_kind=task.deadline.kind.value,
            created_at=now,
            updated_at=now,
        )
        _apply(row, task)
        session.add(row)
        session.flush()
        assert row.id is not None
        for position in range(len(task.units)):
            session.add(_unit_row(row.id, position, task))
        report.added.append(task)

    session.exec(delete(SectionRow))
    for section in ledger.sections:
        session.add(SectionRow(no=section.no, numeral=section.numeral, title=section.title))
    session.add(
        ImportRun(
            at=now,
            source=ledger.source,
            format=ledger.format,
            sha256=report.sha256,
            title=ledger.title,
            year=ledger.year,
            tasks=len(ledger.tasks),
            added=len(report.added),
            removed=len(report.removed),
            changed=len(report.changed),
        )
    )
    session.add(
        EventRow(
            at=now,
            kind="import",
            note=(
                f"{ledger.source}: {len(ledger.tasks)} tasks, {len(report.added)} added, "
                f"{len(report.removed)} removed, {len(report.changed)} changed"
            ),
            actor=actor,
            origin="cli",
        )
    )
    return report
