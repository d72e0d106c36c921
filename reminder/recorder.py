"""Recording what a delivery run learns: outcomes committed in small batches, leases kept.

- Outcomes are buffered and committed every ``mark_every`` (and, through the run's
  timer, at least every few seconds), so a crash can only repeat what was in flight:
  claimed and sent, but not yet recorded.
- The recorder knows what the run holds (claimed, outcome not yet recorded) and renews
  those leases, so a slow server delays messages but never lets a lease run out under
  a live sender. Only a sender that died (or a run cut at its deadline) leaves leases
  to run out.
- It also paces claiming: ``room`` is clear while more than a batch is unanswered.
- It holds the in-flight window: ``window`` waits while ``mark_every`` outcomes are not
  yet committed (buffered, or in a commit on its way), and each sender waits on it before
  it puts a message on the wire. So what a crash can repeat stays bounded by
  ``mark_every`` plus what the senders have on the wire, as when commits ran on the
  loop (tests/test_crash.py). A commit starts once half the window is buffered, so the
  senders go on while it runs; they only wait when the store falls behind.
- A store that refuses commits (its disk full) keeps the outcomes here: the window
  stays shut, so nothing more goes on the wire, and the commit is tried again every
  ``FLUSH_S`` (logged once a minute); a run that ends so goes on trying until stopped.
  When space returns, what went out is recorded as sent, not sent again.
- Commits run in the run's store thread (``store_thread``), one at a time and in order,
  never on the event loop: a commit can wait on the disk (a WAL checkpoint) or on
  another writer's lock. The recorder's own state is only touched on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from reminder.clock import WallClock
from reminder.logs import get_logger
from reminder.outbox import gives_up, mark, renew
from reminder.rows import Claimed, Result
from reminder.settings import DeliverySettings
from reminder.store.db import Store

T = TypeVar("T")
RETRY_S = 2.0  # a run that ends with outcomes the store refused tries again this often
SAY_AGAIN_S = 60.0  # a store that keeps refusing is logged again this often


class Recorder:
    """Outcomes of one delivery run, buffered and committed; leases of what it holds."""

    def __init__(
        self,
        store: Store,
        settings: DeliverySettings,
        clock: WallClock,
        store_thread: Executor | None = None,
    ) -> None:
        self.store = store
        self.store_thread = store_thread  # None: commit on the loop (tests of one piece)
        self._flushing: asyncio.Task[None] | None = None
        self.settings = settings
        self.clock = clock
        self.attempts: dict[int, int] = {}
        self.keys: dict[int, str] = {}
        self.leases: dict[int, dt.datetime] = {}  # held: claimed, outcome not yet recorded
        self.pending: list[Result] = []
        self.counts: Counter[str] = Counter()
        self.unanswered = 0
        self.room = asyncio.Event()
        self.room.set()
        self.committing = 0  # outcomes in the commit on its way
        self._open = asyncio.Event()  # set while the window has room (see ``window``)
        self._open.set()
        self.closed = False  # a cut run: what comes in later is not recorded
        self.failing_since: float | None = None  # the store refuses commits (disk full)
        self._said_at = 0.0  # when that was last logged
        self.log = get_logger().bind()  # made once: a lazy logger is rebuilt on every call

    def track(self, rows: Sequence[Claimed], lease_until: dt.datetime) -> None:
        for row in rows:
            self.attempts[row.id] = row.attempts
            self.keys[row.id] = row.key
            self.leases[row.id] = lease_until
        self.unanswered += len(rows)
        if self.unanswered > self.settings.batch:
            self.room.clear()

    def report(self, result: Result) -> None:
        if self.closed:
            return
        self.pending.append(result)
        status = result.status
        if gives_up(result, self.attempts.get(result.id, 0), self.settings):
            status = "dead"  # mark() gives up on it: count and log it as what it becomes
        self.counts[status] += 1
        self.unanswered -= 1
        if self.unanswered <= self.settings.batch:
            self.room.set()
        if self.unrecorded >= self.settings.mark_every:
            self._open.clear()
        if len(self.pending) >= self._commit_at:
            self._flush_soon()

    @property
    def unrecorded(self) -> int:
        """Outcomes reported but not yet committed."""
        return len(self.pending) + self.committing

    @property
    def _commit_at(self) -> int:
        return max(1, self.settings.mark_every // 2)

    async def window(self) -> None:
        """Wait until one more message may go on the wire: fewer than ``mark_every``
        outcomes await their commit (see the module docstring)."""
        while not self._open.is_set():
            await self._open.wait()

    def _reopen(self) -> None:
        if self.closed or self.unrecorded < self.settings.mark_every:
            self._open.set()

    async def in_store_thread(self, work: Callable[[], T]) -> T:
        """``work`` (a store transaction) in the store thread, awaited. A cancelled caller
        does not stop it: once started, a transaction commits or rolls back whole."""
        if self.store_thread is None:
            return work()
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self.store_thread, work))

    def _flush_soon(self) -> None:
        """Start recording what is pending, unless a flush is already on its way (that
        one looks again when it ends)."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        while len(self.pending) >= self._commit_at:  # more came in meanwhile
            try:
                await self._record()
            except Exception as exc:  # kept in pending: the run's timer tries again
                self.failed(exc)
                return

    def failed(self, error: Exception) -> None:
        """The store refused a commit: logged on one line when it starts, then once a
        minute while it lasts (a full disk may last hours; each retry would be a line)."""
        moment = time.monotonic()
        if self.failing_since is None:
            self.failing_since = moment
        elif moment - self._said_at < SAY_AGAIN_S:
            return
        self._said_at = moment
        reason = self.store.failure(error) or f"{type(error).__name__}: {error}"
        self.log.error("delivery_record_failed", error=reason, waiting=self.unrecorded)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            seconds = round(time.monotonic() - self.failing_since, 1)
            self.log.info("delivery_record_recovered", seconds=seconds)
            self.failing_since = None

    async def flush(self) -> None:
        """Record everything reported so far; raises if the store fails (what was not
        recorded stays pending)."""
        if self._flushing is not None and not self._flushing.done():
            await asyncio.wait([self._flushing])
        await self._record()

    async def _record(self) -> None:
        if not self.pending:
            return
        results, self.pending = self.pending, []
        # no longer held from here: a renewal computed after this would find them sent
        leases = {r.id: self.leases.pop(r.id) for r in results if r.id in self.leases}
        attempts: dict[int, int] = {}
        for result in results:
            # a message taken twice (this process stopped longer than a lease) is
            # reported twice: both outcomes are recorded, the attempts counted once
            attempts.setdefault(result.id, self.attempts.get(result.id, 0))
        moment = self.clock()
        lines = self._lines(results, attempts)

        def commit() -> None:
            with self.store.write() as session:
                mark(session, results, attempts, moment, self.settings)
            # logged here, once recorded, not on the loop: each line is a write to
            # stdout, each write lets go of the GIL, and the loop then waited for it
            # behind this thread (a hundred lines held the loop ~80 ms)
            for level, event, fields in lines:
                getattr(self.log, level)(event, **fields)

        self.committing += len(results)
        try:
            await self.in_store_thread(commit)
        except asyncio.CancelledError:
            # the transaction goes on in the store thread: recorded, or (if it fails)
            # sent again when their leases run out, as after a crash
            raise
        except BaseException:
            # not recorded: kept for the next flush, their leases still renewed
            self.pending[:0] = results
            self.leases.update(leases)
            raise
        finally:
            self.committing -= len(results)
            self._reopen()
        self._recovered()
        for result in results:
            self.attempts.pop(result.id, None)
            self.keys.pop(result.id, None)

    def _lines(
        self, results: list[Result], attempts: dict[int, int]
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """The log line of each outcome: (level, event, fields)."""
        lines: list[tuple[str, str, dict[str, Any]]] = []
        for result in results:
            key = self.keys.get(result.id, "")
            if result.status == "sent":
                kind = key.split(":", 1)[0]
                event = "reminder_sent" if kind == "letter" else f"{kind}_sent"
                lines.append(("info", event, {"key": key}))
            elif result.status == "dead" or gives_up(result, attempts[result.id], self.settings):
                lines.append(("warning", "reminder_dead", {"key": key, "error": result.detail}))
            else:
                lines.append(("info", "reminder_retry", {"key": key, "error": result.detail}))
        return lines

    async def close(self, stop: asyncio.Event | None = None) -> int:
        """Record what was learnt and stop listening; how many messages are still held
        (their leases run out and they are sent again). With ``stop``, a store that
        refuses the commit (a database error) is tried again every few seconds until ``stop``
        is set: the outcomes of what went out are kept, not sent again after their
        leases."""
        try:
            while True:
                try:
                    await self.flush()
                    break
                except Exception as exc:
                    if stop is None or stop.is_set() or self.store.failure(exc) is None:
                        raise  # not the store refusing (a bug): as before, no retry
                    self.failed(exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RETRY_S)
                    with contextlib.suppress(Exception):  # while it lasts, leases too
                        await self.renew()
        finally:
            self.closed = True
            self._open.set()  # nothing more is recorded: no sender waits on it
        return len(self.leases)

    async def renew(self) -> None:
        """Extend the leases of everything held."""
        held: dict[dt.datetime, list[int]] = defaultdict(list)
        for row_id, lease_until in self.leases.items():
            held[lease_until].append(row_id)
        if not held:
            return
        until = self.clock() + dt.timedelta(seconds=self.settings.lease_s)

        def commit() -> int:
            with self.store.write() as session:
                return sum(renew(session, ids, old, until) for old, ids in held.items())

        kept = await self.in_store_thread(commit)
        total = sum(len(ids) for ids in held.values())
        for ids in held.values():
            for row_id in ids:
                if row_id in self.leases:  # not recorded meanwhile
                    self.leases[row_id] = until
        if kept < total:
            # only if this process was stopped for longer than a lease (a suspended VM)
            self.log.warning("lease_lost", messages=total - kept)
