"""Letters through the real store: one per recipient, channel and day; every item in
exactly one; the simulation decides as the daemon does; a real SMTP round trip."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from reminder.contacts import load_contacts
from reminder.digest import build_digest
from reminder.digest_round import enqueue_reports
from reminder.ledger import read_ledger
from reminder.planner import local_midnight, local_moment
from reminder.rules import Rules
from reminder.settings import Config, Settings, load_config
from reminder.simulate import _items
from reminder.store.db import open_store
from reminder.store.importer import import_ledger
from reminder.store.models import TaskUnitRow
from reminder.store.overview import digest_inputs
from reminder.store.targets import ensure_planned, replan_all
from reminder.tick import plan_batch, run_tick
from tests.conftest import SEED, Cli
from tests.ledger_files import HEADER, write_text
from tests.smtp_server import smtp_server

ZONE = ZoneInfo("Asia/Shanghai")


def planning() -> Rules:
    config = load_config()
    contacts = load_contacts(config.contacts_path)
    return Rules(config.settings.policy, config.calendar(), config.settings.zone, contacts)


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


def test_run_once_sends_one_letter_per_recipient_that_says_it_all(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's first working day after 国庆, into a real SMTP server, parsed back."""
    assert cli("import", str(SEED)).code == 0
    with smtp_server() as (handler, port):
        monkeypatch.setenv("REMINDER_SMTP__HOST", "127.0.0.1")
        monkeypatch.setenv("REMINDER_SMTP__PORT", str(port))
        monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
        monkeypatch.setenv("REMINDER_DELIVERY__OUTBOX_DIR", str(isolated_env / "var" / "outbox"))
        result = cli("run", "--once", "--at", "2018-10-08 09:30")
        assert result.code == 0, result.err
    received = handler.received
    assert received
    recipients = Counter(r.rcpt_tos[0] for r in received)
    assert set(recipients.values()) == {1}, "a recipient got two e-mails"
    for message in (r.message for r in received):
        subject = str(message["Subject"])
        plain = message.get_body(("plain",))
        assert plain is not None
        text = plain.get_content()
        assert subject.startswith("【督办提醒】")
        counts = {
            label: int(n)
            for label, n in re.findall(
                r"(逾期|今日到期|即将到期|开始实施|进展报送)(\d+)项", subject
            )
        }
        listed = {
            label.removesuffix("事项"): int(n)
            for label, n in re.findall(r"^[一二三四五六]、(逾期事项|今日到期|即将到期|开始实施|进展报送)（(\d+)项）$", text, re.M)
        }  # fmt: skip
        assert counts == listed, subject
        total = re.search(r"待办(\d+)项", subject)
        if total:  # a letter with items (on a Monday, one with the agenda alone says so)
            assert int(total.group(1)) == sum(counts.values())
            items = re.split(r"^[一二三四五六]、本周", text, flags=re.M)[0]  # not the agenda
            assert len(re.findall(r"^\d+\. 大气攻坚〔2018〕第\d+项　", items, re.M)) == sum(
                counts.values()
            )
        assert "根据《济源市2018年大气污染防治攻坚战任务分解台账》" in text  # 依据
        assert (
            "济源市环境污染防治攻坚战领导小组办公室\n2018年10月8日（星期一）" in text
        )  # office, date
        assert "0391-0000000" in text  # the office's phone
        assert message["Reply-To"] == "gongjianban@example.org"
    # the towns are told one by one: each its own letter
    towns = [r for r in received if "镇人民政府" in str(r.message["To"])]
    assert len(towns) == 11
    # and the supervisors get nothing but their digests (none at 09:30 on a first run:
    # the digest goes at 08:30 from the daemon's reports job)
    assert not [r for r in received if "gongjianban@example.org" in r.rcpt_tos]


