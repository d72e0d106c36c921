"""Commands say what happened: the last tick, the keys of dead letters, retry's and
digest's messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SEED, Cli
from tests.smtp_server import Handler, smtp_server

SMALL_TICK = "2018-01-24 09:00"  # task 1 due in 7 days: a letter to each of its 3 units


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> Iterator[Handler]:
    with smtp_server() as (handler, port):
        monkeypatch.setenv("REMINDER_SMTP__HOST", "127.0.0.1")
        monkeypatch.setenv("REMINDER_SMTP__PORT", str(port))
        monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "0")
        yield handler


def test_status_tells_of_the_tick_run_once_made(cli: Cli, smtp: Handler) -> None:
    assert cli("import", str(SEED)).code == 0
    assert "last tick:     never" in cli("status").out
    assert cli("run", "--once", "--at", SMALL_TICK).code == 0
    status = cli("status")
    assert "last tick:     2018-01-24 09:00:00" in status.out
    tick = json.loads(cli("status", "--json").out)["last_tick"]
    assert tick["at"] == "2018-01-24T01:00:00+00:00"
    assert (tick["enqueued"], tick["delivered"]) == (3, {"sent": 3})


def test_dead_letter_keys_are_printed_as_retry_takes_them(cli: Cli, smtp: Handler) -> None:
    assert cli("import", str(SEED)).code == 0
    smtp.behaviour.rcpt = "550 5.1.1 no such user"
    assert cli("run", "--once", "--at", SMALL_TICK).code == 0
    keys = {row["key"] for row in json.loads(cli("outbox", "--json").out)}
    assert len(keys) == 3 and all(":email:" in key for key in keys)
    status = cli("status").out
    assert "✉" not in status
    shown = {line.split(": ", 1)[0].strip() for line in status.splitlines() if ":email:" in line}
    assert shown == keys
    table = cli("outbox").out
    assert "✉" not in table
    assert all(key in table for key in keys)  # whole, on one line each
    smtp.behaviour.rcpt = None
    for key in sorted(keys):
        retried = cli("retry", key)
        assert (retried.code, retried.out.strip()) == (0, "1 messages queued again")


def test_retry_without_a_key_says_what_to_give(cli: Cli) -> None:
    result = cli("retry")
    assert result.code == 2
    assert result.err.strip() == (
        "错误/Error: give a message KEY (as `reminder outbox` shows it) or --dead"
    )


def test_digest_run_twice_a_day_says_it_sent_nothing_new(cli: Cli, smtp: Handler) -> None:
    assert cli("import", str(SEED)).code == 0
    first = cli("digest", "--at", "2018-10-08 09:30")
    assert first.code == 0, first.err
    assert "3 digest and 0 escalation list messages enqueued" in first.out
    assert "sent 3" in first.out
    again = cli("digest", "--at", "2018-10-08 10:30")
    assert again.code == 0, again.err
    assert again.out.splitlines()[0] == (
        "today's digests are already in the outbox: nothing new enqueued"
    )
    assert "digest and" not in again.out
    early = cli("digest", "--at", "2018-10-09 07:00")
    assert early.out.splitlines()[0] == (
        "no digest due at 2018-10-09 07:00: digests go out at 08:30 on working days"
    )
    assert len(smtp.received) == 3
