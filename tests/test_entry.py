"""The `reminder` console script: it ends without the interpreter's teardown, and loses
nothing by it (output, exit status, the store), nor hangs on a process left running."""

from __future__ import annotations

import importlib
import json
import os
import pty
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from reminder.cli import COMMANDS, SHORT_HELP
from tests.conftest import SEED

SCRIPT = Path(sys.executable).with_name("reminder")


def reminder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_command_writes_all_it_says_and_keeps_what_it_stored(isolated_env: Path) -> None:
    imported = reminder("import", str(SEED))
    assert imported.returncode == 0, imported.stderr
    assert "99 tasks added" in imported.stdout
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        assert con.execute("SELECT count(*) FROM task").fetchone() == (99,)
    listed = reminder("tasks", "--json")  # ~100 KB of output, all of it flushed
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["tasks"]) == 99


def test_exit_statuses_are_the_commands(isolated_env: Path) -> None:
    bad = reminder("simulate", "--from", "2018-02-01", "--to", "2018-01-01")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "错误/Error: --to 2018-01-01 is before --from 2018-02-01",
    )
    assert reminder("no-such-command").returncode == 2
    version = reminder("--version")
    assert (version.returncode, version.stdout.startswith("reminder, version")) == (0, True)


def test_a_process_pool_left_open_does_not_hang_the_exit(tmp_path: Path) -> None:
    """With a pool still running (a failure left it open), the process exits the usual
    way, which stops the pool first, with the command's status."""
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from reminder.__main__ import _leave

            if __name__ == "__main__":
                context = multiprocessing.get_context("forkserver")
                pool = ProcessPoolExecutor(max_workers=2, mp_context=context)
                print(pool.submit(abs, -3).result(), flush=True)
                _leave(3)
            """
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (3, "3")


def test_every_command_is_where_the_cli_looks_for_it() -> None:
    """`reminder.cli.COMMANDS` names each command's module; each module lists its commands."""
    for module in set(COMMANDS.values()):
        listed = importlib.import_module(f"reminder.commands.{module}").COMMANDS
        assert {c.name for c in listed} == {n for n, m in COMMANDS.items() if m == module}


def _simulate_args() -> list[str]:
    return [str(SCRIPT), "simulate", "--from", "2018-01-01", "--to", "2018-03-31"]


def _without_timing(out: str) -> list[str]:
    """The summary without the seconds it took (its first line ends "in 0.4 s")."""
    lines = out.splitlines()
    return [lines[0].rsplit(" in ", 1)[0], *lines[1:]]


def test_simulate_piped_prints_its_summary_only(isolated_env: Path) -> None:
    assert reminder("import", str(SEED)).returncode == 0
    piped = reminder(*_simulate_args()[1:])
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert piped.stdout.startswith("Simulated 2018-01-01 → 2018-03-31 (90 days, ")
    assert "\x1b" not in piped.stdout


def test_simulate_shows_progress_on_a_terminal_and_the_same_summary(isolated_env: Path) -> None:
    """stderr a terminal: a progress bar there; stdout (piped) the summary, as without."""
    assert reminder("import", str(SEED)).returncode == 0
    piped = reminder(*_simulate_args()[1:])
    main, side = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    with subprocess.Popen(
        _simulate_args(), stdout=subprocess.PIPE, stderr=side, text=True
    ) as process:
        os.close(side)
        reader.start()
        out, _ = process.communicate(timeout=60)
    reader.join(timeout=10)
    os.close(main)
    assert process.returncode == 0
    assert b"simulating" in shown
    assert _without_timing(out) == _without_timing(piped.stdout)


HEAVY = {
    "sqlalchemy",
    "jinja2",
    "aiosmtplib",
    "httpx",
    "apscheduler",
    "openpyxl",
    "docx",
    "rich",
    "starlette",
}


def imported(*args: str) -> set[str]:
    """The top-level packages a `reminder` command imports (``python -X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reminder", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_help_and_version_import_no_heavy_module(isolated_env: Path) -> None:
    assert imported("--version") & HEAVY == set()
    assert imported("--help") & HEAVY == set()


def test_status_imports_the_store_only(isolated_env: Path) -> None:
    """`status` reads the store (SQLAlchemy): no scheduler, no senders, no templates."""
    assert reminder("import", str(SEED)).returncode == 0
    assert imported("status") & HEAVY == {"sqlalchemy"}


def test_help_lists_each_command_with_its_own_help() -> None:
    """`reminder --help` lists the commands from ``SHORT_HELP`` without importing them:
    each line is what click would say from the command itself."""
    assert set(SHORT_HELP) == set(COMMANDS)
    for name, module in COMMANDS.items():
        listed = importlib.import_module(f"reminder.commands.{module}").COMMANDS
        command = next(c for c in listed if c.name == name)
        assert SHORT_HELP[name] == command.get_short_help_str(limit=1000), name