@pytest.mark.parametrize(
    ("start", "end"), [("2018-09-17", "2018-10-19"), ("2018-12-20", "2019-01-11")]
)
def test_the_simulation_decides_as_the_daemon_does(
    cli: Cli, isolated_env: Path, start: str, end: str
) -> None:
    """Day by day through the store (what the daemon does), and in memory (simulate):
    the same digests and letters, to the same people, with the same items."""
    assert cli("import", str(SEED)).code == 0
    out = isolated_env / "sim"
    result = cli("simulate", "--from", start, "--to", end, "--out", str(out))
    assert result.code == 0, result.err
    simulated = [json.loads(line) for line in (out / "letters.jsonl").read_text().splitlines()]

    config = load_config()
    settings_ = config.settings
    plan = planning()
    store = open_store(settings_.db)
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    with store.write() as session:  # as if the daemon had run up to the first day
        session.connection().execute(
            update(TaskUnitRow.__table__).values(  # type: ignore[attr-defined]
                planned_until=local_midnight(first, ZONE)
            )
        )
        replan_all(session, plan)
    day = first
    while day <= last:
        if plan.calendar.is_working_day(day):
            enqueue_reports(store, plan, settings_, local_moment(day, settings_.digest.at, ZONE))
            run_tick(store, plan, settings_, local_moment(day, plan.policy.send_at, ZONE))
        day += dt.timedelta(days=1)
    store.dispose()
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        daemon = [
            {"key": key, "kind": kind, "recipient": name, "items": _items(json.loads(payload))}
            for key, kind, name, payload in con.execute(
                "SELECT key, kind, recipient_name, payload FROM outbox ORDER BY id"
            )
        ]

    def seen(messages: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
        return {
            (m["key"], m["kind"], m["recipient"], json.dumps(m["items"], sort_keys=True))
            for m in messages
        }

    assert len(daemon) == len(simulated) > 50
    assert seen(daemon) == seen(simulated)


# --- every item in exactly one letter, over a year of ticks -------------------------------

UNITS = ("环境保护局", "发展和改革委员会", "住房和城乡建设局")
CONTACTS = """
[[unit]]
name = "环境保护局"
email = "hbj@example.org"
mobile = "13800000001"

[[unit]]
name = "发展和改革委员会"
email = "fgw@example.org"

[[unit]]
name = "住房和城乡建设局"
"""

days_2018 = st.dates(dt.date(2018, 1, 1), dt.date(2018, 12, 31))


@st.composite
def ledgers(draw: st.DrawFn) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = [HEADER, ("一", "一节")]
    for no in range(1, draw(st.integers(1, 4)) + 1):
        first, second = sorted((draw(days_2018), draw(days_2018)))
        deadline = draw(
            st.sampled_from(
                [
                    f"{first.month}月{first.day}日",
                    f"{first.month}月{first.day}日—{second.month}月{second.day}日",
                    f"{first.month}月{first.day}日-",
                    "全年",
                    f"{first.month}月底和{second.month}月底",
                ]
            )
        )
        units = draw(st.lists(st.sampled_from(UNITS), min_size=1, max_size=3, unique=True))
        found.append((str(no), f"任务{no}", "、".join(units), deadline, ""))
    return found


moments = st.lists(
    st.integers(0, 365 * 24 * 4).map(
        lambda quarter: dt.datetime(2018, 1, 1, tzinfo=ZONE) + dt.timedelta(minutes=15 * quarter)
    ),
    min_size=1,
    max_size=40,
)


@pytest.mark.slow
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ledgers(), moments)
def test_every_item_goes_in_exactly_one_letter_and_none_on_a_day_off(
    tmp_path_factory: pytest.TempPathFactory,
    ledger: list[tuple[str, ...]],
    ticks: list[dt.datetime],
) -> None:
    folder = tmp_path_factory.mktemp("year")
    (folder / "contacts.toml").write_text(CONTACTS, encoding="utf-8")
    (folder / "reminder.toml").write_text("", encoding="utf-8")
    path = write_text(folder / "ledger.txt", "济源市2018年测试台账", ledger)
    config = Config(folder=folder, settings=Settings())
    contacts = load_contacts(folder / "contacts.toml")
    plan = Rules(config.settings.policy, config.calendar(), config.settings.zone, contacts)
    store = open_store(f"sqlite:///{folder / 'ledger.db'}")
    with store.write() as session:
        import_ledger(session, read_ledger(path, contacts.directory), "", ticks[0], "test")
        replan_all(session, plan)
    for now in sorted(ticks):
        run_tick(store, plan, config.settings, now.astimezone(dt.UTC))
    store.dispose()
    db = folder / "ledger.db"
    letters = {
        key: (channel, name, json.loads(payload), dt.datetime.fromisoformat(at))
        for key, channel, name, payload, at in rows(
            db, "SELECT key, channel, recipient_name, payload, scheduled_for FROM outbox"
        )
    }
    in_letters = rows(db, "SELECT i.key, o.key FROM item i JOIN outbox o ON o.id = i.letter_id")
    carried = Counter(item for item, _ in in_letters)
    assert set(carried.values()) <= {1}, "an item in two letters"
    for letter_key, (_, _, payload, at) in letters.items():
        keys = {e["key"] for g in payload["groups"] for e in g["items"]}
        assert keys == {
            item for item, key in in_letters if key == letter_key and not item.startswith("agenda:")
        }
        local = at.replace(tzinfo=dt.UTC).astimezone(ZONE)
        assert plan.calendar.is_working_day(local.date()), "a letter on a day off"
        assert local.time() >= plan.policy.send_at
    # nothing left waiting that a tick in sending hours should have sent
    last = max(ticks).astimezone(ZONE)
    if plan.calendar.is_working_day(last.date()) and last.time() >= plan.policy.send_at:
        waiting = rows(
            db,
            "SELECT key FROM item WHERE status = 'pending' AND scheduled_for <= ?",
            last.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" "),
        )
        assert waiting == []
    # one letter per recipient, channel and day
    per_day = Counter(
        (name, channel, at.replace(tzinfo=dt.UTC).astimezone(ZONE).date())
        for channel, name, _, at in letters.values()
    )
    assert set(per_day.values()) <= {1}
    # a unit nobody can reach is recorded, never in a letter
    assert not [k for k, (c, *_) in letters.items() if c == "none"]


