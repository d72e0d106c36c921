"""Kill -9 the sender while it sends: nothing is lost, repeats stay in the in-flight window."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from reminder.calendar import WorkCalendar
from reminder.channels.mime import message_id
from reminder.check import letter_samples
from reminder.contacts import load_contacts
from reminder.letters import LetterContext
from reminder.settings import OfficeSettings
from reminder.store.db import Store, open_store
from reminder.store.models import OutboxRow
from reminder.store.tasks import ledger_facts, load_ledger
from tests.conftest import CONFIG, SEED, Cli
from tests.smtp_server import smtp_server

MESSAGES = 1000
KILLS = 3
MARK_EVERY = 20
CONNECTIONS = 4


def sample_payloads(store: Store) -> list[dict[str, Any]]:
    """Letters about the seed's tasks, each carrying an item of every kind (as `check`
    renders them), to whoever leads or cooperates."""
    contacts = load_contacts(CONFIG / "contacts.toml")
    with store.read() as session:
        ledger = load_ledger(session)
    assert ledger is not None
    facts = ledger_facts(ledger)
    context = LetterContext(
        dt.date(2018, 10, 8),
        ledger.title,
        ledger.year,
        OfficeSettings(),
        contacts,
        WorkCalendar(),
        {},
    )
    return [payload for _, payload in letter_samples(facts, context)]


def fill_outbox(db: Path | str, count: int) -> list[str]:
    """``count`` pending letters by e-mail to distinct addresses, about the seed's tasks.

    ``db``: an SQLite file, or any database URL.
    """
    store = open_store(db if isinstance(db, str) else f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    payloads = sample_payloads(store)
    keys = []
    with store.write() as session:
        connection = session.connection()
        rows = []
        for i in range(count):
            payload = payloads[i % len(payloads)]
            key = f"letter:{payload['unit']}:email:unit{i}@example.org:2018-10-08:1"
            keys.append(key)
            rows.append(
                {
                    "key": key,
                    "kind": "letter",
                    "unit": payload["unit"],
                    "channel": "email",
                    "recipient": f"unit{i}@example.org",
                    "recipient_name": payload["unit"],
                    "scheduled_for": now,
                    "status": "pending",
                    "payload": payload,
                    "created_at": now,
                    "next_attempt_at": now,
                    "attempts": 0,
                    "last_error": "",
                }
            )
        if rows:
            connection.execute(insert(OutboxRow.__table__), rows)  # type: ignore[attr-defined]
        # every task done: the ticks of the runs below plan nothing of their own
        connection.exec_driver_sql("UPDATE task SET status = 'done'")
    store.dispose()
    return keys


def unsent(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_during_1000_sends(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    keys = fill_outbox(db, MESSAGES)
    script = Path(sys.executable).with_name("reminder")
    with smtp_server() as (handler, port):
        handler.behaviour.delay_s = 0.01  # ~400 messages a second over 4 connections
        env = dict(os.environ) | {
            "REMINDER_SMTP__HOST": "127.0.0.1",
            "REMINDER_SMTP__PORT": str(port),
            "REMINDER_SMTP__CONNECTIONS": str(CONNECTIONS),
            "REMINDER_DELIVERY__MARK_EVERY": str(MARK_EVERY),
            "REMINDER_DELIVERY__BATCH": "100",
            "REMINDER_DELIVERY__LEASE_S": "1",
            "REMINDER_DELIVERY__RENDER_WORKERS": "0",
        }
        kills = 0
        for _ in range(KILLS):
            before = len(handler.received)
            process = subprocess.Popen([str(script), "run", "--once"], env=env, cwd=isolated_env)
            # kill it in the middle of sending, once it has sent a good part more
            arrived = handler.wait_for(before + 150, timeout=60)
            process.kill()
            process.wait(timeout=10)
            assert arrived, "the sender made no progress"
            kills += 1
        # leases of the killed senders run out; finishing runs send what is left
        deadline = time.monotonic() + 90
        while unsent(db) and time.monotonic() < deadline:
            finished = subprocess.run(
                [str(script), "run", "--once"],
                env=env,
                cwd=isolated_env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert finished.returncode == 0, finished.stderr
        received = Counter(r.message["Message-ID"] for r in handler.received)
    expected = {message_id(key, "duban@example.org") for key in keys}
    assert unsent(db) == 0
    assert set(received) == expected, "a message was lost"
    repeats = sum(count - 1 for count in received.values())
    # only what was in flight when a sender died can repeat: sent but not yet recorded
    assert repeats <= kills * (MARK_EVERY + CONNECTIONS)
    assert sum(received.values()) == MESSAGES + repeats
