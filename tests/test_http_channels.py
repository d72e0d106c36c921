"""SMS gateways and group robots over real HTTP (a local server in this process)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from reminder.channels import Outgoing, Result
from reminder.channels.robots import RobotSender
from reminder.channels.sms import SmsSender
from reminder.contacts import parse_contacts
from reminder.settings import RobotSettings, SmsSettings
from reminder.text import fit, segments
from tests.conftest import SEED, Cli
from tests.http_server import Answer, Gateway, http_gateway
from tests.test_bad_input import config_copy


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with http_gateway() as running:
        yield running


def sms(
    item_id: int, to: str = "13800000001", body: str = "【督办提醒】环境保护局：第8项任务已逾期。"
) -> Outgoing:
    return Outgoing(
        id=item_id,
        key=f"k{item_id}",
        kind="overdue",
        channel="sms",
        to=to,
        recipient_name="环境保护局",
        body=body,
    )


async def send(sender: SmsSender | RobotSender, items: list[Outgoing]) -> list[Result]:
    results: list[Result] = []
    try:
        await sender.send(items, results.append)
    finally:
        await sender.close()
    return sorted(results, key=lambda r: r.id)


def test_sms_text_fits_its_segments() -> None:
    assert segments("短" * 70) == 1
    assert segments("长" * 71) == 2
    assert segments("长" * 135) == 3
    assert fit("长" * 300, 3) == "长" * 200 + "…"
    assert fit("短信 文本\n换行", 1) == "短信 文本 换行"
    assert len(fit("长" * 300, 1)) == 70
    # a link in an SMS is never cut: the text before it is
    link = "http://127.0.0.1:8080/l/abcdefghijkl.aw2JOA.yQeCcZr3KPs5utHe6mt7NkTrJj8"
    long = "单位：" + "逾期" * 100 + "。签收及反馈：" + link + " ，咨询0391-0000000。"
    fitted = fit(long, 2, link)
    assert len(fitted) == 134 and fitted.endswith(link + " ，咨询0391-0000000。")
    assert fitted.startswith("单位：逾期") and fitted.index("…") + 1 == fitted.index(link)
    assert fit("短文本 " + link, 3, link) == "短文本 " + link
    assert fit("文" * 10 + link, 1, link) == ("文" * 10 + link)[:69] + "…"  # no room: cut


async def test_sms_gateway_gets_json_and_the_token(gateway: Gateway) -> None:
    sender = SmsSender(SmsSettings(url=gateway.url + "/sms"), "tok-123")
    results = await send(sender, [sms(1), sms(2, to="13800000002")])
    assert [r.status for r in results] == ["sent", "sent"]
    bodies = sorted((r.json for r in gateway.requests), key=lambda b: b["to"])
    assert bodies == [
        {"to": "13800000001", "text": "【督办提醒】环境保护局：第8项任务已逾期。"},
        {"to": "13800000002", "text": "【督办提醒】环境保护局：第8项任务已逾期。"},
    ]
    assert {r.headers["Authorization"] for r in gateway.requests} == {"Bearer tok-123"}
    assert {r.path for r in gateway.requests} == {"/sms"}


async def test_an_aliyun_style_body_and_answer(gateway: Gateway) -> None:
    settings = SmsSettings(
        url=gateway.url,
        body='{"PhoneNumbers": {{ to | tojson }}, "TemplateParam": {{ {"text": text, "parts": segments} | tojson }}}',
        ok_json={"Code": "OK"},
        auth_header="X-Api-Key",
        auth_scheme="",
    )
    gateway.answers = [
        Answer(body={"Code": "OK"}),
        Answer(body={"Code": "isv.MOBILE_NUMBER_ILLEGAL"}),
    ]
    results = await send(SmsSender(settings, "key"), [sms(1)])
    results += await send(SmsSender(settings, "key"), [sms(2)])
    assert [(r.status, r.code) for r in results] == [("sent", 200), ("dead", 200)]
    assert "Code='isv.MOBILE_NUMBER_ILLEGAL'" in results[1].detail
    first = gateway.requests[0]
    assert first.json == {
        "PhoneNumbers": "13800000001",
        "TemplateParam": {"text": "【督办提醒】环境保护局：第8项任务已逾期。", "parts": 1},
    }
    assert first.headers["X-Api-Key"] == "key"


@pytest.mark.parametrize(
    ("answer", "status", "retry_after"),
    [
        (Answer(status=400, body={"error": "bad number"}), "dead", None),
        (Answer(status=401, body={"error": "bad token"}), "dead", None),
        (Answer(status=503, headers={"Retry-After": "120"}), "retry", 120.0),
        (Answer(status=429, headers={"Retry-After": "30"}), "retry", 30.0),
        (Answer(status=500), "retry", None),
    ],
)
async def test_gateway_answers(
    gateway: Gateway, answer: Answer, status: str, retry_after: float | None
) -> None:
    gateway.answer = answer
    [result] = await send(SmsSender(SmsSettings(url=gateway.url), None), [sms(1)])
    assert (result.status, result.code, result.retry_after_s) == (
        status,
        answer.status,
        retry_after,
    )


async def test_a_slow_or_absent_gateway_is_retried(gateway: Gateway) -> None:
    gateway.answer = Answer(delay_s=1.0)
    [slow] = await send(SmsSender(SmsSettings(url=gateway.url, timeout_s=0.2), None), [sms(1)])
    assert slow.status == "retry"
    assert "Timeout" in slow.detail
    [absent] = await send(
        SmsSender(SmsSettings(url="http://127.0.0.1:9", timeout_s=1), None), [sms(2)]
    )
    assert absent.status == "retry"


CONTACTS = """
[[unit]]
name = "环境保护局"
webhook = "{url}/cgi-bin/webhook/send?key=WECOM-KEY"

