"""The seed's year simulated, as a user runs it: `reminder simulate` for 2018.

    .venv/bin/python -m bench.simulate_year [--runs 5]

Imports the bundled ledger into a scratch store, then runs the command
``reminder simulate --from 2018-01-01 --to 2018-12-31 --out DIR`` ``--runs`` times, each
in its own process, and prints for each run:

- the command's wall time, start to exit, what a user waits for (what ../shared/tools/
  year-report calls "simulate took"): the interpreter's start, the imports, reading the
  ledger, the year, writing letters.jsonl;
- the simulation's own time, as the command prints it (reading the ledger, the year,
  writing letters.jsonl; not the start-up);
- the start-up alone: the same command for one day (a day off: nothing to simulate).

and the medians, with the load average: this machine is shared, and the same run can
take half again as long from one minute to the next. The target is 2 s for the command.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
REMINDER = Path(sys.executable).with_name("reminder")


def run(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(REMINDER), *args], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"reminder {' '.join(args)}: {done.stderr.strip()}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reminder-bench-") as folder:
        env = dict(os.environ) | {
            "REMINDER_DB": f"sqlite:///{folder}/year.db",
            "REMINDER_CONFIG": str(ROOT / "config"),
        }
        run(env, "import", str(SEED))
        walls, own, startups = [], [], []
        for number in range(1, args.runs + 1):
            wall, out = run(
                env, "simulate", "--from", "2018-01-01", "--to", "2018-12-31", "--out", folder
            )
            found = re.search(r" in (\d+\.\d+) s", out)
            simulated = float(found.group(1)) if found else float("nan")
            startup, _ = run(env, "simulate", "--from", "2018-01-06", "--to", "2018-01-06")
            walls.append(wall)
            own.append(simulated)
            startups.append(startup)
            load = os.getloadavg()[0]
            print(
                f"run {number}: command {wall:.2f} s (simulation {simulated:.1f} s, "
                f"start-up alone {startup:.2f} s), load {load:.1f}"
            )
        messages = re.search(r"messages: (\d+) carrying (\d+) items", out)
        print(
            f"median of {args.runs}: command {statistics.median(walls):.2f} s, simulation "
            f"{statistics.median(own):.1f} s, start-up {statistics.median(startups):.2f} s; "
            f"{messages.group(1) if messages else '?'} messages; target 2 s for the command: "
            f"{'met' if statistics.median(walls) <= 2 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
