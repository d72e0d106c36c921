"""A large import against faults: killed in the middle, and beside other writers.

Real `reminder import` processes (2,000- and 5,000-task ledgers of the seed's shape,
from bench.import_large, and their revision: tasks changed, removed, added, renumbered)
on a real SQLite file and on a fresh schema of the machine's PostgreSQL; beside them,
the real daemon sending, the answers web and the command line writing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bench.import_large import ledger_text
from reminder.store.db import open_store
from tests.conftest import SEED, Cli
from tests.daemon_process import SCRIPT, Daemon, daemon_env
from tests.smtp_server import Handler
from tests.test_crash import fill_outbox
from tests.test_web_security import letter_links
from tests.web_server import CSRF, bind, serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TASKS = 2000
WRITERS_TASKS = 5000
TASK = re.compile(r'id="task-(\d+)"')
State = tuple[frozenset[tuple[int, str]], int]


def ledgers(folder: Path, tasks: int = TASKS, year: int = 2018) -> tuple[Path, Path]:
    old, new = folder / "old.txt", folder / "new.txt"
    old.write_text(ledger_text(tasks, year=year), encoding="utf-8")
    new.write_text(ledger_text(tasks, revised=True, year=year), encoding="utf-8")
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


def cli_writer(folder: Path, env: dict[str, str], number: int) -> Callable[[], str | None]:
    """One `reminder done` or `reminder progress`: the error if the store was locked."""
    command = (
        ["done", str(number)]
        if number % 2
        else ["progress", str(number), "--unit", "环境保护局", "--note", "已完成"]
    )

    def write() -> str | None:
        done = subprocess.run(
            [str(SCRIPT), *command],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stderr if done.returncode != 0 and "locked" in done.stderr else None

    return write


def web_writer(client: httpx.Client, unit_links: list[str], start: int) -> Callable[[], str | None]:
    """A unit answering through its link (its page, then a progress note on one of its
    tasks), a unit after another: the error if the web failed (5xx)."""
    turn = itertools.count(start)

    def write() -> str | None:
        link = "/" + unit_links[next(turn) % len(unit_links)].split("/", 3)[3]
        page = client.get(link)
        if page.status_code >= 500:
            return f"GET {page.status_code}: {page.text[:200]}"
        token, task = CSRF.search(page.text), TASK.search(page.text)
        if token is None or task is None:
            return None  # no open task of this unit in the ledger just imported
        posted = client.post(
            f"{link}/task/{task.group(1)}/progress", data={"csrf": token.group(1), "note": "进展"}
        )
        return (
            f"POST {posted.status_code}: {posted.text[:200]}" if posted.status_code >= 500 else None
        )

    return write


def test_writers_beside_the_daemon_and_an_import_never_find_the_store_locked(
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, while the daemon sends 2,000 letters and two 5,000-task re-imports run
    one after the other: 2 CLI writers (`done`, `progress`) and 2 units answering through
    the web, each in a loop. Each waits for the write lock while another holds it; none fails
    with "database is locked", the web answers no 5xx, the daemon logs no failure.

    The imported ledgers are next year's: the daemon's work is the 2,000 letters, not a
    catch-up of every overdue task since 2018, whose size (up to 84,000 items) depends
    on the day the test runs (bench.catch_up measures a writer beside such a tick)."""
    port = bind(monkeypatch)
    db = isolated_env / "ledger.db"
    assert cli("import", str(SEED)).code == 0
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0  # the units' links
    unit_links = sorted(letter_links(db)[0].values())
    assert len(unit_links) > 20
    old, new = ledgers(isolated_env, WRITERS_TASKS, year=dt.date.today().year + 1)
    imported(isolated_env, f"sqlite:///{db}", old)
    fill_outbox(db, 2000)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE task SET status = 'open'")  # as it was: the writers answer on it
    handler, smtp_port = smtp
    handler.behaviour.delay_s = 0.005
    env = daemon_env(
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(smtp_port),
        REMINDER_DAEMON__TICK_S="1",
    )
    failures: list[str] = []
    writes: list[int] = []
    stop = threading.Event()

    def loop(number: int, write: Callable[[], str | None]) -> None:
        while not stop.is_set():
            failure = write()
            writes.append(number)
            if failure is not None:
                failures.append(failure)

    with (
        serving(port) as url,
        httpx.Client(base_url=url, timeout=60) as one,
        httpx.Client(base_url=url, timeout=60) as two,
        Daemon(isolated_env, env) as daemon,
    ):
        workers = [cli_writer(isolated_env, env, n) for n in (1, 2)]
        workers += [web_writer(client, unit_links, n * 17) for n, client in ((3, one), (4, two))]
        threads = [threading.Thread(target=loop, args=(n, w)) for n, w in enumerate(workers, 1)]
        for thread in threads:
            thread.start()
        try:
            assert handler.wait_for(100, timeout=60), daemon.log_path.read_text()  # it is sending
            for ledger in (new, old):
                imported(isolated_env, f"sqlite:///{db}", ledger)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert daemon.running()
        errors = [e for e in daemon.events() if e["level"] == "error"]
        assert daemon.stop(timeout=30) == 0  # what it has claimed goes out first
    assert not failures, failures[0]
    assert not errors, errors[0]
    assert set(writes) == {1, 2, 3, 4}, "a writer never got through"
    assert len(writes) >= 16, len(writes)  # they ran all along the imports
    assert len(handler.received) > 100
    with sqlite3.connect(db) as con:
        answered = con.execute(
            "SELECT count(*) FROM event WHERE kind = 'progress' AND origin != 'cli'"
        ).fetchone()[0]
    assert answered > 0
