"""The supervisor's listener on a real PostgreSQL store (migration 0007's triggers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from reminder.daemon import libpq_dsn
from reminder.listener import Listener
from reminder.store.db import open_store

pytestmark = pytest.mark.timeout(60)


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning


def write(url: str, statement: str, application_name: str | None = None) -> None:
    """A statement committed by another connection (the CLI, the web, a session)."""
    store = open_store(url)
    with store.write() as session:
        if application_name is not None:
            session.execute(text(f"SET application_name = '{application_name}'"))
        session.execute(text(statement))
    store.dispose()


async def until(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return check()


def heard(listener: Listener) -> bool:
    return listener.changed


async def settled(listener: Listener) -> None:
    """Quiet for a moment, then cleared: as when a session starts."""
    await asyncio.sleep(0.3)
    listener.session_started()


def test_a_write_by_another_connection_is_heard_and_a_session_s_own_is_not(pg_url: str) -> None:
    open_store(pg_url).dispose()  # the schema, with its triggers
    log = Log()

    async def scenario() -> None:
        listener = Listener(libpq_dsn(pg_url), log, retry_s=0.1)
        listener.start()
        await asyncio.wait_for(listener.listening.wait(), 10)
        assert listener.changed  # nothing was heard before it listened
        await settled(listener)

        await asyncio.to_thread(write, pg_url, "UPDATE task SET status = status")
        assert await until(lambda: listener.changed)
        await settled(listener)

        session = "UPDATE meta SET value = value"
        await asyncio.to_thread(write, pg_url, session, "reminder-session")
        await asyncio.sleep(0.5)
        assert not heard(listener)  # a session's writes are its own work

        await asyncio.to_thread(write, pg_url, "SELECT pg_notify('reminder_store', 'other')")
        await asyncio.sleep(0.5)
        assert not heard(listener)  # another schema's store

        await asyncio.to_thread(
            write,
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'reminder-supervisor' AND datname = current_database()",
        )
        assert await until(lambda: listener.changed)  # a write may have gone unheard
        assert await until(lambda: ("listening", {"schema": listener_schema(pg_url)}) in log.events)
        assert [e for e, _ in log.events].count("listen_failed") == 1
        await settled(listener)
        await asyncio.to_thread(write, pg_url, "DELETE FROM outbox WHERE false")
        assert await until(lambda: listener.changed)  # heard again
        await listener.stop()

    asyncio.run(scenario())


def listener_schema(pg_url: str) -> str:
    return pg_url.rsplit("%3D", 1)[1]


def test_a_store_it_cannot_reach_is_said_once_and_counts_as_changed() -> None:
    log = Log()

    async def scenario() -> None:
        listener = Listener("postgresql://postgres@127.0.0.1:1/test", log, retry_s=0.05)
        listener.start()
        await asyncio.wait_for(listener.attempted.wait(), 15)
        listener.session_started()
        assert await until(lambda: listener.changed)  # each failure: a session looks
        await asyncio.sleep(0.3)
        await listener.stop()
        assert not listener.listening.is_set()

    asyncio.run(scenario())
    assert [e for e, _ in log.events] == ["listen_failed"]
