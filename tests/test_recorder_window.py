"""The recorder's in-flight window: senders wait while ``mark_every`` outcomes await
their commit (what a crash can repeat stays bounded, tests/test_crash.py).

The store is a real SQLite file; another connection holds its write lock, so the
recorder's commit cannot end until it lets go.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reminder.outbox import claim
from reminder.recorder import Recorder
from reminder.rows import Result
from reminder.settings import DeliverySettings
from reminder.store.db import open_store
from tests.conftest import SEED, Cli
from tests.test_crash import fill_outbox

MARK_EVERY = 10


def statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT status, count(*) FROM outbox GROUP BY status"))


def test_senders_wait_while_mark_every_outcomes_await_their_commit(
    cli: Cli, isolated_env: Path
) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill_outbox(db, 2 * MARK_EVERY)
    store = open_store(f"sqlite:///{db}")
    settings = DeliverySettings(mark_every=MARK_EVERY, batch=100)
    moment = dt.datetime.now(dt.UTC)
    with store.write() as session:
        rows = claim(session, due_by=moment, now=moment, lease_s=300, limit=100, lock=False)
    assert len(rows) == 2 * MARK_EVERY
    holder = sqlite3.connect(db, isolation_level=None)
    store_thread = ThreadPoolExecutor(1)

    async def scenario() -> None:
        recorder = Recorder(store, settings, lambda: moment, store_thread)
        recorder.track(rows, moment + dt.timedelta(seconds=300))
        holder.execute("BEGIN IMMEDIATE")  # the recorder's commits wait for this
        for row in rows[: MARK_EVERY - 1]:
            recorder.report(Result(row.id, "sent", 250, "ok"))
            await recorder.window()  # room left: does not wait
        recorder.report(Result(rows[MARK_EVERY - 1].id, "sent", 250, "ok"))
        waiting = asyncio.ensure_future(recorder.window())
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done, "a sender went on with mark_every outcomes not yet committed"
        assert recorder.unrecorded == MARK_EVERY
        holder.execute("COMMIT")
        await recorder.flush()  # what the run's timer does (a commit may have timed out)
        await asyncio.wait_for(waiting, timeout=30)
        assert recorder.unrecorded == 0
        await recorder.close()

    try:
        asyncio.run(scenario())
    finally:
        holder.close()
        store_thread.shutdown()
        store.dispose()
    assert statuses(db) == {"sent": MARK_EVERY, "sending": MARK_EVERY}
