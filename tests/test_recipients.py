"""Who hears a reminder: items per channel and kind, fallbacks, opt-outs, no copies."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from reminder.contacts import parse_contacts
from reminder.ledger.deadline import parse_deadline
from reminder.ledger.model import Role, Task, UnitKind, UnitRef
from reminder.planner import Occasion, Reminder, Target
from reminder.policy import Kind, Policy
from reminder.recipients import address, superseded
from tests.conftest import CONFIG, SEED, Cli

CONTACTS = """
[[unit]]
name = "甲局"
email = "jia@example.org"
mobile = "13800000001"
webhook = "https://oapi.dingtalk.com/robot/send?access_token=SECRET"
channels = { progress = [] }

[[unit]]
name = "乙局"
mobile = "13800000002"

[[unit]]
name = "丙局"

[[supervisor]]
name = "督查室"
email = "duchashi@example.org"

[[supervisor]]
name = "二科"
email = "erke@example.org"
sections = [2]

[[supervisor]]
name = "不看升级的"
email = "quiet@example.org"
channels = { escalation = [] }
"""


def reminder(unit: str, kind: Kind, escalate: bool = False) -> Reminder:
    ref = UnitRef(unit, Role.LEAD, UnitKind.UNIT, unit)
    task = Task(7, 1, "任务", (ref,), parse_deadline("9月30日", 2018), "", 1)
    target = Target(7, 70, task, (1, "一", "一"), 2018, unit, Role.LEAD)
    day = dt.date(2018, 10, 16)
    moment = dt.datetime(2018, 10, 16, 1, tzinfo=dt.UTC)
    occasion = Occasion(kind, day, moment, dt.date(2018, 9, 30), -16, 7, escalate)
    return Reminder(target, occasion)


def routes_of(
    unit: str, kind: Kind, escalate: bool = False, policy: Policy | None = None
) -> list[tuple[str, str, str]]:
    contacts = parse_contacts(CONTACTS, "contacts.toml")
    messages = address(reminder(unit, kind, escalate), contacts, policy or Policy())
    return [(m.kind.value, m.channel, m.to) for m in messages]


def test_channels_per_kind_from_the_policy() -> None:
    assert routes_of("甲局", Kind.UPCOMING) == [("upcoming", "email", "jia@example.org")]
    assert routes_of("甲局", Kind.OVERDUE) == [
        ("overdue", "email", "jia@example.org"),
        ("overdue", "sms", "13800000001"),
        ("overdue", "dingtalk", "甲局"),  # the robot's URL (a secret) is looked up when sending
    ]


def test_fallback_to_a_channel_that_reaches_the_unit() -> None:
    assert routes_of("乙局", Kind.UPCOMING) == [("upcoming", "sms", "13800000002")]


def test_unit_with_no_address_is_recorded_undeliverable() -> None:
    contacts = parse_contacts(CONTACTS, "contacts.toml")
    items = address(reminder("丙局", Kind.UPCOMING), contacts, Policy())
    assert [(m.channel, m.status) for m in items] == [("none", "unreachable")]
    unknown = address(reminder("丁局", Kind.UPCOMING), contacts, Policy())
    assert [(m.channel, m.status) for m in unknown] == [("none", "unreachable")]


def test_a_kind_switched_off_sends_nothing_and_records_nothing() -> None:
    assert routes_of("甲局", Kind.PROGRESS) == []
    policy = Policy.model_validate({"channels": {"upcoming": []}})
    assert routes_of("丙局", Kind.UPCOMING, policy=policy) == []


def test_an_escalated_reminder_is_no_copy_to_the_supervisors() -> None:
    """Escalations are in the supervisors' digest, not separate mails to them."""
    found = routes_of("甲局", Kind.OVERDUE, escalate=True)
    assert found == routes_of("甲局", Kind.OVERDUE)
    assert {to for _, _, to in found} == {"jia@example.org", "13800000001", "甲局"}


def test_superseded_records_point_at_the_reminder_sent() -> None:
    contacts = parse_contacts(CONTACTS, "contacts.toml")
    sent = reminder("甲局", Kind.OVERDUE, escalate=True)
    records = superseded(reminder("甲局", Kind.UPCOMING), sent, contacts, Policy())
    assert [(r.status, r.superseded_by) for r in records] == [
        ("superseded", address(sent, contacts, Policy())[0].key)
    ]


def test_keys_name_kind_task_unit_recipient_and_day() -> None:
    contacts = parse_contacts(CONTACTS, "contacts.toml")
    keys = [m.key for m in address(reminder("甲局", Kind.OVERDUE), contacts, Policy())]
    assert keys[0] == "overdue:70:甲局:email:jia@example.org:2018-10-16"
    assert len(set(keys)) == len(keys)


BAD_ADDRESSES = """
[[unit]]
name = "戊局"
email = ["wu@@example", "wu@example.org"]
mobile = "13800000005"

[[unit]]
name = "己局"
email = "ji@@example"
"""


def test_an_invalid_address_is_recorded_undeliverable_with_its_reason() -> None:
    contacts = parse_contacts(BAD_ADDRESSES, "contacts.toml")
    items = address(reminder("戊局", Kind.UPCOMING), contacts, Policy())
    assert [(i.channel, i.to, i.status) for i in items] == [
        ("email", "wu@example.org", "pending"),
        ("email", "wu@@example", "unreachable"),
    ]
    assert items[1].payload["problem"].startswith("invalid email address: ")
    assert "problem" not in items[0].payload
    # nothing else reaches 己局: no contact, and the address it has cannot be used
    alone = address(reminder("己局", Kind.UPCOMING), contacts, Policy())
    assert [(i.channel, i.to, i.status) for i in alone] == [
        ("none", "", "unreachable"),
        ("email", "ji@@example", "unreachable"),
    ]
    assert len({i.key for i in alone}) == 2


def test_an_invalid_address_shows_in_plan_status_and_the_digest(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """环境保护局's e-mail address is mistyped: its e-mail reminders cannot go out (SMS still
    reaches it), and plan, status and the supervisors' digest say so."""
    folder = isolated_env / "config"
    shutil.copytree(CONFIG, folder)
    contacts = folder / "contacts.toml"
    text = contacts.read_text(encoding="utf-8")
    contacts.write_text(text.replace('"hbj@example.org"', '"hbj@@example"'), encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
    assert cli("import", str(SEED)).code == 0
    moment = "2018-10-08 09:30"

    planned = json.loads(cli("plan", "--at", moment, "--json").out)
    bad = [i for i in planned if i["to"] == "hbj@@example"]
    assert bad and all(i["unit"] == "环境保护局" and i["letter"] is None for i in bad)
    assert all(i["problem"].startswith("invalid email address: ") for i in bad)
    assert all(i["problem"] is None for i in planned if i["letter"] is not None)
    assert "email:hbj@@example — invalid, not sent" in cli("plan", "--at", moment).out

    assert cli("run", "--once", "--at", moment).code == 0
    status = cli("status")
    assert "bad address:   环境保护局 email:hbj@@example" in status.out
    assert "no contact:" not in status.out  # SMS reaches it
    assert json.loads(cli("status", "--json").out)["invalid_addresses"] == [
        {"unit": "环境保护局", "channel": "email", "to": "hbj@@example"}
    ]
    digest = cli("digest", "--at", moment, "--print").out
    assert "地址无效的单位：环境保护局（邮箱hbj@@example）（相关提醒未发出，请更正）" in digest
