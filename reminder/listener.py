"""The supervisor's ear on a PostgreSQL store: LISTEN for the writes of others.

Migration 0007 makes every write to the store's tables notify the channel
``reminder_store`` with the table's schema, when its transaction commits, unless the
writer is one of the daemon's sessions (``application_name = 'reminder-session'``, which
the supervisor gives them through ``PGAPPNAME``). This holds one connection that
listens, reads nothing and writes nothing, and says whether anything was written since
the last session started (``changed``):

- a notification for its own schema (the store's: its ``current_schema()``) sets it;
- so does losing the connection, or failing to make it: a write may have gone unheard,
  and a session looks (the connection is tried again every ``retry_s``, each failure
  logged once until one succeeds).

Imported by the supervisor only on PostgreSQL (psycopg is a tenth of a session's memory).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

CHANNEL = "reminder_store"  # migration 0007
SESSION_NAME = "reminder-session"  # a session's application_name: its writes notify nobody
CONNECT_TIMEOUT_S = 10


class Listener:
    def __init__(self, dsn: str, log: Any, retry_s: float) -> None:
        self.dsn = dsn
        self.log = log
        self.retry_s = retry_s
        self.changed = True  # until it listens, anything may have been written
        self.listening = asyncio.Event()
        self.attempted = asyncio.Event()  # the first connection made or failed
        self.task: asyncio.Task[None] | None = None
        self.failing = False

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task

    def session_started(self) -> None:
        """A session reads the store after this: what was written before is its work."""
        self.changed = False

    async def _run(self) -> None:
        import psycopg  # noqa: PLC0415 - PostgreSQL only, see the module docstring

        while True:
            try:
                await self._listen(psycopg)
            except (psycopg.Error, OSError) as error:
                self.changed = True
                self.listening.clear()
                if not self.failing:
                    self.log.warning("listen_failed", error=f"{type(error).__name__}: {error}")
                    self.failing = True
            self.attempted.set()
            await asyncio.sleep(self.retry_s)

    async def _listen(self, psycopg: Any) -> None:
        connection = await psycopg.AsyncConnection.connect(
            self.dsn,
            autocommit=True,
            application_name="reminder-supervisor",
            connect_timeout=CONNECT_TIMEOUT_S,
        )
        async with connection:
            found = await (await connection.execute("SELECT current_schema()")).fetchone()
            schema = found[0] if found else None
            await connection.execute(f"LISTEN {CHANNEL}")
            self.changed = True  # what came before it listened went unheard
            self.listening.set()
            self.attempted.set()
            if self.failing:
                self.log.info("listening", schema=schema)
                self.failing = False
            async for notice in connection.notifies():
                if notice.payload == schema:
                    self.changed = True
        raise psycopg.OperationalError("the connection ended")
