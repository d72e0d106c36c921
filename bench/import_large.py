"""How long `reminder import` takes on a large ledger (run by hand, not by the tests).

    .venv/bin/python -m bench.import_large [--tasks 10000] [--runs 3] [--db URL]

Generates a ledger of the seed's shape (its 8 sections, its tasks repeated with their
units, deadlines and remarks, each copy's text made unique) and a revised version of it
(every 50th task's text edited, every 70th re-dated, every 100th replaced by a new
task under its number, two pairs renumbered), then times, in this process (interpreter start-up
and module imports excluded, one warm-up import first):

- `reminder import` of the seed (99 tasks) into an empty store;
- `reminder import` of the generated ledger into an empty store;
- `reminder import` of the revised version over it; on SQLite, another process takes
  the write lock in a loop meanwhile (``BEGIN IMMEDIATE``, then ``ROLLBACK``, as a
  `reminder done` would), and the longest it waited is printed: how long the import
  held the lock in one go.

Each time is the whole command as `reminder.cli.main` runs it: reading the file, parsing,
opening (creating) the store, the transaction with the replanning, the summary. Prints
the median of ``--runs`` and the conditions (cores, load). With ``--db`` (PostgreSQL),
the database must be empty; each run drops and recreates the schema's tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from reminder.cli import main as reminder
from reminder.ledger.formats import RawRow, read_text

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
CONFIG = ROOT / "config"
TITLE = "济源市{year}年大气污染防治攻坚战任务分解台账（扩展）"


def _seed_sections() -> list[tuple[RawRow, list[RawRow]]]:
    """The seed's section rows, each with its task rows."""
    table = read_text(SEED.read_bytes(), str(SEED))
    sections: list[tuple[RawRow, list[RawRow]]] = []
    for row in table.rows[1:]:
        if row.cells[0].isdigit():
            sections[-1][1].append(row)
        else:
            sections.append((row, []))
    return sections