def test_the_seeds_year_as_people_receive_it(cli: Cli, isolated_env: Path) -> None:
    """The issue's figures, nobody reporting anything done, the default policy."""
    assert cli("import", str(SEED)).code == 0
    out = isolated_env / "sim"
    assert (
        cli("simulate", "--from", "2018-01-01", "--to", "2018-12-31", "--out", str(out)).code == 0
    )
    lines = [json.loads(line) for line in (out / "letters.jsonl").read_text().splitlines()]
    calendar = planning().calendar
    per_day = Counter((m["recipient"], m["channel"], m["sent_at"][:10]) for m in lines)
    assert max(per_day.values()) == 1  # one e-mail, one SMS, one robot post a day at most
    assert not [
        m for m in lines if not calendar.is_working_day(dt.date.fromisoformat(m["sent_at"][:10]))
    ]
    towns = Counter(
        (m["recipient"], m["channel"]) for m in lines if m["recipient"].endswith("镇人民政府")
    )
    assert max(n for (_, channel), n in towns.items() if channel == "email") <= 80
    assert max(n for (_, channel), n in towns.items() if channel == "sms") <= 60
    supervisors = {
        "市环境污染防治攻坚战领导小组办公室",
        "市燃煤散烧管控办公室",
        "交通运输结构督导组",
    }
    to_them = Counter((m["recipient"], m["kind"]) for m in lines if m["recipient"] in supervisors)
    working_days = sum(
        calendar.is_working_day(dt.date(2018, 1, 1) + dt.timedelta(days=n)) for n in range(365)
    )
    assert to_them == {(name, "digest"): working_days for name in supervisors}
    items = [(m, i) for m in lines for i in m["items"]]
    rounds = {m["sent_at"][:7] for m, i in items if i["kind"] == "progress"}
    assert len(rounds) == 12
    # every milestone on a day off is due on the last working day before it, with its SMS
    due_days = {
        (i["task"], i["milestone"], m["sent_at"][:10], m["channel"])
        for m, i in items
        if i["kind"] == "due_today"
    }
    off = {
        (task, milestone)
        for task, milestone, _, _ in due_days
        if not calendar.is_working_day(dt.date.fromisoformat(milestone))
    }
    tasks = json.loads(cli("tasks", "--json").out)["tasks"]
    dated = {kind.value for kind in planning().policy.upcoming.kinds}
    expected = {
        (t["no"], milestone)
        for t in tasks
        if t["deadline"]["kind"] in dated
        for milestone in t["deadline"]["milestones"]
        if milestone.startswith("2018")
        and not calendar.is_working_day(dt.date.fromisoformat(milestone))
        and calendar.on_or_before(dt.date.fromisoformat(milestone)).year == 2018
    }
    assert off == expected
    assert len(off) > 20
    for task, milestone in off:
        last_working = calendar.on_or_before(dt.date.fromisoformat(milestone)).isoformat()
        assert (task, milestone, last_working, "email") in due_days
        assert (task, milestone, last_working, "sms") in due_days
    # 全年 duties are never counted down nor overdue
    all_year = {t["no"] for t in tasks if t["deadline"]["kind"] == "all_year"}
    assert not [
        i
        for _, i in items
        if i["task"] in all_year and i["kind"] in ("upcoming", "due_today", "overdue")
    ]


