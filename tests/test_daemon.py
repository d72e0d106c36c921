"""The real daemon (`reminder run`) as a subprocess, a real SMTP server, a fake systemd.

Each test starts `reminder run` with ``NOTIFY_SOCKET`` pointing at a datagram socket the
test reads, against an aiosmtpd server on loopback and a temporary SQLite store.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from reminder.channels.mime import message_id
from tests.conftest import SEED, Cli
from tests.daemon_process import SCRIPT, Daemon, NotifySocket, daemon_env
from tests.known_ledger import MIDNIGHT, OVERDUE_DAYS, UNREACHABLE, import_known, known_config
from tests.smtp_server import Handler, Received, smtp_server
from tests.test_crash import fill_outbox, unsent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def smtp() -> Iterator[tuple[Handler, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def notify(isolated_env: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(isolated_env / "notify.sock")
    yield sock
    sock.close()


@pytest.fixture
def known(cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The known ledger imported, every send time passed: the daemon owes mail at once."""
    config = known_config(isolated_env)
    monkeypatch.setenv("REMINDER_CONFIG", str(config))
    for name, value in MIDNIGHT.items():
        monkeypatch.setenv(name, value)
    import_known(cli, isolated_env)
    return config


def env_for(port: int, notify: NotifySocket, **extra: str) -> dict[str, str]:
    return daemon_env(
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="1000000",  # a ping every half second
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(port),
        REMINDER_DAEMON__TICK_S="1",
        **extra,
    )


