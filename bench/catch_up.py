"""How long a catch-up tick holds SQLite's write lock (run by hand, not by the tests).

    .venv/bin/python -m bench.catch_up [--tasks 5000] [--from '2018-10-08 09:30']
                                       [--at '2018-12-03 10:00'] [--runs 3]

A ledger of ``--tasks`` tasks of the seed's shape (bench.import_large) is imported into a
new SQLite file and ticked at ``--from``; the daemon is then down until ``--at``, a
Monday eight weeks later, and the tick at ``--at`` plans what is owed since and composes
it into letters (``reminder.tick.run_tick``, in this process: planning and composing, no
sending). Meanwhile another process takes the write lock in a loop (``BEGIN
IMMEDIATE``, then ``ROLLBACK``, as a `reminder done` would); its longest wait is how long
the tick held the lock in one go. Prints the median of ``--runs`` and the conditions.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.import_large import environment, ledger_text, lock_probe, run_import
from reminder.app import App, parse_moment
from reminder.tick import TickResult, run_tick


def tick(db: str, at: str) -> tuple[TickResult, float]:
    """One in-process tick of ``db`` at ``at`` (local time), and its seconds."""
    with environment(db):
        app = App()
        moment = parse_moment(app, at, "--at")
        started = time.perf_counter()
        result = run_tick(app.store, app.planning, app.config.settings, moment)
        seconds = time.perf_counter() - started
        app.store.dispose()
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--from", dest="start", default="2018-10-08 09:30")
    parser.add_argument("--at", default="2018-12-03 10:00")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    seconds, waits = [], []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        ledger = folder / "large.txt"
        ledger.write_text(ledger_text(args.tasks), encoding="utf-8")
        base = folder / "base.db"
        run_import(f"sqlite:///{base}", ledger)
        tick(f"sqlite:///{base}", args.start)
        for run in range(args.runs):
            copy = folder / f"run{run}.db"
            shutil.copyfile(base, copy)
            with lock_probe(f"sqlite:///{copy}") as longest:
                result, took = tick(f"sqlite:///{copy}", args.at)
            seconds.append(took)
            waits.extend(longest)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"conditions: {os.cpu_count()} cores, load average {load}, Python "
        f"{platform.python_version()}, SQLite file, median of {args.runs}, in-process"
    )
    print(
        f"catch-up tick at {args.at} after {args.start}, {args.tasks} tasks: "
        f"{result.targets} due, {len(result.items)} items, {result.superseded} superseded, "
        f"{len(result.letters)} letters"
    )
    print(f"  the tick (planning and composing)   {statistics.median(seconds):8.3f} s")
    print(
        f"  a writer beside it waited           {statistics.median(waits):8.3f} s at most "
        f"(longest {max(waits):.3f} s)"
    )


if __name__ == "__main__":
    main()
