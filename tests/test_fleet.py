"""Several daemons on one PostgreSQL database: each message once, and a dead daemon's
messages taken over by the others once its lease ends.

Real `reminder run` processes (supervisor and sessions) on a fresh schema of the
machine's PostgreSQL, sending into one aiosmtpd server in the test process. Figures:
1,000 due letters; 3 daemons; a lease of 5 s and a tick of 1 s (so the test is short; the
shipped lease is 20 s).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from reminder.channels.mime import message_id
from reminder.store.db import open_store
from tests.conftest import SEED, Cli
from tests.daemon_process import Daemon, daemon_env
from tests.smtp_server import Handler
from tests.test_crash import fill_outbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = 1000
DAEMONS = 3
LEASE_S = 5.0
TICK_S = 1.0
MARK_EVERY = 20
CONNECTIONS = 2


def count(url: str, query: str) -> int:
    """One count from the store, read by another connection than the daemons'."""
    store = open_store(url, schema="check")
    try:
        with store.read() as session:
            return int(session.execute(text(query)).scalar_one())
    finally:
        store.dispose()


def owed(url: str) -> int:
    return count(url, "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'retry')")


def fleet(cwd: Path, url: str, port: int, **extra: str) -> list[Daemon]:
    env = daemon_env(
        REMINDER_DB=url,
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(port),
        REMINDER_SMTP__CONNECTIONS=str(CONNECTIONS),
        REMINDER_DAEMON__TICK_S=str(TICK_S),
        REMINDER_DELIVERY__LEASE_S=str(LEASE_S),
        REMINDER_DELIVERY__MARK_EVERY=str(MARK_EVERY),
        REMINDER_DELIVERY__BATCH="100",
        REMINDER_DELIVERY__RENDER_WORKERS="0",
        **extra,
    )
    return [Daemon(cwd, env, name=f"host-{i}") for i in range(DAEMONS)]


@contextmanager
def running(daemons: list[Daemon]) -> Iterator[list[Daemon]]:
    """The daemons started; at the end, those still running stopped (each exits 0), or
    killed if the block failed."""
    try:
        for daemon in daemons:
            daemon.start()
        yield daemons
        for daemon in daemons:
            if daemon.running():
                assert daemon.stop() == 0
    finally:
        for daemon in daemons:
            if daemon.running():
                daemon.kill()


def wait_sent(url: str, daemons: list[Daemon], timeout: float) -> float:
    """Seconds until nothing is owed (fails past ``timeout``)."""
    started = time.monotonic()
    while owed(url):
        assert time.monotonic() - started < timeout, [
            d.log_path.read_text()[-1500:] for d in daemons
        ]
        time.sleep(0.2)
    return time.monotonic() - started


def received_ids(handler: Handler, keys: list[str]) -> tuple[Counter[str], set[str]]:
    """The Message-IDs received of the letters queued (the catch-up's digests aside)."""
    expected = {message_id(key, "duban@example.org") for key in keys}
    with handler.lock:
        ids = [r.message["Message-ID"] for r in handler.received]
    return Counter(i for i in ids if i in expected), expected


@pytest.fixture
def filled(cli: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("REMINDER_DB", pg_url)
    assert cli("import", str(SEED)).code == 0
    return fill_outbox(pg_url, MESSAGES)  # and every task done: nothing else to send


def test_three_daemons_send_each_message_once(
    isolated_env: Path, pg_url: str, smtp: tuple[Handler, int], filled: list[str]
) -> None:
    handler, port = smtp
    handler.behaviour.delay_s = 0.002
    with running(fleet(isolated_env, pg_url, port)) as daemons:
        wait_sent(pg_url, daemons, timeout=120)
    received, expected = received_ids(handler, filled)
    assert set(received) == expected, "a message was lost"
    assert sum(received.values()) == MESSAGES, "a message went out twice"
    senders = [sum(1 for e in d.events() if e["event"] == "reminder_sent") for d in daemons]
    assert sum(1 for n in senders if n) >= 2, senders  # the work was shared


def test_a_daemon_killed_mid_batch_is_taken_over_within_its_lease(
    isolated_env: Path, pg_url: str, smtp: tuple[Handler, int], filled: list[str]
) -> None:
    """kill -9 of one daemon's whole process group (as systemd kills a unit) while it
    sends: the others send what it held once its lease ends (lease + one tick, plus the
    sending); none lost; what repeats is only what it had in flight, each copy with its
    twin's Message-ID."""
    handler, port = smtp
    handler.behaviour.delay_s = 0.01
    with running(fleet(isolated_env, pg_url, port)) as daemons:
        assert handler.wait_for(200, timeout=60), daemons[0].log_path.read_text()[-2000:]
        victim = max(
            daemons, key=lambda d: sum(1 for e in d.events() if e["event"] == "reminder_sent")
        )
        victim.kill()
        took = wait_sent(pg_url, daemons, timeout=120)
    received, expected = received_ids(handler, filled)
    assert set(received) == expected, "a message was lost"
    repeats = sum(count - 1 for count in received.values())
    assert repeats <= MARK_EVERY + CONNECTIONS, repeats  # in flight when it died
    assert sum(received.values()) == MESSAGES + repeats
    # the rest, its held messages included, went out within lease + tick + the sending
    assert took < LEASE_S + TICK_S + 30, took


def refused(url: str) -> int:
    """The messages refused at least once so far."""
    return count(url, "SELECT count(DISTINCT outbox_id) FROM attempt WHERE outcome = 'retry'")


def test_a_refusing_server_then_back_gets_each_message_once_after_backoff(
    isolated_env: Path, pg_url: str, smtp: tuple[Handler, int], filled: list[str]
) -> None:
    """The SMTP server answers 451 to every message until a tenth of them were refused,
    then takes them: the three daemons retry with growing pauses (backoff 1 s,
    doubling), none goes dead, each message arrives once."""
    handler, port = smtp
    handler.behaviour.data = "451 4.3.0 try again later"
    with running(fleet(isolated_env, pg_url, port, REMINDER_DELIVERY__BACKOFF_S="1")) as daemons:
        deadline = time.monotonic() + 60
        while refused(pg_url) < MESSAGES // 10:  # then it takes them again
            assert time.monotonic() < deadline, daemons[0].log_path.read_text()[-2000:]
            time.sleep(0.2)
        handler.behaviour.data = None
        wait_sent(pg_url, daemons, timeout=120)
    received, expected = received_ids(handler, filled)
    assert set(received) == expected and sum(received.values()) == MESSAGES
    store = open_store(pg_url, schema="check")
    with store.read() as session:
        dead = session.execute(text("SELECT count(*) FROM outbox WHERE status = 'dead'"))
        assert dead.scalar_one() == 0
        tries = session.execute(
            text(
                "SELECT a.outbox_id, a.at, o.sent_at FROM attempt a JOIN outbox o"
                " ON o.id = a.outbox_id WHERE a.outcome = 'retry' ORDER BY a.outbox_id, a.at"
            )
        ).all()
    store.dispose()
    by_message: dict[int, list[float]] = {}
    for outbox_id, at, sent_at in tries:
        times = by_message.setdefault(outbox_id, [sent_at.timestamp()])
        times.insert(-1, at.timestamp())  # the refusals, then the send
    assert len(by_message) >= MESSAGES // 10  # many were refused at least once
    gaps = [b - a for times in by_message.values() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9  # never tried again before its backoff (1 s, then 2 s …)
