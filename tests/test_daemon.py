"""The real daemon (`reminder run`) as a subprocess, a real SMTP server, a fake systemd.

Each test starts `reminder run` with ``NOTIFY_SOCKET`` pointing at a datagram socket the
test reads, against an aiosmtpd server on loopback and a temporary SQLite store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from reminder.channels.mime import message_id
from tests.conftest import SEED, Cli, downgrade, revision_at
from tests.daemon_process import (
    Daemon,
    NotifySocket,
    daemon_env,
    full_socket,
    run_until_exit,
)
from tests.known_ledger import MIDNIGHT, OVERDUE_DAYS, UNREACHABLE, import_known, known_config
from tests.smtp_server import Handler, Received
from tests.stalled_smtp import stalled_server
from tests.test_crash import fill_outbox, unsent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


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
        assert first.wait_event("reminder_sent", count=3)  # the three letters
        assert notify.wait_for("WATCHDOG=1")
        assert notify.wait_for("STATUS=last tick")
        begun = time.monotonic()
        assert first.stop() == 0
        assert time.monotonic() - begun < 5
    events = [e["event"] for e in first.events()]
    assert events[-2:] == ["stopping", "stopped"]
    assert notify.seen("STOPPING=1")
    assert not (isolated_env / "ledger.db.lock").exists(), "the lock file stayed behind"

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
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    assert cli("db", "upgrade").code == 0  # a store, nothing imported
    _handler, port = smtp
    with Daemon(isolated_env, env_for(port, notify)) as daemon:
        assert notify.wait_for("READY=1")
        assert daemon.wait_event("no_ledger")
        assert daemon.wait_event("tick")
        assert daemon.stop() == 0


@pytest.mark.parametrize("revision", [None, "0005"])
def test_without_an_upgraded_store_it_refuses_to_start_with_exit_78(
    cli: Cli,
    isolated_env: Path,
    smtp: tuple[Handler, int],
    notify: NotifySocket,
    revision: str | None,
) -> None:
    """No store, or one a version behind: one line saying to run `reminder db upgrade`;
    the store is left as it was (not created, not upgraded)."""
    db = isolated_env / "ledger.db"
    if revision is not None:
        assert cli("import", str(SEED)).code == 0
        downgrade(f"sqlite:///{db}", revision)
    _handler, port = smtp
    result = run_until_exit(isolated_env, env_for(port, notify))
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "run `reminder db upgrade`" in line and "Traceback" not in result.stderr
    assert not notify.seen("READY=1")
    if revision is None:
        assert not db.exists()
    else:
        assert revision_at(f"sqlite:///{db}") == revision


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


# --- stopping, whatever systemd's socket and the SMTP server do -------------------------


def test_a_notify_socket_nobody_reads_does_not_stop_it_stopping(
    known: Path, isolated_env: Path, smtp: tuple[Handler, int]
) -> None:
    """notify() never blocks: with the socket's queue full, the loop still handles SIGTERM."""
    _handler, port = smtp
    path = isolated_env / "full.sock"
    full = full_socket(path)
    stop_timeout_s = 5
    env = daemon_env(
        NOTIFY_SOCKET=str(path),
        WATCHDOG_USEC="200000",
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(port),
        REMINDER_DAEMON__TICK_S="1",
        REMINDER_DAEMON__STOP_TIMEOUT_S=str(stop_timeout_s),
        REMINDER_LOG_LEVEL="debug",
    )
    try:
        with Daemon(isolated_env, env) as daemon:
            assert daemon.wait_event("tick", count=2), daemon.log_path.read_text()
            assert daemon.wait_event("notify_dropped")
            # the process exits within the stop timeout (and the interpreter's exit)
            assert daemon.stop(timeout=stop_timeout_s + 5) == 0
    finally:
        full.close()
    events = [e["event"] for e in daemon.events() if e["event"] != "notify_dropped"]
    assert events[-2:] == ["stopping", "stopped"]