[[unit]]
name = "公安局"
webhook = "{url}/robot/send?access_token=DING-TOKEN"
robot = "dingtalk"
robot_secret_env = "TEST_DINGTALK_SECRET"
"""


def robot(item_id: int, to: str, channel: str) -> Outgoing:
    return Outgoing(
        id=item_id,
        key=f"k{item_id}",
        kind="overdue",
        channel=channel,
        to=to,
        recipient_name=to,
        subject="【逾期提醒】第8项任务已逾期3个工作日",
        body="### 逾期提醒\n**环境保护局**（牵头单位）",
    )


async def test_wecom_robot_markdown(gateway: Gateway) -> None:
    contacts = parse_contacts(CONTACTS.format(url=gateway.url), "contacts.toml")
    [result] = await send(RobotSender(RobotSettings(), contacts), [robot(1, "环境保护局", "wecom")])
    assert result.status == "sent"
    request = gateway.requests[0]
    assert request.path == "/cgi-bin/webhook/send?key=WECOM-KEY"
    assert request.json == {
        "msgtype": "markdown",
        "markdown": {"content": "### 逾期提醒\n**环境保护局**（牵头单位）"},
    }


async def test_dingtalk_robot_is_signed(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DINGTALK_SECRET", "SEC-secret")
    contacts = parse_contacts(CONTACTS.format(url=gateway.url), "contacts.toml")
    [result] = await send(RobotSender(RobotSettings(), contacts), [robot(1, "公安局", "dingtalk")])
    assert result.status == "sent"
    request = gateway.requests[0]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    assert query["access_token"] == ["DING-TOKEN"]
    timestamp = query["timestamp"][0]
    expected = base64.b64encode(
        hmac.new(b"SEC-secret", f"{timestamp}\nSEC-secret".encode(), hashlib.sha256).digest()
    ).decode()
    assert query["sign"] == [expected]
    assert request.json["markdown"]["title"] == "【逾期提醒】第8项任务已逾期3个工作日"
    assert "at" not in request.json  # nobody to @


async def test_a_dingtalk_post_ats_the_units_contact(gateway: Gateway) -> None:
    contacts = parse_contacts(
        CONTACTS.format(url=gateway.url).replace('robot_secret_env = "TEST_DINGTALK_SECRET"\n', ""),
        "contacts.toml",
    )
    item = robot(1, "公安局", "dingtalk")._replace(
        body="### 督办提醒\n\n@13800000002", mention="13800000002"
    )
    [result] = await send(RobotSender(RobotSettings(), contacts), [item])
    assert result.status == "sent"
    request = gateway.requests[0].json
    assert request["at"] == {"atMobiles": ["13800000002"], "isAtAll": False}
    assert request["markdown"]["text"].endswith("@13800000002")


async def test_robot_error_codes(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DINGTALK_SECRET", "SEC-secret")
    contacts = parse_contacts(CONTACTS.format(url=gateway.url), "contacts.toml")
    gateway.answers = [
        Answer(body={"errcode": 45009, "errmsg": "api freq out of limit"}),
        Answer(body={"errcode": 310000, "errmsg": "keywords not in content"}),
        Answer(body=b"<html>not json</html>"),
    ]
    results = await send(
        RobotSender(RobotSettings(), contacts),
        [
            robot(1, "环境保护局", "wecom"),
            robot(2, "环境保护局", "wecom"),
            robot(3, "环境保护局", "wecom"),
        ],
    )
    assert [(r.status, r.code, r.retry_after_s) for r in results] == [
        ("retry", 45009, 60.0),
        ("dead", 310000, None),
        ("dead", 200, None),
    ]
    unknown = await send(RobotSender(RobotSettings(), contacts), [robot(4, "无此单位", "wecom")])
    assert [(r.status, r.detail) for r in unknown] == [
        ("dead", "no webhook for 无此单位 in contacts.toml")
    ]
    monkeypatch.delenv("TEST_DINGTALK_SECRET")
    unsigned = await send(RobotSender(RobotSettings(), contacts), [robot(5, "公安局", "dingtalk")])
    assert [(r.status, r.detail) for r in unsigned] == [
        ("retry", "TEST_DINGTALK_SECRET is not set (robot of 公安局)")
    ]


async def test_robots_are_paced_under_twenty_a_minute(gateway: Gateway) -> None:
    contacts = parse_contacts(CONTACTS.format(url=gateway.url), "contacts.toml")
    clock = [1000.0]
    sender = RobotSender(RobotSettings(), contacts, monotonic=lambda: clock[0])
    items = [robot(i, "环境保护局", "wecom") for i in range(1, 23)]
    results = await send(sender, items)
    assert [r.status for r in results].count("sent") == 20
    deferred = [r for r in results if r.status == "deferred"]
    assert len(deferred) == 2
    assert all(r.retry_after_s == pytest.approx(60.0) for r in deferred)
    assert len(gateway.requests) == 20


def test_sms_and_robots_through_the_cli(
    cli: Cli, gateway: Gateway, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    text = contacts.read_text(encoding="utf-8").replace(
        'mobile = "13800000001"\n',
        f'mobile = "13800000001"\nwebhook = "{gateway.url}/cgi-bin/webhook/send?key=K"\n',
        1,
    )
    contacts.write_text(text, encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    monkeypatch.setenv("REMINDER_SMS__URL", gateway.url + "/sms")
    monkeypatch.setenv("REMINDER_SMS_TOKEN", "tok-abc")
    monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
    assert cli("import", str(SEED)).code == 0
    result = cli("run", "--once", "--at", "2018-10-08 09:00")
    assert result.code == 0, result.err
    assert "tok-abc" not in result.out + result.err
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        by_channel = dict(
            con.execute(
                "SELECT channel, count(*) FROM outbox WHERE status = 'sent' GROUP BY channel"
            )
        )
    sms_requests = [r for r in gateway.requests if r.path == "/sms"]
    robot_requests = [r for r in gateway.requests if r.path.startswith("/cgi-bin")]
    assert by_channel["sms"] == len(sms_requests) > 0
    assert all(r.headers["Authorization"] == "Bearer tok-abc" for r in sms_requests)
    assert all(r.json["text"].startswith("【济源市攻坚办】") for r in sms_requests)
    # one SMS per unit (per number) a day, whatever the number of its items
    numbers = [r.json["to"] for r in sms_requests]
    assert len(numbers) == len(set(numbers))
    hbj = next(r.json["text"] for r in sms_requests if r.json["to"] == "13800000001")
    assert hbj.startswith("【济源市攻坚办】环境保护局：今日督办事项")
    # 环境保护局's robot gets one post with all its overdue tasks, in WeCom's markup
    [post] = robot_requests
    content = post.json["markdown"]["content"]
    assert '<font color="warning">督办提醒</font> · 环境保护局' in content
    assert content.count("- 第") > 1
    assert by_channel["wecom"] == 1


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_sms_length_is_counted_in_utf16_units_as_gateways_do() -> None:
    # a character outside the Basic Multilingual Plane (an emoji, a CJK Extension B
    # character) is two UTF-16 units, and a UCS-2 SMS holds 70 units (67 per part)
    emoji, ext_b = "😀", "𠀀"
    assert segments(emoji * 35) == 1
    assert segments(ext_b * 36) == 2  # 72 units, not 36 characters
    assert segments(emoji * 101) == 4  # 202 units
    one = fit(ext_b * 50, 1)
    assert one == ext_b * 34 + "…" and utf16_units(one) == 69
    three = fit("通知" + emoji * 200, 3)
    assert utf16_units(three) == 201 and segments(three) == 3
    assert three == "通知" + emoji * 99 + "…"  # 2 + 198 + 1 = 201 units
    # a pair is never split in two when cutting
    assert fit("短" + emoji * 40, 1) == "短" + emoji * 34 + "…"
    # the link is kept whole, the text before it is cut by units
    link = "http://127.0.0.1:8080/l/abc"
    fitted = fit(ext_b * 80 + " " + link, 1, link)
    assert fitted.endswith(link) and utf16_units(fitted) == 70
    assert fitted == ext_b * 21 + "…" + link  # 42 + 1 + 27 = 70 units
