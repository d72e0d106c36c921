"""`reminder simulate`: the whole policy over a period, on a virtual clock, on a copy.

1. Copy the ledger (tasks, units, completion) into a temporary SQLite store; the real
   store is only read.
2. Start as if the daemon had run up to the first day: every target's reminders are
   planned up to local midnight of ``start``, so day one shows that day's reminders and
   not a catch-up of the past.
3. On every working day, as the daemon would: the supervisors' digests at the digest
   hour, then the real tick at the send hour (every reminder is scheduled then), which
   plans items and composes them into letters. Every message counts as delivered at its
   moment (nothing is rendered or sent, unless ``files`` asks for the rendered copies).
4. Summarise what people would receive: messages per recipient and channel over the
   period, the busiest recipient-day, per kind and month; and write every message to
   ``letters.jsonl`` (one line each, with the items it carries).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlmodel import SQLModel

from reminder.planner import local_midnight, local_moment
from reminder.planning import Planning
from reminder.reports import enqueue_reports
from reminder.settings import Settings
from reminder.store.db import Store, open_store
from reminder.store.models import ImportRun, OutboxRow, SectionRow, TaskRow, TaskUnitRow
from reminder.store.targets import replan_all
from reminder.store.tasks import load_ledger
from reminder.tick import run_tick

_COPIED: tuple[type[SQLModel], ...] = (ImportRun, SectionRow, TaskRow, TaskUnitRow)
LETTERS = "letters.jsonl"


@dataclass(slots=True)
class Simulation:
    start: dt.date
    end: dt.date
    seconds: float = 0.0
    days: int = 0
    working_days: int = 0
    messages: int = 0
    items: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_month: Counter[str] = field(default_factory=Counter)
    by_recipient: Counter[tuple[str, str]] = field(default_factory=Counter)  # (name, channel)
    by_recipient_day: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    by_day: Counter[str] = field(default_factory=Counter)
    off_days: int = 0  # messages on days off: none, by design
    written: Path | None = None

    def lines(self, top: int = 10) -> list[str]:
        busiest = self.by_day.most_common(1)
        per_recipient: Counter[str] = Counter()
        for (name, _channel), count in self.by_recipient.items():
            per_recipient[name] += count
        lines = [
            f"Simulated {self.start} → {self.end} ({self.days} days, "
            f"{self.working_days} working days) in {self.seconds:.1f} s",
            f"  messages: {self.messages} carrying {self.items} items; "
            f"on days off: {self.off_days}",
            "  per kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())),
            "  per month: " + ", ".join(f"{m} {n}" for m, n in sorted(self.by_month.items())),
            f"  recipients reached: {len(per_recipient)}; messages per recipient (top {top}):",
        ]
        for name, count in per_recipient.most_common(top):
            channels = ", ".join(
                f"{channel} {n}"
                for (who, channel), n in sorted(self.by_recipient.items())
                if who == name
            )
            lines.append(f"    {name}: {count} ({channels})")
        if self.by_recipient_day:
            (name, channel, day), count = self.by_recipient_day.most_common(1)[0]
            lines.append(
                f"  most to one recipient on one channel in a day: {count} "
                f"({name}, {channel}, {day})"
            )
        lines.append(
            "  busiest day: "
            + (f"{busiest[0][0]} ({busiest[0][1]} messages)" if busiest else "none")
        )
        if self.written:
            lines.append(f"  written to {self.written}")
        return lines


def copy_ledger(source: Store, target: Store) -> None:
    """Step 1: the tables that make up the ledger and its state, row by row."""
    with source.read() as reading, target.write() as writing:
        for model in _COPIED:
            table = model.__table__  # type: ignore[attr-defined]
            rows = [dict(row) for row in reading.connection().execute(select(table)).mappings()]
            if rows:
                writing.connection().execute(insert(table), rows)


def _deliver_all(store: Store, now: dt.datetime) -> None:
    """Everything enqueued counts as delivered at its moment."""
    table = OutboxRow.__table__  # type: ignore[attr-defined]
    with store.write() as session:
        session.connection().execute(
            update(table)
            .where(table.c.status == "pending", table.c.scheduled_for <= now)
            .values(status="sent", sent_at=table.c.scheduled_for, attempts=1)
        )


def simulate(
    source: Store,
    planning: Planning,
    settings: Settings,
    start: dt.date,
    end: dt.date,
    out: Path | None,
) -> Simulation:
    started = time.perf_counter()
    report = Simulation(start=start, end=end)
    zone = planning.zone
    with tempfile.TemporaryDirectory(prefix="reminder-simulate-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'simulation.db'}")
        try:
            copy_ledger(source, store)
            with store.write() as session:
                session.connection().execute(
                    update(TaskUnitRow.__table__).values(  # type: ignore[attr-defined]
                        planned_until=local_midnight(start, zone)
                    )
                )
                replan_all(session, planning)
                ledger = load_ledger(session)  # nobody reports anything in a simulation
            day = start
            while day <= end:
                report.days += 1
                if planning.calendar.is_working_day(day):
                    report.working_days += 1
                    digest_at = local_moment(day, settings.digest.at, zone)
                    enqueue_reports(store, planning, settings, digest_at, ledger)
                    _deliver_all(store, digest_at)
                    moment = local_moment(day, planning.policy.send_at, zone)
                    run_tick(store, planning, settings, moment)
                    _deliver_all(store, moment)
                day += dt.timedelta(days=1)
            _summarise(store, report, planning, out)
        finally:
            store.dispose()
    report.seconds = time.perf_counter() - started
    return report


def _summarise(store: Store, report: Simulation, planning: Planning, out: Path | None) -> None:
    """Step 4."""
    handle = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report.written = out / LETTERS
        handle = report.written.open("w", encoding="utf-8")
    try:
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        with store.read() as session:
            statement = select(table).order_by(table.c.scheduled_for, table.c.id)
            for row in session.connection().execute(statement):
                local = row.scheduled_for.astimezone(planning.zone)
                day = f"{local:%Y-%m-%d}"
                items = _items(row)
                report.messages += 1
                report.items += len(items)
                report.by_kind[row.kind] += 1
                report.by_month[f"{local:%Y-%m}"] += 1
                report.by_recipient[(row.recipient_name, row.channel)] += 1
                report.by_recipient_day[(row.recipient_name, row.channel, day)] += 1
                report.by_day[day] += 1
                report.off_days += not planning.calendar.is_working_day(local.date())
                if handle is not None:
                    line = _message_json(row, local, items)
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if handle is not None:
            handle.close()


def _items(row: Row[Any]) -> list[dict[str, Any]]:
    """What a letter carries, as the unit reads it (lateness as of the letter's day)."""
    payload = row.payload or {}
    items = [
        {
            "task": entry["no"],
            "kind": entry["kind"],
            "role": entry["role"],
            "milestone": entry["due"],
            "days_left": entry["days_left"],
            "overdue_days": entry["overdue_days"],
        }
        for group in payload.get("groups", [])
        for entry in group["items"]
    ]
    if payload.get("agenda") is not None:
        items.append(
            {
                "task": None,
                "kind": "agenda",
                "role": None,
                "milestone": None,
                "days_left": None,
                "overdue_days": None,
            }
        )
    return items


def _message_json(row: Row[Any], local: dt.datetime, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One line of letters.jsonl (the contract of `reminder simulate --out`)."""
    return {
        "key": row.key,
        "kind": row.kind,
        "recipient": row.recipient_name,
        "unit": row.unit,
        "channel": row.channel,
        "to": row.recipient,
        "sent_at": local.isoformat(),
        "items": items,
    }
