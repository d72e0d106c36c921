"""Ticks through the real store: plan, enqueue once, done/reopen/progress, simulate."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from bench.import_large import ledger_text
from reminder import letter_round
from reminder.contacts import load_contacts
from reminder.records import StoredLedger
from reminder.rules import Rules
from reminder.settings import load_config
from reminder.store.db import Store, open_store
from reminder.store.tasks import load_ledger
from reminder.tick import TickResult, plan_batch, run_tick
from tests.conftest import SEED, Cli
from tests.test_bad_input import config_copy
from tests.test_import import dump

ZONE = ZoneInfo("Asia/Shanghai")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZONE).astimezone(dt.UTC)


def planning() -> Rules:
    config = load_config()
    contacts = load_contacts(config.contacts_path)
    return Rules(config.settings.policy, config.calendar(), config.settings.zone, contacts)


def tick(store: Store, moment: dt.datetime) -> TickResult:
    return run_tick(store, planning(), load_config().settings, moment)


def plan(cli: Cli, when: str) -> list[dict[str, Any]]:
    result = cli("plan", "--at", when, "--json")
    assert result.code == 0, result.err
    data: list[dict[str, Any]] = json.loads(result.out)
    return data


def items(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT key, status FROM item ORDER BY key").fetchall()


def test_plan_json_contract_on_the_seed(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    before = dump(isolated_env / "ledger.db")
    messages = plan(cli, "2018-10-08 09:00")
    assert dump(isolated_env / "ledger.db") == before  # plan writes nothing
    assert set(messages[0]) == {
        "key",
        "kind",
        "task",
        "unit",
        "role",
        "channel",
        "to",
        "scheduled_for",
        "letter",
        "problem",  # why it cannot go out (no contact, an invalid address), else null
    }
    task8 = [m for m in messages if m["task"] == 8]
    assert sorted((m["kind"], m["channel"], m["to"]) for m in task8) == [
        ("overdue", "email", "hbj@example.org"),
        ("overdue", "sms", "13800000001"),
    ]
    assert task8[0]["scheduled_for"] == "2018-10-08T09:00:00+08:00"
    assert task8[0]["role"] == "lead"
    letters = {m["channel"]: m["letter"] for m in task8}
    assert letters == {
        "email": "letter:环境保护局:email:hbj@example.org:2018-10-08:1",
        "sms": "letter:环境保护局:sms:13800000001:2018-10-08:1",
    }
    # one letter per unit and channel: every item of the unit's e-mail goes in the same one
    hbj = {m["letter"] for m in messages if m["to"] == "hbj@example.org"}
    assert hbj == {letters["email"]}
    assert (
        task8[0]["key"]
        == f"overdue:{task8[0]['key'].split(':')[1]}:环境保护局:email:hbj@example.org:2018-10-08"
    )
    # every key once; nothing for a task that is not due yet (task 95 is due 10-31)
    assert len({m["key"] for m in messages}) == len(messages)
    assert not [m for m in messages if m["task"] == 95]
    # the group 镇人民政府 of task 22 (due 09-30) is expanded to its towns
    towns = {m["unit"] for m in messages if m["task"] == 22 and m["unit"].endswith("镇人民政府")}
    assert len(towns) == 11
    assert plan(cli, "2018-10-08 09:00") == messages  # the same answer twice


def test_escalations_go_in_the_digest_not_in_letters_to_supervisors(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    messages = plan(cli, "2018-10-16 09:00")
    assert messages
    assert not [m for m in messages if m["kind"] == "escalation"]
    supervisors = {
        "市环境污染防治攻坚战领导小组办公室",
        "市燃煤散烧管控办公室",
        "交通运输结构督导组",
    }
    assert not {m["unit"] for m in messages} & supervisors


def test_a_unit_without_contact_is_reported_not_skipped(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    text = contacts.read_text(encoding="utf-8")
    text = text.replace('email = "hbj@example.org"\nmobile = "13800000001"\n', "")
    contacts.write_text(text, encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    assert cli("import", str(SEED)).code == 0
    messages = [m for m in plan(cli, "2018-10-08 09:00") if m["task"] == 8]
    assert [(m["unit"], m["channel"], m["to"], m["letter"]) for m in messages] == [
        ("环境保护局", "none", "", None)
    ]


def test_ticks_enqueue_each_key_once(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    first = tick(store, at("2018-10-08T09:00"))
    assert first.enqueued == len(first.items) + first.superseded > 0
    assert first.letters
    again = tick(store, at("2018-10-08T09:00"))
    assert (again.targets, again.enqueued, again.letters) == (0, 0, [])
    # the clock jumps back two hours: nothing new
    back = tick(store, at("2018-10-08T07:00"))
    assert (back.enqueued, back.letters) == (0, [])
    # forward a day: only what is due that day
    later = tick(store, at("2018-10-09T09:00"))
    rows = items(isolated_env / "ledger.db")
    assert len(rows) == first.enqueued + later.enqueued
    assert len({key for key, _ in rows}) == len(rows)
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        letters = con.execute("SELECT count(*), count(DISTINCT key) FROM outbox").fetchone()
    assert letters[0] == letters[1] == len(first.letters) + len(later.letters)
    store.dispose()


def test_concurrent_ticks_on_postgresql_enqueue_once(
    cli: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMINDER_DB", pg_url)
    assert cli("import", str(SEED)).code == 0
    planner = planning()
    settings = load_config().settings
    stores = [open_store(pg_url) for _ in range(3)]
    results: list[TickResult] = []
    barrier = threading.Barrier(len(stores))

    def one(index: int) -> None:
        barrier.wait(timeout=10)
        results.append(run_tick(stores[index], planner, settings, at("2018-10-16T09:00")))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with stores[0].engine.connect() as connection:
        total, distinct, lettered = connection.exec_driver_sql(
            "SELECT count(*), count(DISTINCT key), count(letter_id) FROM item"
        ).one()
        letters, keys = connection.exec_driver_sql(
            "SELECT count(*), count(DISTINCT key) FROM outbox"
        ).one()
    assert total == distinct == sum(r.enqueued for r in results) > 0
    assert letters == keys == sum(len(r.letters) for r in results) > 0
    # every item that goes out is in exactly one letter
    assert lettered == sum(len(letter.items) for r in results for letter in r.letters)
    for store in stores:
        store.dispose()


def test_done_stops_reminders_and_reopen_resumes_them(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    assert [m for m in plan(cli, "2018-10-08 09:00") if m["task"] == 8]
    result = cli("done", "8", "--note", "已安装监控", "--by", "张三")
    assert result.code == 0
    assert "task 8: done for 环境保护局; task is done" in result.out
    assert not [m for m in plan(cli, "2018-10-08 09:00") if m["task"] == 8]
    assert cli("tasks", "--status", "done", "--json").out.count('"no": 8') == 1
    assert cli("reopen", "8").code == 0
    assert [m for m in plan(cli, "2018-10-08 09:00") if m["task"] == 8]


def test_done_for_one_unit_and_for_a_group(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    assert (
        "task 12: done for 克井镇人民政府; task is open"
        in cli("done", "12", "--unit", "克井镇").out
    )
    units = {m["unit"] for m in plan(cli, "2018-11-01 09:00") if m["task"] == 12}
    assert "克井镇人民政府" not in units
    assert "五龙口镇人民政府" in units
    result = cli("done", "12", "--unit", "镇人民政府")
    assert "and 6 more; task is open" in result.out
    units = {m["unit"] for m in plan(cli, "2018-11-01 09:00") if m["task"] == 12}
    assert not [u for u in units if u.endswith("镇人民政府")]
    # the lead unit's part done: the task is done, nobody is reminded
    assert "task is done" in cli("done", "12", "--unit", "发展和改革委员会").out
    assert not [m for m in plan(cli, "2018-11-01 09:00") if m["task"] == 12]


def test_done_when_all_units(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_POLICY__DONE_WHEN", "all")
    assert cli("import", str(SEED)).code == 0
    assert "task is open" in cli("done", "2", "--unit", "发展和改革委员会").out
    assert "task is done" in cli("done", "2", "--unit", "国土资源局").out


def test_progress_note_answers_the_check_in(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    check_ins = [m for m in plan(cli, "2018-11-26 09:00") if m["task"] == 6]
    assert {m["kind"] for m in check_ins} == {"progress"}
    assert "住房和城乡建设局" in {m["unit"] for m in check_ins}
    # the daemon ran up to the 19th; the unit reports on the 20th
    store = open_store("sqlite:///ledger.db")
    tick(store, at("2018-11-19T09:00"))
    store.dispose()
    with time_machine.travel(at("2018-11-20T15:00"), tick=False):
        result = cli("progress", "6", "--unit", "住建局", "--note", "宣传已开展")
    assert result.code == 0
    assert "progress noted for 住房和城乡建设局" in result.out
    after_note = {m["unit"] for m in plan(cli, "2018-11-26 09:00") if m["task"] == 6}
    assert "住房和城乡建设局" not in after_note  # November's check-in is answered
    assert after_note == {m["unit"] for m in check_ins} - {"住房和城乡建设局"}
    with sqlite3.connect("ledger.db") as con:
        rows = con.execute(
            "SELECT kind, unit, note, at FROM event WHERE kind = 'progress'"
        ).fetchall()
    assert rows == [("progress", "住建局", "宣传已开展", "2018-11-20 07:00:00.000000")]
    assert cli("progress", "6", "--unit", "住建局", "--note", " ").code == 2


def test_bad_arguments(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    for args, fragment in [
        (("done", "500"), "task 500: no such task"),
        (("done", "99", "--unit", "火星局"), "'火星局' is not one of its units"),
        (("plan", "--at", "tomorrow"), "--at 'tomorrow': expected YYYY-MM-DD HH:MM"),
        (("simulate", "--from", "2018-12-31", "--to", "2018-01-01"), "is before --from"),
    ]:
        result = cli(*args)
        assert result.code == 2
        assert fragment in result.err
        assert result.err.count("\n") == 1


def test_simulate_a_month_on_a_copy(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    before = dump(isolated_env / "ledger.db")
    out = isolated_env / "sim"
    result = cli("simulate", "--from", "2018-09-25", "--to", "2018-10-20", "--out", str(out))
    assert result.code == 0, result.err
    assert dump(isolated_env / "ledger.db") == before  # the real store is only read
    assert "Simulated 2018-09-25 → 2018-10-20 (26 days, 16 working days)" in result.out
    lines = [json.loads(line) for line in (out / "letters.jsonl").read_text().splitlines()]
    assert lines
    assert set(lines[0]) == {
        "key",
        "kind",
        "recipient",
        "unit",
        "channel",
        "to",
        "sent_at",
        "items",
    }
    assert len({line["key"] for line in lines}) == len(lines)
    assert f"messages: {len(lines)} carrying" in result.out
    # nothing goes out on the National Day holiday, and the 8th has the overdue of task 8
    sent_days = {line["sent_at"][:10] for line in lines}
    assert not sent_days & {f"2018-10-0{d}" for d in range(1, 8)}
    assert any(
        line["sent_at"].startswith("2018-10-08")
        and line["recipient"] == "环境保护局"
        and {"task": 8, "kind": "overdue"}.items() <= item.items()
        for line in lines
        for item in line["items"]
    )
    # a digest every working day for each supervisor, and at most one message a day on a
    # channel to anyone
    digests = Counter(line["recipient"] for line in lines if line["kind"] == "digest")
    assert set(digests.values()) == {16}
    assert (
        max(Counter((m["recipient"], m["channel"], m["sent_at"][:10]) for m in lines).values()) == 1
    )
    busiest = Counter(line["sent_at"][:10] for line in lines).most_common(1)[0]
    assert f"busiest day: {busiest[0]} ({busiest[1]} messages)" in result.out


def test_a_catch_up_composed_in_rounds_gives_the_letters_of_one_round(
    isolated_env: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters are composed a few recipients at a time, each round in its own write
    transaction (SQLite's lock is held ~1 s, not the whole catch-up). Rounds of 40 items
    give the same letters, items and 催办 counts as one round, and more than one round
    ran."""
    assert cli("import", str(SEED)).code == 0
    one, rounds = isolated_env / "one.db", isolated_env / "rounds.db"
    for copy in (one, rounds):
        with sqlite3.connect(isolated_env / "ledger.db") as source, sqlite3.connect(copy) as to:
            source.backup(to)
    moment = at("2018-10-08 09:30")
    whole = tick(open_store(f"sqlite:///{one}"), moment)
    ran: list[list[str]] = []
    real = letter_round.recipient_rounds

    def spy(*args: Any) -> list[list[str]]:
        ran.extend(real(*args))
        return ran

    monkeypatch.setattr(letter_round, "ROUND_ITEMS", 40)
    monkeypatch.setattr(letter_round, "recipient_rounds", spy)
    parts = tick(open_store(f"sqlite:///{rounds}"), moment)
    assert len(ran) > 3, ran
    assert len(whole.letters) > 20
    assert sorted(m.message.key for m in parts.letters) == sorted(
        m.message.key for m in whole.letters
    )
    letters = "SELECT key, recipient, payload FROM outbox ORDER BY key"
    with sqlite3.connect(one) as a, sqlite3.connect(rounds) as b:
        # each letter's link is a token of its own
        assert [(k, r, {**json.loads(p), "link": ""}) for k, r, p in a.execute(letters)] == [
            (k, r, {**json.loads(p), "link": ""}) for k, r, p in b.execute(letters)
        ]
    for table in (
        "SELECT i.key, i.status, o.key FROM item i LEFT JOIN outbox o ON o.id = i.letter_id "
        "ORDER BY i.key",
        "SELECT task_id, unit, reminded FROM task_unit ORDER BY task_id, unit",
    ):
        with sqlite3.connect(one) as a, sqlite3.connect(rounds) as b:
            assert a.execute(table).fetchall() == b.execute(table).fetchall(), table


