"""`reminder run`: the daemon. APScheduler triggers; the outbox and the planner decide.

1. Take the single-daemon lock (SQLite), open the store, load config and contacts, and
   render every template against the ledger: a template that fails stops the start
   (exit 78, the file and line named), before anything is queued.
2. Schedule with APScheduler 3 (AsyncIOScheduler, no job store: the outbox is the
   state): a tick every ``[daemon] tick_s``, the first one at once (the catch-up), and
   a cron trigger in the configured zone for the digest (08:30). Each tick composes
   what is due into letters (the week's agenda in each unit's first letter of a week).
   Jobs read the clock once and pass ``now`` down.
3. Catch up on reports: today's digest goes out if its hour has passed on a working day
   and it has not been sent (its key makes a second one impossible).
4. Delivery runs beside the jobs, one run at a time: a tick or a digest asks for one
   and goes on. A slow server delays messages, never the ticks, digests and reloads.
5. Tell systemd READY=1; ping WATCHDOG=1 at half the watchdog interval from the event
   loop itself, and report STATUS= with the last tick and the queue after a tick that
   changed something, or every ``LAST_TICK_EVERY`` (the rule by which the last tick is
   written to the store: an idle tick neither writes nor tells).
6. SIGTERM/SIGINT: stop taking work; the job and the delivery run in progress finish
   their in-flight sends within ``stop_timeout_s``; past it, what is still in flight
   is dropped (its leases run out and a later run sends it), then exit 0. SIGHUP:
   reload config, contacts and templates between jobs; a reload that fails (templates
   included) keeps the old ones and says why.

`reminder run` (``supervise``) runs this daemon in sessions (``reminder.session``):
processes that exit once nothing is due, under a lasting supervisor of a fifth of the
memory (``reminder.supervisor``) that starts one when something may be due
(``reminder.wake``), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import gc
import json
import os
import pickle
import signal
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import make_url

from reminder.clock import WallClock, now
from reminder.delivery import Delivery, close_all
from reminder.digest_round import enqueue_reports
from reminder.errors import ReminderError
from reminder.logs import get_logger
from reminder.rows import DeliveryReport
from reminder.runtime import Runtime, load_checked
from reminder.store.db import Store
from reminder.store.meta import save_last_tick, tick_record, worth_saving
from reminder.store.overview import queue_counts
from reminder.store.tasks import latest_import, ledger_years
from reminder.systemd import DaemonLock, notify, watchdog_interval_s
from reminder.tick import run_tick

__all__ = ["Daemon", "Runtime", "lock_for", "sqlite_file", "supervise"]

CANCEL_GRACE_S = 1.0  # a stop out of time: how long cancelled work may take to record


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser().resolve()


def release_memory(delivery: Delivery) -> None:
    """After a delivery run that sent something (a catch-up), give its memory back: the
    render workers, the forkserver and the resource tracker stop (they start again in a
    fraction of a second with the next backlog), the garbage the run left is collected
    and the C heap's free pages go back to the system (glibc keeps them otherwise)."""
    delivery.close()
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: free memory at the top of the heap and in its arenas
    returned to the system. Nothing elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


