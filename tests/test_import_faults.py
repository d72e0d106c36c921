"""A large import against faults: killed in the middle, and beside other writers.

Real `reminder import` processes (2,000-task ledgers of the seed's shape, from
bench.import_large, and their revision: tasks changed, removed, added, renumbered) on a
real SQLite file and on a fresh schema of the machine's PostgreSQL.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from bench.import_large import ledger_text
from reminder.store.db import open_store
from tests.daemon_process import SCRIPT, daemon_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TASKS = 2000
State = tuple[frozenset[tuple[int, str]], int]


def ledgers(folder: Path) -> tuple[Path, Path]:
    old, new = folder / "old.txt", folder / "new.txt"
    old.write_text(ledger_text(TASKS), encoding="utf-8")
    new.write_text(ledger_text(TASKS, revised=True), encoding="utf-8")
    return old, new


def run_import(cwd: Path, url: str, ledger: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCRIPT), "import", str(ledger), "--replace"],
        cwd=cwd,
        env=daemon_env(REMINDER_DB=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def imported(cwd: Path, url: str, ledger: Path) -> float:
    """Seconds of an import that runs to its end."""
    started = time.monotonic()
    process = run_import(cwd, url, ledger)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return time.monotonic() - started


def state(url: str) -> State:
    """The active tasks (number, text) and their target rows' count."""
    store = open_store(url, schema="check")
    try:
        with store.read() as session:
            tasks = session.execute(text("SELECT no, text FROM task WHERE removed_at IS NULL"))
            rows = session.execute(
                text(
                    "SELECT count(*) FROM task_unit u JOIN task t ON t.id = u.task_id"
                    " WHERE t.removed_at IS NULL AND u.is_target"
                )
            )
            return frozenset((int(no), str(t)) for no, t in tasks), int(rows.scalar_one())
    finally:
        store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_an_import_leaves_the_old_ledger_or_the_new(
    backend: str, isolated_env: Path, request: pytest.FixtureRequest
) -> None:
    """kill -9 at points spread over a re-import: each time the store holds the old
    ledger or the new one, whole (its tasks and their units), never a mix."""
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    old, new = ledgers(isolated_env)
    imported(isolated_env, url, new)
    new_state = state(url)
    took = imported(isolated_env, url, old)
    old_state = state(url)
    assert old_state != new_state
    seen = set()
    for fraction in (0.35, 0.5, 0.65, 0.8, 0.95):
        process = run_import(isolated_env, url, new)
        time.sleep(took * fraction)
        process.kill()
        process.communicate(timeout=30)
        now = state(url)
        assert now in (old_state, new_state), f"a mix after a kill at {fraction:.0%}"
        seen.add(now == new_state)
        if now == new_state:
            imported(isolated_env, url, old)
    assert False in seen  # at least one kill came before the commit


def test_cli_writers_beside_an_import_never_find_the_store_locked(isolated_env: Path) -> None:
    """4 writers (`done`, `progress`) in a loop while a 2,000-task re-import runs on
    SQLite: each waits for the write lock while the import holds it, and none
    fails with "database is locked"."""
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    old, new = ledgers(isolated_env)
    imported(isolated_env, url, old)
    env = daemon_env(REMINDER_DB=url)
    failures: list[str] = []
    runs: list[int] = []
    stop = threading.Event()

    def writer(number: int) -> None:
        command = (
            ["done", str(number)]
            if number % 2
            else ["progress", str(number), "--unit", "环境保护局", "--note", "已完成"]
        )
        while not stop.is_set():
            done = subprocess.run(
                [str(SCRIPT), *command],
                cwd=isolated_env,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            runs.append(number)
            if done.returncode != 0 and "locked" in done.stderr:
                failures.append(done.stderr)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    try:
        for ledger in (new, old, new):
            imported(isolated_env, url, ledger)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[0]
    assert len(runs) >= 8, runs  # the writers ran all along the imports
