"""Alembic, driven from code: the schema is created or upgraded by `reminder db upgrade`.

Commands check the schema and do not change it (``check``): a store behind this
version's head is refused with a one-line message saying to run `reminder db upgrade`,
one ahead of it likewise. Two exceptions create a store that has no schema yet
(``create``, never an upgrade): `reminder import` (the first step on a new machine) and
the tests' own stores. `reminder db upgrade` (``upgrade``) creates or upgrades.

Creating and upgrading run under a lock, so that several hosts starting at once
(each unit's ExecStartPre) never race: on PostgreSQL a transaction-level advisory
lock keyed on the schema's name, on SQLite the database's write lock (``BEGIN
IMMEDIATE``); the revision is read again under the lock, and whoever comes second finds
the work done. The migrations run in that transaction: a failure leaves the old schema.

Alembic costs ~0.1 s to import; ``SCHEMA_HEAD`` lets an up-to-date store skip it (a
test checks it names the newest migration).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from reminder.errors import SchemaError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SCHEMA_HEAD = "0007"
UPGRADE_HINT = "run `reminder db upgrade`"
# PostgreSQL: one lock per schema (each store), held until the transaction ends
PG_LOCK = "SELECT pg_advisory_xact_lock(hashtext('reminder-schema:' || current_schema()))"


def alembic_config() -> Config:
    from alembic.config import Config  # noqa: PLC0415 - see the module docstring

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def revision_of(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return revision_of(connection)


def refusal(where: str, current: str | None) -> SchemaError:
    """Why a command does not use the store at ``current`` (its one-line message)."""
    if current is None:
        missing = SchemaError(f"{where}: no store here yet: {UPGRADE_HINT} (or `reminder import`)")
        missing.missing = True
        return missing
    if current in known_revisions():
        return SchemaError(
            f"{where}: the store's schema is at revision {current}, this version uses "
            f"{SCHEMA_HEAD}: {UPGRADE_HINT}"
        )
    return SchemaError(
        f"{where}: the store's schema is at revision {current}, newer than this version "
        f"knows ({SCHEMA_HEAD}): upgrade reminder"
    )


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def check(engine: Engine, where: str) -> None:
    """The schema is at this version's head, or a ``SchemaError`` says what to do."""
    current = current_revision(engine)
    if current != SCHEMA_HEAD:
        raise refusal(where, current)


def upgrade(engine: Engine, writer: Engine, where: str, *, create_only: bool = False) -> str | None:
    """Bring the schema to the head revision under the lock (see the module docstring);
    ``create_only``: only a store without a schema, one behind is refused. Returns the
    revision it was at (the head: nothing to do; None: created)."""
    current = current_revision(engine)
    if current == SCHEMA_HEAD:
        return current
    from alembic import command  # noqa: PLC0415

    with locked(writer) as connection:
        current = revision_of(connection)  # again: another host may have done it
        if current == SCHEMA_HEAD:
            return current
        if current is not None and (create_only or current not in known_revisions()):
            raise refusal(where, current)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return current


@contextmanager
def locked(writer: Engine) -> Iterator[Connection]:
    """A transaction that holds the schema's lock until it ends."""
    with writer.begin() as connection:  # SQLite: BEGIN IMMEDIATE, the write lock
        if connection.dialect.name == "postgresql":
            connection.execute(text(PG_LOCK))
        yield connection