def ledger_text(tasks: int, *, revised: bool = False, year: int = 2018) -> str:
    """A ledger of ``tasks`` tasks in the seed's layout; ``revised``: the changed version;
    ``year``: the year in its title (its deadlines' year)."""
    sections = _seed_sections()
    seed_tasks = sum(len(rows) for _, rows in sections)
    out = [TITLE.format(year=year), "\t序号\n\t工作任务\n\t责任单位\n\t完成时限\n\t备注\n"]
    entries: list[tuple[int, list[str]]] = []  # (section index, cells)
    no = 0
    for index, (_section, rows) in enumerate(sections):
        share = round(tasks * len(rows) / seed_tasks) if index < len(sections) - 1 else None
        count = share if share is not None else tasks - no
        for k in range(count):
            no += 1
            cells = list(rows[k % len(rows)].cells) + [""] * 5
            text, units, deadline, remarks = cells[1], cells[2], cells[3], cells[4]
            text = f"{text}（第{no}项）"
            entries.append((index, [str(no), text, units, deadline, remarks]))
    if revised:
        changed: list[tuple[int, list[str]]] = []
        for index, row in entries:
            number = int(row[0])
            cells = row
            if number % 100 == 0:  # removed, and a new task under its number
                cells = [row[0], f"新增任务{number}。", "环境保护局", "6月30日", ""]
            if number % 50 == 25:
                cells[1] = cells[1].replace("（第", "（修订，第")
            if number % 70 == 0:
                cells[3] = "12月31日" if cells[3] != "12月31日" else "11月30日"
            changed.append((index, cells))
        # two pairs of tasks swap their numbers
        for a, b in ((3, 4), (tasks // 2 + 11, tasks // 2 + 12)):
            first = next(c for _, c in changed if c[0] == str(a))
            second = next(c for _, c in changed if c[0] == str(b))
            first[0], second[0] = second[0], first[0]
        entries = changed
    current = -1
    for index, cells in entries:
        if index != current:
            current = index
            section = sections[index][0]
            out.append("".join(f"\t{cell}\n" for cell in section.cells))
        out.append("".join(f"\t{cell}\n" for cell in cells))
    return "\n".join(out)


@contextlib.contextmanager
def environment(db: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("REMINDER_DB", "REMINDER_CONFIG")}
    os.environ["REMINDER_DB"] = db
    os.environ["REMINDER_CONFIG"] = str(CONFIG)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


CPU: list[float] = []  # the CPU seconds of each run_import, as they are run


def run_import(db: str, path: Path) -> float:
    """Seconds of one in-process `reminder import PATH` into ``db`` (its CPU seconds,
    user and system, appended to ``CPU``: on a loaded machine they say more)."""
    with environment(db), contextlib.redirect_stdout(io.StringIO()) as out:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            reminder(["import", str(path)])
        except SystemExit as exc:
            raise SystemExit(f"import of {path} failed ({exc.code}): {out.getvalue()}") from None
        CPU.append(time.process_time() - cpu)
        return time.perf_counter() - started


def fresh(db: str | None, folder: Path, name: str) -> str:
    """An empty store: a new SQLite file, or the given database emptied."""
    if db is None:
        return f"sqlite:///{folder / name}"
    engine = create_engine(db)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "DROP TABLE IF EXISTS answer, link, event, outbox, task_unit, task, section, "
            "import_run, meta, alembic_version CASCADE"
        )
    engine.dispose()
    return db


def _probe(path: str, stop: Any, longest: Any) -> None:
    """Take the write lock of ``path`` again and again until ``stop``; the longest wait
    (seconds) into ``longest``."""
    connection = sqlite3.connect(path, timeout=120, isolation_level=None)
    while not stop.is_set():
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        waited = time.perf_counter() - started
        connection.execute("ROLLBACK")
        longest.value = max(longest.value, waited)
        time.sleep(0.01)
    connection.close()


@contextlib.contextmanager
def lock_probe(db: str) -> Iterator[list[float]]:
    """On SQLite, a writer in another process while the block runs; the list gets its
    longest wait for the write lock when the block ends."""
    found: list[float] = []
    if not db.startswith("sqlite:///"):
        yield found
        return
    context = multiprocessing.get_context("fork")
    stop, longest = context.Event(), context.Value("d", 0.0)
    process = context.Process(target=_probe, args=(db.removeprefix("sqlite:///"), stop, longest))
    process.start()
    try:
        yield found
    finally:
        stop.set()
        process.join(60)
        found.append(longest.value)


def median(runs: int, action: Callable[[int], float]) -> tuple[float, float]:
    """The median of ``runs`` wall times of ``action``, and of their last import's CPU."""
    walls, cpus = [], []
    for run in range(runs):
        walls.append(action(run))
        cpus.append(CPU[-1])
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", help="an empty PostgreSQL URL (default: SQLite files)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        large = folder / "large.txt"
        large.write_text(ledger_text(args.tasks), encoding="utf-8")
        revised = folder / "revised.txt"
        revised.write_text(ledger_text(args.tasks, revised=True), encoding="utf-8")
        run_import(fresh(args.db, folder, "warm.db"), SEED)  # warm-up: imports, caches

        seed = median(args.runs, lambda n: run_import(fresh(args.db, folder, f"s{n}.db"), SEED))
        empty = median(args.runs, lambda n: run_import(fresh(args.db, folder, f"e{n}.db"), large))

        waits: list[float] = []

        def over(n: int) -> float:
            db = fresh(args.db, folder, f"o{n}.db")
            run_import(db, large)
            with lock_probe(db) as longest:
                seconds = run_import(db, revised)
            waits.extend(longest)
            return seconds

        again = median(args.runs, over)
        size = large.stat().st_size / 1e6
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"conditions: {os.cpu_count()} cores, load average {load}, Python "
        f"{platform.python_version()}, {'SQLite file' if args.db is None else 'PostgreSQL'}, "
        f"median of {args.runs}, in-process (start-up excluded)"
    )
    for label, (wall, cpu) in (
        ("seed (99 tasks) into an empty store", seed),
        (f"{args.tasks} tasks ({size:.1f} MB) into an empty store", empty),
        (f"revised {args.tasks} tasks over the imported ones", again),
    ):
        print(f"{label:<48} {wall:8.3f} s wall, {cpu:8.3f} s CPU")
    if waits:
        print(
            f"{'  a writer beside it waited for the lock':<48} {statistics.median(waits):8.3f} s "
            f"at most (median of {len(waits)}; longest {max(waits):.3f} s)"
        )


if __name__ == "__main__":
    main()
