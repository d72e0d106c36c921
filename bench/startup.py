"""How long short commands take, start to exit, as a user runs them (run by hand).

    .venv/bin/python -m bench.startup [--runs 11] [--peer CHECKOUT]

In a fresh folder: import the bundled ledger (the embedded defaults: SQLite, the
bundled config), then run each command ``--runs`` times as a subprocess (the installed
`reminder` script, output to /dev/null) and print the median and the fastest wall time,
and the median CPU time (user + system) of the child. The conditions come first: the
CPU count and the load average, since a loaded machine moves every figure. ``--peer``:
another checkout of the project (e.g. ``git worktree add /tmp/before e654e8e``), run
with the same interpreter and libraries (its folder first on ``PYTHONPATH``) on its own
store, each of its runs beside one of this checkout's. Last, "(import floor)": the
same interpreter importing only SQLAlchemy, SQLModel, pydantic-settings and click, which
any command that reads the store needs before it does anything.
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
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REMINDER = Path(sys.executable).with_name("reminder")
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
COMMANDS = [
    ["--version"],
    ["--help"],
    ["status"],
    ["plan", "--at", "2018-10-08 09:30"],
    ["plan", "--at", "2018-10-07 03:00"],
]
# what any command that reads the store must import first (SQLAlchemy, SQLModel, the
# settings' pydantic, click): the floor under `status` and `plan`, printed beside them
FLOOR = [sys.executable, "-c", "import sqlalchemy, sqlmodel, pydantic_settings, click"]


def timed(args: list[str], env: Mapping[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `reminder ARGS` (or of ``FLOOR``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        args if args == FLOOR else [str(REMINDER), *args],
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
    parser.add_argument("--peer", type=Path, help="another checkout, measured beside this one")
    options = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cpus: {os.cpu_count()}; load average (1, 5, 15 min): {load}; runs: {options.runs}")
    with tempfile.TemporaryDirectory() as folder:
        versions = {"this": (ROOT, Path(folder) / "this")}
        if options.peer is not None:
            versions["peer"] = (options.peer.resolve(), Path(folder) / "peer")
        envs = {}
        for name, (checkout, cwd) in versions.items():
            cwd.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
            env |= {
                "REMINDER_CONFIG": str(checkout / "config"),
                "REMINDER_DB": "sqlite:///ledger.db",
                "PYTHONPATH": str(checkout),
            }
            envs[name] = env
            subprocess.run(
                [str(REMINDER), "import", str(SEED)],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                check=True,
            )
        for args in [*COMMANDS, FLOOR]:
            measured: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
            for name in versions:
                timed(args, envs[name], versions[name][1])  # warm: .pyc files, page cache
            for _ in range(options.runs):
                for name in versions:
                    measured[name].append(timed(args, envs[name], versions[name][1]))
            for name, runs in measured.items():
                walls, cpus = zip(*runs, strict=True)
                shown = "(import floor)" if args == FLOOR else " ".join(args)
                print(
                    f"{name:<5} reminder {shown:<28} "
                    f"median {statistics.median(walls):.3f} s, "
                    f"fastest {min(walls):.3f} s, cpu {statistics.median(cpus):.3f} s"
                )
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
