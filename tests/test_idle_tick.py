"""An idle daemon writes nothing to the store at its ticks, and tells systemd nothing: the
last tick stays in memory and is written (and sent as STATUS=) when something changed, or
every ``LAST_TICK_EVERY``."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import sqlite3
from pathlib import Path

import pytest

from reminder.daemon import Daemon, Runtime
from reminder.settings import load_config
from reminder.store.db import open_store
from reminder.store.meta import LAST_TICK_EVERY, last_tick
from tests.conftest import SEED, Cli
from tests.daemon_process import NotifySocket

# a Sunday night in the ledger's year: nothing is due
QUIET = dt.datetime(2018, 10, 6, 19, 0, tzinfo=dt.UTC)


def test_idle_ticks_write_nothing_until_the_record_is_due(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    systemd = NotifySocket(isolated_env / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    store = open_store(load_config().settings.db)
    clock = [QUIET]
    daemon = Daemon(store, Runtime.load(store, lambda: clock[0]), lambda: clock[0])
    watcher = sqlite3.connect(isolated_env / "ledger.db")

    def version() -> int:  # changes when another connection commits a change
        return int(watcher.execute("PRAGMA data_version").fetchone()[0])

    marks = iter(range(1_000))

    def told() -> int:
        """How many STATUS= the daemon sent so far: a mark sent after them arrives after
        them (one receive queue), so once it is read they all are."""
        mark = f"MARK={next(marks)}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(mark.encode(), str(systemd.path))
        assert systemd.wait_for(mark, timeout=10)
        return len(systemd.lines("STATUS=last tick"))

    async def tick(at: dt.datetime) -> None:
        clock[0] = at
        daemon.tick_at(at)
        if daemon.sending is not None:
            await daemon.sending

    minute = dt.timedelta(minutes=1)

    async def ticks() -> tuple[list[int], list[int]]:
        await tick(QUIET)  # the first catches up (what fell due since January, superseded)
        await tick(QUIET + minute)  # the first idle one: a change (nothing due), written
        seen = [version()]
        statuses = [told()]
        for n in range(2, 6):  # idle: the same record at a newer moment
            await tick(QUIET + n * minute)
            seen.append(version())
            statuses.append(told())
        await tick(QUIET + minute + LAST_TICK_EVERY)  # the idle record is written now
        seen.append(version())
        statuses.append(told())
        return seen, statuses

    try:
        seen, statuses = asyncio.run(ticks())
        assert daemon.last_tick["due"] == 0 and daemon.last_tick["enqueued"] == 0
        assert seen[:5] == [seen[0]] * 5
        assert seen[5] != seen[0]
        assert statuses[0] == 2  # the catch-up and the first idle tick
        assert statuses[:5] == [statuses[0]] * 5
        assert statuses[5] == statuses[0] + 1
        with store.read() as session:
            recorded = last_tick(session)
        assert recorded is not None
        assert recorded["at"] == (QUIET + minute + LAST_TICK_EVERY).isoformat()
    finally:
        systemd.close()
        watcher.close()
        asyncio.run(daemon.runtime.close())
        store.dispose()


def test_after_a_catch_up_that_sent_only_the_first_idle_tick_writes(
    cli: Cli, isolated_env: Path
) -> None:
    """The catch-up's letters go out (the file channel); the tick after it writes its
    record (nothing due now), and the idle ticks after that write nothing: a delivery run
    that finds nothing does not change what the record says was delivered."""
    assert cli("import", str(SEED)).code == 0
    busy = dt.datetime(2018, 10, 8, 1, 30, tzinfo=dt.UTC)  # a Monday, 09:30 Beijing
    store = open_store(load_config().settings.db)
    clock = [busy]
    daemon = Daemon(store, Runtime.load(store, lambda: clock[0]), lambda: clock[0])
    watcher = sqlite3.connect(isolated_env / "ledger.db")

    async def tick(at: dt.datetime) -> int:
        clock[0] = at
        daemon.tick_at(at)
        if daemon.sending is not None:
            await daemon.sending
        return int(watcher.execute("PRAGMA data_version").fetchone()[0])

    async def ticks() -> list[int]:
        return [await tick(busy + n * dt.timedelta(minutes=1)) for n in range(5)]

    try:
        seen = asyncio.run(ticks())
        assert daemon.delivered["sent"] > 0  # the catch-up sent its letters
        assert seen[1] != seen[0]  # the first idle tick: its record is new
        assert seen[1:] == [seen[1]] * 4
    finally:
        watcher.close()
        asyncio.run(daemon.runtime.close())
        store.dispose()
