"""Recording what a delivery run learns: outcomes committed in small batches, leases kept.

- Outcomes are buffered and committed every ``mark_every`` (and, through the run's
  timer, at least every few seconds), so a crash can only repeat what was in flight:
  claimed and sent, but not yet recorded.
- The recorder knows what the run holds (claimed, outcome not yet recorded) and renews
  those leases, so a slow server delays messages but never lets a lease run out under
  a live sender. Only a sender that died (or a run cut at its deadline) leaves leases
  to run out.
- It also paces claiming: ``room`` is clear while more than a batch is unanswered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence

from reminder.clock import WallClock
from reminder.logs import get_logger
from reminder.outbox import gives_up, mark, renew
from reminder.rows import Claimed, Result
from reminder.settings import DeliverySettings
from reminder.store.db import Store


class Recorder:
    """Outcomes of one delivery run, buffered and committed; leases of what it holds."""

    def __init__(self, store: Store, settings: DeliverySettings, clock: WallClock) -> None:
        self.store = store
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
        self.closed = False  # a cut run: what comes in later is not recorded
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
        if len(self.pending) >= self.settings.mark_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        results, self.pending = self.pending, []
        attempts: dict[int, int] = {}
        for result in results:
            # a message taken twice (this process stopped longer than a lease) is
            # reported twice: both outcomes are recorded, the attempts counted once
            attempts.setdefault(result.id, self.attempts.get(result.id, 0))
        try:
            with self.store.write() as session:
                mark(session, results, attempts, self.clock(), self.settings)
        except BaseException:
            # not recorded: kept for the next flush, their leases still renewed
            self.pending[:0] = results
            raise
        for result in results:
            self.attempts.pop(result.id, None)
        self._log(results, attempts)

    def _log(self, results: list[Result], attempts: dict[int, int]) -> None:
        for result in results:
            self.leases.pop(result.id, None)
            key = self.keys.pop(result.id, "")
            if result.status == "sent":
                kind = key.split(":", 1)[0]
                event = "reminder_sent" if kind == "letter" else f"{kind}_sent"
                self.log.info(event, key=key)
            elif result.status == "dead" or gives_up(result, attempts[result.id], self.settings):
                self.log.warning("reminder_dead", key=key, error=result.detail)
            else:
                self.log.info("reminder_retry", key=key, error=result.detail)

    def close(self) -> int:
        """Record what was learnt and stop listening; how many messages are still held
        (their leases run out and they are sent again)."""
        self.flush()
        self.closed = True
        return len(self.leases)

    def renew(self) -> None:
        """Extend the leases of everything held."""
        held: dict[dt.datetime, list[int]] = defaultdict(list)
        for row_id, lease_until in self.leases.items():
            held[lease_until].append(row_id)
        if not held:
            return
        until = self.clock() + dt.timedelta(seconds=self.settings.lease_s)
        with self.store.write() as session:
            kept = sum(renew(session, ids, old, until) for old, ids in held.items())
        total = sum(len(ids) for ids in held.values())
        for ids in held.values():
            for row_id in ids:
                self.leases[row_id] = until
        if kept < total:
            # only if this process was stopped for longer than a lease (a suspended VM)
            self.log.warning("lease_lost", messages=total - kept)
