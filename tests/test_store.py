"""The store: SQLite pragmas and locking, aware UTC times, migrations, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import StatementError
from sqlmodel import SQLModel, col, select

from reminder.errors import StoreError
from reminder.store import db
from reminder.store.db import open_store
from reminder.store.models import EventRow, MetaRow
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
    for schema in ("check", "create", "upgrade"):
        with pytest.raises(StoreError, match="at revision 9999, newer than this version knows"):
            open_store(url, schema=schema)


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
    open_store(url, schema="upgrade").dispose()
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        assert con.execute("SELECT unit, is_target, next_at FROM task_unit").fetchall() == [
            ("环境保护局", 1, None)
        ]
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_letters_migration_moves_each_reminder_into_an_item(
    backend: str, isolated_env: Path, request: pytest.FixtureRequest
) -> None:
    """0004: the per-task messages of the outbox become items, waiting ones to be put in
    letters; escalation copies still waiting go (escalations are in the digest)."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from reminder.store.migrate import alembic_config

    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    config = alembic_config()
    when = "2018-10-08 01:00:00"
    outbox = [
        # key, kind, channel, status, task
        ("overdue:1:甲局:email:a@x.org:2018-10-08", "overdue", "email", "pending", 1),
        ("overdue:1:甲局:email:a@x.org:2018-10-01", "overdue", "email", "sent", 1),
        ("overdue:1:甲局:email:a@x.org:2018-09-28", "overdue", "email", "sent", 1),
        ("upcoming:1:甲局:email:a@x.org:2018-09-20", "upcoming", "email", "superseded", 1),
        ("overdue:1:乙局:none::2018-10-08", "overdue", "none", "dead", 1),
        ("escalation:1:甲局:email:d@x.org:2018-10-08", "escalation", "email", "retry", 1),
        ("escalation:1:甲局:email:d@x.org:2018-10-01", "escalation", "email", "sent", 1),
        ("agenda:None:甲局:email:a@x.org:2018-10-08", "agenda", "email", "pending", None),
        ("digest:None:督查室:email:d@x.org:2018-10-08", "digest", "email", "sent", None),
    ]
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            text(
                "INSERT INTO task (id, no, section_no, text, deadline_raw, deadline_kind,"
                " milestones, remarks, source_line, status, created_at, updated_at) VALUES"
                " (1, 1, 1, '任务', '9月30日', 'date', '[\"2018-09-30\"]', '', 1, 'open', :t, :t)"
            ),
            {"t": when},
        )
        for unit in ("甲局", "乙局"):
            connection.execute(
                text(
                    "INSERT INTO task_unit (task_id, unit, role, kind, raw, position, done_note,"
                    " is_target) VALUES (1, :u, 'lead', 'unit', :u, 0, '', true)"
                ),
                {"u": unit},
            )
        for n, (key, kind, channel, status, task) in enumerate(outbox, start=1):
            connection.execute(
                text(
                    "INSERT INTO outbox (id, key, kind, task_id, task_no, unit, role, channel,"
                    " recipient, recipient_name, scheduled_for, status, payload, created_at,"
                    " next_attempt_at, attempts, last_error, last_result) VALUES (:id, :key,"
                    " :kind, :task, :task, :unit, 'lead', :channel, :to, :name, :t, :status,"
                    " :payload, :t, :t, 0, '', '')"
                ),
                {
                    "id": n,
                    "key": key,
                    "kind": kind,
                    "task": task,
                    "unit": key.split(":")[2],
                    "channel": channel,
                    "to": key.split(":")[4],
                    "name": key.split(":")[2],
                    "t": when,
                    "status": status,
                    "payload": json.dumps({"day": key.rsplit(":", 1)[1], "via": None}),
                },
            )
        connection.execute(
            text(
                "INSERT INTO attempt (outbox_id, at, outcome, code, detail)"
                " VALUES (1, :t, 'retry', 451, 'later'), (6, :t, 'retry', 451, 'later')"
            ),
            {"t": when},
        )
    engine.dispose()
    open_store(url, schema="upgrade").dispose()
    engine = create_engine(url)
    with engine.connect() as connection:
        items = {
            key: (status, day.isoformat() if hasattr(day, "isoformat") else day)
            for key, status, day in connection.execute(text("SELECT key, status, day FROM item"))
        }
        left: dict[str, str] = dict(
            connection.execute(text("SELECT key, status FROM outbox")).all()
        )
        attempts = connection.execute(text("SELECT outbox_id FROM attempt")).scalars().all()
        counters = connection.execute(
            text("SELECT unit, reminded, last_reminded_at IS NOT NULL FROM task_unit ORDER BY unit")
        ).all()
    engine.dispose()
    assert items == {
        "overdue:1:甲局:email:a@x.org:2018-10-08": ("pending", "2018-10-08"),
        "overdue:1:甲局:email:a@x.org:2018-10-01": ("sent", "2018-10-01"),
        "overdue:1:甲局:email:a@x.org:2018-09-28": ("sent", "2018-09-28"),
        "upcoming:1:甲局:email:a@x.org:2018-09-20": ("superseded", "2018-09-20"),
        "overdue:1:乙局:none::2018-10-08": ("unreachable", "2018-10-08"),
    }
    assert left == {
        "escalation:1:甲局:email:d@x.org:2018-10-01": "sent",
        "agenda:None:甲局:email:a@x.org:2018-10-08": "superseded",
        "digest:None:督查室:email:d@x.org:2018-10-08": "sent",
    }
    assert attempts == []  # those of messages that are gone go with them
    assert [tuple(row) for row in counters] == [("乙局", 0, False), ("甲局", 2, True)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_writers_setting_a_new_meta_key_side_by_side_both_succeed(
    backend: str, isolated_env: Path, request: pytest.FixtureRequest
) -> None:
    """As the first ticks of daemons started together on a new store: both write the last
    tick; the second waits for the first's commit and then overwrites it (a read, then
    an insert, failed it with a unique violation on PostgreSQL)."""
    from reminder.store.meta import LAST_TICK, last_tick, put_meta

    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    store = open_store(url)
    first_wrote = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            first_wrote.wait(10)
            with store.write() as session:
                put_meta(session, LAST_TICK, '{"by": "second"}')
        except BaseException as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    with store.write() as session:
        assert session.get(MetaRow, LAST_TICK) is None  # new: both would insert
        put_meta(session, LAST_TICK, '{"by": "first"}')
        first_wrote.set()
        time.sleep(0.3)  # the second waits for this commit meanwhile
    thread.join(15)
    assert not errors, errors
    with store.read() as session:
        assert last_tick(session) == {"by": "second"}
    store.dispose()


def test_a_long_job_lets_a_waiting_writer_in(isolated_env: Path, cli: Cli) -> None:
    """A job of short write transactions one after another (a catch-up's batches) for
    up to 4 s, taking ``turns`` between them, and a `reminder done` that asks for the
    lock while the job holds it and waits up to 2 s: it gets in (without the pauses
    SQLite gives the lock back to the job nearly every time: bench.catch_up)."""
    assert cli("import", str(SEED)).code == 0
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    outcome: list[str] = []

    def writer() -> None:
        connection = sqlite3.connect(isolated_env / "ledger.db", timeout=2)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            outcome.append("in")
        except sqlite3.OperationalError as error:
            outcome.append(str(error))
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    turns = store.turns()
    end = time.monotonic() + 4
    while time.monotonic() < end and not outcome:  # until the writer got in or gave up
        turns.before_write()
        with store.write() as session:
            session.exec(text("UPDATE meta SET value = value WHERE key = 'none'"))  # type: ignore[call-overload]
            time.sleep(0.03)  # the transaction's work
            if not outcome and not thread.is_alive():
                thread.start()  # it asks while the job holds the lock
    thread.join()
    store.dispose()
    assert outcome == ["in"]


@pytest.mark.parametrize(
    ("work", "count", "expected"),
    [(0.3, 13, [1.2, 2.52, 3.84]), (1.5, 4, [1.5, 3.12, 4.74])],
    ids=["short-transactions", "long-transactions"],
)
def test_a_long_job_pauses_after_each_second_of_writes(
    monkeypatch: pytest.MonkeyPatch, work: float, count: int, expected: list[float]
) -> None:
    """``Turns`` on a clock of its own (the one seam faked): a job of ``count``
    transactions of ``work`` seconds each pauses 0.12 s before the first transaction
    that would begin a second or more after its start or its last pause (after each
    one, when each takes longer than that); the first never waits, and on PostgreSQL
    nothing pauses."""
    clock = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(clock[0])
        clock[0] += seconds

    monkeypatch.setattr(db, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep))
    paused = {}  # pauses per job
    for name, job in (("sqlite", db.Turns(pausing=True)), ("postgres", db.Turns(pausing=False))):
        clock[0] = job.since = 0.0
        before = len(pauses)
        for number in range(count):
            if number:
                job.before_write()
            clock[0] += work  # the transaction
        paused[name] = len(pauses) - before
    assert pauses == pytest.approx(expected)
    assert (paused["sqlite"], paused["postgres"]) == (3, 0)
