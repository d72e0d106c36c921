"""`reminder import`, `tasks` and re-import through the CLI, on a real SQLite file."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, create_engine, select

from reminder.contacts import load_contacts
from reminder.ledger import read_ledger
from reminder.rules import Rules
from reminder.settings import load_config
from reminder.store import tasks as tasks_module
from reminder.store.db import open_store
from reminder.store.importer import import_ledger
from reminder.store.models import SectionRow, TaskRow, TaskUnitRow
from reminder.store.targets import replan_all
from reminder.store.tasks import load_ledger, task_batches
from tests.conftest import SEED, Cli

SUMMARY = [
    "99 tasks in 8 sections, 49 units",
    "deadlines: date 47, window 10, from 2, season 4, all_year 36",
    "unreadable deadlines: none",
    "units without contacts: none",
]


def tasks_json(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("tasks", "--json", *args)
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def by_no(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {task["no"]: task for task in data["tasks"]}


def test_import_prints_the_summary(cli: Cli, isolated_env: Path) -> None:
    result = cli("import", str(SEED))
    assert result.code == 0, result.err
    for line in SUMMARY:
        assert line in result.out
    assert "first import, 99 tasks added" in result.out
    assert "济源市2018年大气污染防治攻坚战任务分解台账 — year 2018" in result.out
    assert (isolated_env / "ledger.db").exists()


def test_tasks_json_contract(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    data = tasks_json(cli)
    assert data["title"] == "济源市2018年大气污染防治攻坚战任务分解台账"
    assert data["year"] == 2018
    assert len(data["tasks"]) == 99
    first = data["tasks"][0]
    assert set(first) == {"no", "section", "text", "units", "deadline", "status"}
    assert first["section"] == "加快调整能源消费结构"
    # each unit's own part: open | reported | done (and its own due after an extension)
    assert first["units"][0] == {
        "name": "住房和城乡建设局",
        "role": "lead",
        "kind": "unit",
        "status": "open",
    }
    assert {"kind", "raw", "start", "due", "milestones"} <= set(first["deadline"])
    assert first["status"] == "open"
    tasks = by_no(data)
    assert tasks[1]["deadline"] | {} == tasks[1]["deadline"]
    assert (tasks[1]["deadline"]["kind"], tasks[1]["deadline"]["due"]) == ("date", "2018-01-31")
    window = tasks[15]["deadline"]
    assert (window["kind"], window["start"], window["due"]) == (
        "window",
        "2018-09-01",
        "2018-10-31",
    )
    season = tasks[83]["deadline"]
    assert (season["kind"], season["start"], season["due"]) == (
        "season",
        "2018-11-15",
        "2019-03-15",
    )
    from_ = tasks[39]["deadline"]
    assert (from_["kind"], from_["start"], from_["due"]) == ("from", "2018-07-01", None)
    assert tasks[6]["deadline"] == {
        "kind": "all_year",
        "raw": "全年",
        "start": "2018-01-01",
        "due": "2018-12-31",
        "milestones": ["2018-12-31"],
        "recurrence": None,
        "action": None,
    }
    assert [u["name"] for u in tasks[40]["units"]] == [
        "环境保护局", "商务局", "质量技术监督局", "交通运输局", "公安局",
    ]  # fmt: skip


def test_tasks_json_is_written_a_task_at_a_time_as_json_dumps_writes_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    for args in [(), ("--section", "3"), ("--status", "done")]:  # many, some, none
        out = cli("tasks", "--json", *args).out
        assert out == json.dumps(json.loads(out), ensure_ascii=False, indent=2) + "\n", args
    assert json.loads(cli("tasks", "--json", "--status", "done").out)["tasks"] == []
    # read in batches, the ledger's order and content are kept across their edges
    store = open_store(load_config().settings.db)
    try:
        with store.read() as session:
            ledger = load_ledger(session)
            batches = list(task_batches(session, size=7))
            # batches of about 40 rows: as many tasks as come to that, at most 7
            monkeypatch.setattr(tasks_module, "BATCH_ROWS", 40)
            by_rows = list(task_batches(session, size=7))
    finally:
        store.dispose()
    assert ledger is not None and len(batches) == 15
    assert [t for batch in batches for t in batch] == list(ledger.tasks)
    assert [t for batch in by_rows for t in batch] == list(ledger.tasks)
    sizes = {len(batch) for batch in by_rows[1:-1]}
    assert max(sizes) <= 7 and min(sizes) < 7 and len(by_rows) > 15


def test_tasks_filters(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    section = tasks_json(cli, "--section", "三")
    assert [t["no"] for t in section["tasks"]] == list(range(27, 47))
    assert tasks_json(cli, "--section", "扬尘")["tasks"][0]["no"] == 64
    # a town sees the tasks of the group 镇人民政府 it belongs to
    town = tasks_json(cli, "--unit", "克井镇")
    assert 12 in [t["no"] for t in town["tasks"]]
    assert all(any(u["name"] == "镇人民政府" for u in t["units"]) for t in town["tasks"])
    alias = tasks_json(cli, "--unit", "住建局")
    assert len(alias["tasks"]) == 28
    assert tasks_json(cli, "--status", "done")["tasks"] == []
    unknown = cli("tasks", "--unit", "火星局")
    assert unknown.code == 2
    assert "火星局" in unknown.err


def test_tasks_table_and_summary(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    table = cli("tasks")
    assert table.code == 0
    assert "开辟供暖设施审批绿色通道" in table.out
    assert "采暖季 [11-15→03-15]" in table.out
    summary = cli("tasks", "--summary")
    for line in SUMMARY:
        assert line in summary.out


def revise(seed: Path, target: Path) -> Path:
    """The seed as a revised ledger: one task edited, one removed, one added, one re-dated."""
    text = seed.read_text(encoding="utf-8")
    text = text.replace("摸清我市工业余热现状。", "摸清并上报我市工业余热现状。")
    head, _, _ = text.partition("\t99\n")
    text = head + "\t99\n\t新增任务：建立大气污染防治考核通报制度。\n\t环境保护局\n\t6月30日\n\t\n"
    text = text.replace("\t3月31日\n\t\n\n\t6\n", "\t4月30日\n\t\n\n\t6\n")
    target.write_text(text, encoding="utf-8")
    return target


def mark_done(db: Path, numbers: list[int]) -> None:
    engine = create_engine(f"sqlite:///{db}")
    with Session(engine) as session:
        for row in session.exec(select(TaskRow).where(TaskRow.no.in_(numbers))):  # type: ignore[attr-defined]
            row.status = "done"
            session.add(row)
        session.commit()
    engine.dispose()


def test_reimport_keeps_status_and_reports_changes(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    mark_done(isolated_env / "ledger.db", [1, 3, 5, 99])
    revised = revise(SEED, isolated_env / "revised.txt")
    result = cli("import", str(revised))
    assert result.code == 0, result.err
    assert "changes: 1 added, 1 removed, 2 changed, 3 done tasks kept done" in result.out
    assert "+ 99 新增任务：建立大气污染防治考核通报制度。" in result.out
    assert "- 99 按照国家《大气污染防治“十三五”规划》要求" in result.out
    assert "~ 3: text changed" in result.out
    assert "~ 5: deadline '3月31日' → '4月30日'" in result.out
    tasks = by_no(tasks_json(cli))
    assert [n for n, t in tasks.items() if t["status"] == "done"] == [1, 3, 5]
    assert tasks[5]["deadline"]["due"] == "2018-04-30"
    assert tasks[99]["status"] == "open"
    assert tasks[99]["text"].startswith("新增任务")
    # the removed task stays in the store for its history, no longer in the ledger
    with sqlite3.connect(isolated_env / "ledger.db") as db:
        removed = db.execute(
            "SELECT no, removed_at IS NOT NULL FROM task WHERE text LIKE '按照国家《大气%'"
        )
        assert removed.fetchall() == [(99, 1)]


def test_reimport_of_the_same_ledger_changes_nothing(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    before = tasks_json(cli)
    result = cli("import", str(SEED))
    assert "changes: 0 added, 0 removed, 0 changed" in result.out
    assert tasks_json(cli) == before


def test_renumbered_tasks_keep_their_status(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    mark_done(isolated_env / "ledger.db", [2])
    text = SEED.read_text(encoding="utf-8")
    # swap the numbers of tasks 2 and 3
    text = (
        text.replace("\t2\n\t加快推进现有", "\tX\n\t加快推进现有")
        .replace("\t3\n\t开展工业余热", "\t2\n\t开展工业余热")
        .replace("\tX\n\t加快推进现有", "\t3\n\t加快推进现有")
    )
    swapped = isolated_env / "swapped.txt"
    swapped.write_text(text, encoding="utf-8")
    result = cli("import", str(swapped))
    assert result.code == 0, result.err
    assert "~ 3: renumbered from 2" in result.out
    tasks = by_no(tasks_json(cli))
    assert tasks[3]["status"] == "done"
    assert tasks[3]["text"].startswith("加快推进现有")
    assert tasks[2]["status"] == "open"


def test_reimport_keeps_each_units_completion(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE task_unit SET done_at = '2018-03-01 02:00:00.000000', done_note = 'ok' "
            "WHERE unit = '国土资源局' AND task_id = (SELECT id FROM task WHERE no = 2)"
        )
    assert cli("import", str(revise(SEED, isolated_env / "revised.txt"))).code == 0
    engine = create_engine(f"sqlite:///{db}")
    with Session(engine) as session:
        row = session.exec(
            select(TaskUnitRow).where(
                TaskUnitRow.unit == "国土资源局", TaskUnitRow.done_note == "ok"
            )
        ).one()
        assert row.done_at is not None
    engine.dispose()


def test_dry_run_writes_nothing(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    before = dump(isolated_env / "ledger.db")
    result = cli("import", "--dry-run", str(revise(SEED, isolated_env / "revised.txt")))
    assert result.code == 0
    assert "1 added, 1 removed" in result.out
    assert "dry run" in result.out
    assert dump(isolated_env / "ledger.db") == before


def dump(db: Path) -> list[str]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


# --- the store's rows after an import, whatever the backend and however it is written ---

# When the import was made set-based, the rows it leaves had to stay exactly those of the
# row-by-row version: this is the digest of `store_rows` after `import_and_revise`, taken
# with that version (commit e654e8e), on SQLite and on PostgreSQL alike.
ROWS_AFTER_REVISION = "7745436b4aefece07bf42968eebd436029fb36e6e6336acf6a27fcd8edef90f9"


def revise_more(seed: Path, target: Path) -> Path:
    """``revise``, with tasks 2 and 3 swapping numbers, task 12 listing a town of a
    group it no longer lists, and task 2 a group it did not list."""
    revise(seed, target)
    text = target.read_text(encoding="utf-8")
    text = (
        text.replace("\t2\n\t加快推进现有", "\tX\n\t加快推进现有")
        .replace("\t3\n\t开展工业余热", "\t2\n\t开展工业余热")
        .replace("\tX\n\t加快推进现有", "\t3\n\t加快推进现有")
        .replace(
            "济源供电公司，各镇人民政府、街道办事处\n", "济源供电公司，克井镇、街道办事处\n", 1
        )
        .replace(
            "\t发展和改革委员会、国土资源局\n", "\t发展和改革委员会、国土资源局、各镇人民政府\n", 1
        )
    )
    target.write_text(text, encoding="utf-8")
    return target


def import_and_revise(cli: Cli, folder: Path) -> None:
    """The seed, some parts done, then a revised ledger over it."""
    assert cli("import", str(SEED)).code == 0
    for args in (["1"], ["99"], ["2", "--unit", "国土资源局"], ["12", "--unit", "克井镇"]):
        result = cli("done", *args)
        assert result.code == 0, result.err
    result = cli("import", str(revise_more(SEED, folder / "revised.txt")))
    assert result.code == 0, result.err
    assert "changes: 2 added, 2 removed, 3 changed, 1 done tasks kept done" in result.out


# columns whose value is the moment of a command: compared as set or not
MOMENTS = {"created_at", "updated_at", "removed_at", "done_at", "at"}


def store_rows(url: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every row of the ledger's tables, by id, values as JSON would write them."""
    engine = create_engine(url)
    tables = [TaskRow.__table__, TaskUnitRow.__table__, SectionRow.__table__]  # type: ignore[attr-defined]
    found: list[tuple[str, list[dict[str, Any]]]] = []
    with engine.connect() as connection:
        for table in tables:
            rows = connection.execute(table.select().order_by(*table.primary_key.columns))
            found.append(
                (table.name, [{k: _plain(k, v) for k, v in row._mapping.items()} for row in rows])
            )
    engine.dispose()
    return found


