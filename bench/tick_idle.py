"""A tick when nothing is due must not cost more as the ledger grows (run by hand).

    .venv/bin/python -m bench.tick_idle [--rows 100000] [--db URL] [--runs 20]

Fills a fresh store with ``--rows`` task × unit rows (20 units a task) whose next
reminder is in the future, then times ``run_tick`` at a moment when nothing is due,
and the same with 1,000 rows for comparison. Prints the median of ``--runs`` ticks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert

from reminder.calendar import WorkCalendar
from reminder.contacts import load_contacts
from reminder.policy import Policy
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store, open_store
from reminder.store.models import ImportRun, MetaRow, SectionRow, TaskRow, TaskUnitRow
from reminder.store.targets import FINGERPRINT
from reminder.tick import run_tick

ROOT = Path(__file__).resolve().parent.parent
UNITS_PER_TASK = 20
NOW = dt.datetime(2018, 10, 8, 1, 0, tzinfo=dt.UTC)


def insert_ledger(connection: Connection, tasks: int, sections: Sequence[str]) -> None:
    """The import run and the sections of a generated ledger of ``tasks`` tasks."""
    connection.execute(
        insert(ImportRun.__table__),  # type: ignore[attr-defined]
        [
            {
                "at": NOW,
                "source": "bench",
                "format": "txt",
                "sha256": "",
                "title": "bench",
                "year": 2018,
                "tasks": tasks,
                "added": tasks,
                "removed": 0,
                "changed": 0,
            }
        ],
    )
    connection.execute(
        insert(SectionRow.__table__),  # type: ignore[attr-defined]
        [
            {"no": no, "numeral": "一二三四五六七八九十"[no - 1], "title": title}
            for no, title in enumerate(sections, 1)
        ],
    )


def fill(store: Store, rows: int, planning: Rules) -> None:
    tasks = rows // UNITS_PER_TASK
    later = NOW + dt.timedelta(days=30)
    with store.write() as session:
        connection = session.connection()
        insert_ledger(connection, tasks, ["bench"])
        connection.execute(
            insert(TaskRow.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": no,
                    "no": no,
                    "section_no": 1,
                    "text": f"任务{no}",
                    "deadline_raw": "12月31日",
                    "deadline_kind": "date",
                    "deadline_due": dt.date(2018, 12, 31),
                    "milestones": ["2018-12-31"],
                    "remarks": "",
                    "source_line": no,
                    "status": "open",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for no in range(1, tasks + 1)
            ],
        )
        connection.execute(
            insert(TaskUnitRow.__table__),  # type: ignore[attr-defined]
            [
                {
                    "task_id": no,
                    "unit": f"单位{unit}",
                    "role": "lead" if unit == 0 else "cooperating",
                    "kind": "unit",
                    "raw": f"单位{unit}",
                    "position": unit,
                    "is_target": True,
                    "done_note": "",
                    "planned_until": NOW - dt.timedelta(days=1),
                    "next_at": later + dt.timedelta(minutes=no % 1000),
                }
                for no in range(1, tasks + 1)
                for unit in range(UNITS_PER_TASK)
            ],
        )
        session.add(MetaRow(key=FINGERPRINT, value=planning.fingerprint()))


def time_ticks(url: str, rows: int, runs: int, planning: Rules) -> float:
    store = open_store(url)
    try:
        fill(store, rows, planning)
        settings = Settings()
        run_tick(store, planning, settings, NOW)  # warm up: statement caches, connections
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            result = run_tick(store, planning, settings, NOW)
            times.append(time.perf_counter() - started)
            assert result.targets == 0, "something was due"
        return statistics.median(times)
    finally:
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--db", help="an empty database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    contacts = load_contacts(ROOT / "config" / "contacts.toml")
    planning = Rules(Policy(), WorkCalendar(), ZoneInfo("Asia/Shanghai"), contacts)
    sizes = (args.rows,) if args.db else (1_000, args.rows)  # a given database is used once
    for rows in sizes:
        with tempfile.TemporaryDirectory() as folder:
            url = args.db or f"sqlite:///{folder}/bench.db"
            seconds = time_ticks(url, rows, args.runs, planning)
        print(
            f"idle tick, {rows:>7} task × unit rows: {seconds * 1000:7.2f} ms"
            f" (median of {args.runs})"
        )


if __name__ == "__main__":
    main()
