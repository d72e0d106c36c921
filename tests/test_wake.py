"""``next_wake``: no tick before it would find anything to do (the supervisor sleeps on
that promise), on the seed's ledger through a week of moments."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from reminder.daemon import Daemon, Runtime
from reminder.outbox import anything_to_claim
from reminder.settings import load_config
from reminder.store.db import open_store
from reminder.store.meta import LAST_TICK_EVERY
from reminder.tick import preview
from reminder.wake import next_wake
from tests.conftest import SEED, Cli

# Beijing is UTC+8: a Friday evening, a Saturday, a Monday before and after 09:00,
# a Monday afternoon, a Wednesday at 08:29 (a minute before the digest)
MOMENTS = [
    dt.datetime(2018, 10, 5, 11, 0, tzinfo=dt.UTC),
    dt.datetime(2018, 10, 6, 3, 0, tzinfo=dt.UTC),
    dt.datetime(2018, 10, 8, 0, 30, tzinfo=dt.UTC),
    dt.datetime(2018, 10, 8, 1, 30, tzinfo=dt.UTC),
    dt.datetime(2018, 10, 8, 7, 0, tzinfo=dt.UTC),
    dt.datetime(2018, 10, 10, 0, 29, tzinfo=dt.UTC),
]


def test_nothing_is_due_before_the_next_wake(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    store = open_store(load_config().settings.db)
    clock = [MOMENTS[0]]
    daemon = Daemon(store, Runtime.load(store, lambda: clock[0]), lambda: clock[0])
    runtime = daemon.runtime
    wakes = []

    async def tick(at: dt.datetime) -> None:
        clock[0] = at
        daemon.reports_at(at)
        daemon.tick_at(at)
        while daemon.sending is not None and not daemon.sending.done():
            await daemon.sending

    try:
        for moment in MOMENTS:
            asyncio.run(tick(moment))
            planning, settings = runtime.planning, runtime.settings
            wake = next_wake(store, planning, settings, moment, daemon.saved_tick)
            assert moment < wake <= moment + LAST_TICK_EVERY  # the idle record's bound
            # without that bound: the work's own next moment, hours away at times
            wake = next_wake(store, planning, settings, moment, {})
            wakes.append(wake)
            assert moment < wake
            before = wake - dt.timedelta(seconds=1)
            planned = preview(store, runtime.planning, runtime.settings, before)
            assert planned.items == [], (moment, wake, planned.items[:3])
            with store.read() as session:
                assert not anything_to_claim(session, due_by=before, now=before)
        assert daemon.delivered["sent"] > 0  # the Monday's letters went out on the way
        # the Monday before 09:00 wakes at the send hour at the latest
        assert wakes[2] <= dt.datetime(2018, 10, 8, 1, 0, tzinfo=dt.UTC)
        assert max(w - m for w, m in zip(wakes, MOMENTS, strict=True)) > LAST_TICK_EVERY
    finally:
        asyncio.run(daemon.runtime.close())
        store.dispose()
