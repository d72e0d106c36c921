"""Opening the store: engine, SQLite pragmas and locking, migrations, transactions.

SQLite runs in WAL mode with a busy timeout so that the CLI and the daemon can write
at the same time. pysqlite's own transaction handling is switched off and we emit
``BEGIN`` ourselves: ``BEGIN IMMEDIATE`` for a write transaction takes the write lock
up front, so two writers queue on the busy timeout instead of failing halfway
(SQLAlchemy's documented recipe for pysqlite).
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, Connection, Engine, Table, bindparam, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlmodel import Session

from reminder.errors import ConfigError, StoreError

BUSY_TIMEOUT_MS = 30_000
CHUNK_ROWS = 20_000  # rows of one executemany in ``execute_chunks``
_IN_LIMIT = 900  # values of one IN (…): under SQLite's oldest limit on parameters (999)
_BEGIN_OPTION = "reminder_sqlite_begin"
_TURN_S = 1.0  # seconds a long job writes before it lets others write (``Turns``)
_PAUSE_S = 0.12  # longer than the 100 ms a waiting SQLite writer sleeps between tries


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
        self.found_revision: str | None = None  # the schema's, when it was opened
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._writer = (
            self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            if self.is_sqlite
            else self.engine
        )

    def failure(self, error: BaseException) -> str | None:
        """A database's error on one line, naming the store ("the store ledger.db:
        database or disk is full"); None for any other error (a bug keeps its
        traceback)."""
        if not isinstance(error, DBAPIError):
            return None
        database = self.engine.url.database if self.is_sqlite else None
        return f"the store {database or describe(self.url)}: {driver_error(error)}"

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

    def turns(self) -> Turns:
        """The pacing of one long job's write transactions (see ``Turns``)."""
        return Turns(self.is_sqlite)

    def dispose(self) -> None:
        self.engine.dispose()


class Turns:
    """A long job's write transactions (a catch-up's planning batches and letter rounds)
    taking turns with other writers. SQLite gives its lock to whoever asks first when it
    is free, and a waiting writer asks again only every 100 ms: a job whose transactions
    follow each other closely would keep the lock the whole job. So on SQLite, before a
    transaction that would begin a second or more after the job began or last paused,
    the job pauses longer than that: `reminder done` or a unit's answer waits about a
    second (plus the transaction under way), not the whole catch-up. PostgreSQL locks
    rows: nothing pauses."""

    def __init__(self, pausing: bool) -> None:
        self.pausing = pausing
        self.since = time.monotonic()  # the job's start, or its last pause

    def before_write(self) -> None:
        """Call before each write transaction of the job but the first."""
        if self.pausing and time.monotonic() - self.since >= _TURN_S:
            time.sleep(_PAUSE_S)
            self.since = time.monotonic()


def driver_error(error: DBAPIError) -> str:
    """The first line of what the database driver said (SQLAlchemy's wrapper adds the
    statement and a link on further lines)."""
    return str(error.orig or error).strip().splitlines()[0]


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid URL>"


SchemaUse = Literal["check", "create", "upgrade"]


def open_store(url: str, *, schema: SchemaUse = "create") -> Store:
    """Open the store; errors name the database, not a traceback. ``schema``: what is
    done about its schema (``reminder.store.migrate``): ``check`` it is at this
    version's head (a SQLite file that does not exist is not created), ``create`` it
    if the store has none, or ``upgrade`` it (`reminder db upgrade`)."""
    from reminder.store import migrate  # noqa: PLC0415 - alembic only when opening

    where = describe(url)
    if schema == "check" and sqlite_file_missing(url):
        raise migrate.refusal(where, None)
    store = Store(url)
    try:
        if schema == "check":
            migrate.check(store.engine, where)
            store.found_revision = migrate.SCHEMA_HEAD
        else:
            store.found_revision = migrate.upgrade(
                store.engine, store._writer, where, create_only=schema == "create"
            )
    except (OperationalError, DatabaseError) as exc:
        store.dispose()
        reason = str(exc.orig) if exc.orig is not None else str(exc)
        raise StoreError(f"{where}: cannot open the store: {reason}") from None
    except BaseException:
        store.dispose()
        raise
    return store


