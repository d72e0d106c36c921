"""`reminder run`: the daemon. APScheduler triggers; the outbox and the planner decide.

1. Take the single-daemon lock (SQLite), open the store, load config and contacts.
2. Schedule with APScheduler 3 (AsyncIOScheduler, no job store: the outbox is the
   state): a tick every ``[daemon] tick_s``, the first one at once (the catch-up), and
   a cron trigger in the configured zone for the digest (08:30). Each tick composes
   what is due into letters (the week's agenda in each unit's first letter of a week).
3. Catch up on reports: today's digest goes out if its hour has passed on a working day
   and it has not been sent (its key makes a second one impossible).
4. Tell systemd READY=1; ping WATCHDOG=1 at half the watchdog interval from the event
   loop itself, and report STATUS= with the last tick and the queue after each tick.
5. SIGTERM/SIGINT: stop taking work; the job in progress finishes its in-flight sends
   (at most ``stop_timeout_s``), then exit 0. SIGHUP: reload config, contacts and
   templates between jobs; a reload that fails keeps the old ones and says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import make_url

from reminder.app import App
from reminder.delivery import (
    Clock,
    Delivery,
    DeliveryReport,
    close_all,
    make_senders,
    real_now,
)
from reminder.errors import ReminderError
from reminder.logs import get_logger
from reminder.planning import Planning
from reminder.reports import enqueue_reports
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.meta import save_last_tick
from reminder.store.reports import queue_counts
from reminder.store.tasks import latest_import, ledger_years
from reminder.systemd import DaemonLock, notify, watchdog_interval_s
from reminder.tick import run_tick

RELEASE_AFTER = 500  # messages: after a run this big, give its memory back


@dataclass(slots=True)
class Runtime:
    """Everything a reload replaces."""

    settings: Settings
    planning: Planning
    delivery: Delivery

    @classmethod
    def load(cls, store: Store, clock: Clock) -> Runtime:
        app = App()  # a fresh App reads config, contacts and templates anew
        settings = app.config.settings
        planning = app.planning
        senders = make_senders(settings, app.contacts)
        delivery = Delivery(store, settings, app.contacts, app.renderer, senders, clock)
        return cls(settings, planning, delivery)

    async def close(self) -> None:
        self.delivery.close()
        await close_all(self.delivery.senders)


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser().resolve()


def release_memory(delivery: Delivery) -> None:
    """After a big run (a catch-up), stop the render workers until a run needs them.

    They start again in a fraction of a second; an idle daemon holds what it needs
    between ticks, not one worker per CPU.
    """
    delivery.close()
    gc.collect()


class Daemon:
    def __init__(self, store: Store, runtime: Runtime, clock: Clock = real_now) -> None:
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.stopping = asyncio.Event()
        self.busy = asyncio.Lock()  # one job at a time: ticks, reports, reloads
        self.log = get_logger()
        self.last_tick: dict[str, Any] = {}

    # --- jobs ------------------------------------------------------------------------

    async def tick(self) -> None:
        if self.stopping.is_set():
            return
        async with self.busy:
            runtime, now = self.runtime, self.clock()
            try:
                result = run_tick(self.store, runtime.planning, runtime.settings, now)
                for letter in result.letters:
                    self.log.info(
                        "letter_enqueued", key=letter.message.key, items=len(letter.items)
                    )
                report = await runtime.delivery.run(stop=self.stopping)
                self.record_tick(now, result.targets, len(result.letters), report)
                if report.claimed >= RELEASE_AFTER:
                    release_memory(runtime.delivery)
            except Exception as error:  # the next tick tries again
                self.failed("tick_failed", error)

    async def reports(self) -> None:
        """Today's digests (and escalation lists), if due and not yet sent, then delivery."""
        if self.stopping.is_set():
            return
        async with self.busy:
            runtime, now = self.runtime, self.clock()
            try:
                messages = enqueue_reports(self.store, runtime.planning, runtime.settings, now)
                self.log.info("reports", messages=len(messages))
                if messages:
                    await runtime.delivery.run(stop=self.stopping)
            except Exception as error:  # the next tick delivers what was enqueued
                self.failed("reports_failed", error)

    def failed(self, event: str, error: Exception) -> None:
        """A job failed (the database went away, a bug): say so, keep the daemon up.

        Nothing is lost: what was not enqueued is planned again at the next tick (targets
        move on only in the transaction that enqueues), and claimed messages return to
        the queue when their lease ends.
        """
        if isinstance(error, ReminderError):
            self.log.error(event, error=str(error))
        else:
            self.log.exception(event, error=f"{type(error).__name__}: {error}")
        notify(f"STATUS={event}: {type(error).__name__}")

    def record_tick(
        self, now: dt.datetime, due: int, enqueued: int, report: DeliveryReport
    ) -> None:
        queue = self.queue()
        with self.store.write() as session:
            self.last_tick = save_last_tick(session, now, due, enqueued, report.outcomes, queue)
        outcomes = {f"delivered_{status}": n for status, n in report.outcomes.items()}
        queued = {f"queue_{status}": n for status, n in queue.items()}
        self.log.info("tick", due=due, enqueued=enqueued, **outcomes, **queued)
        local = now.astimezone(self.runtime.settings.zone)
        waiting = ", ".join(f"{state} {count}" for state, count in queue.items() if count)
        notify(f"STATUS=last tick {local:%Y-%m-%d %H:%M:%S}; queue: {waiting or 'empty'}")

    def check_calendar(self) -> None:
        """Warn about the years ahead and of the ledger whose 调休 is not known yet."""
        calendar = self.runtime.planning.calendar
        today = self.clock().astimezone(self.runtime.settings.zone).date()
        with self.store.read() as session:
            years = ledger_years(session)
        warning = calendar.warning(years, today)
        if warning:
            unconfirmed = calendar.unconfirmed_years(years, today)
            self.log.warning("calendar_unconfirmed", years=unconfirmed, hint=warning)

    def has_ledger(self) -> bool:
        with self.store.read() as session:
            return latest_import(session) is not None

    def queue(self) -> dict[str, int]:
        with self.store.read() as session:
            return queue_counts(session, ("pending", "sending", "retry", "dead"))

    # --- signals and reloads -----------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            self.log.info("stopping", signal=signal.Signals(signum).name)
            notify("STOPPING=1")
            self.stopping.set()

    async def reload(self) -> None:
        try:
            fresh = Runtime.load(self.store, self.clock)
        except ReminderError as error:
            self.log.error("reload_failed", error=str(error))
            notify("STATUS=reload failed, running on the old configuration")
            return
        async with self.busy:
            old, self.runtime = self.runtime, fresh
        await old.close()
        self.log.info("reloaded")
        self.check_calendar()

    async def watchdog(self, interval_s: float) -> None:
        while not self.stopping.is_set():
            notify("WATCHDOG=1")
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=interval_s)
            except TimeoutError:
                continue

    # --- the main loop -----------------------------------------------------------------

    async def run(self) -> int:
        """Steps 2 to 5 of the module docstring."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        reloads: set[asyncio.Task[None]] = set()

        def on_hangup() -> None:
            task = loop.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        settings = self.runtime.settings
        zone = settings.zone
        scheduler = AsyncIOScheduler(timezone=zone, event_loop=loop)
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 3600}
        scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=settings.daemon.tick_s, timezone=zone),
            id="tick",
            next_run_time=dt.datetime.now(zone),
            **common,
        )
        at = settings.digest.at
        trigger = CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=zone)
        scheduler.add_job(self.reports, trigger, id="digest", **common)
        scheduler.start()
        notify("READY=1", "STATUS=started")
        self.log.info("started", pid=os.getpid(), sqlite=self.store.is_sqlite)
        if not self.has_ledger():
            self.log.warning("no_ledger", hint="reminder import FILE; the daemon picks it up")
        self.check_calendar()
        interval = watchdog_interval_s()
        watchdog = loop.create_task(self.watchdog(interval)) if interval else None
        catch_up = loop.create_task(self.reports())
        await self.stopping.wait()
        scheduler.pause()  # nothing new starts …
        try:  # … and the job in progress finishes its in-flight sends
            await asyncio.wait_for(self.busy.acquire(), timeout=settings.daemon.stop_timeout_s)
        except TimeoutError:
            self.log.warning("stop_timeout", seconds=settings.daemon.stop_timeout_s)
        scheduler.shutdown(wait=False)
        for task in (catch_up, watchdog, *reloads):
            if task is not None:
                task.cancel()
        await self.runtime.close()
        self.log.info("stopped")
        return 0


async def serve(store: Store, clock: Clock = real_now) -> int:
    runtime = Runtime.load(store, clock)
    return await Daemon(store, runtime, clock).run()


def lock_for(store_url: str) -> DaemonLock | None:
    path = sqlite_file(store_url)
    return DaemonLock(path) if path is not None else None
