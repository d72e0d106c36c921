"""Delivery over real SMTP (aiosmtpd in this process): TLS, AUTH, failures, outcomes."""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import json
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from reminder.channels import Outgoing, Result
from reminder.channels.email import SmtpSender
from reminder.channels.mime import build_email
from reminder.settings import SmtpSettings
from tests.conftest import SEED, Cli
from tests.smtp_server import Handler, smtp_server
from tests.test_crash import fill_outbox

SMALL_TICK = "2018-01-24 09:00"  # task 1 due in 7 days: a letter to each of its 3 units


@pytest.fixture(params=["pipelining", "one-command-at-a-time"])
def smtp(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> Iterator[Handler]:
    """The server, once offering PIPELINING and once not: both ways of sending."""
    with smtp_server(pipelining=request.param == "pipelining") as (handler, port):
        monkeypatch.setenv("REMINDER_SMTP__HOST", "127.0.0.1")
        monkeypatch.setenv("REMINDER_SMTP__PORT", str(port))
        monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
        monkeypatch.setenv("REMINDER_DELIVERY__OUTBOX_DIR", str(isolated_env / "var" / "outbox"))
        yield handler


def outbox(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return {row["key"]: dict(row) for row in con.execute("SELECT * FROM outbox")}


def attempts(db: Path) -> list[tuple[str, int | None]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT outcome, code FROM attempt ORDER BY id").fetchall()


def run_once(cli: Cli, at: str = SMALL_TICK) -> str:
    result = cli("run", "--once", "--at", at)
    assert result.code == 0, result.err
    return result.out


def test_messages_arrive_as_sent(cli: Cli, smtp: Handler, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    out = run_once(cli)
    assert "3 letters" in out
    assert "sent 3" in out
    assert len(smtp.received) == 3
    rows = outbox(isolated_env / "ledger.db")
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert all(row["last_result"].startswith("250") for row in rows.values())
    by_to = {r.rcpt_tos[0]: r for r in smtp.received}
    assert set(by_to) == {"zjj@example.org", "fgw@example.org", "hbj@example.org"}
    message = by_to["zjj@example.org"].message
    assert message["Subject"] == "【督办提醒】你单位今日待办1项（即将到期1项）"
    assert message["To"].addresses[0].display_name == "住房和城乡建设局"
    assert message["Reply-To"] == "gongjianban@example.org"  # answers reach the office
    assert by_to["zjj@example.org"].mail_from == "duban@example.org"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "大气攻坚〔2018〕第1项" in text
    assert "牵头单位：住房和城乡建设局（你单位）；配合单位：发展和改革委员会、环境保护局" in text
    assert "1月31日（星期三）到期，还有7天。请抓紧推进，确保按期办结。" in text
    assert "即将到期（1项）" in html.get_content()
    cooperating = by_to["fgw@example.org"].message.get_body(("plain",))
    assert cooperating is not None
    assert "报送对象：牵头单位住房和城乡建设局" in cooperating.get_content()
    # the Message-ID comes from the outbox key: a repeat after a crash would carry the same
    key = next(k for k, r in rows.items() if r["recipient"] == "zjj@example.org")
    from reminder.channels.mime import message_id

    assert message["Message-ID"] == message_id(key, "duban@example.org")
    # nothing is sent twice
    again = run_once(cli)
    assert "0 letters" in again
    assert len(smtp.received) == 3


def test_header_injection_through_task_text(cli: Cli, smtp: Handler, isolated_env: Path) -> None:
    ledger = isolated_env / "evil.txt"
    text = SEED.read_text(encoding="utf-8").replace(
        "\t编制完成我市2018年城镇供暖工作实施方案",
        "\t编制完成\rBcc: evil@example.com\rX-Evil: yes\r我市2018年城镇供暖工作实施方案",
        1,
    )
    ledger.write_bytes(text.encode())
    assert cli("import", str(ledger)).code == 0
    run_once(cli)
    assert len(smtp.received) == 3
    for received in smtp.received:
        message = received.message
        assert received.rcpt_tos == [received.rcpt_tos[0]]
        assert "evil@example.com" not in received.rcpt_tos
        assert message["Bcc"] is None and message["X-Evil"] is None
        plain = message.get_body(("plain",))
        assert plain is not None and "编制完成" in plain.get_content()  # the text, as text


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ({"data": "450 4.2.1 mailbox busy, try later"}, "retry", 450),
        ({"mail": "421 4.3.0 closing"}, "retry", 421),
        ({"data": "554 5.7.1 rejected as spam"}, "dead", 554),
        ({"rcpt": "550 5.1.1 no such user"}, "dead", 550),
        ({"drop": True}, "retry", None),
    ],
)
def test_server_answers_decide_retry_or_dead(
    cli: Cli,
    smtp: Handler,
    isolated_env: Path,
    behaviour: dict[str, Any],
    status: str,
    code: int | None,
) -> None:
    assert cli("import", str(SEED)).code == 0
    for name, value in behaviour.items():
        setattr(smtp.behaviour, name, value)
    before = dt.datetime.now(dt.UTC)
    out = run_once(cli)
    assert f"{status} 3" in out
    rows = outbox(isolated_env / "ledger.db")
    assert {row["status"] for row in rows.values()} == {status}
    assert {row["attempts"] for row in rows.values()} == {1}
    assert [c for _, c in attempts(isolated_env / "ledger.db")] == [code] * 3
    assert not smtp.received
    if status == "retry":
        for row in rows.values():
            retry_at = dt.datetime.fromisoformat(row["next_attempt_at"]).replace(tzinfo=dt.UTC)
            assert retry_at >= before + dt.timedelta(seconds=59)  # backoff: 60 s, then doubles


def test_a_stalled_server_times_out_and_is_retried(
    cli: Cli, smtp: Handler, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    monkeypatch.setenv("REMINDER_SMTP__TIMEOUT_S", "0.5")
    smtp.behaviour.stall_s = 3
    out = run_once(cli)
    assert "retry 3" in out
    rows = outbox(isolated_env / "ledger.db")
    assert {row["last_error"] for row in rows.values()} == {"timed out"}


def test_retry_later_succeeds_and_gives_up_after_max_attempts(
    cli: Cli, smtp: Handler, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    monkeypatch.setenv("REMINDER_DELIVERY__BACKOFF_S", "0.001")
    monkeypatch.setenv("REMINDER_DELIVERY__MAX_ATTEMPTS", "3")
    smtp.behaviour.data = "451 4.3.0 local error"
    run_once(cli)
    assert {r["status"] for r in outbox(isolated_env / "ledger.db").values()} == {"retry"}
    run_once(cli)
    out = run_once(cli)
    assert "dead 3" in out
    rows = outbox(isolated_env / "ledger.db")
    assert {r["status"] for r in rows.values()} == {"dead"}
    assert all(r["last_error"].startswith("gave up after 3 attempts: 451") for r in rows.values())
    # an administrator fixes the server and sends the dead letters again
    smtp.behaviour.data = None
    result = cli("retry", "--dead")
    assert "3 messages queued again" in result.out
    assert "sent 3" in run_once(cli)
    assert len(smtp.received) == 3


def test_outbox_and_retry_commands(cli: Cli, smtp: Handler, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    smtp.behaviour.rcpt = "550 5.1.1 no such user"
    run_once(cli)
    listing = cli("outbox", "--status", "dead", "--json")
    rows = json.loads(listing.out)
    assert len(rows) == 3
    assert rows[0]["last_error"].startswith("recipient refused: 550")
    table = cli("outbox")
    assert "dead" in table.out and "letter" in table.out
    key = rows[0]["key"]
    smtp.behaviour.rcpt = None
    assert cli("retry", key).code == 0
    run_once(cli)
    assert [r.rcpt_tos for r in smtp.received] == [[rows[0]["to"]]]
    missing = cli("retry", "no-such-key")
    assert missing.code == 2
    assert "no-such-key: no such message" in missing.err


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def tls_env(
    monkeypatch: pytest.MonkeyPatch, tmp: Path, ca: trustme.CA, port: int, tls: str
) -> None:
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("REMINDER_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("REMINDER_SMTP__PORT", str(port))
    monkeypatch.setenv("REMINDER_SMTP__TLS", tls)
    monkeypatch.setenv("REMINDER_SMTP__CA_FILE", str(ca_file))
    monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
    monkeypatch.setenv("REMINDER_DELIVERY__OUTBOX_DIR", str(tmp / "var" / "outbox"))


def test_starttls_and_login_with_a_password_file(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> None:
    assert cli("import", str(SEED)).code == 0
    password_file = isolated_env / "smtp-password"
    password_file.write_text("s3cret-密码\n", encoding="utf-8")
    with smtp_server(tls_context=server_context(ca), auth=True) as (handler, port):
        tls_env(monkeypatch, isolated_env, ca, port, "starttls")
        monkeypatch.setenv("REMINDER_SMTP__USERNAME", "reminder")
        monkeypatch.setenv("REMINDER_SMTP_PASSWORD_FILE", str(password_file))
        result = cli("run", "--once", "--at", SMALL_TICK)
    assert result.code == 0, result.err
    assert "sent 3" in result.out
    assert set(handler.logins) == {("reminder", "s3cret-密码")}  # each session logs in once
    assert len(handler.received) == 3  # the server takes mail only after AUTH (auth_required)
    assert "s3cret" not in result.out + result.err


def test_wrong_password_is_permanent_and_tried_once(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> None:
    """AUTH answered 535 is not retried: the password is sent once (16 sessions, one
    login), the messages are dead with the reason, kept for `reminder retry --dead`."""
    assert cli("import", str(SEED)).code == 0
    with smtp_server(tls_context=server_context(ca), auth=True) as (handler, port):
        tls_env(monkeypatch, isolated_env, ca, port, "starttls")
        monkeypatch.setenv("REMINDER_SMTP__USERNAME", "reminder")
        monkeypatch.setenv("REMINDER_SMTP_PASSWORD", "wrong-password")
        result = cli("run", "--once", "--at", SMALL_TICK)
    assert "dead 3" in result.out, result.out
    assert not handler.received
    assert handler.logins == [("reminder", "wrong-password")]
    rows = outbox(isolated_env / "ledger.db")
    assert {r["status"] for r in rows.values()} == {"dead"}
    assert all(
        r["last_error"].startswith("login as 'reminder' refused: 535 ") for r in rows.values()
    )
    assert all(r["attempts"] == 1 for r in rows.values())
    assert "wrong-password" not in result.out + result.err
    # fixed and retried: they go out
    monkeypatch.setenv("REMINDER_SMTP_PASSWORD", "s3cret-密码")
    assert cli("retry", "--dead").code == 0
    with smtp_server(tls_context=server_context(ca), auth=True) as (handler, port):
        tls_env(monkeypatch, isolated_env, ca, port, "starttls")
        result = cli("run", "--once", "--at", SMALL_TICK)
    assert "sent 3" in result.out, result.out


def test_implicit_tls(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> None:
    assert cli("import", str(SEED)).code == 0
    with smtp_server(tls_context=server_context(ca), implicit_tls=True) as (handler, port):
        tls_env(monkeypatch, isolated_env, ca, port, "tls")
        result = cli("run", "--once", "--at", SMALL_TICK)
    assert "sent 3" in result.out, result.err
    assert len(handler.received) == 3


def test_no_silent_plaintext_when_starttls_is_missing(
    cli: Cli, smtp: Handler, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    monkeypatch.setenv("REMINDER_SMTP__TLS", "starttls")
    out = run_once(cli)
    assert "retry 3" in out
    assert not smtp.received
    rows = outbox(isolated_env / "ledger.db")
    assert all(
        "STARTTLS" in r["last_error"] or "starttls" in r["last_error"].lower()
        for r in rows.values()
    )


def test_an_untrusted_certificate_is_refused(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> None:
    assert cli("import", str(SEED)).code == 0
    with smtp_server(tls_context=server_context(ca)) as (handler, port):
        tls_env(monkeypatch, isolated_env, ca, port, "starttls")
        monkeypatch.delenv("REMINDER_SMTP__CA_FILE")
        result = cli("run", "--once", "--at", SMALL_TICK)
    assert "retry 3" in result.out
    assert not handler.received


def test_plaintext_to_a_remote_server_is_a_config_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMINDER_SMTP__HOST", "smtp.example.org")
    monkeypatch.setenv("REMINDER_SMTP__TLS", "none")
    result = cli("run", "--once")
    assert result.code == 78
    assert "plaintext SMTP to smtp.example.org refused" in result.err


def test_send_test(cli: Cli, smtp: Handler) -> None:
    result = cli("send-test", "--to", "admin@example.org")
    assert result.code == 0, result.err
    assert "sent to admin@example.org: 250" in result.out
    assert smtp.received[0].message["Subject"] == "督办提醒：测试邮件"
    smtp.behaviour.rcpt = "550 5.1.1 no such user"
    failed = cli("send-test", "--to", "nobody@example.org")
    assert failed.code == 1
    assert "test message to nobody@example.org: recipient refused: 550" in failed.err
    bad = cli("send-test", "--to", "not an address")
    assert bad.code == 1


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_non_ascii_address_goes_by_smtputf8_or_not_at_all(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    monkeypatch.setenv("REMINDER_SMTP__HOST", "127.0.0.1")
    for smtputf8 in (True, False):
        with smtp_server(pipelining=pipelining, smtputf8=smtputf8) as (handler, port):
            monkeypatch.setenv("REMINDER_SMTP__PORT", str(port))
            result = cli("send-test", "--to", "环保局@example.org")
            if smtputf8:
                assert result.code == 0, result.err
                assert handler.received[0].rcpt_tos == ["环保局@example.org"]
                assert "To: <环保局@example.org>".encode() in handler.received[0].data  # RFC 6532
            else:
                assert result.code == 1
                assert "does not offer SMTPUTF8" in result.err
                assert not handler.received


def test_an_unexpected_error_retries_that_message_and_the_rest_go(
    cli: Cli, smtp: Handler, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    send_one = SmtpSender._send_one
    calls = 0

    async def failing_once(
        self: SmtpSender, connection: Any, item: Outgoing, then: str | None
    ) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await send_one(self, connection, item, then)

    monkeypatch.setattr(SmtpSender, "_send_one", failing_once)
    out = run_once(cli)
    assert "retry 1, sent 2" in out
    assert len(smtp.received) == 2
    rows = outbox(isolated_env / "ledger.db").values()
    assert sorted(row["status"] for row in rows) == ["retry", "sent", "sent"]
    assert [r["last_error"] for r in rows if r["status"] == "retry"] == [
        "delivery failed: RuntimeError: a bug"
    ]


def sender_for(port: int, **smtp: Any) -> SmtpSender:
    return SmtpSender(SmtpSettings(host="127.0.0.1", port=port, tls="none", **smtp), None)


def email_to(n: int, address: str) -> Outgoing:
    data, _ = build_email(
        from_name="督办提醒",
        from_address="duban@example.org",
        to_name="",
        to_address=address,
        subject=f"第{n}项",
        text="请办结。",
        html="<p>请办结。</p>",
        key=f"test:{n}",
        date=dt.datetime(2018, 10, 8, tzinfo=dt.UTC),
    )
    return Outgoing(n, f"test:{n}", "overdue", "email", address, "", data=data)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_message_refused_before_sending_keeps_the_connection(pipelining: bool) -> None:
    with smtp_server(pipelining=pipelining) as (handler, port):  # no SMTPUTF8
        sender = sender_for(port, connections=1)
        results: list[Result] = []
        addresses = ["环保局@example.org", "hbj@example.org"] * 2
        await sender.send([email_to(n, a) for n, a in enumerate(addresses)], results.append)
        await sender.close()
    assert [r.status for r in results] == ["dead", "sent", "dead", "sent"]
    assert "does not offer SMTPUTF8" in results[0].detail
    assert handler.ehlos == 1  # one connection carried all four


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_failure_to_record_an_outcome_is_raised_not_retried(pipelining: bool) -> None:
    """The store fails while outcomes are recorded: the messages already accepted are not
    reported again as failed (that would send them twice), and send() raises the error
    once every message has been answered, instead of waiting for ever."""
    with smtp_server(pipelining=pipelining) as (handler, port):
        sender = sender_for(port, connections=2)
        results: list[Result] = []

        def report(result: Result) -> None:
            results.append(result)
            if len(results) % 2:
                raise OSError("database is locked")

        with pytest.raises(OSError, match="database is locked"):
            await sender.send([email_to(n, "hbj@example.org") for n in range(6)], report)
        await sender.close()
    assert [r.status for r in results] == ["sent"] * 6
    assert sorted(r.id for r in results) == list(range(6))
    assert len(handler.received) == 6


def test_file_channel_by_default(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    out = run_once(cli, "2018-01-31 09:00")
    rows = outbox(isolated_env / "ledger.db").values()
    sent = [r for r in rows if r["status"] == "sent"]
    assert f"sent {len(sent)}" in out
    folder = isolated_env / "var" / "outbox"
    emails = sorted(folder.glob("*/*.eml"))
    sms = sorted(folder.glob("*/*.txt"))
    assert len(emails) == sum(r["channel"] == "email" for r in sent) > 50
    assert len(sms) == sum(r["channel"] == "sms" for r in sent) == 3  # task 1 is due today
    message = email.message_from_bytes(emails[0].read_bytes(), policy=email.policy.default)
    assert message["Subject"] and message.get_body(("plain",)) is not None
    assert email.utils.parseaddr(message["To"])[1].endswith("@example.org")
    text = sms[0].read_text(encoding="utf-8")
    assert text.startswith("To: 1380000") and "【济源市攻坚办】" in text
    assert not list(folder.glob("*/.*.tmp"))  # written whole, renamed into place
    # sent again (as after a crash), a message overwrites its own file
    assert cli("retry", sent[0]["key"]).code == 2  # sent messages are not queued again
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        con.execute("UPDATE outbox SET status = 'pending' WHERE id = ?", (sent[0]["id"],))
    run_once(cli, "2018-01-31 09:00")
    assert len(list(folder.glob("*/*.eml"))) + len(list(folder.glob("*/*.txt"))) == len(sent)


def test_a_server_slower_than_the_lease_gets_each_message_once(
    cli: Cli, smtp: Handler, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches wait longer than a lease behind a slow server: the leases are renewed."""
    assert cli("import", str(SEED)).code == 0
    keys = fill_outbox(isolated_env / "ledger.db", 30)
    monkeypatch.setenv("REMINDER_SMTP__CONNECTIONS", "1")
    monkeypatch.setenv("REMINDER_DELIVERY__BATCH", "5")
    monkeypatch.setenv("REMINDER_DELIVERY__MARK_EVERY", "100")  # outcomes held a while too
    monkeypatch.setenv("REMINDER_DELIVERY__LEASE_S", "0.6")
    smtp.behaviour.delay_s = 0.1  # 30 messages take 3 s, five leases
    result = cli("run", "--once")
    assert result.code == 0, result.err
    received = [r.message["Message-ID"] for r in smtp.received]
    assert len(received) == len(set(received)) == len(keys)
    assert {row["status"] for row in outbox(isolated_env / "ledger.db").values()} == {"sent"}
