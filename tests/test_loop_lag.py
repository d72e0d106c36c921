"""The event loop is never held up for long while a big delivery runs (issue 13).

10,000 messages go out in one run, as the shipped policy sends them: 5,000 letters by
e-mail to an SMTP sink on loopback and their 5,000 SMS copies to the file channel (no
gateway configured), from a real SQLite file. A watchdog task on the same loop sleeps
10 ms at a time and records how late it wakes: anything that blocks the loop (an fsync,
a commit, a render of a whole chunk) shows as lateness. The run fails if the loop was
ever blocked for more than 100 ms.

Everything is rendered in the sending process (``render_workers = 0``, as on one CPU):
the most the loop carries. The event loop is the one `reminder run` uses (uvloop).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
from sqlalchemy import insert

from reminder.calendar import WorkCalendar
from reminder.contacts import load_contacts
from reminder.delivery import Delivery, close_all, make_senders
from reminder.letters import LetterContext, LetterItem, build_letter
from reminder.loop import run_async
from reminder.policy import Kind
from reminder.render import Renderer
from reminder.rows import DeliveryReport
from reminder.settings import OfficeSettings, Settings
from reminder.store.db import open_store
from reminder.store.models import OutboxRow
from reminder.store.tasks import ledger_facts, load_ledger
from tests.conftest import CONFIG, SEED, Cli
from tests.smtp_sink import smtp_sink

LETTERS = 5_000  # each by e-mail and by SMS: 10,000 messages
LIMIT_S = 0.100
TICK_S = 0.010


def overdue_letters(db: Path) -> list[dict[str, object]]:
    """An overdue letter of one item for each task × unit of the seed, as the tick
    composes them (the shipped policy's overdue letter goes by e-mail and by SMS)."""
    store = open_store(f"sqlite:///{db}")
    with store.read() as session:
        ledger = load_ledger(session)
    store.dispose()
    assert ledger is not None
    contacts = load_contacts(CONFIG / "contacts.toml")
    context = LetterContext(
        dt.date(2018, 10, 8), ledger.title, 2018, OfficeSettings(), contacts, WorkCalendar(), {}
    )
    letters = []
    for task in ledger_facts(ledger).values():
        for unit, role in task.units:
            item = LetterItem(
                f"overdue:{task.no}:{unit}",
                Kind.OVERDUE,
                unit,
                role,
                None,
                {"milestone": "2018-09-30"},
                task,
            )
            letters.append(build_letter(context, unit, [item], 1))
    return letters


def fill(db: Path) -> None:
    """A letter by e-mail and one by SMS to each of LETTERS units, due a minute ago."""
    payloads = overdue_letters(db)
    store = open_store(f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    rows = []
    for i in range(LETTERS):
        payload = payloads[i % len(payloads)]
        for channel, to in (("email", f"unit{i}@example.org"), ("sms", f"139{i:08d}")):
            rows.append(
                {
                    "key": f"letter:{payload['unit']}:{channel}:{to}:2018-10-08:1",
                    "kind": "letter",
                    "unit": payload["unit"],
                    "channel": channel,
                    "recipient": to,
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
    with store.write() as session:
        session.connection().execute(insert(OutboxRow.__table__), rows)  # type: ignore[attr-defined]
    store.dispose()


class Watchdog:
    """Sleeps TICK_S at a time on the loop and keeps the worst lateness seen."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.wakes = 0

    async def watch(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.worst_s = max(self.worst_s, time.perf_counter() - asked - TICK_S)
            self.wakes += 1


async def deliver(settings: Settings, url: str, watchdog: Watchdog) -> DeliveryReport:
    contacts = load_contacts(CONFIG / "contacts.toml")
    store = open_store(url)
    senders = make_senders(settings, contacts)
    delivery = Delivery(store, settings, contacts, Renderer(), senders)
    watching = asyncio.create_task(watchdog.watch())
    try:
        return await delivery.run()
    finally:
        watching.cancel()
        await close_all(senders)
        delivery.close()
        store.dispose()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_10000_messages_never_block_the_loop_for_100_ms(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill(db)
    outbox = isolated_env / "var" / "outbox"
    watchdog = Watchdog()
    with smtp_sink() as sink:
        settings = Settings(
            smtp={"host": "127.0.0.1", "port": sink.port, "tls": "none"},
            delivery={"outbox_dir": str(outbox), "render_workers": 0},
        )
        report = run_async(deliver(settings, f"sqlite:///{db}", watchdog))
        received = sink.messages()
    assert report.outcomes["sent"] == 2 * LETTERS, report.line()
    assert received == LETTERS  # at the wire
    assert len(list(outbox.rglob("letter-*.txt"))) == LETTERS  # the SMS copies, on disk
    assert watchdog.worst_s < LIMIT_S, (
        f"the event loop was blocked for {watchdog.worst_s * 1000:.0f} ms"
        f" ({report.seconds:.1f} s for {2 * LETTERS} messages)"
    )
    assert watchdog.wakes > report.seconds / TICK_S / 10  # the watchdog really ran
