"""``unit_tally``, kept by the database's triggers, always holds what a count over the
task × unit rows finds, whoever writes them: an import, a re-import that changes,
removes and brings back tasks, `done` and `reopen` on a task or a unit, answers and
hand-written SQL (done, reported, extended, moved, untargeted, deleted rows)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select, text

from reminder.settings import load_config
from reminder.store import bulk
from reminder.store.db import open_store
from reminder.store.models import NO_DUE, TASKS_DUE, TaskRow, TaskUnitRow, UnitTallyRow
from tests.conftest import SEED, Cli, downgrade
from tests.ledger_files import seed_rows, write_text

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
_TALLY = UnitTallyRow.__table__  # type: ignore[attr-defined]

Key = tuple[Any, ...]


def _key(row: Any) -> Key:
    """A tally key as plain values (SQLite gives 0/1 for booleans, PostgreSQL bools)."""
    no, kind, due, status, unit, role, done, reported, own = row
    return (int(no), kind, due, status, unit, role, bool(done), bool(reported), own)


def _recounted(connection: Connection) -> dict[Key, int]:
    """The tally counted now from the rows themselves."""
    key = (
        _T.c.section_no,
        _T.c.deadline_kind,
        func.coalesce(_T.c.deadline_due, NO_DUE),
        _T.c.status,
        _U.c.unit,
        _U.c.role,
        _U.c.done_at.is_not(None),
        _U.c.reported_at.is_not(None),
        func.coalesce(_U.c.due, TASKS_DUE),
    )
    query = (
        select(*key, func.count())
        .select_from(_U.join(_T, _T.c.id == _U.c.task_id))
        .where(_U.c.is_target.is_(True), _T.c.removed_at.is_(None))
        .group_by(*key)
    )
    found: dict[Key, int] = {}
    for *values, n in connection.execute(query):
        found[_key(tuple(values))] = int(n)
    return found


def _kept(connection: Connection) -> dict[Key, int]:
    rows = connection.execute(select(_TALLY)).all()
    assert all(row.n >= 0 for row in rows), "a count below zero: a row subtracted twice"
    return {_key(tuple(row)[:-1]): int(row.n) for row in rows if row.n}


def _check(step: str) -> int:
    store = open_store(load_config().settings.db)
    try:
        with store.engine.connect() as connection:
            recounted, kept = _recounted(connection), _kept(connection)
    finally:
        store.dispose()
    assert kept == recounted, step
    assert _triggers() == 4, step
    return sum(recounted.values())


_TRIGGERS = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
    " AND name LIKE 'unit_tally%'",
    "postgresql": "SELECT count(*) FROM pg_trigger JOIN pg_class ON pg_class.oid = tgrelid"
    " WHERE relnamespace = current_schema()::regnamespace AND tgname LIKE 'unit_tally%'",
}


def _triggers() -> int:
    """The tally's triggers in the store (a large import on SQLite drops them a while)."""
    store = open_store(load_config().settings.db)
    try:
        with store.engine.connect() as connection:
            query = text(_TRIGGERS[connection.dialect.name])
            return int(connection.execute(query).scalar() or 0)
    finally:
        store.dispose()


def _sql(*statements: str) -> None:
    store = open_store(load_config().settings.db)
    try:
        with store.write() as session:
            for statement in statements:
                session.connection().execute(text(statement))
    finally:
        store.dispose()


def _revised(folder: Path) -> Path:
    """The seed with every tenth task gone, every seventh due on 6月30日, every fifth
    with 公安局 added and every sixth without its last unit."""
    title, rows = seed_rows(SEED)
    out = [rows[0]]
    for cells in rows[1:]:
        if len(cells) < 5 or not cells[0].isdigit():
            out.append(cells)
            continue
        no, task, units, deadline, remarks = cells
        n = int(no)
        if n % 10 == 0:
            continue
        if n % 7 == 0:
            deadline = "6月30日"
        if n % 5 == 0:
            units += "、公安局"
        if n % 6 == 0 and "、" in units:
            units = units.rsplit("、", 1)[0]
        out.append((no, task, units, deadline, remarks))
    return write_text(folder / "revised.txt", title, out)


