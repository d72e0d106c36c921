"""`reminder simulate`: the whole policy over a period, on a virtual clock, on a copy.

1. Copy the ledger (tasks, units, completion) into a temporary SQLite store; the real
   store is only read.
2. Start as if the daemon had run up to the first day: every target's reminders are
   planned up to local midnight of ``start``, so day one shows that day's reminders and
   not a catch-up of the past.
3. Run the real tick once a day at the send hour (every reminder is scheduled then),
   through the same planner, recipients and outbox as the daemon.
4. Summarise what was enqueued: per unit, per kind, per month, the busiest day; and
   write every message to ``--out`` as JSON lines.
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

from reminder.planner import Clock, local_midnight
from reminder.planning import Planning
from reminder.store.db import Store, open_store
from reminder.store.models import ImportRun, OutboxRow, SectionRow, TaskRow, TaskUnitRow
from reminder.store.targets import replan_all
from reminder.tick import run_tick

_COPIED: tuple[type[SQLModel], ...] = (ImportRun, SectionRow, TaskRow, TaskUnitRow)


@dataclass(slots=True)
class Simulation:
    start: dt.date
    end: dt.date
    seconds: float = 0.0
    days: int = 0
    working_days: int = 0
    sent: int = 0
    escalations: int = 0
    superseded: int = 0
    undeliverable: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_month: Counter[str] = field(default_factory=Counter)
    by_unit: Counter[str] = field(default_factory=Counter)
    by_day: Counter[str] = field(default_factory=Counter)
    written: Path | None = None

    def lines(self, top: int = 10) -> list[str]:
        busiest = self.by_day.most_common(1)
        return [
            f"Simulated {self.start} → {self.end} ({self.days} days, "
            f"{self.working_days} working days) in {self.seconds:.1f} s",
            f"  messages: {self.sent} (escalations to supervisors {self.escalations}), "
            f"superseded {self.superseded}, undeliverable {self.undeliverable}",
            "  per kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())),
            "  per month: " + ", ".join(f"{m} {n}" for m, n in sorted(self.by_month.items())),
            f"  per unit (top {top}): "
            + ", ".join(f"{u} {n}" for u, n in self.by_unit.most_common(top)),
            f"  units reached: {len(self.by_unit)}",
            "  busiest day: "
            + (f"{busiest[0][0]} ({busiest[0][1]} messages)" if busiest else "none"),
            *([f"  written to {self.written}"] if self.written else []),
        ]


def copy_ledger(source: Store, target: Store) -> None:
    """Step 1: the tables that make up the ledger and its state, row by row."""
    with source.read() as reading, target.write() as writing:
        for model in _COPIED:
            table = model.__table__  # type: ignore[attr-defined]
            rows = [dict(row) for row in reading.connection().execute(select(table)).mappings()]
            if rows:
                writing.connection().execute(insert(table), rows)


def simulate(
    source: Store, planning: Planning, start: dt.date, end: dt.date, out: Path | None
) -> Simulation:
    started = time.perf_counter()
    report = Simulation(start=start, end=end)
    clock = Clock(planning.zone, planning.policy.send_at)
    with tempfile.TemporaryDirectory(prefix="reminder-simulate-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'simulation.db'}")
        try:
            copy_ledger(source, store)
            with store.write() as session:
                session.connection().execute(
                    update(TaskUnitRow.__table__).values(  # type: ignore[attr-defined]
                        planned_until=local_midnight(start, planning.zone)
                    )
                )
                replan_all(session, planning)
            day = start
            while day <= end:
                run_tick(store, planning, clock.moment(day))
                report.days += 1
                report.working_days += planning.calendar.is_working_day(day)
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
        report.written = out / "messages.jsonl"
        handle = report.written.open("w", encoding="utf-8")
    try:
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        with store.read() as session:
            columns = [table.c.kind, table.c.status, table.c.recipient_name, table.c.scheduled_for]
            if handle is not None:
                columns = list(table.c)
            statement = select(*columns).order_by(table.c.scheduled_for, table.c.id)
            for row in session.connection().execute(statement):
                if row.status == "superseded":
                    report.superseded += 1
                    continue
                if row.status == "dead":
                    report.undeliverable += 1
                report.sent += 1
                report.escalations += row.kind == "escalation"
                scheduled = row.scheduled_for
                local = scheduled.astimezone(planning.zone)
                report.by_kind[row.kind] += 1
                report.by_month[f"{local:%Y-%m}"] += 1
                report.by_unit[row.recipient_name] += 1
                report.by_day[f"{local:%Y-%m-%d}"] += 1
                if handle is not None:
                    handle.write(json.dumps(_message_json(row, local), ensure_ascii=False) + "\n")
    finally:
        if handle is not None:
            handle.close()


def _message_json(row: Row[Any], local: dt.datetime) -> dict[str, object]:
    return {
        "key": row.key,
        "kind": row.kind,
        "task": row.task_no,
        "unit": row.unit,
        "role": row.role,
        "channel": row.channel,
        "to": row.recipient,
        "recipient": row.recipient_name,
        "scheduled_for": local.isoformat(),
        "status": row.status,
        **row.payload,
    }
