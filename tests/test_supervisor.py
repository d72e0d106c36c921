"""The daemon as a lasting supervisor and sessions that exit once nothing is due.

The real `reminder run` as a subprocess, a real SMTP server on loopback, a temporary
SQLite store, a fake systemd notify socket (as in test_daemon.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from reminder import supervisor as supervisor_module
from reminder.store.db import open_store
from tests.conftest import SEED, Cli
from tests.daemon_process import Daemon, NotifySocket
from tests.smtp_server import Handler
from tests.stalled_smtp import stalled_server
from tests.test_crash import fill_outbox
from tests.test_daemon import FILLED, children, env_for, leased

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HEAVY = (
    "sqlalchemy",
    "sqlmodel",
    "pydantic",
    "pydantic_settings",
    "jinja2",
    "httpx",
    "aiosmtplib",
    "apscheduler",
    "click",
    "rich",
    "uvloop",
)


def test_the_supervisor_imports_none_of_the_heavy_libraries() -> None:
    """What stays between sessions holds the standard library and structlog only."""
    code = (
        "import sys, reminder.supervisor, reminder.logs\n"
        "reminder.logs.get_logger()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(done.stdout.split())
    assert "reminder" in loaded and "structlog" in loaded
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)


def sessions(daemon: Daemon) -> list[str]:
    return [e["reason"] for e in daemon.events() if e["event"] == "session_started"]


def test_after_the_catch_up_one_process_stays_and_a_write_wakes_a_session(
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    """The catch-up's session sends and exits; idle ticks start none and write nothing;
    a message queued by another process (a write to the store) starts one that sends it."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    with sqlite3.connect(db) as con:  # the daemon's own ticks plan nothing
        con.execute("UPDATE task SET status = 'done'")
    handler, port = smtp
    with Daemon(isolated_env, env_for(port, notify)) as daemon:
        assert notify.wait_for("READY=1"), daemon.log_path.read_text()
        assert daemon.wait_event("session_started")
        deadline = time.monotonic() + 30
        while children(daemon.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children(daemon.pid) == [], daemon.log_path.read_text()
        watcher = sqlite3.connect(db)
        version = watcher.execute("PRAGMA data_version").fetchone()[0]
        ticks = sum(1 for e in daemon.events() if e["event"] == "tick")
        assert daemon.wait_event("tick", count=ticks + 3)  # tick_s is 1
        assert sessions(daemon) == ["catch_up"]
        assert children(daemon.pid) == []
        assert watcher.execute("PRAGMA data_version").fetchone()[0] == version
        watcher.close()
        assert notify.wait_for("WATCHDOG=1")  # fed between sessions

        before = len(handler.received)
        keys = fill_outbox(db, 3)
        assert handler.wait_for(before + 3), daemon.log_path.read_text()
        assert sessions(daemon)[1:2] == ["store_changed"]
        assert daemon.stop() == 0
    assert {r.rcpt_tos[0] for r in handler.received} >= {f"unit{i}@example.org" for i in range(3)}
    with sqlite3.connect(db) as con:
        sent = {k for (k,) in con.execute("SELECT key FROM outbox WHERE status = 'sent'")}
    assert set(keys) <= sent
    events = [e["event"] for e in daemon.events()]
    assert "stopping" in events and events[-1] == "stopped"  # the session's events between
    assert "session_failed" not in events and "Traceback" not in daemon.log_path.read_text()


def test_a_session_stops_when_its_supervisor_is_killed(
    cli: Cli, isolated_env: Path, notify: NotifySocket
) -> None:
    """kill -9 of the supervisor while its session holds messages on a hung server: the
    session gets SIGTERM and stops as the daemon does; the messages keep their leases."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    keys = fill_outbox(db, 10)
    with stalled_server() as stalled:
        env = env_for(
            stalled.port,
            notify,
            REMINDER_SMTP__TIMEOUT_S="60",
            REMINDER_SMTP__CONNECTIONS="2",
            REMINDER_DAEMON__STOP_TIMEOUT_S="2",
        )
        with Daemon(isolated_env, env) as daemon:
            assert stalled.wait_for(2), daemon.log_path.read_text()
            # the watchdog goes on being fed while the session works (its own loop's
            # pings, passed on: the supervisor stops feeding it once they come)
            pings = len(notify.lines("WATCHDOG=1"))
            deadline = time.monotonic() + 10
            while len(notify.lines("WATCHDOG=1")) < pings + 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(notify.lines("WATCHDOG=1")) >= pings + 3
            [session, *_] = children(daemon.pid)
            daemon.signal(signal.SIGKILL)
            assert daemon.process is not None
            daemon.process.wait(timeout=10)
            deadline = time.monotonic() + 15
            while Path(f"/proc/{session}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not Path(f"/proc/{session}").exists(), "the session outlived its supervisor"
    events = [e["event"] for e in daemon.events()]
    assert "stop_timeout" in events  # it stopped as the daemon stops
    statuses = leased(db)
    assert sum(statuses.values()) == len(keys)
    assert statuses["sending"] == len(keys), statuses  # left to their leases
    with sqlite3.connect(db) as con:
        dead = con.execute(f"SELECT count(*) FROM outbox WHERE {FILLED} AND status = 'dead'")
        assert dead.fetchone()[0] == 0


def test_a_session_killed_with_sigkill_leaves_no_helper_process(
    cli: Cli, isolated_env: Path, notify: NotifySocket
) -> None:
    """kill -9 of a session while its render worker, forkserver and resource tracker run
    (a backlog on a hung server): they exit too (the worker watches the session, the
    others see their pipes close); the supervisor starts the next session."""
    assert cli("import", str(SEED)).code == 0
    fill_outbox(isolated_env / "ledger.db", 400)
    with stalled_server() as stalled:
        env = env_for(
            stalled.port,
            notify,
            REMINDER_SMTP__TIMEOUT_S="60",
            REMINDER_DELIVERY__RENDER_WORKERS="1",
        )
        with Daemon(isolated_env, env) as daemon:
            assert stalled.wait_for(1), daemon.log_path.read_text()
            deadline = time.monotonic() + 30
            while len(children(daemon.pid)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)  # the session, the tracker, the forkserver, a worker
            [session, *helpers] = children(daemon.pid)
            assert len(helpers) >= 3, helpers
            os.kill(session, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while any(alive(pid) for pid in helpers) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not [pid for pid in helpers if alive(pid)], "a helper outlived its session"
            assert daemon.wait_event("session_failed")
            assert daemon.stop() == 0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_on_postgresql_a_write_by_another_process_wakes_a_session(
    cli: Cli,
    isolated_env: Path,
    pg_url: str,
    smtp: tuple[Handler, int],
    notify: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on PostgreSQL: the supervisor LISTENs (migration 0007's triggers notify);
    idle ticks start no session; another process's write starts one, which sends what it
    queued; the sessions' own writes wake none."""
    monkeypatch.setenv("REMINDER_DB", pg_url)
    assert cli("import", str(SEED)).code == 0
    fill_outbox(pg_url, 0)  # every task done: the daemon's own ticks plan nothing
    handler, port = smtp
    with Daemon(isolated_env, env_for(port, notify)) as daemon:
        assert notify.wait_for("READY=1"), daemon.log_path.read_text()
        assert daemon.wait_event("session_started")
        deadline = time.monotonic() + 30
        while children(daemon.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children(daemon.pid) == [], daemon.log_path.read_text()
        ticks = sum(1 for e in daemon.events() if e["event"] == "tick")
        assert daemon.wait_event("tick", count=ticks + 3)  # tick_s is 1
        assert sessions(daemon) == ["catch_up"]
        assert supervisor_queries(pg_url) == ["LISTEN reminder_store"]

        before = len(handler.received)  # the catch-up's digests
        keys = fill_outbox(pg_url, 3)
        assert handler.wait_for(before + 3), daemon.log_path.read_text()
        assert sessions(daemon)[1:] == ["store_changed"]
        deadline = time.monotonic() + 30
        while children(daemon.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        ticks = sum(1 for e in daemon.events() if e["event"] == "tick")
        assert daemon.wait_event("tick", count=ticks + 3)
        assert sessions(daemon) == ["catch_up", "store_changed"]  # its own writes: none
        assert daemon.stop() == 0
    store = open_store(pg_url)
    with store.read() as session:
        sent = set(session.scalars(text("SELECT key FROM outbox WHERE status = 'sent'")))
    store.dispose()
    assert set(keys) <= sent
    names = [e["event"] for e in daemon.events()]
    assert "stopping" in names and names[-1] == "stopped"
    assert "session_failed" not in names and "listen_failed" not in names


def supervisor_queries(pg_url: str) -> list[str]:
    """What the supervisor's connection last ran (pg_stat_activity), the listening one."""
    store = open_store(pg_url)
    with store.read() as session:
        found = session.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE application_name = "
                "'reminder-supervisor' AND datname = current_database()"
            )
        )
        queries = [query for (query,) in found]
    store.dispose()
    return queries


def test_sessions_that_keep_failing_stop_the_supervisor_for_a_restart() -> None:
    """A session that fails (a secret file gone, a package upgraded under the daemon) is
    tried again at the next tick; after FAILING_SESSIONS in a row the supervisor exits
    EX_SOFTWARE instead of feeding the watchdog of a daemon that sends nothing (the unit
    restarts it: Restart=on-failure). A session that succeeds in between resets the
    count."""
    watched = supervisor_module.Supervisor({"tick_s": 60, "stop_timeout_s": 5}, b"")
    try:
        ok = json.dumps(
            {"next_wake": None, "files": None, "tick_s": 60, "stop_timeout_s": 5, "hangups": 0}
        ).encode()
        for _ in range(supervisor_module.FAILING_SESSIONS - 1):
            watched._ended(1, b"")
        watched._ended(0, ok + b"\n")  # one that worked: the count starts again
        for _ in range(supervisor_module.FAILING_SESSIONS - 1):
            watched._ended(1, b"")
        assert not watched.stopping.is_set() and watched.code == 0
        watched._ended(1, b"")
        assert watched.stopping.is_set() and watched.code == supervisor_module.EX_SOFTWARE
    finally:
        watched.relay.close()


def test_the_supervisor_wakes_at_the_next_wake_not_at_the_next_tick() -> None:
    """A digest at 08:30 goes out at 08:30, not at the first tick after it."""
    watched = supervisor_module.Supervisor({"tick_s": 60, "stop_timeout_s": 5}, b"")

    async def woke() -> tuple[str | None, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        watched.next_wake = time.time() + 0.5
        reason = await watched.wait_tick(started + 60, None)  # the next tick: a minute on
        return reason, loop.time() - started

    try:
        reason, waited = asyncio.run(woke())
    finally:
        watched.relay.close()
    assert reason == "due"
    assert 0.4 < waited < 30
