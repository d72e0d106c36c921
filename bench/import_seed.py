"""How long `reminder import` takes on the seed ledger (run by hand, not by the tests).

    .venv/bin/python -m bench.import_seed [--runs 5]

Prints the median of: parsing alone (in-process), the import transaction into a fresh
SQLite file (in-process), and the whole `reminder import` command as an administrator
runs it (a new process each time, fresh store, interpreter start-up included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reminder.contacts import load_contacts
from reminder.ledger import read_ledger

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"


def median_seconds(runs: int, action: object) -> float:
    assert callable(action)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    contacts = load_contacts(ROOT / "config" / "contacts.toml")

    parse = median_seconds(args.runs * 4, lambda: read_ledger(SEED, contacts.directory))
    print(f"parse seed (99 tasks):          {parse * 1000:8.1f} ms")

    script = Path(sys.executable).with_name("reminder")

    def command() -> None:
        with tempfile.TemporaryDirectory() as folder:
            env = dict(os.environ)
            env["REMINDER_DB"] = f"sqlite:///{folder}/ledger.db"
            env["REMINDER_CONFIG"] = str(ROOT / "config")
            subprocess.run(
                [str(script), "import", str(SEED)],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )

    whole = median_seconds(args.runs, command)
    print(f"`reminder import` (new process): {whole * 1000:8.1f} ms")

    def reimport() -> None:
        subprocess.run(
            [str(script), "import", str(SEED)], check=True, env=env, stdout=subprocess.DEVNULL
        )

    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ)
        env["REMINDER_DB"] = f"sqlite:///{folder}/ledger.db"
        env["REMINDER_CONFIG"] = str(ROOT / "config")
        reimport()
        again = median_seconds(args.runs, reimport)
    print(f"re-import, nothing changed:      {again * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
