"""The real daemon stopped for three days, its clock set by libfaketime.

`reminder run` runs under ``LD_PRELOAD=libfaketime`` with a fixed offset from the real
clock (the same in every process it starts), on the seed ledger and the bundled
contacts, against an aiosmtpd server and a local HTTP server for the SMS gateway and a
group robot: on Thursday 2018-06-28 at 09:30, then, after three days down, on Monday
2018-07-02 at 09:30. What fell due on Friday (30 e-mails and 24 SMS that day, had it
run) is not sent late beside Monday's own letters: each unit gets one letter per
channel, each supervisor one digest.
"""

from __future__ import annotations

import datetime as dt
import glob
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import CONFIG, SEED
from tests.daemon_process import Daemon, daemon_env, run_until_exit
from tests.http_server import Gateway, http_gateway
from tests.smtp_server import Handler, Received

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ZONE = ZoneInfo("Asia/Shanghai")
THURSDAY = dt.datetime(2018, 6, 28, 9, 30, tzinfo=ZONE)
MONDAY = dt.datetime(2018, 7, 2, 9, 30, tzinfo=ZONE)
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
SUPERVISORS = {"gongjianban@example.org", "ranmei@example.org", "jiaotong@example.org"}


def clock_at(moment: dt.datetime) -> dict[str, str]:
    """The environment that sets a process's (and its children's) clock to ``moment``
    now, running on from there: a fixed offset from the real clock, in seconds."""
    offset = round((moment - dt.datetime.now(dt.UTC)).total_seconds())
    return {
        "LD_PRELOAD": LIBFAKETIME[0],
        "FAKETIME": f"{offset:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and sleeps as measured
    }


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with http_gateway() as server:
        yield server


@pytest.fixture
def config(isolated_env: Path, gateway: Gateway) -> Path:
    """The bundled config; 环境保护局's group robot posts to the local gateway."""
    folder = isolated_env / "config"
    shutil.copytree(CONFIG, folder)
    contacts = folder / "contacts.toml"
    text = contacts.read_text(encoding="utf-8")
    assert 'mobile = "13800000001"\n' in text
    contacts.write_text(
        text.replace(
            'mobile = "13800000001"\n',
            f'mobile = "13800000001"\nwebhook = "{gateway.url}/robot?key=K"\n',
            1,
        ),
        encoding="utf-8",
    )
    return folder


def environment(config: Path, port: int, gateway: Gateway, moment: dt.datetime) -> dict[str, str]:
    return daemon_env(
        REMINDER_CONFIG=str(config),
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(port),
        REMINDER_SMS__URL=f"{gateway.url}/sms",
        REMINDER_SMS_TOKEN="tok",
        REMINDER_DAEMON__TICK_S="1",
        **clock_at(moment),
    )


def unsent(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(
            con.execute(
                "SELECT count(*) FROM outbox WHERE status IN ('pending', 'retry', 'sending')"
            ).fetchone()[0]
        )


def run_day(folder: Path, env: dict[str, str], name: str) -> None:
    """The daemon from its start until it has sent what the day owes, then stopped."""
    with Daemon(folder, env, name=name) as daemon:
        assert daemon.wait_event("reports", timeout=60), daemon.log_path.read_text()
        assert daemon.wait_event("tick", count=2, timeout=60), daemon.log_path.read_text()
        deadline = time.monotonic() + 60
        while unsent(folder / "ledger.db") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert unsent(folder / "ledger.db") == 0, daemon.log_path.read_text()
        assert daemon.stop() == 0


def sent(
    handler: Handler, gateway: Gateway, since: tuple[int, int] = (0, 0)
) -> list[tuple[str, str]]:
    """Each message received after the first ``since`` (mails, requests) as (channel,
    recipient)."""
    with handler.lock:
        mails: list[Received] = handler.received[since[0] :]
    with gateway.lock:
        requests = gateway.requests[since[1] :]
    found = [("email", ",".join(sorted(r.rcpt_tos))) for r in mails]
    for request in requests:
        if request.path == "/sms":
            found.append(("sms", request.json["to"]))
        else:
            found.append(("robot", request.path))
    return found


def digests(handler: Handler, since: int = 0) -> list[str]:
    with handler.lock:
        mails = handler.received[since:]
    return [",".join(r.rcpt_tos) for r in mails if "督办日报" in r.message["Subject"]]


def test_three_days_down_give_one_letter_per_unit_and_channel_and_one_digest(
    isolated_env: Path,
    config: Path,
    smtp: tuple[Handler, int],
    gateway: Gateway,
) -> None:
    if not LIBFAKETIME:
        pytest.fail("libfaketime is missing: `make packages` installs Debian's faketime")
    handler, port = smtp
    thursday_env = environment(config, port, gateway, THURSDAY)
    imported = run_until_exit(isolated_env, thursday_env, "import", str(SEED))
    assert imported.returncode == 0, imported.stderr

    run_day(isolated_env, thursday_env, "thursday")
    first = sent(handler, gateway)
    mark = (len(handler.received), len(gateway.requests))
    assert Counter(digests(handler)) == dict.fromkeys(SUPERVISORS, 1)
    assert max(Counter(first).values()) == 1, "a unit got two letters on one channel"

    run_day(isolated_env, environment(config, port, gateway, MONDAY), "monday")
    monday = sent(handler, gateway, since=mark)
    assert {channel for channel, _ in monday} == {"email", "sms", "robot"}
    per_recipient = Counter(monday)
    assert max(per_recipient.values()) == 1, [k for k, n in per_recipient.items() if n > 1]
    # each supervisor: Monday's digest only, not Friday's as well
    assert Counter(digests(handler, since=mark[0])) == dict.fromkeys(SUPERVISORS, 1)
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        stamps = [
            dt.datetime.fromisoformat(v).date()
            for (v,) in con.execute("SELECT sent_at FROM outbox WHERE sent_at IS NOT NULL")
        ]
        statuses = dict(con.execute("SELECT status, count(*) FROM item GROUP BY status"))
    assert len(stamps) == len(first) + len(monday)  # each sent once, nothing sent again
    assert set(stamps) == {THURSDAY.date(), MONDAY.date()}
    # Friday's reminders that Monday's made stale were not sent
    assert statuses.get("superseded", 0) > 0, statuses
