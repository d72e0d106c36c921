"""What the channels refuse or warn about before anything is sent: control characters
in names and header settings, credential files others can read, tokens and robot keys
in plain http:// to a host that is not loopback. And their clocks come in."""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reminder.channels import Outgoing, Result
from reminder.channels.robots import RobotSender
from reminder.channels.sms import SmsSender
from reminder.contacts import parse_contacts
from reminder.errors import ConfigError
from reminder.secrets import secret
from reminder.settings import RobotSettings, Settings, SmsSettings
from tests.conftest import SEED, Cli
from tests.http_server import Answer, Gateway, http_gateway
from tests.test_bad_input import assert_one_line_error, config_copy

SMALL_TICK = "2018-01-24 09:00"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --- control characters: one line each, naming the file and the key ------------------


def test_check_flags_control_characters_in_names_and_header_settings(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    contacts.write_text(
        contacts.read_text(encoding="utf-8")
        + '\n[[unit]]\nname = "新单位\\r\\nBcc: all@example.org"\nemail = "x@example.org"\n',
        encoding="utf-8",
    )
    edit(contacts, 'contact = "环保局联络员"', 'contact = "环保局\\u0007联络员"')
    edit(contacts, '"公安交管部门"', '"公安交管部门", "市公安\\n局"')
    reminder = folder / "reminder.toml"
    reminder.write_text(
        reminder.read_text(encoding="utf-8") + '\n[smtp]\nfrom_name = "督办\\n提醒"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    monkeypatch.setenv("REMINDER_SMTP__REPLY_TO", "re\x01ply@example.org")
    assert cli("import", str(SEED)).code == 0
    result = cli("check")
    assert result.code == 1
    lines = result.out.splitlines()
    expected = [
        f"error   {contacts}: [[unit]] '新单位\\r\\nBcc: all@example.org': name:"
        " contains a line break (U+000D): '新单位\\r\\nBcc: all@example.org'",
        f"error   {contacts}: [[unit]] '公安局': aliases: contains a line break (U+000A):"
        " '市公安\\n局'",
        f"error   {reminder}: [smtp] from_name: contains a line break (U+000A): '督办\\n提醒'",
        f"error   {reminder}: [smtp] reply_to: contains a control character (U+0001):"
        " 're\\x01ply@example.org' (from REMINDER_SMTP__REPLY_TO)",
    ]
    for line in expected:
        assert line in lines, result.out
    contact_line = [line for line in lines if ": contact: " in line]
    assert contact_line == [
        f"error   {contacts}: [[unit]] '环境保护局': contact: contains a control character"
        " (U+0007): '环保局\\x07联络员'"
    ]


def test_bundled_config_has_no_channel_problems(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    result = cli("check")
    assert "control character" not in result.out and "line break" not in result.out
    assert "plaintext" not in result.out and "readable by" not in result.out


# --- credential files ------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_credential_file_others_can_read_is_warned_about(
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: int,
    warned: bool,
) -> None:
    token = isolated_env / "sms-token"
    token.write_text("tok-secret-123\n", encoding="utf-8")
    os.chmod(token, mode)
    monkeypatch.setenv("REMINDER_SMS_TOKEN_FILE", str(token))
    with capture_logs() as logs:
        assert secret("SMS_TOKEN", "sms_token") == "tok-secret-123"  # still used
    events = [event for event in logs if event["event"] == "credential_file_readable"]
    assert events == (
        [
            {
                "event": "credential_file_readable",
                "log_level": "warning",
                "origin": "REMINDER_SMS_TOKEN_FILE",
                "path": str(token),
                "mode": f"{mode:04o}",
            }
        ]
        if warned
        else []
    )
    result = cli("check")
    line = (
        f"warning REMINDER_SMS_TOKEN_FILE {token}: readable by group or others"
        f" (mode {mode:04o}): chmod 600 {token}"
    )
    assert (line in result.out.splitlines()) is warned, result.out
    assert result.code == 0  # a warning, not an error
    assert "tok-secret" not in result.out + result.err


def test_a_systemd_credential_others_can_read_is_warned_about(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = isolated_env / "credentials"
    folder.mkdir()
    password = folder / "smtp_password"
    password.write_text("pw-secret\n", encoding="utf-8")
    os.chmod(password, 0o644)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    with capture_logs() as logs:
        assert secret("SMTP_PASSWORD", "smtp_password") == "pw-secret"
    assert [(e["event"], e["origin"]) for e in logs] == [
        ("credential_file_readable", "systemd credential")
    ]
    result = cli("check")
    assert f"warning systemd credential {password}: readable by group or others" in result.out


# --- no token or robot key in plain http:// to a host that is not loopback ---------------


def test_sms_token_is_never_sent_in_plain_http_to_a_remote_host(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMINDER_SMS__URL", "http://sms.example.org/send?key=K")
    result = cli("run", "--once", "--at", SMALL_TICK)
    assert result.code == 78
    assert_one_line_error(
        result.err,
        "reminder.toml: sms: plaintext HTTP to sms.example.org refused",
        "use https://, or allow_plaintext = true",
    )
    assert "key=K" not in result.err
    monkeypatch.delenv("REMINDER_SMS__URL")  # the environment overrides what is passed in
    # as for SMTP: https, loopback, or knowingly allowed
    assert Settings(sms={"url": "https://sms.example.org/send"}).sms.url
    assert Settings(sms={"url": "http://127.0.0.1:8080/send"}).sms.url
    assert Settings(sms={"url": "http://[::1]:8080/send"}).sms.url
    allowed = {"url": "http://sms.example.org/send", "allow_plaintext": True}
    assert Settings(sms=allowed).sms.allow_plaintext
    with pytest.raises(ValueError, match="not an http"):
        SmsSettings(url="ftp://sms.example.org/send")


def test_robot_key_is_never_sent_in_plain_http_to_a_remote_host(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    edit(
        contacts,
        'name = "林业局"',
        'name = "林业局"\nwebhook = "http://robot.example.org/send?key=ROBOT-KEY"',
    )
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    assert cli("import", str(SEED)).code == 0
    check = cli("check")
    assert check.code == 1
    assert (
        f"error   {contacts}: [[unit]] '林业局': webhook: plaintext http:// to"
        " robot.example.org refused (the URL carries the robot's key): use https://,"
        " or [robots] allow_plaintext = true"
    ) in check.out.splitlines()
    result = cli("run", "--once", "--at", SMALL_TICK)
    assert result.code == 78
    assert_one_line_error(result.err, "'林业局': webhook: plaintext http:// to robot.example.org")
    for output in (check.out, result.out, result.err):
        assert "ROBOT-KEY" not in output
    monkeypatch.setenv("REMINDER_ROBOTS__ALLOW_PLAINTEXT", "true")
    assert "plaintext" not in cli("check").out


def test_robot_sender_refuses_a_plaintext_webhook_unless_allowed() -> None:
    contacts = parse_contacts(
        '[[unit]]\nname = "环境保护局"\nwebhook = "http://qyapi.example.org/send?key=K"\n',
        "contacts.toml",
    )
    with pytest.raises(ConfigError, match=r"plaintext http:// to qyapi\.example\.org refused"):
        RobotSender(RobotSettings(), contacts)
    RobotSender(RobotSettings(allow_plaintext=True), contacts)
    loopback = parse_contacts(
        '[[unit]]\nname = "环境保护局"\nwebhook = "http://127.0.0.1:9/send?key=K"\n',
        "contacts.toml",
    )
    RobotSender(RobotSettings(), loopback)


# --- the senders' clocks come in -------------------------------------------------------

FIXED = dt.datetime(2018, 10, 8, 1, 0, tzinfo=dt.UTC)


def fixed_now() -> dt.datetime:
    return FIXED


async def test_http_senders_read_the_clock_they_are_given() -> None:
    with http_gateway() as gateway:
        await _retry_after_from_the_given_clock(gateway)
        await _dingtalk_signed_with_the_given_clock(gateway)


async def _retry_after_from_the_given_clock(gateway: Gateway) -> None:
    # Retry-After as an HTTP date, 2 minutes after the clock the sender was given
    gateway.answer = Answer(status=503, headers={"Retry-After": "Mon, 08 Oct 2018 01:02:00 GMT"})
    sender = SmsSender(SmsSettings(url=gateway.url + "/sms"), "tok", now=fixed_now)
    item = Outgoing(1, "k1", "overdue", "sms", "13800000001", "环境保护局", body="短信")
    results: list[Result] = []
    try:
        await sender.send([item], results.append)
    finally:
        await sender.close()
    [result] = results
    assert (result.status, result.retry_after_s) == ("retry", 120.0)
    gateway.answer = Answer()


async def _dingtalk_signed_with_the_given_clock(gateway: Gateway) -> None:
    contacts = parse_contacts(
        f'[[unit]]\nname = "公安局"\nwebhook = "{gateway.url}/robot/send?access_token=T"\n'
        'robot = "dingtalk"\nrobot_secret_env = "TEST_CLOCK_SECRET"\n',
        "contacts.toml",
    )
    os.environ["TEST_CLOCK_SECRET"] = "SEC"
    try:
        sender = RobotSender(RobotSettings(), contacts, now=fixed_now)
        item = Outgoing(2, "k2", "overdue", "dingtalk", "公安局", "公安局", body="督办")
        results: list[Result] = []
        try:
            await sender.send([item], results.append)
        finally:
            await sender.close()
    finally:
        del os.environ["TEST_CLOCK_SECRET"]
    assert [r.status for r in results] == ["sent"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(gateway.requests[-1].path).query)
    assert query["timestamp"] == [str(int(FIXED.timestamp() * 1000))]


# --- links in letters ------------------------------------------------------------------

LINK_CASES = {
    # mail and SMS to people elsewhere, links to this machine: warned
    "smtp to loopback links": ({"REMINDER_SMTP__HOST": "smtp.example.org"}, True),
    "sms to localhost links": (
        {
            "REMINDER_SMS__URL": "https://sms.example.org/send",
            "REMINDER_WEB__BASE_URL": "http://localhost:9000",
        },
        True,
    ),
    # the embedded default (the file channel), a real address, or no links: nothing
    "file channel": ({}, False),
    "a real address": (
        {
            "REMINDER_SMTP__HOST": "smtp.example.org",
            "REMINDER_WEB__BASE_URL": "https://duban.example.org",
        },
        False,
    ),
    "no links": ({"REMINDER_SMTP__HOST": "smtp.example.org", "REMINDER_WEB__BASE_URL": ""}, False),
}


@pytest.mark.parametrize("case", LINK_CASES, ids=list(LINK_CASES))
def test_links_to_this_machine_in_letters_sent_elsewhere_are_warned_about(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    env, warned = LINK_CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli("import", str(SEED)).code == 0
    result = cli("check")
    lines = [line for line in result.out.splitlines() if "[web] base_url" in line]
    if warned:
        assert len(lines) == 1, result.out
        assert lines[0].startswith("warning ") and "will not open" in lines[0]
        assert ("SMS" if "sms" in case else "SMTP") in lines[0]
    else:
        assert lines == [], result.out
    assert result.code == 0  # a warning, not an error


def test_a_control_character_in_a_ledgers_unit_is_said_and_shown_escaped(
    cli: Cli, isolated_env: Path
) -> None:
    """A cell pasted from another document: the name is not printed raw (a BEL, a line
    separator) but escaped, and `check` says what is wrong with it instead of only
    calling it unknown."""
    text = SEED.read_text(encoding="utf-8")
    cell = "\t发展和改革委员会、工业和信息化委员会\n"
    assert cell in text
    ledger = isolated_env / "pasted.txt"
    ledger.write_text(text.replace(cell, cell.replace("信息化", "信息化\x07"), 1), "utf-8")
    imported = cli("import", str(ledger))
    assert imported.code == 0
    assert "'工业和信息化\\x07委员会'" in imported.out and "\x07" not in imported.out
    result = cli("check")
    lines = [line for line in result.out.splitlines() if "control character" in line]
    assert lines == [
        "error   unit: contains a control character (U+0007): '工业和信息化\\x07委员会' "
        "(tasks 3); correct the ledger's cell"
    ]
    assert "\x07" not in result.out and result.code != 0
