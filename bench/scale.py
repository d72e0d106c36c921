"""Every command at scale, start to exit, as a user runs them (issue 13; run by hand).

    .venv/bin/python -m bench.scale [--rows 1000,10000,100000] [--shape seed|wide|both]
        [--db sqlite|postgres|both] [--peer CHECKOUT] [--timeout 120]
        [--commands import,again,tick,plan,status,tasks,digest]

Rows are task × unit rows (the ``task_unit`` table: a group counts as its members). For
each database, shape and row count, a ledger is generated and each command is run on a
fresh store as a subprocess of the installed ``reminder`` script (REMINDER_DB the store,
REMINDER_CONFIG the checkout's ``config/``, the current folder a temporary one):

- shapes: ``seed``, bench.import_large's ledger (the seed's sections, tasks and units
  repeated; the task count whose rows come nearest the target); ``wide``, the same
  sections and texts with 100 distinct units a task, drawn from 1,000 enterprises that
  contacts.toml does not know (``check`` would report them; the import keeps them);
- stores: a SQLite file in a temporary folder, or a new schema in the PostgreSQL database
  ``test`` on 127.0.0.1:5432 (as tests/conftest.py's ``pg_url``), dropped afterwards;
- commands: ``import`` (first), ``import`` again (unchanged), ``run --once`` twice and
  ``plan`` at a quiet moment (Sunday 2018-01-07 03:00: no letter is due; the first tick
  after an import takes up the rows that fell due before it, e.g. 3 days before a window
  that opens on 1 January, and makes their items but no letters; the second tick finds
  nothing due: the idle tick), ``status``, ``tasks --json`` read to its first 4 KiB (as
  ``| head -c 4096``: the time is to those bytes, the child is then killed), ``digest
  --print`` (now: every 2018 task is overdue, the heaviest digest).

The wide shape's units have no contacts, so a tick or ``plan`` makes items for them but
no letters: lighter than 100 known units a task would be.

``--commands`` runs some of them only (the first import always runs: the others need
it): ``import``, ``again`` (the second import), ``tick`` (both run --once), ``plan``,
``status``, ``tasks``, ``digest``.

The rows column is the store's count after the first import. Each figure is one run:
wall seconds and the child's own peak RSS (``os.wait4``). A command over ``--timeout`` is
killed and shown as ``> T s``. ``MISS`` marks a missed target of the issue (at 10⁶ rows:
≤ 1 s and ≤ 200 MiB for run --once, plan, status, digest --print; ≤ 60 s and ≤ 500 MiB
for import); below 10⁶ rows the marks only say how far a figure is from it. ``--peer``:
another checkout, run with the same interpreter and libraries (its folder first on
``PYTHONPATH``, its ``config/``) on its own store, each of its commands right after this
checkout's. The bundled templates (``reminder.templates``) still come from this checkout,
where the editable install maps them: a peer whose digest templates differ renders this
checkout's, and its ``digest --print`` row is not comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.import_large import TITLE, _seed_sections, ledger_text

ROOT = Path(__file__).resolve().parent.parent
REMINDER = Path(sys.executable).with_name("reminder")
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IDLE = "2018-01-07 03:00"  # a Sunday night: no letter is due, no digest
HEADER = "\t序号\n\t工作任务\n\t责任单位\n\t完成时限\n\t备注\n"
WIDE_UNITS, WIDE_POOL = 100, 1000
FIRST_BYTES = 4096
QUICK, IMPORT = (1.0, 200.0), (60.0, 500.0)  # the targets: seconds, MiB
# (--commands name, label, arguments, target)
COMMANDS: list[tuple[str, str, list[str], tuple[float, float] | None]] = [
    ("import", "import", ["import", "{ledger}"], IMPORT),
    ("again", "import again", ["import", "{ledger}"], IMPORT),
    ("tick", "run --once (first tick)", ["run", "--once", "--at", IDLE], QUICK),
    ("tick", "run --once (idle tick)", ["run", "--once", "--at", IDLE], QUICK),
    ("plan", "plan", ["plan", "--at", IDLE], QUICK),
    ("status", "status", ["status"], QUICK),
    ("tasks", "tasks --json | head -c 4096", ["tasks", "--json"], None),
    ("digest", "digest --print", ["digest", "--print"], QUICK),
]


@dataclass(frozen=True, slots=True)
class Result:
    wall: float
    peak_mib: float
    note: str = ""  # "timeout", "exit N: <stderr>", "first 4 KiB"


@dataclass(slots=True)
class Version:
    name: str  # "this" or "peer"
    checkout: Path
    env: dict[str, str]
    cwd: Path


def _cells(cells: list[str] | tuple[str, ...]) -> str:
    return "".join(f"\t{cell}\n" for cell in cells)


def wide_text(tasks: int) -> str:
    """``tasks`` tasks in the seed's sections and texts, each naming 100 distinct units."""
    sections = _seed_sections()
    per_section = -(-tasks // len(sections))
    out, no = [TITLE.format(year=2018), HEADER], 0
    for section, rows in sections:
        count = min(per_section, tasks - no)
        if count <= 0:
            break
        out.append(_cells(section.cells))
        for k in range(count):
            no += 1
            seed = [*rows[k % len(rows)].cells, "", "", "", ""]
            first = no * 37 % WIDE_POOL
            units = "、".join(
                f"济源第{(first + j) % WIDE_POOL + 1}号化工有限公司" for j in range(WIDE_UNITS)
            )
            out.append(_cells([str(no), f"{seed[1]}（第{no}项）", units, seed[3], seed[4]]))
    return "\n".join(out)


def counts(db: str) -> tuple[int, int]:
    """Tasks and task × unit rows in a store."""
    engine = create_engine(db)
    try:
        with engine.connect() as connection:
            tasks = connection.execute(text("SELECT count(*) FROM task")).scalar_one()
            rows = connection.execute(text("SELECT count(*) FROM task_unit")).scalar_one()
    finally:
        engine.dispose()
    return int(tasks), int(rows)


def seed_rows_per_task(folder: Path) -> dict[int, int]:
    """The seed's task × unit rows of each task (by number), from an import of it."""
    db = f"sqlite:///{folder / 'seed.db'}"
    subprocess.run(
        [str(REMINDER), "import", str(SEED)],
        env=_env(ROOT, db),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    engine = create_engine(db)
    query = "SELECT task.no, count(*) FROM task_unit JOIN task ON task.id = task_unit.task_id"
    try:
        with engine.connect() as connection:
            found = connection.execute(text(query + " GROUP BY task.no")).all()
    finally:
        engine.dispose()
    return {int(no): int(rows) for no, rows in found}


def seed_tasks_for(rows: int, per_task: dict[int, int]) -> int:
    """The task count whose bench.import_large ledger comes nearest ``rows`` rows (it
    takes the first tasks of each seed section, whose units are not the average)."""
    sections = [[int(r.cells[0]) for r in task_rows] for _, task_rows in _seed_sections()]
    seed_tasks = sum(len(numbers) for numbers in sections)
    mean = sum(per_task.values()) / len(per_task)

    def total(tasks: int) -> int:  # as ledger_text shares the tasks out
        found, no = 0, 0
        for index, numbers in enumerate(sections):
            last = index == len(sections) - 1
            count = tasks - no if last else round(tasks * len(numbers) / seed_tasks)
            no += count
            found += sum(per_task[numbers[k % len(numbers)]] for k in range(count))
        return found

    tasks = max(1, round(rows / mean))
    for _ in range(10):
        step = round((rows - total(tasks)) / mean)
        if step == 0:
            break
        tasks = max(1, tasks + step)
    return tasks


def _env(checkout: Path, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
    env |= {"REMINDER_CONFIG": str(checkout / "config"), "REMINDER_DB": db}
    if checkout != ROOT:
        env["PYTHONPATH"] = str(checkout)
    return env


@contextlib.contextmanager
def store(kind: str, folder: Path, name: str) -> Iterator[str]:
    """A fresh store's URL: a SQLite file in ``folder``, or a new PostgreSQL schema."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / (name + '.db')}"
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def measure(args: list[str], version: Version, timeout: float, *, head: bool = False) -> Result:
    """One run of `reminder ARGS`: wall seconds and the child's own peak RSS. ``head``:
    the time until its first 4 KiB of output, then the child is killed."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(
            [str(REMINDER), *args],
            env=version.env,
            cwd=version.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if head else subprocess.DEVNULL,
            stderr=errors,
        )
        wall, got, timed_out, peak = _reap(child, started, timeout)
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip().splitlines()
    code = child.returncode
    if timed_out:
        return Result(wall, peak, "timeout")
    if head:
        note = "first 4 KiB" if got >= FIRST_BYTES else f"only {got} bytes, exit {code}"
        return Result(wall, peak, note)
    if code != 0:
        return Result(wall, peak, f"exit {code}: {message[-1] if message else ''}"[:120])
    return Result(wall, peak)


def _reap(
    child: subprocess.Popen[bytes], started: float, timeout: float
) -> tuple[float, int, bool, float]:
    """Wait for ``child`` (killed after ``timeout``, or once it has written 4 KiB when its
    output is piped): wall seconds, bytes read, whether it timed out, its peak MiB."""
    finished, timed_out = threading.Event(), threading.Event()

    def kill() -> None:
        if not finished.is_set():
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    wall, got = None, 0
    if child.stdout is not None:
        while got < FIRST_BYTES and (chunk := os.read(child.stdout.fileno(), FIRST_BYTES - got)):
            got += len(chunk)
        wall = time.perf_counter() - started
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
    _, status, usage = os.wait4(child.pid, 0)
    finished.set()
    timer.cancel()
    wall = wall if wall is not None else time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.stdout is not None:
        child.stdout.close()
    return wall, got, timed_out.is_set(), usage.ru_maxrss / 1024


def _wall(result: Result, timeout: float) -> str:
    return f"> {timeout:.0f} s" if result.note == "timeout" else f"{result.wall:.2f}"


def _mark(result: Result, target: tuple[float, float] | None) -> str:
    marks = []
    if target is not None:
        missed = [f"> {target[0]:.0f} s"] if result.wall > target[0] else []
        missed += [f"> {target[1]:.0f} MiB"] if result.peak_mib > target[1] else []
        marks += [f"MISS {', '.join(missed)}"] if missed else []
    if result.note and result.note != "first 4 KiB":
        marks.append(result.note)
    return "; ".join(marks)


def row(cells: list[str]) -> None:
    widths = (8, 5, 9, 5, 28, 9, 9)
    print(
        "  ".join(
            f"{c:<{w}}" if i in (0, 1, 3, 4) else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )
        + (f"  {cells[7]}" if len(cells) > 7 and cells[7] else ""),
        flush=True,
    )


def ledger_for(shape: str, rows: int, per_task: dict[int, int]) -> tuple[str, int]:
    """The ledger text of about ``rows`` task × unit rows, and its task count."""
    if shape == "wide":
        tasks = max(1, round(rows / WIDE_UNITS))
        return wide_text(tasks), tasks
    tasks = seed_tasks_for(rows, per_task)
    return ledger_text(tasks), tasks


def run_case(
    db: str,
    shape: str,
    rows: int,
    checkouts: dict[str, Path],
    options: argparse.Namespace,
    folder: Path,
    per_task: dict[int, int],
) -> None:
    """Every command on a fresh store of ``rows`` rows, each checkout's run side by side."""
    content, tasks = ledger_for(shape, rows, per_task)
    ledger = folder / f"{shape}-{rows}.txt"
    ledger.write_text(content, encoding="utf-8")
    print(
        f"# {db} {shape}: {tasks:,} tasks, {len(content.encode()) / 1e6:.2f} MB of ledger",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        versions = []
        for name, checkout in checkouts.items():
            url = stack.enter_context(store(db, folder, f"{db}-{shape}-{rows}-{name}"))
            cwd = folder / f"{db}-{shape}-{rows}-{name}"
            cwd.mkdir()
            versions.append(Version(name, checkout, _env(checkout, url), cwd))
        counted = {version.name: f"~{rows:,}" for version in versions}
        failed: set[str] = set()
        for name, label, template, target in COMMANDS:
            if name != "import" and name not in options.commands:
                continue
            args = [str(ledger) if arg == "{ledger}" else arg for arg in template]
            for version in versions:
                cells = [db, shape, counted[version.name], version.name, label]
                if version.name in failed:
                    row([*cells, "-", "-", "skipped: the import failed"])
                    continue
                result = measure(args, version, options.timeout, head=label.startswith("tasks"))
                if label == "import" and not result.note:
                    counted[version.name] = f"{counts(version.env['REMINDER_DB'])[1]:,}"
                    cells[2] = counted[version.name]
                elif label == "import":
                    failed.add(version.name)
                mark = _mark(result, target)
                row([*cells, _wall(result, options.timeout), f"{result.peak_mib:.0f}", mark])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        default="1000,10000,100000",
        help="task × unit row counts, comma-separated (1e6 is accepted)",
    )
    parser.add_argument("--shape", choices=("seed", "wide", "both"), default="both")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--peer", type=Path, help="another checkout, run beside this one")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a command")
    names = list(dict.fromkeys(name for name, *_ in COMMANDS))
    parser.add_argument(
        "--commands",
        type=lambda text: text.split(","),
        default=names,
        help=f"some of {','.join(names)} (the first import always runs)",
    )
    options = parser.parse_args()
    unknown = set(options.commands) - set(names)
    if unknown:
        parser.error(f"--commands: unknown {', '.join(sorted(unknown))}")
    sizes = [int(float(size)) for size in options.rows.split(",")]
    shapes = ["seed", "wide"] if options.shape == "both" else [options.shape]
    dbs = ["sqlite", "postgres"] if options.db == "both" else [options.db]
    checkouts = {"this": ROOT}
    if options.peer is not None:
        checkouts["peer"] = options.peer.resolve()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"cpus: {os.cpu_count()}; load average (1, 5, 15 min): {load}; Python "
        f"{sys.version.split()[0]}; timeout {options.timeout:.0f} s a command; one run each"
    )
    print(
        f"run --once (twice) and plan at {IDLE}; status and digest --print now; tasks --json:"
        " seconds to its first 4 KiB (then killed); peak = the child's own max RSS"
    )
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name:
        folder = Path(name)
        per_task = seed_rows_per_task(folder)
        mean = sum(per_task.values()) / len(per_task)
        print(f"task × unit rows a task: seed {mean:.2f} on average; wide {WIDE_UNITS}")
        row(["db", "shape", "rows", "run", "command", "wall s", "peak MiB", "target"])
        for db in dbs:
            for shape in shapes:
                for rows in sizes:
                    run_case(db, shape, rows, checkouts, options, folder, per_task)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