class Daemon:
    def __init__(self, store: Store, runtime: Runtime, clock: WallClock = now) -> None:
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.stopping = asyncio.Event()
        self.busy = asyncio.Lock()  # one job at a time: ticks, reports, reloads (short)
        self.sending: asyncio.Task[None] | None = None  # the delivery run, if one runs
        self.send_again = False  # a job asked for delivery while a run was going on
        self.in_use: Runtime | None = None  # the runtime the delivery run works with
        self.delivered: Counter[str] = Counter()  # the last outcomes of a run that sent
        self.log = get_logger()
        self.last_tick: dict[str, Any] = {}  # the last tick, in memory
        self.saved_tick: dict[str, Any] = {}  # in the store and STATUS=, for `status`
        self.reloads: set[asyncio.Task[None]] = set()  # SIGHUP's reloads in progress
        self.hangups_answered = 0  # SIGHUPs whose reload ended

    # --- jobs: each reads the clock once ---------------------------------------------

    async def tick(self) -> None:
        if self.stopping.is_set():
            return
        async with self.busy:
            if not self.stopping.is_set():  # a stop may have come while it waited
                self.tick_at(self.clock())

    def tick_at(self, moment: dt.datetime) -> None:
        runtime = self.runtime
        try:
            result = run_tick(self.store, runtime.planning, runtime.settings, moment)
            for letter in result.letters:
                self.log.info("letter_enqueued", key=letter.message.key, items=len(letter.items))
            self.record_tick(moment, result.targets, len(result.letters))
        except Exception as error:  # the next tick tries again
            self.failed("tick_failed", error)
        self.deliver_soon()  # what is queued goes out, whatever this tick added

    async def reports(self) -> None:
        """Today's digests (and escalation lists), if due and not yet sent, then delivery."""
        if self.stopping.is_set():
            return
        async with self.busy:
            if not self.stopping.is_set():
                self.reports_at(self.clock())

    def reports_at(self, moment: dt.datetime) -> None:
        runtime = self.runtime
        try:
            messages = enqueue_reports(self.store, runtime.planning, runtime.settings, moment)
            self.log.info("reports", messages=len(messages))
        except Exception as error:  # the next tick delivers what was enqueued
            self.failed("reports_failed", error)
            return
        if messages:
            self.deliver_soon()

    def failed(self, event: str, error: Exception) -> None:
        """A job failed (the database went away, a bug): say so, keep the daemon up.

        Nothing is lost: what was not enqueued is planned again at the next tick (targets
        move on only in the transaction that enqueues), and claimed messages return to
        the queue when their lease ends.
        """
        reason = str(error) if isinstance(error, ReminderError) else self.store.failure(error)
        if reason is not None:  # the store failing (its disk full) is no bug: no traceback
            self.log.error(event, error=reason)
        else:
            self.log.exception(event, error=f"{type(error).__name__}: {error}")
        notify(f"STATUS={event}: {type(error).__name__}")

    # --- delivery, beside the jobs -----------------------------------------------------

    def deliver_soon(self) -> None:
        """Start a delivery run, or ask the one going on for another when it ends."""
        self.send_again = True
        if self.stopping.is_set() or (self.sending is not None and not self.sending.done()):
            return
        self.sending = asyncio.get_running_loop().create_task(self.deliver())

    async def deliver(self) -> None:
        while self.send_again and not self.stopping.is_set():
            self.send_again = False
            runtime = self.in_use = self.runtime
            try:
                report = await runtime.delivery.run(stop=self.stopping)
                self.record_delivery(report)
                if report.claimed:
                    # the pooled connections' caches (SQLite's pages and statements, MiBs
                    # after a catch-up) go too: the next tick opens one again
                    self.store.dispose()
                    # in a thread: the workers' shutdown waits for them
                    await asyncio.to_thread(release_memory, runtime.delivery)
            except Exception as error:  # leased messages return when their lease ends
                self.failed("delivery_run_failed", error)
            self.in_use = None
            if runtime is not self.runtime:  # reloaded meanwhile: the old one is done
                await runtime.close()

    def record_delivery(self, report: DeliveryReport) -> None:
        if report.claimed:
            # a run that found nothing keeps the last outcomes: the next idle tick then
            # says what the last one said, and writes nothing
            self.delivered = report.outcomes
            outcomes = {f"delivered_{status}": n for status, n in report.outcomes.items()}
            self.log.info(
                "delivered", messages=report.claimed, seconds=round(report.seconds, 1), **outcomes
            )

    # --- what the daemon tells: logs, the store's meta, systemd ----------------------

    def record_tick(self, moment: dt.datetime, due: int, enqueued: int) -> None:
        queue = self.queue()
        self.last_tick = tick_record(moment, due, enqueued, self.delivered, queue)
        queued = {f"queue_{status}": n for status, n in queue.items()}
        self.log.info("tick", due=due, enqueued=enqueued, **queued)
        if not worth_saving(self.last_tick, self.saved_tick):
            return  # an idle tick: nothing written, nothing told (see store/meta.py)
        with self.store.write() as session:
            save_last_tick(session, self.last_tick)
        self.saved_tick = self.last_tick
        local = moment.astimezone(self.runtime.settings.zone)
        waiting = ", ".join(f"{state} {count}" for state, count in queue.items() if count)
        notify(f"STATUS=last tick {local:%Y-%m-%d %H:%M:%S}; queue: {waiting or 'empty'}")

    def check_calendar(self, moment: dt.datetime) -> None:
        """Warn about the years ahead and of the ledger whose 调休 is not known yet."""
        calendar = self.runtime.planning.calendar
        today = moment.astimezone(self.runtime.settings.zone).date()
        with self.store.read() as session:
            years = ledger_years(session)
        warning = calendar.warning(years, today)
        if warning:
            unconfirmed = calendar.unconfirmed_years(years, today)
            self.log.warning("calendar_unconfirmed", years=unconfirmed, hint=warning)

    def look_around(self, moment: dt.datetime) -> None:
        """What a start warns about: no ledger yet, a calendar not known for its years."""
        if not self.has_ledger():
            self.log.warning("no_ledger", hint="reminder import FILE; the daemon picks it up")
        self.check_calendar(moment)

    def has_ledger(self) -> bool:
        with self.store.read() as session:
            return latest_import(session) is not None

    def queue(self) -> dict[str, int]:
        with self.store.read() as session:
            return queue_counts(session, ("pending", "sending", "retry", "dead"))

    # --- signals and reloads -----------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            self.stopping.set()  # the supervisor says it, and tells systemd

    async def reload(self) -> None:
        moment = self.clock()
        try:
            fresh = Runtime.load(self.store, self.clock)
        except ReminderError as error:
            self.log.error("reload_failed", error=str(error))
            notify("STATUS=reload failed, running on the old configuration")
            return
        except Exception as error:  # the store, a file, a bug: the old one goes on
            self.failed("reload_failed", error)
            return
        async with self.busy:
            old, self.runtime = self.runtime, fresh
        if old is not self.in_use:  # else the delivery run closes it when it ends
            await old.close()
        self.log.info("reloaded")
        self.check_calendar(moment)

    def answered(self, task: asyncio.Task[None]) -> None:
        """A SIGHUP's reload ended (a session tells its supervisor how many did)."""
        self.reloads.discard(task)
        if not task.cancelled():
            self.hangups_answered += 1

    async def watchdog(self, interval_s: float) -> None:
        while not self.stopping.is_set():
            notify("WATCHDOG=1")
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=interval_s)
            except TimeoutError:
                continue

    # --- stopping ----------------------------------------------------------------------

    async def finish(self, timeout_s: float) -> bool:
        """Step 6: let the job and the delivery run in progress end, for ``timeout_s``;
        past it, cancel them (what they learnt is recorded) and drop what is in flight.
        True if everything ended by itself."""
        loop = asyncio.get_running_loop()
        waiting: set[asyncio.Task[Any]] = {loop.create_task(self.busy.acquire())}
        if self.sending is not None and not self.sending.done():
            waiting.add(self.sending)
        _done, pending = await asyncio.wait(waiting, timeout=max(0.0, timeout_s))
        if not pending:
            return True
        self.log.warning("stop_timeout", seconds=self.runtime.settings.daemon.stop_timeout_s)
        for task in pending:
            task.cancel()
        for runtime in {id(r): r for r in (self.runtime, self.in_use) if r}.values():
            runtime.delivery.abort()
        await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        return False

    # --- the main loop -----------------------------------------------------------------

    def start(self, first_tick: dt.datetime) -> tuple[AsyncIOScheduler, asyncio.Task[None] | None]:
        """Signals, the scheduler (a tick every ``tick_s`` from ``first_tick``, the digest's
        cron) and the watchdog (READY=1 and the start's log are the supervisor's)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)

        def on_hangup() -> None:
            task = loop.create_task(self.reload())
            self.reloads.add(task)
            task.add_done_callback(self.answered)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        settings = self.runtime.settings
        zone = settings.zone
        scheduler = AsyncIOScheduler(timezone=zone, event_loop=loop)
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 3600}
        scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=settings.daemon.tick_s, timezone=zone),
            id="tick",
            next_run_time=first_tick.astimezone(zone),
            **common,
        )
        at = settings.digest.at
        trigger = CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=zone)
        scheduler.add_job(self.reports, trigger, id="digest", **common)
        scheduler.start()
        interval = watchdog_interval_s()
        watchdog = loop.create_task(self.watchdog(interval)) if interval else None
        return scheduler, watchdog

    async def wind_down(
        self, scheduler: AsyncIOScheduler, tasks: Iterable[asyncio.Task[None] | None]
    ) -> None:
        """Step 6, once ``stopping`` is set: nothing new starts, what is in progress
        finishes its in-flight sends (or is dropped past ``stop_timeout_s``), all closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.runtime.settings.daemon.stop_timeout_s
        scheduler.pause()  # nothing new starts …
        # … and what is in progress finishes its in-flight sends, with time left to close
        finished = await self.finish(deadline - loop.time() - CANCEL_GRACE_S)
        scheduler.shutdown(wait=False)
        for task in (*tasks, *self.reloads):
            if task is not None:
                task.cancel()
        if finished:
            try:
                await asyncio.wait_for(self.runtime.close(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                self.runtime.delivery.abort()
        else:  # out of time: the aborted senders' HTTP clients closed all the same
            for runtime in {id(r): r for r in (self.runtime, self.in_use) if r}.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close_all(runtime.delivery.senders), CANCEL_GRACE_S)


def supervise(store: Store, lock: DaemonLock | None) -> NoReturn:
    """`reminder run`: load and check what a start checks (templates rendered against
    the ledger, exit 78 if one fails), then become the supervisor (``exec``: the same
    process, the lock's descriptor inherited), which starts sessions for the work
    (``reminder.supervisor``, ``reminder.session``). It sees a write as the SQLite
    store's files changing, or on PostgreSQL as a notification (``reminder.listener``)."""
    loaded, accepted, _renderer = load_checked(store, now)
    settings = loaded.settings
    database = sqlite_file(settings.db)
    orders = {
        "lock_path": str(lock.path) if lock is not None else None,
        "lock_fd": lock.handover() if lock is not None else None,
        "state_fd": _handed(pickle.dumps({"accepted": accepted})),
        "tick_s": settings.daemon.tick_s,
        "stop_timeout_s": settings.daemon.stop_timeout_s,
        "sqlite": str(database) if database is not None else None,
        "dsn_fd": _handed(libpq_dsn(settings.db).encode()) if database is None else None,
    }
    store.dispose()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, "-m", "reminder.supervisor", json.dumps(orders)])


def _handed(data: bytes) -> int:
    """A descriptor holding ``data``, which the supervisor inherits and reads."""
    handed = os.memfd_create("reminder-orders", 0)
    os.write(handed, data)
    os.lseek(handed, 0, os.SEEK_SET)
    os.set_inheritable(handed, True)
    return handed


def libpq_dsn(url: str) -> str:
    """The store's URL as libpq takes it (the supervisor's psycopg, without SQLAlchemy)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def lock_for(store_url: str) -> DaemonLock | None:
    path = sqlite_file(store_url)
    return DaemonLock(path) if path is not None else None
