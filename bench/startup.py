"""How long short commands take, start to exit, as a user runs them (run by hand).

    .venv/bin/python -m bench.startup [--runs 11]

In a fresh folder: import the bundled ledger (the embedded defaults: SQLite, the
bundled config), then run each command ``--runs`` times as a subprocess (the installed
`reminder` script, output to /dev/null) and print the median and the fastest wall time,
and the median CPU time (user + system) of the child. The conditions come first: the
CPU count and the load average, since a loaded machine moves every figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REMINDER = Path(sys.executable).with_name("reminder")
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
COMMANDS = [
    ["--version"],
    ["--help"],
    ["status"],
    ["plan", "--at", "2018-10-08 09:30"],
]


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `reminder ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [str(REMINDER), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cpus: {os.cpu_count()}; load average (1, 5, 15 min): {load}; runs: {runs}")
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
        env |= {"REMINDER_CONFIG": str(ROOT / "config"), "REMINDER_DB": "sqlite:///ledger.db"}
        subprocess.run(
            [str(REMINDER), "import", str(SEED)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        for args in COMMANDS:
            timed(args, env, cwd)  # warm: .pyc files and the page cache
            walls, cpus = zip(*(timed(args, env, cwd) for _ in range(runs)), strict=True)
            print(
                f"reminder {' '.join(args):<32} median {statistics.median(walls):.3f} s, "
                f"fastest {min(walls):.3f} s, cpu {statistics.median(cpus):.3f} s"
            )
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
