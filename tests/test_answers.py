"""Answers through the real store and the command line: reminders follow what units
report and what supervisors decide; every action is journalled."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlmodel import col, select

from reminder.contacts import load_contacts
from reminder.errors import InputError
from reminder.planner import local_moment
from reminder.rules import Rules
from reminder.settings import load_config
from reminder.store import answers
from reminder.store.db import Store, open_store
from reminder.store.models import LinkRow, OutboxRow
from tests.conftest import SEED, Cli

ZONE = ZoneInfo("Asia/Shanghai")
CLERK = answers.Actor("环境保护局", "192.0.2.7")
BOSS = answers.Actor("攻坚办", "192.0.2.9")
# task 1: 住房和城乡建设局 leads, 发展和改革委员会 and 环境保护局 cooperate; due 2018-01-31
TASK, UNIT = 1, "环境保护局"


def at(day: str, hour: int = 10) -> dt.datetime:
    return local_moment(dt.date.fromisoformat(day), dt.time(hour), ZONE)


def setup(cli: Cli) -> tuple[Store, Rules]:
    assert cli("import", str(SEED)).code == 0
    config = load_config()
    contacts = load_contacts(config.contacts_path)
    planning = Rules(config.settings.policy, config.calendar(), config.settings.zone, contacts)
    return open_store(config.settings.db), planning


def letter_texts() -> list[tuple[str, str]]:
    """(To, plain text) of every e-mail letter the file channel wrote."""
    found = []
    for path in Path("var/outbox").rglob("letter-*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(("plain",))
        assert isinstance(body, EmailMessage)
        found.append((str(message["To"]), str(body.get_content())))
    return found


def plan(cli: Cli, moment: str) -> list[dict[str, Any]]:
    result = cli("plan", "--at", moment, "--json")
    assert result.code == 0, result.err
    items: list[dict[str, Any]] = json.loads(result.out)
    return items


def parts(cli: Cli, number: int) -> dict[str, dict[str, Any]]:
    result = cli("tasks", "--json")
    assert result.code == 0, result.err
    task = next(t for t in json.loads(result.out)["tasks"] if t["no"] == number)
    return {unit["name"]: unit for unit in task["units"]}


def reminded(items: list[dict[str, Any]], number: int) -> set[str]:
    return {i["unit"] for i in items if i["task"] == number}


def test_a_reported_completion_holds_reminders_until_reviewed(cli: Cli) -> None:
    store, planning = setup(cli)
    assert UNIT in reminded(plan(cli, "2018-10-15 09:30"), TASK)
    with store.write() as session:
        state = answers.report_done(
            session, planning, TASK, UNIT, "已完成", None, CLERK, dt.datetime.now(dt.UTC)
        )
    assert state == "reported"
    assert parts(cli, TASK)[UNIT]["status"] == "reported"
    assert parts(cli, TASK)["发展和改革委员会"]["status"] == "open"
    items = plan(cli, "2018-10-15 09:30")
    assert UNIT not in reminded(items, TASK), "reminded while its report waits for review"
    assert {"住房和城乡建设局", "发展和改革委员会"} <= reminded(items, TASK)

    listed = cli("review", "--json")
    waiting = json.loads(listed.out)
    assert [(w["kind"], w["task"], w["unit"]) for w in waiting] == [("completion", TASK, UNIT)]

    # returned: the reminders come back, and the next letter says why
    assert cli("review", "return", str(waiting[0]["id"]), "--note", "缺少验收材料").code == 0
    assert parts(cli, TASK)[UNIT]["status"] == "open"
    assert UNIT in reminded(plan(cli, "2018-10-15 09:30"), TASK)
    result = cli("run", "--once", "--at", "2018-10-15 09:30")
    assert result.code == 0, result.err
    mine = [
        text for to, text in letter_texts() if UNIT in to and "办结报告已退回：缺少验收材料" in text
    ]
    assert mine, "the returned unit's next letter does not say why"

    # reported again and approved: done, never reminded again
    with store.write() as session:
        answers.report_done(
            session, planning, TASK, UNIT, "补充了验收材料", None, CLERK, dt.datetime.now(dt.UTC)
        )
    again = json.loads(cli("review", "--json").out)
    assert cli("review", "approve", str(again[0]["id"])).code == 0
    assert parts(cli, TASK)[UNIT]["status"] == "done"
    assert UNIT not in reminded(plan(cli, "2018-10-22 09:30"), TASK)
    assert json.loads(cli("review", "--json").out) == []

    history = json.loads(cli("history", str(TASK), "--json").out)
    actions = [(e["action"], e["unit"]) for e in history if e["action"] != "letter"]
    assert actions == [
        ("report", UNIT),
        ("return", UNIT),
        ("report", UNIT),
        ("approve", UNIT),
        ("done", UNIT),
    ]
    for entry in history:
        assert set(entry) >= {"at", "by", "unit", "action", "note"}
    assert history[0]["by"] == UNIT or history[0]["action"] == "letter"
    returned = next(e for e in history if e["action"] == "return")
    assert returned["note"] == "缺少验收材料" and returned["origin"] == "cli"
    store.dispose()


def test_an_approved_extension_moves_the_units_due_date(cli: Cli) -> None:
    store, planning = setup(cli)
    new_due = dt.date(2018, 11, 30)
    with store.write() as session:
        answers.request_extension(
            session, planning, TASK, UNIT, new_due, "资金未到位", CLERK, at("2018-10-09")
        )
    # not before it is approved
    assert UNIT in reminded(plan(cli, "2018-10-15 09:30"), TASK)
    waiting = json.loads(cli("review", "--json").out)
    assert waiting[0]["kind"] == "extension" and waiting[0]["due"] == "2018-11-30"
    # approved to another date than asked
    assert cli("review", "approve", str(waiting[0]["id"]), "--due", "2018-12-14").code == 0
    assert parts(cli, TASK)[UNIT] == {
        "name": UNIT,
        "role": "cooperating",
        "kind": "unit",
        "status": "open",
        "due": "2018-12-14",
    }
    assert UNIT not in reminded(plan(cli, "2018-10-15 09:30"), TASK)
    upcoming = [i for i in plan(cli, "2018-12-07 09:30") if i["task"] == TASK and i["unit"] == UNIT]
    assert upcoming and {i["kind"] for i in upcoming} == {"upcoming"}
    due_today = [
        i for i in plan(cli, "2018-12-14 09:30") if i["task"] == TASK and i["unit"] == UNIT
    ]
    assert {i["kind"] for i in due_today} == {"due_today"}
    # the others keep the ledger's date
    assert "发展和改革委员会" in reminded(plan(cli, "2018-10-15 09:30"), TASK)
    store.dispose()


def test_a_refused_extension_changes_nothing(cli: Cli) -> None:
    store, planning = setup(cli)
    with store.write() as session:
        answers.request_extension(
            session, planning, TASK, UNIT, dt.date(2018, 12, 1), "理由", CLERK, at("2018-10-09")
        )
    answer = json.loads(cli("review", "--json").out)[0]["id"]
    assert cli("review", "refuse", str(answer)).code != 0, "a refusal needs a reason"
    assert cli("review", "refuse", str(answer), "--note", "不符合延期条件").code == 0
    assert "due" not in parts(cli, TASK)[UNIT]
    assert UNIT in reminded(plan(cli, "2018-10-15 09:30"), TASK)
    second = cli("review", "approve", str(answer))
    assert second.code != 0 and "already refused" in second.err
    store.dispose()


def test_trust_closes_a_part_at_once(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_POLICY__COMPLETION", "trust")
    store, planning = setup(cli)
    with store.write() as session:
        state = answers.report_done(
            session, planning, TASK, UNIT, "已完成", None, CLERK, at("2018-10-09")
        )
    assert state == "done"
    assert parts(cli, TASK)[UNIT]["status"] == "done"
    assert json.loads(cli("review", "--json").out) == []
    store.dispose()


def test_a_unit_acts_only_on_its_own_parts_and_within_reason(cli: Cli) -> None:
    store, planning = setup(cli)
    now = at("2018-10-09")
    with store.write() as session, pytest.raises(InputError, match="不是环境保护局的任务"):
        answers.report_progress(session, planning, 2, UNIT, "进展", CLERK, now)
    with store.write() as session, pytest.raises(InputError, match="不存在"):
        answers.report_done(session, planning, 999, UNIT, "办结", None, CLERK, now)
    with store.write() as session, pytest.raises(InputError, match="晚于"):
        answers.request_extension(
            session, planning, TASK, UNIT, dt.date(2018, 1, 1), "理由", CLERK, now
        )
    with store.write() as session, pytest.raises(InputError, match="请填写"):
        answers.report_progress(session, planning, TASK, UNIT, "   ", CLERK, now)
    # nothing of the refused actions was kept
    history = json.loads(cli("history", str(TASK), "--json").out)
    assert [e for e in history if e["action"] != "letter"] == []
    store.dispose()


def test_progress_answers_the_months_check_in(cli: Cli) -> None:
    store, planning = setup(cli)
    # the daemon ran the day before (so that no earlier month's check-in is owed)
    assert cli("run", "--once", "--at", "2018-10-24 09:30").code == 0
    # task 26 is ongoing: a monthly check-in on the 25th (2018-10-25, a Thursday)
    asked = {
        i["unit"]
        for i in plan(cli, "2018-10-25 09:30")
        if i["task"] == 26 and i["kind"] == "progress"
    }
    assert asked
    unit = sorted(asked)[0]
    with store.write() as session:
        answers.report_progress(
            session,
            planning,
            26,
            unit,
            "十月已完成巡查",
            answers.Actor(unit, "x"),
            at("2018-10-24", 11),
        )
    after = {
        i["unit"]
        for i in plan(cli, "2018-10-25 09:30")
        if i["task"] == 26 and i["kind"] == "progress"
    }
    assert unit not in after and after == asked - {unit}
    store.dispose()


def test_letters_and_digests_carry_links_saved_only_when_enqueued(cli: Cli) -> None:
    store, _ = setup(cli)
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    with store.read() as session:
        letters = session.exec(select(OutboxRow).where(col(OutboxRow.kind) == "letter")).all()
        links = {row.letter_key: row for row in session.exec(select(LinkRow))}
    assert letters
    for letter in letters:
        url = letter.payload["link"]
        assert url.startswith("http://127.0.0.1:8080/l/")
        assert links[letter.key].name == letter.unit
        assert links[letter.key].scope == "unit"
    # a second run the same moment enqueues nothing new, and saves no link
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    with store.read() as session:
        assert len(session.exec(select(LinkRow)).all()) == len(links)
    store.dispose()


def test_no_base_url_no_links(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_WEB__BASE_URL", "")
    store, _ = setup(cli)
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    with store.read() as session:
        assert session.exec(select(LinkRow)).all() == []
    texts = [p.read_text("utf-8") for p in Path("var/outbox").rglob("letter-*.txt")]
    assert texts and not any("签收及反馈" in text for text in texts)
    assert any("详见督办通知邮件" in text for text in texts)
    store.dispose()


def test_export_ranks_units_and_lists_every_part(cli: Cli, tmp_path: Path) -> None:
    store, planning = setup(cli)
    with store.write() as session:
        answers.report_done(session, planning, TASK, UNIT, "已完成", None, CLERK, at("2018-10-09"))
    out = tmp_path / "通报.xlsx"
    result = cli("export", "--xlsx", str(out))
    assert result.code == 0, result.err
    book = load_workbook(out)
    ranking = list(book["通报"].iter_rows(min_row=3, values_only=True))
    tasks = list(book["任务"].iter_rows(min_row=2, values_only=True))
    assert ranking and tasks
    units = {row[1]: row for row in ranking}
    assert units[UNIT][5] == 1, "the reported part is not counted as waiting for review"
    leads = [row[2] for row in ranking]
    assert leads == sorted(leads, reverse=True), "not ranked by overdue tasks led"
    mine = [row for row in tasks if row[4] == UNIT and row[0].endswith("第1项")]
    assert mine and mine[0][8] == "已报办结（待审核）"
    assert not list(tmp_path.glob(".*.part"))
    bad = cli("export", "--xlsx", str(tmp_path / "missing" / "x.xlsx"))
    assert bad.code != 0 and "cannot write" in bad.err and "Traceback" not in bad.err
    store.dispose()


def test_revoke_needs_one_name_and_counts(cli: Cli) -> None:
    store, _ = setup(cli)
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    assert cli("web", "revoke").code != 0
    result = cli("web", "revoke", "--unit", UNIT)
    assert result.code == 0 and "revoked 2 links" in result.out  # its e-mail and its SMS
    assert "revoked 0 links" in cli("web", "revoke", "--unit", UNIT).out
    store.dispose()


@pytest.mark.postgres
def test_answers_on_postgresql(cli: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers are rows like any other: the same loop on the machine's PostgreSQL."""
    monkeypatch.setenv("REMINDER_DB", pg_url)
    store, planning = setup(cli)
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    with store.write() as session:
        answers.report_done(
            session, planning, TASK, UNIT, "已完成", None, CLERK, dt.datetime.now(dt.UTC)
        )
        answers.request_extension(
            session, planning, 14, UNIT, dt.date(2018, 12, 31), "资金", CLERK, at("2018-10-09")
        )
    waiting = {w["kind"]: w["id"] for w in json.loads(cli("review", "--json").out)}
    assert cli("review", "approve", str(waiting["completion"])).code == 0
    assert cli("review", "approve", str(waiting["extension"])).code == 0
    assert parts(cli, TASK)[UNIT]["status"] == "done"
    assert parts(cli, 14)[UNIT]["due"] == "2018-12-31"
    mine = {i["task"] for i in plan(cli, "2018-10-15 09:30") if i["unit"] == UNIT}
    assert TASK not in mine and 14 not in mine
    history = json.loads(cli("history", str(TASK), "--json").out)
    assert [e["action"] for e in history if e["action"] != "letter"] == [
        "report",
        "approve",
        "done",
    ]
    assert any(e["action"] == "letter" for e in history)
    with store.read() as session:
        assert session.exec(select(LinkRow)).all()
    store.dispose()