def _plain(name: str, value: Any) -> Any:
    if name in MOMENTS:
        return value is not None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def rows_digest(url: str) -> str:
    text = json.dumps(store_rows(url), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def test_rows_after_a_revision_on_sqlite(cli: Cli, isolated_env: Path) -> None:
    import_and_revise(cli, isolated_env)
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    tables = dict(store_rows(url))
    town = [r for r in tables["task_unit"] if r["unit"] == "克井镇人民政府" and r["task_id"] == 12]
    assert [(r["via"], r["position"], r["done_at"]) for r in town] == [(None, 6, True)]
    assert rows_digest(url) == ROWS_AFTER_REVISION


@pytest.mark.postgres
def test_rows_after_a_revision_on_postgresql(
    cli: Cli, isolated_env: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMINDER_DB", pg_url)
    import_and_revise(cli, isolated_env)
    assert rows_digest(pg_url) == ROWS_AFTER_REVISION


def test_import_without_planning_then_replan_all_leaves_the_same_rows(
    cli: Cli, isolated_env: Path
) -> None:
    """The library path (tests, benches): ``import_ledger`` without planning, then
    ``replan_all``, as the command did before it replanned in the same pass."""
    import_and_revise(cli, isolated_env)
    expected = rows_digest(f"sqlite:///{isolated_env / 'ledger.db'}")
    (isolated_env / "ledger.db").unlink()
    config = load_config()
    contacts = load_contacts(config.contacts_path)
    planning = Rules(config.settings.policy, config.calendar(), config.settings.zone, contacts)
    store = open_store(config.settings.db)
    now = dt.datetime(2018, 3, 1, 2, 0, tzinfo=dt.UTC)
    for path in (SEED, isolated_env / "revised.txt"):
        with store.write() as session:
            import_ledger(session, read_ledger(path, contacts.directory), "", now, "test")
            replan_all(session, planning)
        if path == SEED:
            for args in (["1"], ["99"], ["2", "--unit", "国土资源局"], ["12", "--unit", "克井镇"]):
                assert cli("done", *args).code == 0
    store.dispose()
    assert rows_digest(f"sqlite:///{isolated_env / 'ledger.db'}") == expected
