"""The store: SQLite pragmas and locking, aware UTC times, migrations, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import StatementError
from sqlmodel import SQLModel, col, select

from reminder.errors import StoreError
from reminder.store.db import open_store
from reminder.store.models import EventRow
from tests.conftest import SEED, Cli


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(isolated_env: Path) -> None:
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    with store.read() as session:
        assert session.exec(text("PRAGMA journal_mode")).one()[0] == "wal"  # type: ignore[call-overload]
        assert session.exec(text("PRAGMA busy_timeout")).one()[0] == 30000  # type: ignore[call-overload]
        assert session.exec(text("PRAGMA foreign_keys")).one()[0] == 1  # type: ignore[call-overload]
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_times_are_aware_utc_on_every_backend(
    backend: str, isolated_env: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    store = open_store(url)
    shanghai = dt.timezone(dt.timedelta(hours=8))
    local = dt.datetime(2018, 10, 8, 9, 0, tzinfo=shanghai)
    with store.write() as session:
        session.add(EventRow(at=local, kind="test"))
    with store.read() as session:
        event = session.exec(select(EventRow).where(col(EventRow.kind) == "test")).one()
    assert event.at == local
    assert event.at.tzinfo == dt.UTC
    assert event.at.hour == 1
    naive = EventRow(at=dt.datetime(2018, 10, 8, 9, 0), kind="naive")
    with store.write() as session:
        session.add(naive)
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()
        session.rollback()
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_exactly_the_models(
    backend: str, isolated_env: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    store = open_store(url)
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    store.dispose()


def test_import_and_tasks_on_postgresql(
    cli: Cli, pg_url: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    on_sqlite = json.loads(cli("tasks", "--json").out)
    monkeypatch.setenv("REMINDER_DB", pg_url)
    result = cli("import", str(SEED))
    assert result.code == 0, result.err
    assert "99 tasks in 8 sections, 49 units" in result.out
    assert json.loads(cli("tasks", "--json").out) == on_sqlite
    again = cli("import", str(SEED))
    assert "changes: 0 added, 0 removed, 0 changed" in again.out


def test_import_waits_for_another_writer(cli: Cli, isolated_env: Path) -> None:
    """A daemon holding the write lock makes the CLI wait (busy timeout), not fail."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    locked = threading.Event()
    release = threading.Event()

    def hold_the_write_lock() -> None:
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO event (at, kind, note, actor) VALUES ('2018-01-01', 'x', '', '')")
        locked.set()
        release.wait(timeout=0.5)  # the CLI import starts and has to wait meanwhile
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(timeout=10)
    result = cli("import", str(SEED))
    release.set()
    holder.join(timeout=10)
    assert result.code == 0, result.err
    with sqlite3.connect(db) as con:
        kinds = [row[0] for row in con.execute("SELECT kind FROM event ORDER BY id")]
    assert kinds == ["import", "x", "import"]


def test_schema_head_names_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    from reminder.store.migrate import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_HEAD


def test_a_store_from_a_newer_program_is_refused(isolated_env: Path) -> None:
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    open_store(url).dispose()
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        con.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="schema revision 9999, newer than this program"):
        open_store(url)


def test_upgrade_keeps_the_data_of_an_older_store(isolated_env: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from reminder.store.migrate import SCHEMA_HEAD, alembic_config

    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    engine = create_engine(url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.exec_driver_sql(
            "INSERT INTO task (id, no, section_no, text, deadline_raw, deadline_kind, milestones,"
            " remarks, source_line, status, created_at, updated_at) VALUES (1, 1, 1, '任务',"
            " '全年', 'all_year', '[]', '', 1, 'open', '2018-01-01', '2018-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO task_unit (task_id, unit, role, kind, raw, position, done_note)"
            " VALUES (1, '环境保护局', 'lead', 'unit', '环境保护局', 0, '')"
        )
    engine.dispose()
    open_store(url).dispose()
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        assert con.execute("SELECT unit, is_target, next_at FROM task_unit").fetchall() == [
            ("环境保护局", 1, None)
        ]
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]