def test_a_letter_and_the_digest_count_lateness_alike(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    assert cli("run", "--once", "--at", "2018-10-16 09:30").code == 0
    config = load_config()
    plan = planning()
    store = open_store(config.settings.db)
    with store.read() as session:
        inputs = digest_inputs(session)
    store.dispose()
    assert inputs is not None
    digest = build_digest(
        inputs, None, plan, dt.date(2018, 10, 16), dt.datetime(2018, 10, 15, 8, 30, tzinfo=ZONE)
    )
    in_digest = {t["no"]: (t["days"], t["working_days"]) for t in digest["overdue"]}
    compared = 0
    for (payload,) in rows(
        isolated_env / "ledger.db", "SELECT payload FROM outbox WHERE channel = 'email'"
    ):
        for group in json.loads(payload)["groups"]:
            for entry in group["items"]:
                if entry["kind"] == "overdue":
                    assert (entry["overdue_days"], entry["overdue_working_days"]) == in_digest[
                        entry["no"]
                    ]
                    compared += 1
    assert compared > 100
    # and the digest says so for the units that have been reminded of it
    reminded = {(t["no"], t["reminded"]) for t in digest["overdue"]}
    assert all(count >= 1 for _, count in reminded)


def one_unit_ledger(folder: Path, *tasks: tuple[str, str]) -> Path:
    """A ledger of 环境保护局's tasks (text, deadline), numbered from 1."""
    rows: list[tuple[str, ...]] = [HEADER, ("一", "燃煤与扬尘")]
    rows += [(str(n), text, "环境保护局", due, "") for n, (text, due) in enumerate(tasks, 1)]
    return write_text(folder / "ledger.txt", "济源市2018年督办测试任务分解台账", rows)


def test_a_late_import_the_same_day_gets_a_supplement_letter(cli: Cli, isolated_env: Path) -> None:
    """A second tick the same day sends a second letter (补充) with only what was in none."""
    first_task = ("完成燃煤锅炉拆改任务", "2018年10月8日")
    assert cli("import", str(one_unit_ledger(isolated_env, first_task))).code == 0
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    settings = load_config().settings
    morning = run_tick(
        store, planning(), settings, local_moment(dt.date(2018, 10, 8), dt.time(9, 30), ZONE)
    )
    email = [letter for letter in morning.letters if letter.message.channel == "email"]
    assert [letter.message.key for letter in email] == [
        "letter:环境保护局:email:hbj@example.org:2018-10-08:1"
    ]
    late = one_unit_ledger(isolated_env, first_task, ("开展扬尘专项检查", "2018年10月8日"))
    assert cli("import", str(late)).code == 0
    noon = local_moment(dt.date(2018, 10, 8), dt.time(12), ZONE)
    second = run_tick(store, planning(), settings, noon)
    [supplement] = [letter for letter in second.letters if letter.message.channel == "email"]
    payload = supplement.message.payload
    assert supplement.message.key == "letter:环境保护局:email:hbj@example.org:2018-10-08:2"
    assert payload["supplement"] is True
    assert [e["no"] for g in payload["groups"] for e in g["items"]] == [2]
    assert run_tick(store, planning(), settings, noon).letters == []  # and nothing a third time
    lettered = rows(
        isolated_env / "ledger.db",
        "SELECT count(*), count(DISTINCT letter_id) FROM item "
        "WHERE channel = 'email' AND status = 'lettered'",
    )
    assert lettered == [(3, 2)]  # task 1 and the week's agenda in the first, task 2 next
    assert rows(
        isolated_env / "ledger.db", "SELECT count(*) FROM item WHERE status = 'pending'"
    ) == [(0,)]
    store.dispose()


def test_work_done_before_its_letter_is_not_reminded(cli: Cli, isolated_env: Path) -> None:
    """An item planned, then its task done before the letter is composed (a daemon stopped
    in between): it is superseded, not sent."""
    tasks = (("完成燃煤锅炉拆改任务", "2018年10月8日"), ("开展扬尘专项检查", "2018年10月8日"))
    assert cli("import", str(one_unit_ledger(isolated_env, *tasks))).code == 0
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    settings = load_config().settings
    now = local_moment(dt.date(2018, 10, 8), dt.time(9, 30), ZONE)
    with store.write() as session:
        ensure_planned(session, planning())
        planned = plan_batch(session, planning(), now, limit=None, lock=False)
    assert {i.task_no for i in planned.items} == {1, 2}
    assert cli("done", "1").code == 0
    letters = run_tick(store, planning(), settings, now).letters
    assert letters
    assert {
        e["no"] for letter in letters for g in letter.message.payload["groups"] for e in g["items"]
    } == {2}
    states = rows(
        isolated_env / "ledger.db",
        "SELECT DISTINCT i.status, i.superseded_by FROM item i JOIN task t ON t.id = i.task_id "
        "WHERE t.no = 1 AND i.kind = 'due_today'",
    )
    assert states == [("superseded", "done before its letter")]
    store.dispose()


def test_a_unit_owing_more_than_a_letter_lists_gets_the_most_urgent_and_the_count(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 overdue tasks and 30 due that day for one unit: its e-mail lists the 100 most
    overdue (no room left for the rest), says how many more there are in each group, and
    fits the render budget (before, such a letter went dead and the unit heard nothing)."""
    late = [(f"完成第{n}批燃煤锅炉拆改", f"2018年{1 + n % 9}月{1 + n % 28}日") for n in range(150)]
    today = [(f"开展第{n}轮扬尘专项检查", "2018年10月8日") for n in range(30)]
    assert cli("import", str(one_unit_ledger(isolated_env, *late, *today))).code == 0
    with smtp_server() as (handler, port):
        monkeypatch.setenv("REMINDER_SMTP__HOST", "127.0.0.1")
        monkeypatch.setenv("REMINDER_SMTP__PORT", str(port))
        monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
        result = cli("run", "--once", "--at", "2018-10-08 09:30")
        assert result.code == 0, result.err
    [letter] = [r.message for r in handler.received if r.rcpt_tos == ["hbj@example.org"]]
    assert str(letter["Subject"]) == "【督办提醒】你单位今日待办180项（逾期150项、今日到期30项）"
    plain = letter.get_body(("plain",))
    html = letter.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "一、逾期事项（150项）" in text and "二、今日到期（30项）" in text
    listed = re.findall(r"^(\d+)\. 大气攻坚〔2018〕第(\d+)项　", text, re.M)
    assert len(listed) == 100
    assert [int(n) for n, _ in listed] == list(range(1, 101))  # all 100 in the overdue group
    assert "……另有50项未列出（每封通知按紧急程度列出前100项）" in text
    assert "……另有30项未列出（每封通知按紧急程度列出前100项）" in text
    assert html.get_content().count("项未列出") == 2
    statuses = rows(isolated_env / "ledger.db", "SELECT DISTINCT status FROM outbox")
    assert statuses == [("sent",)]