def insert_new(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Insert the rows whose ``key`` is new (``ON CONFLICT (key) DO NOTHING``, on SQLite
    and PostgreSQL alike; of rows with one key, the first); returns the keys inserted.

    On SQLite the keys already stored are looked up first and the new rows go through
    ``execute_many`` (SQLAlchemy's own processing of each row's parameters cost more
    than the insert: 20,000 letters of a catch-up spent seconds there). The caller's
    transaction holds SQLite's write lock (``Store.write``: BEGIN IMMEDIATE), so no
    other writer adds a key between the look-up and the insert. PostgreSQL, where
    daemons write side by side, keeps ``RETURNING``: only what the insert says it
    inserted counts as new."""
    if not rows:
        return []
    connection = session.connection()
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["key"], row)
    statement: Any
    if connection.dialect.name == "postgresql":
        # imported here: the package loads every PostgreSQL driver's module
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        statement = pg_insert(table).on_conflict_do_nothing(index_elements=["key"])
        result = connection.execute(statement.returning(table.c.key), list(unique.values()))
        return [row.key for row in result]
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

    keys = list(unique)
    stored: set[str] = set()
    for start in range(0, len(keys), _IN_LIMIT):
        found = select(table.c.key).where(table.c.key.in_(keys[start : start + _IN_LIMIT]))
        stored.update(connection.execute(found).scalars())
    new = [row for key, row in unique.items() if key not in stored]
    if not new:
        return []
    names = list(new[0])
    # the columns the rows leave out get their scalar defaults, as SQLAlchemy fills them
    defaults = {
        column.name: column.default.arg
        for column in table.c
        if column.name not in names and isinstance(column.default, ScalarElementColumnDefault)
    }
    statement = (
        sqlite_insert(table)
        .values({name: bindparam(name) for name in [*names, *defaults]})
        .on_conflict_do_nothing(index_elements=["key"])
    )
    execute_many(connection, statement, [row | defaults for row in new] if defaults else new)
    return [row["key"] for row in new]


def execute_many(connection: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Run an INSERT or UPDATE whose values are ``bindparam``s once per row, through the
    driver's own ``executemany``.

    SQLAlchemy builds and type-processes each row's parameters in Python, which costs
    more than SQLite's insert itself (an import writes ~150,000 task_unit rows); here the
    statement is compiled once, each column's bind processor looked up once, and the
    rows handed to the driver as they are. ``statement`` names every parameter (no
    defaults are filled in), each key of the rows being a column of the table or a
    ``b_``-prefixed key (a WHERE clause's value, not processed). An INSERT on PostgreSQL
    goes through COPY (``_copy``).
    """
    if not rows:
        return
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect)
    columns = statement.table.c
    names = list(compiled.positiontup or []) if compiled.positional else list(rows[0])
    # (index, processor, its results so far: the same moments recur)
    processors: list[tuple[int, Any, dict[Any, Any]]] = []
    for index, name in enumerate(names):
        if name in columns:
            processor = columns[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors.append((index, processor, {}))
    params: list[Any] = []
    for row in rows:
        values = [row[name] for name in names]
        for index, processor, seen in processors:
            value = values[index]
            if value is None or isinstance(value, dt.date):  # hashable, and repeated
                if value not in seen:
                    seen[value] = processor(value)
                values[index] = seen[value]
            else:
                values[index] = processor(value)
        params.append(
            tuple(values) if compiled.positional else dict(zip(names, values, strict=True))
        )
    if dialect.name == "postgresql" and statement.is_insert:
        _copy(connection, statement.table, names, params)
    else:
        connection.exec_driver_sql(str(compiled), params)


def _copy(connection: Connection, table: Table, names: list[str], params: list[Any]) -> None:
    """New rows through PostgreSQL's COPY, in order (their ids follow it, as they follow
    the rows of an executemany): psycopg's executemany sends one INSERT a row, and a
    million rows took a minute that way."""
    quote = connection.dialect.identifier_preparer
    columns = ", ".join(quote.quote(table.c[name].name) for name in names)
    cursor = connection.connection.cursor()
    try:
        with cursor.copy(f"COPY {quote.format_table(table)} ({columns}) FROM STDIN") as copy:
            for row in params:
                copy.write_row([row[name] for name in names])
    finally:
        cursor.close()


def execute_chunks(
    connection: Connection, statement: Any, rows: Iterable[dict[str, Any]], size: int = 0
) -> None:
    """``execute_many`` of ``rows`` (an iterable, maybe a generator), ``size`` rows at a
    time (``CHUNK_ROWS`` by default): the parameters of one chunk at most are in memory
    (an import writes up to a million task_unit rows; all of their parameters at once
    took more memory than the rest of the import)."""
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size or CHUNK_ROWS)):
        execute_many(connection, statement, chunk)


def fetch_columns(connection: Connection, statement: Any) -> list[list[Any]]:
    """The values of a SELECT whose only parameters are integers or lists of integers,
    column by column (one list per selected column, in order), each column's value
    converted once per distinct value (JSON excepted).

    SQLAlchemy converts every value of every row; a replanning reads ~150,000 task_unit
    rows of six time columns each, whose values are mostly NULL or a few moments. Here
    each column is converted as a whole: its distinct values once, then a lookup.
    """
    dialect = connection.dialect
    params = statement.compile(dialect=dialect).params.values()
    assert all(_is_ids(value) for value in params), "fetch_columns takes integers only"
    # integers (``task_id IN (…)`` of a batch) written into the statement: safe as text
    compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    columns = list(statement.selected_columns)
    cursor = connection.connection.cursor()  # the driver's: rows as plain tuples
    try:
        cursor.execute(str(compiled))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    values: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)] or [
        [] for _ in columns
    ]
    for index, column in enumerate(columns):
        processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if processor is None:
            continue
        if isinstance(column.type, JSON):  # a list or dict that rows must not share
            values[index] = list(map(processor, values[index]))
        else:
            converted = {value: processor(value) for value in set(values[index])}
            values[index] = list(map(converted.__getitem__, values[index]))
    return values


def _is_ids(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(type(item) is int for item in value)
    return type(value) is int


def fetch_all(connection: Connection, statement: Any) -> list[Any]:
    """The rows of a SELECT as named tuples (see ``fetch_columns``)."""
    names = [column.key for column in statement.selected_columns]
    Row = collections.namedtuple("Row", names)  # type: ignore[misc]
    return list(map(Row, *fetch_columns(connection, statement)))


def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names an SQLite file that does not exist yet (opening the store
    would create it, and its -wal and -shm files)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return False
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return False
    return not Path(database).expanduser().exists()
