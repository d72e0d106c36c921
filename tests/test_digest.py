"""The digest and the agenda as data and as text: lights, scope, ranking, plain wording."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from reminder.contacts import Contacts, Supervisor, load_contacts
from reminder.digest import DigestInputs, Undelivered, build_agendas, build_digest, light
from reminder.messages import report_context
from reminder.planning import Planning
from reminder.render import PARTS, Renderer
from reminder.reports import enqueue_reports
from reminder.settings import MessagesSettings, load_config
from reminder.store.db import open_store
from reminder.store.reports import digest_inputs
from tests.conftest import Cli
from tests.known_ledger import (
    OVERDUE_DAYS,
    UNREACHABLE,
    ZONE,
    import_known,
    known_config,
    local_today,
)


@pytest.fixture
def known(cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = known_config(isolated_env)
    monkeypatch.setenv("REMINDER_CONFIG", str(config))
    import_known(cli, isolated_env)
    return config


@pytest.fixture
def inputs(known: Path, isolated_env: Path) -> DigestInputs:
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    with store.read() as session:
        found = digest_inputs(session)
    store.dispose()
    assert found is not None
    return found


@pytest.fixture
def known_contacts(known: Path) -> Contacts:
    return load_contacts(known / "contacts.toml")


def digest(
    inputs: DigestInputs,
    contacts: Contacts,
    supervisor: Supervisor | None = None,
    day: dt.date | None = None,
    since: dt.datetime | None = None,
) -> dict[str, Any]:
    day = day or local_today()
    since = since or dt.datetime.combine(day, dt.time(), tzinfo=ZONE) - dt.timedelta(days=1)
    return build_digest(inputs, supervisor, contacts, day, since, ZONE)


def render(kind: str, part: str, payload: dict[str, Any], recipient: str = "督查室") -> str:
    values = report_context(
        kind=kind, recipient=recipient, payload=payload, settings=MessagesSettings()
    )
    return Renderer().part(kind, part, values)


def task(inputs: DigestInputs, no: int) -> Any:
    return next(t for t in inputs.ledger.tasks if t.task.no == no)


def test_lights_at_their_boundaries(inputs: DigestInputs) -> None:
    stored = task(inputs, 2)
    due = stored.task.deadline.due
    assert due is not None
    assert light(stored, due - dt.timedelta(days=8)) == "green"
    assert light(stored, due - dt.timedelta(days=7)) == "yellow"
    assert light(stored, due) == "yellow"  # due today is not overdue yet
    assert light(stored, due + dt.timedelta(days=1)) == "red"
    assert light(task(inputs, 4), due + dt.timedelta(days=365)) == "done"


def test_the_board_overdue_upcoming_and_done(
    inputs: DigestInputs, known_contacts: Contacts
) -> None:
    data = digest(inputs, known_contacts)
    assert data["totals"] == {"red": 1, "yellow": 2, "green": 1, "done": 1, "tasks": 5}
    assert [
        (s["numeral"], s["red"], s["yellow"], s["green"], s["done"]) for s in data["sections"]
    ] == [
        ("一", 1, 1, 0, 0),
        ("二", 0, 1, 1, 1),
    ]
    [overdue] = data["overdue"]
    assert (overdue["no"], overdue["days"], overdue["lead"]) == (1, OVERDUE_DAYS, "环境保护局")
    assert overdue["last_reminder"] is None
    assert overdue["progress"]["unit"] == "环境保护局"
    assert overdue["progress"]["note"] == "已拆改80%"
    assert [(t["no"], t["days_left"]) for t in data["upcoming"]] == [(2, 3), (5, 5)]
    assert [t["no"] for t in data["done"]] == [4]
    assert data["no_contact"] == [UNREACHABLE]
    # tasks done before the last digest are not news
    later = dt.datetime.now(ZONE) + dt.timedelta(minutes=1)
    assert digest(inputs, known_contacts, since=later)["done"] == []


def test_units_ranked_by_overdue_then_upcoming(
    inputs: DigestInputs, known_contacts: Contacts
) -> None:
    # a week later tasks 2 and 5 are overdue too
    units = digest(inputs, known_contacts, day=local_today() + dt.timedelta(days=6))["units"]
    ranked = [(u["name"], u["red"], u["yellow"]) for u in units]
    assert ranked[:4] == [
        ("住房和城乡建设局", 1, 0),
        ("发展和改革委员会", 1, 0),
        ("某某新材料有限公司", 1, 0),
        ("环境保护局", 1, 0),
    ]
    assert [u["name"] for u in units[4:]] == ["交通运输局", "质量技术监督局"]
    assert all(u["red"] == 0 for u in units[4:])


def test_a_scoped_supervisor_gets_its_part_only(
    inputs: DigestInputs, known_contacts: Contacts
) -> None:
    by_section = next(s for s in known_contacts.supervisors if s.sections)
    data = digest(inputs, known_contacts, by_section)
    assert data["scope"] == "二、油品与监测"
    assert data["totals"]["tasks"] == 3
    assert data["overdue"] == []
    assert [s["numeral"] for s in data["sections"]] == ["二"]

    by_unit = Supervisor(name="住建督查", email="x@test.example.org", units=["住房和城乡建设局"])
    data = digest(inputs, known_contacts, by_unit)
    assert data["scope"] == "住房和城乡建设局"
    assert [t["no"] for t in data["upcoming"]] == [2]
    assert [u["name"] for u in data["units"]] == ["住房和城乡建设局"]
    assert data["no_contact"] == []


def test_the_text_and_html_say_it_all(inputs: DigestInputs, known_contacts: Contacts) -> None:
    data = digest(inputs, known_contacts)
    text = render("digest", "text", data)
    assert "共5项任务：逾期1项，7日内到期2项，正常推进1项，已办结1项。" in text
    assert "第1项　完成燃煤锅炉拆改任务\n   完成时限：" in text
    assert f"已逾期{OVERDUE_DAYS}天；牵头：环境保护局" in text
    assert "最近提醒：尚未提醒；最近进展：" in text and "环境保护局：已拆改80%" in text
    assert "第2项　开展扬尘专项检查" in text and "（还有3天）" in text
    assert "新办结" in text and "第4项　建成交通监测站点" in text
    assert f"无联系方式的单位：{UNREACHABLE}（请补充联系方式）" in text
    assert "无需处理" not in text
    html = render("digest", "html", data)
    assert "<table" in html and 'style="' in html and "#b3261e" in html  # the red mark
    assert "完成燃煤锅炉拆改任务" in html and "已拆改80%" in html and UNREACHABLE in html
    assert "<script" not in html and "<img" not in html and "http" not in html
    subject = render("digest", "subject", data)
    assert "逾期1项" in subject and "\n" not in subject


def test_nothing_to_report_is_said_plainly(inputs: DigestInputs, known_contacts: Contacts) -> None:
    first = Supervisor(name="一组", email="y@test.example.org", sections=[1])
    day = local_today() - dt.timedelta(days=60)  # long before any deadline
    data = digest(inputs, known_contacts, first, day=day)
    assert (data["totals"]["red"], data["totals"]["yellow"]) == (0, 0)
    text = render("digest", "text", data)
    html = render("digest", "html", data)
    for part in (text, html):
        assert "今日无逾期、临期任务，无新办结，消息均已送达，无需处理。" in part
    assert "无逾期任务。" in text and "7日内无到期任务。" in text
    assert "<td" not in html.split("逾期任务（0项）")[1].split("逾期单位排名")[0]


def test_dead_and_retrying_messages_are_listed(
    inputs: DigestInputs, known_contacts: Contacts
) -> None:
    troubled = DigestInputs(
        inputs.ledger,
        inputs.last_sent,
        inputs.progress,
        (
            Undelivered("dead", "overdue", 1, "环境保护局", "email", "550 5.1.1 no such user"),
            Undelivered("retry", "upcoming", 2, "住房和城乡建设局", "sms", "gateway timeout"),
        ),
    )
    data = digest(troubled, known_contacts)
    assert (data["undelivered"]["dead"], data["undelivered"]["retry"]) == (1, 1)
    text = render("digest", "text", data)
    assert "未送达的消息：失败1条，重试中1条" in text
    assert "失败：环境保护局（第1项） email 550 5.1.1 no such user" in text
    assert "重试中：住房和城乡建设局（第2项） sms gateway timeout" in text


def test_the_agenda_lists_a_units_open_tasks_with_its_role(inputs: DigestInputs) -> None:
    day = local_today()
    agendas = build_agendas(inputs, day)
    lead = agendas.get("环境保护局")
    assert lead is not None
    assert [(t["no"], t["role_label"], t["light"]) for t in lead["tasks"]] == [(1, "牵头", "red")]
    cooperating = agendas.get("发展和改革委员会")
    assert cooperating is not None
    text = render("agenda", "text", cooperating, recipient="发展和改革委员会")
    assert "第1项（配合）" in text and "牵头：环境保护局" in text and "【逾期】" in text
    assert agendas.get("交通运输局") is None  # its one task is done
    upcoming = agendas.get("住房和城乡建设局")
    assert upcoming is not None
    assert upcoming["tasks"][0]["next"] == (day + dt.timedelta(days=3)).isoformat()
    assert upcoming["counts"]["yellow"] == 1


def test_every_part_of_both_reports_renders(inputs: DigestInputs, known_contacts: Contacts) -> None:
    agenda = build_agendas(inputs, local_today()).get("环境保护局")
    assert agenda is not None
    for kind, payload in (("digest", digest(inputs, known_contacts)), ("agenda", agenda)):
        rendered = Renderer().render(
            kind,
            report_context(
                kind=kind, recipient="督查室", payload=payload, settings=MessagesSettings()
            ),
            PARTS,
        )
        assert rendered.subject and rendered.text and rendered.html and rendered.sms and rendered.md
        assert len(rendered.sms) <= 140


def test_digest_print_and_status(cli: Cli, known: Path) -> None:
    result = cli("digest", "--print")
    assert result.code == 0, result.err
    assert result.out.startswith("督查室：")
    assert "第二督导组：" in result.out
    status = cli("status", "--json")
    assert status.code == 0, status.err
    data = json.loads(status.out)
    assert data["last_tick"] is None
    assert data["ledger"] | {} == {
        "title": f"济源市{local_today().year}年督办测试任务分解台账",
        "tasks": 5,
        "red": 1,
        "yellow": 2,
        "green": 1,
        "done": 1,
    }
    assert data["queue"]["pending"] == 0
    assert data["stale"] is False
    # a daemon that stopped ticking an hour ago
    an_hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    with sqlite3.connect(known.parent / "ledger.db") as con:
        con.execute(
            "INSERT INTO meta (key, value) VALUES ('last_tick', ?)",
            (json.dumps({"at": an_hour_ago, "queue": {}}),),
        )
    assert json.loads(cli("status", "--json").out)["stale"] is True
    assert "stale: is the daemon running?" in cli("status").out


def test_check_renders_the_report_templates(
    cli: Cli, known: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("check").code == 1  # the unreachable enterprise is an error …
    templates = isolated_env / "templates"
    templates.mkdir()
    (templates / "digest.text.j2").write_text("{{ totals.red.nope() }}", encoding="utf-8")
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(templates))
    result = cli("check")
    assert result.code == 1
    problems = [line for line in result.out.splitlines() if "digest.text.j2" in line]
    assert problems, result.out  # … and so is a digest template that cannot render


def test_clock_jumps_send_no_report_twice_and_lose_none(known: Path, isolated_env: Path) -> None:
    config = load_config()
    settings = config.settings
    planner = Planning(
        settings.policy, config.calendar(), settings.zone, load_contacts(config.contacts_path)
    )
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    today = local_today()

    def at(day: dt.date, hour: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour), tzinfo=ZONE).astimezone(dt.UTC)

    def keys() -> set[str]:
        with sqlite3.connect(isolated_env / "ledger.db") as con:
            return {k for (k,) in con.execute("SELECT key FROM outbox WHERE kind = 'digest'")}

    assert enqueue_reports(store, planner, settings, at(today, 8))[0] == []  # before 08:30
    first = enqueue_reports(store, planner, settings, at(today, 10))[0]
    assert {m.recipient_name for m in first} == {"督查室", "第二督导组"}
    sent = keys()
    assert len(sent) == 2
    enqueue_reports(store, planner, settings, at(today, 8))  # back two hours
    enqueue_reports(store, planner, settings, at(today, 10))  # and on again
    assert keys() == sent
    # the week's agenda: once, whatever the day of the week it is caught up on
    agendas = enqueue_reports(store, planner, settings, at(today, 10))[1]
    again = enqueue_reports(store, planner, settings, at(today, 11))[1]
    assert {m.key for m in agendas} == {m.key for m in again}
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        count = con.execute("SELECT count(*) FROM outbox WHERE kind = 'agenda'").fetchone()[0]
    assert count == len(agendas) == 4
    tomorrow = today + dt.timedelta(days=1)
    enqueue_reports(store, planner, settings, at(tomorrow, 10))  # forward a day
    working = planner.calendar.is_working_day(tomorrow)
    assert len(keys()) == (4 if working else 2)
    assert all(tomorrow.isoformat() in k for k in keys() - sent)
    store.dispose()