def test_an_item_of_a_task_imported_after_the_ledger_was_read_waits(
    isolated_env: Path, cli: Cli
) -> None:
    """The rounds of a tick read the ledger once, before them. An item of a task that a
    re-import added since (planned by another daemon on PostgreSQL) waits for the next
    tick; the others go in their letters; nothing fails."""
    old, new = isolated_env / "old.txt", isolated_env / "new.txt"
    old.write_text(ledger_text(200), encoding="utf-8")
    new.write_text(ledger_text(200, revised=True), encoding="utf-8")  # 2 tasks replaced
    assert cli("import", str(old)).code == 0
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    rules, settings, moment = planning(), load_config().settings, at("2018-07-02 09:30")
    read = letter_round.LedgerRead(
        load_stored(store), moment.astimezone(ZONE).date(), rules, settings
    )
    assert cli("import", str(new)).code == 0
    with store.write() as session:
        plan_batch(session, rules, moment, None, lock=False)
    with store.write() as session:
        letters = letter_round.compose_letters(session, rules, settings, moment, None, read)
    assert letters
    added = {t.id for t in load_stored(store).tasks} - set(read.facts)
    assert len(added) == 2
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        rows = con.execute("SELECT task_id, status FROM item").fetchall()
    found = Counter((task in added, status) for task, status in rows)
    assert found[(True, "pending")] > 0 and not found[(True, "lettered")], found
    assert found[(False, "lettered")] > 0, found
    store.dispose()


def load_stored(store: Store) -> StoredLedger:
    with store.read() as session:
        ledger = load_ledger(session)
    assert ledger is not None
    return ledger
