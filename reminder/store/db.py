"""Opening the store: engine, SQLite pragmas and locking, migrations, transactions.

SQLite runs in WAL mode with a busy timeout so that the CLI and the daemon can write
at the same time. pysqlite's own transaction handling is switched off and we emit
``BEGIN`` ourselves: ``BEGIN IMMEDIATE`` for a write transaction takes the write lock
up front, so two writers queue on the busy timeout instead of failing halfway
(SQLAlchemy's documented recipe for pysqlite).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlmodel import Session

from reminder.errors import ConfigError, StoreError

BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "reminder_sqlite_begin"


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see module doc)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _json(value: Any) -> str:
    """JSON columns as UTF-8 text: a letter's Chinese is a third of its escaped size."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_URL_EXAMPLE = "e.g. sqlite:///ledger.db or postgresql+psycopg://user@host/db"


def make_engine(url: str) -> Engine:
    """An engine for ``REMINDER_DB``; a URL that names no database this program can open
    (unparseable, an unknown kind, a driver that is not installed) is a ``ConfigError``
    raised before anything is created."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        shown = re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)  # no password in a message
        raise ConfigError(f"REMINDER_DB={shown!r}: not a database URL ({_URL_EXAMPLE})") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"{database}: folder {parent} does not exist")
        options: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000}}
    else:
        options = {"pool_pre_ping": True}
    try:
        engine = create_engine(parsed, json_serializer=_json, **options)
    except NoSuchModuleError:
        raise ConfigError(
            f"REMINDER_DB={describe(url)}: unknown kind of database "
            f"{parsed.drivername!r} ({_URL_EXAMPLE})"
        ) from None
    except ImportError as exc:
        raise ConfigError(
            f"REMINDER_DB={describe(url)}: no driver for {parsed.drivername}: {exc}"
        ) from None
    except (ArgumentError, TypeError, ValueError) as exc:  # options the driver refuses
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"REMINDER_DB={describe(url)}: {reason}") from None
    if engine.dialect.name == "sqlite":
        _sqlite_events(engine)
    return engine


class Store:
    """The database behind every command: short transactions, one per unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._writer = (
            self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            if self.is_sqlite
            else self.engine
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A view for reading; nothing is committed, and loaded rows stay usable after."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid URL>"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and create or upgrade) the store; errors name the database, not a traceback."""
    from reminder.store.migrate import upgrade  # noqa: PLC0415 - alembic only when opening

    store = Store(url)
    if not migrate:
        return store
    try:
        upgrade(store.engine)
    except (OperationalError, DatabaseError) as exc:
        store.dispose()
        reason = str(exc.orig) if exc.orig is not None else str(exc)
        raise StoreError(f"{describe(url)}: cannot open the store: {reason}") from None
    except BaseException:
        store.dispose()
        raise
    return store


def insert_new(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Insert the rows whose ``key`` is new (``ON CONFLICT (key) DO NOTHING``, on SQLite
    and PostgreSQL alike; of rows with one key, the first); returns the keys inserted."""
    if not rows:
        return []
    connection = session.connection()
    statement: Any
    if connection.dialect.name == "postgresql":
        # imported here: the package loads every PostgreSQL driver's module
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        statement = pg_insert(table).on_conflict_do_nothing(index_elements=["key"])
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=["key"])
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["key"], row)
    result = connection.execute(statement.returning(table.c.key), list(unique.values()))
    return [row.key for row in result]