def test_ctrl_c_during_a_catch_up_stops_the_render_workers_quietly(
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    """SIGINT reaches the whole process group, as Ctrl-C on a terminal does: the render
    workers ignore it, the daemon stops them, and nothing prints a traceback."""
    assert cli("import", str(SEED)).code == 0
    fill_outbox(isolated_env / "ledger.db", 1000)
    handler, port = smtp
    handler.behaviour.delay_s = 0.005
    env = env_for(
        port,
        notify,
        REMINDER_DELIVERY__RENDER_WORKERS="2",
        REMINDER_DELIVERY__BATCH="200",
        REMINDER_SMTP__CONNECTIONS="2",
    )
    with Daemon(isolated_env, env) as daemon:
        assert handler.wait_for(250, timeout=60), daemon.log_path.read_text()
        assert daemon.running()
        os.killpg(daemon.pid, signal.SIGINT)
        assert daemon.process is not None
        assert daemon.process.wait(timeout=30) == 0
    log = daemon.log_path.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    events = [e["event"] for e in daemon.events()]
    assert "render_workers_failed" not in events
    assert "stopping" in events and events[-1] == "stopped"  # the run in progress ended


def children(pid: int) -> list[int]:
    """Every process below ``pid``: the session that does the work, and below it the
    render workers, forkserver and resource tracker."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def test_the_render_workers_stop_when_the_backlog_is_drained(
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    """A catch-up big enough for the render workers starts them; once it is sent, the
    workers, the forkserver and the resource tracker are gone: the idle daemon is one
    process, and a later tick with nothing to send starts none."""
    assert cli("import", str(SEED)).code == 0
    fill_outbox(isolated_env / "ledger.db", 1000)
    handler, port = smtp
    env = env_for(
        port, notify, REMINDER_DELIVERY__RENDER_WORKERS="2", REMINDER_DELIVERY__BATCH="400"
    )
    with Daemon(isolated_env, env) as daemon:
        most = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.running():
            most = max(most, len(children(daemon.pid)))
            if any(e["event"] == "delivered" for e in daemon.events()):
                break
            time.sleep(0.1)
        assert daemon.wait_event("delivered"), daemon.log_path.read_text()
        assert most >= 2, "the render workers never started"  # a worker and its helpers
        deadline = time.monotonic() + 10
        while children(daemon.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children(daemon.pid) == []
        ticks = sum(1 for e in daemon.events() if e["event"] == "tick")
        assert daemon.wait_event("tick", count=ticks + 2)  # tick_s is 1
        assert children(daemon.pid) == []
        assert daemon.stop() == 0
    assert len(handler.received) >= 1000
    log = daemon.log_path.read_text()
    assert "leaked" not in log and "Traceback" not in log, log


FILLED = "recipient LIKE 'unit%@example.org'"  # what fill_outbox() queued


def leased(db: Path) -> Counter[str]:
    """The states of what fill_outbox() queued (a digest may be due as well)."""
    with sqlite3.connect(db) as con:
        return Counter(s for (s,) in con.execute(f"SELECT status FROM outbox WHERE {FILLED}"))


def test_sigterm_with_a_hung_smtp_server_stops_within_stop_timeout(
    cli: Cli, isolated_env: Path, notify: NotifySocket
) -> None:
    """A server that takes DATA and never answers: the daemon exits within stop_timeout_s
    of SIGTERM, and the messages it held keep their lease (nothing lost, none dead)."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    keys = fill_outbox(db, 40)
    stop_timeout_s = 3
    with stalled_server() as stalled:
        env = env_for(
            stalled.port,
            notify,
            REMINDER_SMTP__TIMEOUT_S="60",
            REMINDER_SMTP__CONNECTIONS="2",
            REMINDER_DAEMON__STOP_TIMEOUT_S=str(stop_timeout_s),
        )
        with Daemon(isolated_env, env) as daemon:
            assert stalled.wait_for(2), daemon.log_path.read_text()  # both connections hang
            daemon.signal(signal.SIGTERM)
            assert daemon.process is not None
            assert daemon.process.wait(timeout=stop_timeout_s + 5) == 0
        events = [e["event"] for e in daemon.events()]
        assert "stop_timeout" in events and events[-1] == "stopped"
    statuses = leased(db)
    assert sum(statuses.values()) == len(keys)
    assert statuses["sending"] == len(keys), statuses  # left to their leases
    with sqlite3.connect(db) as con:
        [(soonest,)] = con.execute(f"SELECT min(lease_until) FROM outbox WHERE {FILLED}").fetchall()
    assert dt.datetime.fromisoformat(soonest).replace(tzinfo=dt.UTC) > dt.datetime.now(dt.UTC)


def test_ticks_and_reloads_go_on_while_a_server_is_slow(
    cli: Cli, isolated_env: Path, notify: NotifySocket
) -> None:
    assert cli("import", str(SEED)).code == 0
    fill_outbox(isolated_env / "ledger.db", 20)
    with stalled_server() as stalled:
        env = env_for(
            stalled.port,
            notify,
            REMINDER_SMTP__TIMEOUT_S="60",
            REMINDER_SMTP__CONNECTIONS="1",
            REMINDER_DAEMON__STOP_TIMEOUT_S="2",
        )
        with Daemon(isolated_env, env) as daemon:
            assert stalled.wait_for(1), daemon.log_path.read_text()
            ticks = sum(1 for e in daemon.events() if e["event"] == "tick")
            assert daemon.wait_event("tick", count=ticks + 2, timeout=20)
            daemon.signal(signal.SIGHUP)
            assert daemon.wait_event("reloaded", timeout=20)
            assert stalled.total() == 1  # still on the first message
            assert daemon.stop(timeout=10) == 0


# --- templates checked before anything is queued ----------------------------------------

BROKEN_TEMPLATES = [
    pytest.param("letter.text.j2", "{{ unit }}\n{% if %}\n", "letter.text.j2:2", id="syntax"),
    pytest.param(
        "letter.subject.j2", "督办 {{ no_such_thing }}\n", "letter.subject.j2:1", id="undefined"
    ),
]


@pytest.mark.parametrize(("name", "text", "where"), BROKEN_TEMPLATES)
def test_run_once_refuses_a_broken_template_before_queueing(
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    text: str,
    where: str,
) -> None:
    assert cli("import", str(SEED)).code == 0
    folder = isolated_env / "templates"
    folder.mkdir()
    (folder / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(folder))
    monkeypatch.setenv("REMINDER_DELIVERY__OUTBOX_DIR", str(isolated_env / "out"))
    result = cli("run", "--once", "--at", "2018-10-08 09:30")
    assert result.code == 78, result.out + result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("错误/Error: ") and str(folder) in line and where in line, line
    assert "Traceback" not in result.err
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        assert con.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM item").fetchone()[0] == 0
    assert not (isolated_env / "out").exists()


def test_digest_refuses_a_broken_template_before_queueing(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`digest` sends as `run --once` does: a templates folder that fails on the ledger
    is refused before anything is enqueued."""
    assert cli("import", str(SEED)).code == 0
    folder = isolated_env / "templates"
    folder.mkdir()
    (folder / "digest.text.j2").write_text("{{ nothing.here }}\n", encoding="utf-8")
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(folder))
    result = cli("digest", "--at", "2018-10-08 09:30")
    assert result.code == 78, result.out + result.err
    [line] = result.err.strip().splitlines()
    assert str(folder) in line and "digest.text.j2:1" in line, line
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        assert con.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_a_broken_template_stops_the_daemon_at_start_with_exit_78(
    known: Path, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    _handler, port = smtp
    folder = isolated_env / "templates"
    folder.mkdir()
    (folder / "letter.text.j2").write_text("{% for %}\n", encoding="utf-8")
    env = env_for(port, notify, REMINDER_MESSAGES__TEMPLATES=str(folder))
    result = run_until_exit(isolated_env, env)
    assert result.returncode == 78, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(folder) in line and "letter.text.j2:1" in line and "Traceback" not in result.stderr
    assert not notify.seen("READY=1")
    assert outbox_rows(isolated_env / "ledger.db") == []


def test_sighup_with_a_broken_template_keeps_sending_with_the_old_ones(
    cli: Cli, isolated_env: Path, smtp: tuple[Handler, int], notify: NotifySocket
) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    with sqlite3.connect(db) as con:  # the daemon's own ticks plan nothing
        con.execute("UPDATE task SET status = 'done'")
    folder = isolated_env / "templates"
    folder.mkdir()
    handler, port = smtp
    env = env_for(port, notify, REMINDER_MESSAGES__TEMPLATES=str(folder))
    with Daemon(isolated_env, env) as daemon:
        assert daemon.wait_event("tick"), daemon.log_path.read_text()
        (folder / "letter.subject.j2").write_text("{{ broken(\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_event("reload_failed")
        [failed] = [e for e in daemon.events() if e["event"] == "reload_failed"]
        assert str(folder) in failed["error"] and "letter.subject.j2:1" in failed["error"]
        keys = fill_outbox(db, 5)
        assert handler.wait_for(5), daemon.log_path.read_text()
        assert daemon.stop() == 0
    assert set(keys) <= {key for key, *_ in outbox_rows(db, "status = 'sent'")}
    letters = [r for r in handler.received if r.rcpt_tos[0].startswith("unit")]
    assert len(letters) == len(keys)
    assert all("【督办提醒" in str(r.message["Subject"]) for r in letters)


# --- a stalled server and `run --once` ---------------------------------------------------


def test_run_once_tries_a_message_in_doubt_once_and_retries_it_at_its_backoff(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each message times out after DATA: it is retried at its backoff time in a later
    run, never again in this one, however long this one lasts."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    keys = fill_outbox(db, 4)
    with stalled_server() as stalled:
        for name, value in {
            "REMINDER_SMTP__HOST": "127.0.0.1",
            "REMINDER_SMTP__PORT": str(stalled.port),
            "REMINDER_SMTP__TIMEOUT_S": "0.5",
            "REMINDER_SMTP__CONNECTIONS": "1",
            "REMINDER_DELIVERY__BATCH": "1",
            "REMINDER_DELIVERY__BACKOFF_S": "0.1",
        }.items():
            monkeypatch.setenv(name, value)
        result = cli("run", "--once")
        assert result.code == 0, result.err
        assert "retry 4" in result.out, result.out
        assert sorted(stalled.bodies.values()) == [1, 1, 1, 1], stalled.bodies
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT o.status, o.attempts, o.next_attempt_at, a.at FROM outbox o "
            f"JOIN attempt a ON a.outbox_id = o.id WHERE o.{FILLED}"
        ).fetchall()
    assert len(rows) == len(keys)
    for status, attempts, next_attempt_at, tried_at in rows:
        assert (status, attempts) == ("retry", 1)
        wait = dt.datetime.fromisoformat(next_attempt_at) - dt.datetime.fromisoformat(tried_at)
        assert wait >= dt.timedelta(seconds=0.1)  # its backoff


def test_run_once_ends_by_its_deadline_and_leaves_the_rest_leased(
    cli: Cli, isolated_env: Path
) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    keys = fill_outbox(db, 3)
    with stalled_server() as stalled:
        env = daemon_env(
            REMINDER_SMTP__HOST="127.0.0.1",
            REMINDER_SMTP__PORT=str(stalled.port),
            REMINDER_SMTP__TIMEOUT_S="60",
            REMINDER_SMTP__CONNECTIONS="1",
            REMINDER_DELIVERY__RUN_DEADLINE_S="2",
        )
        # the three messages would take 3 × 60 s; the run ends at its deadline
        result = run_until_exit(isolated_env, env, "run", "--once")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "deadline reached, 3 left to a later run" in result.stdout, result.stdout
        assert stalled.total() == 1
    assert leased(db) == Counter({"sending": len(keys)})
