"""The `reminder` console script: it ends without the interpreter's teardown, and loses
nothing by it (output, exit status, the store), nor hangs on a process left running."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from reminder.cli import COMMANDS
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