@pytest.mark.parametrize(
    "db",
    [
        "sqlite",
        # every import pauses SQLite's triggers and counts the table again at its end
        "sqlite-rebuilt",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_the_tally_follows_every_write(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db: str,
) -> None:
    if db == "postgres":
        monkeypatch.setenv("REMINDER_DB", request.getfixturevalue("pg_url"))
    if db == "sqlite-rebuilt":
        monkeypatch.setattr(bulk, "BULK_ROWS", 0)
    assert cli("import", str(SEED)).code == 0
    rows = _check("import")
    assert rows > 1000  # the seed's target rows, each counted

    for args in (("done", "3"), ("done", "5", "--unit", "国土资源局"), ("done", "41")):
        assert cli(*args).code == 0, args
    assert cli("reopen", "41").code == 0
    _check("done and reopen")

    _sql(
        "UPDATE task_unit SET done_at = '2018-03-01 02:00:00' WHERE id % 7 = 0",
        "UPDATE task_unit SET reported_at = '2018-04-02 02:00:00' WHERE id % 11 = 0",
        "UPDATE task_unit SET due = '2018-09-12' WHERE id % 13 = 0",
        "UPDATE task_unit SET role = 'lead' WHERE id % 17 = 0",
        "UPDATE task_unit SET is_target = false WHERE id % 19 = 0",
        "UPDATE task_unit SET unit = unit || '（改）' WHERE id % 23 = 0",
        "UPDATE task_unit SET next_at = NULL, reminded = reminded + 1",  # not counted
        "UPDATE task SET deadline_due = NULL WHERE no % 29 = 0",
        "UPDATE task SET section_no = 1 WHERE no % 31 = 0",
    )
    _check("hand-written updates")

    assert cli("import", str(_revised(tmp_path))).code == 0
    changed = _check("a re-import that removes, moves and changes")
    assert changed != rows
    assert cli("import", str(SEED)).code == 0
    _check("the removed tasks back")

    _sql(
        "UPDATE task SET status = 'done', done_at = '2018-05-01 02:00:00' WHERE no % 4 = 0",
        "UPDATE task SET removed_at = '2018-05-01 02:00:00' WHERE no = 2",
    )
    _check("tasks done and removed by hand")
    _sql("DELETE FROM task_unit WHERE id % 37 = 0")
    assert _check("rows deleted") < rows


def test_a_store_of_revision_0005_gets_its_tally_when_upgraded(cli: Cli) -> None:
    """The migration counts the rows already there, and the triggers go on from it."""
    assert cli("import", str(SEED)).code == 0
    sql = "UPDATE task_unit SET due = '2018-02-01' WHERE id % 3 = 0"
    downgrade(load_config().settings.db, "0005", sql)
    assert cli("done", "7").code == 78  # refused: the schema is behind
    assert cli("db", "upgrade").code == 0
    assert cli("done", "7").code == 0
    _check("upgraded from 0005")
    assert dt.date(2018, 2, 1) in {key[-1] for key in _check_keys()}


def _check_keys() -> list[Key]:
    store = open_store(load_config().settings.db)
    try:
        with store.engine.connect() as connection:
            return list(_kept(connection))
    finally:
        store.dispose()


@pytest.mark.postgres
def test_a_large_import_on_postgresql_leaves_the_planner_its_statistics(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    """Without them (autovacuum off, or not yet round) a digest's query on a million
    rows took 33 s: the import analyzes the tables it wrote."""
    monkeypatch.setenv("REMINDER_DB", pg_url)
    monkeypatch.setattr(bulk, "BULK_ROWS", 100)  # the seed writes more: "large"
    assert cli("import", str(SEED)).code == 0
    store = open_store(load_config().settings.db)
    try:
        with store.engine.connect() as connection:
            known: dict[str, float] = dict(
                connection.execute(
                    text(
                        "SELECT relname, reltuples FROM pg_class WHERE relname IN "
                        "('task', 'task_unit', 'unit_tally')"
                        " AND relnamespace = current_schema()::regnamespace"
                    )
                ).all()
            )
    finally:
        store.dispose()
    # -1: never analyzed; the seed's 99 tasks and their rows once it is
    assert known["task"] == 99 and known["task_unit"] > 1000 and known["unit_tally"] > 0