def run_until_exit(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`reminder run` that is expected to exit by itself (it refuses to start)."""
    return subprocess.run(
        [str(SCRIPT), "run"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def outbox_rows(db: Path, where: str = "1 = 1") -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute(
            f"SELECT key, kind, channel, status FROM outbox WHERE {where} ORDER BY key"
        ).fetchall()


def by_subject(received: list[Received], fragment: str) -> list[Received]:
    return [r for r in received if fragment in str(r.message["Subject"])]


def parts(received: Received) -> tuple[str, str]:
    message = received.message
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_ready_catch_up_stop_and_a_restart_that_sends_nothing_new(
    known: Path,
    isolated_env: Path,
    smtp: tuple[Handler, int],
    notify: NotifySocket,
    cli: Cli,
) -> None:
    handler, port = smtp
    env = env_for(port, notify)
    with Daemon(isolated_env, env) as first:
        assert notify.wait_for("READY=1"), first.log_path.read_text()
        assert first.wait_event("tick"), first.log_path.read_text()
        assert first.wait_event("digest_sent", count=2)
        assert notify.wait_for("WATCHDOG=1")
        assert notify.wait_for("STATUS=last tick")
        begun = time.monotonic()
        assert first.stop() == 0
        assert time.monotonic() - begun < 5
    events = [e["event"] for e in first.events()]
    assert events[-2:] == ["stopping", "stopped"]
    assert notify.seen("STOPPING=1")

    db = isolated_env / "ledger.db"
    emails = outbox_rows(db, "channel = 'email'")
    assert emails and {status for *_, status in emails} == {"sent"}
    received = Counter(r.message["Message-ID"] for r in handler.received)
    assert set(received) == {message_id(key, "duban@example.org") for key, *_ in emails}
    assert set(received.values()) == {1}, "a message went out twice"
    # what the catch-up owed: both digests, and a letter to each unit with something due:
    # task 1's overdue to its two units, task 2 (due in 3 days) to its lead unit
    assert {r.rcpt_tos[0] for r in by_subject(handler.received, "督办日报")} == {
        "dcs@test.example.org",
        "ez@test.example.org",
    }
    letters = by_subject(handler.received, "【督办提醒】你单位今日待办")
    assert sorted(r.rcpt_tos[0] for r in letters) == [
        "fgw@test.example.org",
        "hbj@test.example.org",
        "zjj@test.example.org",
    ]
    overdue = [r for r in letters if "逾期1项" in str(r.message["Subject"])]
    assert {r.rcpt_tos[0] for r in overdue} == {"hbj@test.example.org", "fgw@test.example.org"}
    # the enterprise nobody can reach is recorded, not skipped
    with sqlite3.connect(db) as con:
        unreachable = con.execute(
            "SELECT count(*) FROM item WHERE recipient_name = ? AND status = 'unreachable'",
            (UNREACHABLE,),
        ).fetchone()[0]
    assert unreachable > 0

    before = len(handler.received)
    with Daemon(isolated_env, env, name="second") as second:
        assert notify.wait_for("READY=1")
        assert second.wait_event("reports")
        assert second.wait_event("tick", count=2)
        assert second.stop() == 0
    assert len(handler.received) == before, "the restart sent something again"
    status = cli("status", "--json")
    assert status.code == 0, status.err
    data = json.loads(status.out)
    assert data["stale"] is False
    text = cli("status").out
    assert "last tick:" in text and "never" not in text and "stale" not in text
    assert "red 1, yellow 2, green 1, done 1" in text
    assert data["last_tick"]["queue"] == {}  # everything went out
    assert data["queue"]["pending"] == data["queue"]["retry"] == 0
    assert data["unreachable"] == [UNREACHABLE]
    assert (data["ledger"]["red"], data["ledger"]["yellow"], data["ledger"]["done"]) == (1, 2, 1)


def test_the_digest_mail_carries_the_known_states_in_both_parts(
    known: Path,
    isolated_env: Path,
    smtp: tuple[Handler, int],
    notify: NotifySocket,
) -> None:
    handler, port = smtp
    # a reminder that failed for good before: the digest must list it
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        task_id = con.execute("SELECT id FROM task WHERE no = 3").fetchone()[0]
        now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
        con.execute(
            "INSERT INTO outbox (key, kind, task_id, task_no, unit, role, channel, recipient,"
            " recipient_name, scheduled_for, status, payload, created_at, next_attempt_at,"
            " attempts, last_error) VALUES (?, 'upcoming', ?, 3, '质量技术监督局', 'lead',"
            " 'email', 'zjjd@test.example.org', '质量技术监督局', ?, 'dead', '{}', ?, ?, 1,"
            " '550 5.1.1 mailbox unavailable')",
            (
                "upcoming:0:质量技术监督局:email:zjjd@test.example.org:2000-01-01",
                task_id,
                now,
                now,
                now,
            ),
        )
    with Daemon(isolated_env, env_for(port, notify)) as daemon:
        assert daemon.wait_event("digest_sent", count=2), daemon.log_path.read_text()
        assert daemon.stop() == 0
    [whole] = [
        r
        for r in by_subject(handler.received, "督办日报")
        if r.rcpt_tos == ["dcs@test.example.org"]
    ]
    subject = str(whole.message["Subject"])
    assert "逾期1项，7日内到期2项，提级督办2个单位，新办结1项（全部任务）" in subject
    text, html = parts(whole)
    assert text.startswith("督查室：")
    assert "共5项任务：逾期1项，7日内到期2项，正常推进1项，已办结1项。" in text
    assert "一、燃煤与扬尘：逾期1，临期1，正常0，办结0" in text
    assert "二、油品与监测：逾期0，临期1，正常1，办结1" in text
    assert f"已逾期{OVERDUE_DAYS}天（" in text and "牵头：环境保护局" in text
    assert "环境保护局：已拆改80%" in text
    assert "第2项　开展扬尘专项检查" in text and "（还有3天）" in text
    assert "第4项　建成交通监测站点" in text
    assert f"无联系方式的单位：{UNREACHABLE}" in text
    assert "未送达的消息：失败1条" in text
    assert "失败：质量技术监督局（第3项），收件地址被拒收，请核对地址" in text
    assert "550 5.1.1" not in text  # the English detail stays in the log and `outbox`
    for fragment in (
        "完成燃煤锅炉拆改任务",
        f"{OVERDUE_DAYS}天",
        "已拆改80%",
        "开展扬尘专项检查",
        "建成交通监测站点",
        UNREACHABLE,
        "收件地址被拒收",
    ):
        assert fragment in html, fragment
    assert "#b3261e" in html and "<script" not in html and "<img" not in html

    [scoped] = [
        r for r in by_subject(handler.received, "督办日报") if r.rcpt_tos == ["ez@test.example.org"]
    ]
    text, html = parts(scoped)
    assert "共3项任务：逾期0项，7日内到期1项，正常推进1项，已办结1项。" in text
    assert "完成燃煤锅炉拆改任务" not in text and "完成燃煤锅炉拆改任务" not in html
    assert "无逾期任务。" in text


def test_a_killed_daemon_restarted_sends_what_was_left_and_nothing_twice(
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    keys = fill_outbox(db, 600)
    handler, port = smtp
    handler.behaviour.delay_s = 0.01
    mark_every, connections = 50, 4
    env = env_for(
        port,
        notify,
        REMINDER_SMTP__CONNECTIONS=str(connections),
        REMINDER_DELIVERY__MARK_EVERY=str(mark_every),
        REMINDER_DELIVERY__BATCH="100",
        REMINDER_DELIVERY__LEASE_S="1",
    )
    first = Daemon(isolated_env, env).start()
    try:
        assert handler.wait_for(150, timeout=60), first.log_path.read_text()
    finally:
        first.kill()
    with sqlite3.connect(db) as con:
        recorded = {key for (key,) in con.execute("SELECT key FROM outbox WHERE status = 'sent'")}
    assert recorded, "nothing was recorded as sent before the kill"
    seen_before = len(handler.received)

    with Daemon(isolated_env, env, name="second") as second:
        assert notify.wait_for("READY=1")
        deadline = time.monotonic() + 60
        while unsent(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert unsent(db) == 0, second.log_path.read_text()
        assert second.stop() == 0

    expected = {message_id(key, "duban@example.org") for key in keys}
    ours = [
        r.message["Message-ID"] for r in handler.received if r.message["Message-ID"] in expected
    ]
    assert set(ours) == expected, "a message was lost"
    after = {r.message["Message-ID"] for r in handler.received[seen_before:]}
    assert not after & {message_id(key, "duban@example.org") for key in recorded}, (
        "a message recorded as sent went out again"
    )
    # only what was in flight when the daemon died may repeat: sent, not yet recorded
    repeats = len(ours) - len(expected)
    assert repeats <= mark_every + connections


def test_a_second_daemon_on_the_same_file_refuses_to_start(
    known: Path, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    _handler, port = smtp
    env = env_for(port, notify)
    with Daemon(isolated_env, env) as first:
        assert notify.wait_for("READY=1")
        second = run_until_exit(isolated_env, env)
        assert second.returncode == 75
        [line] = second.stderr.strip().splitlines()
        assert "another reminder daemon" in line and f"pid {first.pid}" in line
        assert "Traceback" not in second.stderr
        assert first.running()
        assert first.stop() == 0


def test_sighup_reloads_and_a_bad_reload_keeps_the_old_config(
    known: Path, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    _handler, port = smtp
    settings = known / "reminder.toml"
    good = settings.read_text(encoding="utf-8")
    with Daemon(isolated_env, env_for(port, notify)) as daemon:
        assert daemon.wait_event("tick")
        settings.write_text(good + "\n[digest\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_event("reload_failed")
        [failed] = [e for e in daemon.events() if e["event"] == "reload_failed"]
        assert str(settings) in failed["error"]
        assert daemon.running()
        ticks = sum(1 for e in daemon.events() if e["event"] == "tick")
        assert daemon.wait_event("tick", count=ticks + 1)  # still working, on the old config
        settings.write_text(
            good.replace('send_at = "09:00"', 'send_at = "10:00"'), encoding="utf-8"
        )
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_event("reloaded")
        assert daemon.stop() == 0


def test_without_a_ledger_it_starts_and_waits(
    isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    _handler, port = smtp
    with Daemon(isolated_env, env_for(port, notify)) as daemon:
        assert notify.wait_for("READY=1")
        assert daemon.wait_event("no_ledger")
        assert daemon.wait_event("tick")
        assert daemon.stop() == 0


def test_a_bad_config_stops_it_at_once_with_exit_78(
    known: Path, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    _handler, port = smtp
    (known / "contacts.toml").write_text("[[unit]\n", encoding="utf-8")
    result = run_until_exit(isolated_env, env_for(port, notify))
    assert result.returncode == 78
    [line] = result.stderr.strip().splitlines()
    assert "contacts.toml" in line and "Traceback" not in result.stderr
    assert not notify.seen("READY=1")
