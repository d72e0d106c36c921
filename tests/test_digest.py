"""The digest and the agenda as data and as text: lights, scope, ranking, plain wording."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reminder.contacts import Contacts, Supervisor, load_contacts
from reminder.context import report_context
from reminder.digest import ESCALATION_FIELDS, build_agendas, build_digest, light
from reminder.digest_round import enqueue_reports
from reminder.records import DigestInputs, Undelivered
from reminder.render import PARTS, Renderer
from reminder.rules import Rules
from reminder.settings import OfficeSettings, load_config
from reminder.store.db import open_store
from reminder.store.overview import digest_inputs
from tests.conftest import SEED as SEED_PATH
from tests.conftest import Cli, seed_inputs
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


@pytest.fixture
def planning(known: Path, known_contacts: Contacts) -> Rules:
    settings = load_config().settings
    return Rules(settings.policy, load_config().calendar(), settings.zone, known_contacts)


def digest(
    inputs: DigestInputs,
    planning: Rules,
    supervisor: Supervisor | None = None,
    day: dt.date | None = None,
    since: dt.datetime | None = None,
) -> dict[str, Any]:
    day = day or local_today()
    since = since or dt.datetime.combine(day, dt.time(), tzinfo=ZONE) - dt.timedelta(days=1)
    return build_digest(inputs, supervisor, planning, day, since)


def render(kind: str, part: str, payload: dict[str, Any], recipient: str = "督查室") -> str:
    values = report_context(
        kind=kind, recipient=recipient, payload=payload, settings=OfficeSettings()
    )
    return Renderer().part(kind, part, {**values, "channel": "email"})


def task(inputs: DigestInputs, no: int) -> Any:
    return next(t for t in inputs.ledger.tasks if t.task.no == no)


def test_lights_at_their_boundaries(inputs: DigestInputs, planning: Rules) -> None:
    stored = task(inputs, 2)
    ledger = inputs.ledger
    due = stored.task.deadline.due
    assert due is not None
    assert light(stored, due - dt.timedelta(days=8), ledger, planning) == "green"
    assert light(stored, due - dt.timedelta(days=7), ledger, planning) == "yellow"
    assert light(stored, due, ledger, planning) == "yellow"  # due today is not overdue yet
    assert light(stored, due + dt.timedelta(days=1), ledger, planning) == "red"
    assert light(task(inputs, 4), due + dt.timedelta(days=365), ledger, planning) == "done"


def test_a_standing_duty_is_never_red(isolated_env: Path, cli: Cli) -> None:
    """全年 tasks were counted down to 12-31 like deadlines: 89 red on 2019-01-02."""
    inputs, planning = seed_inputs(cli)
    lights = Counter(
        (t.task.deadline.kind.value, light(t, dt.date(2019, 1, 2), inputs.ledger, planning))
        for t in inputs.ledger.tasks
    )
    assert lights[("all_year", "green")] == 36
    assert not [k for k in lights if k[0] == "all_year" and k[1] != "green"]
    assert lights[("date", "red")] == 47  # every dated task is overdue by then
    on_12_26 = Counter(
        light(t, dt.date(2018, 12, 26), inputs.ledger, planning)
        for t in inputs.ledger.tasks
        if t.task.deadline.kind.value == "all_year"
    )
    assert on_12_26 == {"green": 36}


def test_the_board_overdue_upcoming_and_done(inputs: DigestInputs, planning: Rules) -> None:
    data = digest(inputs, planning)
    assert data["totals"] == {
        "red": 1,
        "yellow": 2,
        "green": 1,
        "done": 1,
        "tasks": 5,
        "new_overdue": 0,
    }
    assert [
        (s["numeral"], s["red"], s["yellow"], s["green"], s["done"]) for s in data["sections"]
    ] == [
        ("一", 1, 1, 0, 0),
        ("二", 0, 1, 1, 1),
    ]
    [overdue] = data["overdue"]
    assert (overdue["no"], overdue["days"], overdue["lead"]) == (1, OVERDUE_DAYS, "环境保护局")
    assert overdue["open_units"] == ["环境保护局", "发展和改革委员会"]
    assert overdue["last_reminder"] is None
    assert overdue["progress"]["unit"] == "环境保护局"
    assert overdue["progress"]["note"] == "已拆改80%"
    assert [(t["no"], t["days_left"]) for t in data["upcoming"]] == [(2, 3), (5, 5)]
    assert [t["no"] for t in data["done"]] == [4]
    assert data["no_contact"] == [UNREACHABLE]
    # tasks done before the last digest are not news
    later = dt.datetime.now(ZONE) + dt.timedelta(minutes=1)
    assert digest(inputs, planning, since=later)["done"] == []


def test_newly_overdue_and_escalated_units(inputs: DigestInputs, planning: Rules) -> None:
    # task 2 fell due 3 days from today: four days later it is new, eleven days later old
    later = local_today() + dt.timedelta(days=4)
    data = digest(
        inputs,
        planning,
        day=later,
        since=dt.datetime.combine(later, dt.time(), tzinfo=ZONE) - dt.timedelta(days=1),
    )
    assert [(t["no"], t["new"]) for t in data["overdue"]] == [(1, False), (2, True)]
    assert data["totals"]["new_overdue"] == 1
    # task 1 is OVERDUE_DAYS (10) calendar days late: at least 5 working days, escalated
    escalated = {u["unit"]: u for u in data["escalated"]}
    assert set(escalated) == {"环境保护局", "发展和改革委员会"}
    lead = escalated["环境保护局"]
    assert lead["contact"] == "环保局联络员"
    [entry] = lead["tasks"]
    assert (entry["no"], entry["role_label"], entry["days"]) == (1, "牵头", OVERDUE_DAYS + 4)
    assert data["escalated"][0]["unit"] == "环境保护局"  # units that lead come first
    # nobody is escalated to about itself
    itself = Supervisor(name="环境保护局", email="z@test.example.org")
    assert "环境保护局" not in {u["unit"] for u in digest(inputs, planning, itself)["escalated"]}


def test_units_ranked_by_overdue_led_and_cooperated_separately(
    inputs: DigestInputs, planning: Rules
) -> None:
    # a week later tasks 2 and 5 are overdue too
    ranking = digest(inputs, planning, day=local_today() + dt.timedelta(days=6))["ranking"]
    assert [(u["name"], u["red"]) for u in ranking["lead"]] == [
        ("住房和城乡建设局", 1),
        ("某某新材料有限公司", 1),
        ("环境保护局", 1),
    ]
    assert [(u["name"], u["red"]) for u in ranking["cooperating"]] == [("发展和改革委员会", 1)]


def test_group_members_are_ranked_one_by_one(isolated_env: Path, cli: Cli) -> None:
    inputs, planning = seed_inputs(cli)
    data = build_digest(
        inputs, None, planning, dt.date(2018, 10, 8), dt.datetime(2018, 10, 5, tzinfo=ZONE)
    )
    names = {u["name"] for side in data["ranking"].values() for u in side}
    assert "克井镇人民政府" in names and "五龙口镇人民政府" in names
    assert "镇人民政府" not in names  # the group itself is not a unit


def test_a_scoped_supervisor_gets_its_part_only(inputs: DigestInputs, planning: Rules) -> None:
    by_section = next(s for s in planning.contacts.supervisors if s.sections)
    data = digest(inputs, planning, by_section)
    assert data["scope"] == "二、油品与监测"
    assert data["totals"]["tasks"] == 3
    assert data["overdue"] == []
    assert [s["numeral"] for s in data["sections"]] == ["二"]

    by_unit = Supervisor(name="住建督查", email="x@test.example.org", units=["住房和城乡建设局"])
    data = digest(inputs, planning, by_unit, day=local_today() + dt.timedelta(days=6))
    assert data["scope"] == "住房和城乡建设局"
    assert [u["name"] for u in data["ranking"]["lead"]] == ["住房和城乡建设局"]
    assert data["no_contact"] == []  # task 5 (the unreachable enterprise) is out of scope


def test_the_text_and_html_say_it_all(inputs: DigestInputs, planning: Rules) -> None:
    data = digest(inputs, planning)
    text = render("digest", "text", data)
    assert "共5项任务：逾期1项，7日内到期2项，正常推进1项，已办结1项。" in text
    assert "第1项　完成燃煤锅炉拆改任务\n   完成时限：" in text
    assert f"已逾期{OVERDUE_DAYS}天（" in text and "牵头：环境保护局" in text
    assert "未办结：环境保护局、发展和改革委员会；催办0次" in text
    assert "环境保护局：已拆改80%" in text
    assert "第2项　开展扬尘专项检查" in text and "（还有3天）" in text
    assert "新办结" in text and "第4项　建成交通监测站点" in text
    assert f"无联系方式的单位：{UNREACHABLE}（请补充联系方式）" in text
    assert "二、提级督办（逾期5个工作日以上，2个单位）" in text
    assert "环境保护局（联系人：环保局联络员）：1项" in text
    assert "无需处理" not in text
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)  # dates in Chinese, never ISO
    html = render("digest", "html", data)
    assert 'style="' in html and "#b3261e" in html  # the red mark
    assert "<table" not in html  # no columns that break into a character per line on a phone
    assert "完成燃煤锅炉拆改任务" in html and "已拆改80%" in html and UNREACHABLE in html
    assert "<script" not in html and "<img" not in html and "http" not in html
    subject = render("digest", "subject", data)
    assert "逾期1项" in subject and "\n" not in subject


def test_the_robot_post_names_who_cannot_be_reached(inputs: DigestInputs, planning: Rules) -> None:
    data = digest(inputs, planning)
    data["bad_addresses"] = ["环境保护局（邮箱hbj@@example）"]
    post = render("digest", "md", data)
    assert "- 无联系方式的单位1个，请补充联系方式" in post
    assert "- 地址无效的单位1个，相关提醒未发出，请更正（详见邮件）" in post
    reachable = render("digest", "md", {**data, "no_contact": [], "bad_addresses": []})
    assert "无联系方式" not in reachable and "地址无效" not in reachable


def test_nothing_to_report_is_said_plainly(inputs: DigestInputs, planning: Rules) -> None:
    first = Supervisor(name="一组", email="y@test.example.org", sections=[1])
    day = local_today() - dt.timedelta(days=60)  # long before any deadline
    data = digest(inputs, planning, first, day=day)
    assert (data["totals"]["red"], data["totals"]["yellow"]) == (0, 0)
    text = render("digest", "text", data)
    html = render("digest", "html", data)
    for part in (text, html):
        assert "今日无逾期、临期任务，无新办结，消息均已送达，无需处理。" in part
    assert "无逾期任务。" in text and "7日内无到期任务。" in text


def test_dead_and_retrying_messages_are_counted_in_full_and_said_in_chinese(
    inputs: DigestInputs, planning: Rules
) -> None:
    troubled = replace(
        inputs,
        undelivered=(
            Undelivered("dead", "letter", None, "环境保护局", "email", "recipient refused: 550 5.1.1 no such user"),
            Undelivered("retry", "letter", None, "住房和城乡建设局", "sms", "sms ConnectError: All connection attempts failed"),
        ),
        undelivered_counts={"dead": 250, "retry": 1},
    )  # fmt: skip
    data = digest(troubled, planning)
    assert (data["undelivered"]["dead"], data["undelivered"]["retry"]) == (250, 1)
    text = render("digest", "text", data)
    assert "未送达的消息：失败250条，重试中1条" in text
    assert "失败：环境保护局，收件地址被拒收，请核对地址" in text
    assert "重试中：住房和城乡建设局，连接短信网关失败" in text
    assert "ConnectError" not in text and "refused" not in text


def test_the_agenda_lists_a_units_open_tasks_with_its_role(
    inputs: DigestInputs, planning: Rules
) -> None:
    day = local_today()
    agendas = build_agendas(inputs.ledger, day, planning, OfficeSettings())
    lead = agendas.get("环境保护局")
    assert lead is not None
    assert [(t["no"], t["role_label"], t["light"]) for t in lead] == [(1, "牵头", "red")]
    assert lead[0]["number"] == f"大气攻坚〔{day.year}〕第1项"
    cooperating = agendas.get("发展和改革委员会")
    assert cooperating is not None
    assert [(t["no"], t["role_label"]) for t in cooperating] == [(1, "配合")]
    assert agendas.get("交通运输局") is None  # its one task is done
    upcoming = agendas.get("住房和城乡建设局")
    assert upcoming is not None
    assert upcoming[0]["next"] == (day + dt.timedelta(days=3)).isoformat()
    assert [t["light"] for t in upcoming].count("yellow") == 1


def test_every_part_of_the_digest_and_escalation_list_renders(
    inputs: DigestInputs, planning: Rules
) -> None:
    data = digest(inputs, planning)
    listed = {key: data[key] for key in ESCALATION_FIELDS}
    for kind, payload in (("digest", data), ("escalation", listed)):
        for channel in ("email", "sms", "wecom", "dingtalk"):
            values = report_context(
                kind=kind, recipient="督查室", payload=payload, settings=OfficeSettings()
            )
            rendered = Renderer().render(kind, {**values, "channel": channel}, PARTS)
            assert rendered.subject and rendered.text and rendered.html
            assert rendered.sms and rendered.md
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


def test_clock_jumps_send_no_report_twice_and_lose_none(
    known: Path, isolated_env: Path, planning: Rules
) -> None:
    settings = load_config().settings
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    today = local_today()

    def at(day: dt.date, hour: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour), tzinfo=ZONE).astimezone(dt.UTC)

    def keys() -> set[str]:
        with sqlite3.connect(isolated_env / "ledger.db") as con:
            return {k for (k,) in con.execute("SELECT key FROM outbox WHERE kind = 'digest'")}

    assert enqueue_reports(store, planning, settings, at(today, 8)) == []  # before 08:30
    first = enqueue_reports(store, planning, settings, at(today, 10))
    assert {m.recipient_name for m in first} == {"督查室", "第二督导组"}
    sent = keys()
    assert len(sent) == 2
    enqueue_reports(store, planning, settings, at(today, 8))  # back two hours
    enqueue_reports(store, planning, settings, at(today, 10))  # and on again
    assert keys() == sent
    tomorrow = today + dt.timedelta(days=1)
    enqueue_reports(store, planning, settings, at(tomorrow, 10))  # forward a day
    working = planning.calendar.is_working_day(tomorrow)
    assert len(keys()) == (4 if working else 2)
    assert all(tomorrow.isoformat() in k for k in keys() - sent)
    store.dispose()


def test_a_supervisor_who_asks_gets_one_escalation_list_a_day(
    known: Path, isolated_env: Path, cli: Cli
) -> None:
    contacts = known / "contacts.toml"
    text = contacts.read_text(encoding="utf-8").replace(
        'email = "dcs@test.example.org"',
        'email = "dcs@test.example.org"\nchannels = { escalation = ["email"] }',
    )
    contacts.write_text(text, encoding="utf-8")
    config = load_config()
    settings = config.settings
    planning = Rules(
        settings.policy, config.calendar(), settings.zone, load_contacts(config.contacts_path)
    )
    store = open_store(settings.db)
    moment = dt.datetime.combine(local_today(), dt.time(10), tzinfo=ZONE)
    messages = enqueue_reports(store, planning, settings, moment)
    assert sorted((m.kind.value, m.recipient_name) for m in messages) == [
        ("digest", "督查室"),
        ("digest", "第二督导组"),
        ("escalation", "督查室"),
    ]
    assert enqueue_reports(store, planning, settings, moment + dt.timedelta(hours=1)) != []
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        count = con.execute("SELECT count(*) FROM outbox WHERE kind = 'escalation'").fetchone()[0]
    assert count == 1
    store.dispose()
    [listed] = [m for m in messages if m.kind.value == "escalation"]
    text = render("escalation", "text", listed.payload)
    assert "以下单位承担的任务逾期5个工作日以上，提请督办" in text
    # letters.jsonl names it as its contract says
    day = planning.calendar.on_or_after(local_today()).isoformat()
    assert cli("simulate", "--from", day, "--to", day, "--out", str(isolated_env)).code == 0
    lines = (isolated_env / "letters.jsonl").read_text(encoding="utf-8").splitlines()
    kinds = sorted((line["kind"], line["recipient"]) for line in map(json.loads, lines))
    assert ("escalation_list", "督查室") in kinds
    assert ("digest", "督查室") in kinds
    assert "环境保护局（联系人：环保局联络员）：1项" in text


def test_a_first_digest_after_a_holiday_counts_from_the_last_working_day(
    isolated_env: Path, cli: Cli
) -> None:
    """No digest sent before: what is new is counted from the digest hour of the last
    working day (2018-09-30, a make-up working day before National Day), not from
    yesterday, a day off whose completions the supervisors would never hear of."""
    assert cli("import", str(SEED_PATH)).code == 0
    assert cli("digest", "--at", "2018-10-08 09:31").code == 0
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        payloads = [
            json.loads(p)
            for (p,) in con.execute("SELECT payload FROM outbox WHERE kind = 'digest'")
        ]
    assert payloads
    assert {payload["since"][:16] for payload in payloads} == {"2018-09-30 08:30"}


def test_a_long_digest_lists_the_most_urgent_and_counts_the_rest(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A province's ledger stays a readable message (and within the render budget): each
    list is cut at ``LISTED``, the headings give the whole numbers, a line the rest."""
    inputs, planning = seed_inputs(cli)
    day = dt.date(2018, 12, 28)
    since = dt.datetime(2018, 12, 27, 0, 30, tzinfo=dt.UTC)
    whole = build_digest(inputs, None, planning, day, since)  # the seed is never cut
    assert whole["counts"]["escalated"] == len(whole["escalated"])
    assert whole["counts"]["overdue"] == len(whole["overdue"])
    monkeypatch.setattr("reminder.digest.LISTED", 3)
    cut = build_digest(inputs, None, planning, day, since)
    counts = cut["counts"]
    assert counts["overdue"] == len(whole["overdue"]) > 3
    assert counts["escalated"] == len(whole["escalated"]) > 3
    assert cut["overdue"] == whole["overdue"][:3]  # the longest overdue first
    assert [u["unit"] for u in cut["escalated"]] == [u["unit"] for u in whole["escalated"][:3]]
    assert all(len(u["tasks"]) <= 3 for u in cut["escalated"])
    assert [u["count"] for u in cut["escalated"]] == [
        len(u["tasks"]) for u in whole["escalated"][:3]
    ]
    assert len(cut["ranking"]["lead"]) == 3 and counts["lead"] > 3
    text = render("digest", "text", {**cut, "board": "https://duban.example.org/b/x"})
    assert f"三、逾期任务（{counts['overdue']}项）" in text
    assert f"……另有{counts['overdue'] - 3}项未列出，见督办看板。" in text
    assert f"……另有{counts['escalated'] - 3}个单位未列出，见督办看板。" in text
    assert f"……另有{counts['lead'] - 3}个单位未列出" in text
    assert text.count("\n\n\n\n") == 0  # no blank runs where nothing was cut
    html = render("digest", "html", cut)
    assert f"逾期任务（{counts['overdue']}项）" in html and "未列出。" in html
    escalation = {key: cut[key] for key in ESCALATION_FIELDS}
    listed = render("escalation", "text", escalation)
    assert f"……另有{counts['escalated'] - 3}个单位未列出。" in listed
    subject = render("digest", "subject", cut)
    assert f"提级督办{counts['escalated']}个单位" in subject
