"""Delivery: outbox → render → channel → outcome recorded. The only place messages leave.

``Delivery.run`` works as a pipeline until nothing is left to claim (or ``stop`` is set):

1. Claim a batch of due messages with a lease, in one short transaction; claiming
   waits while more than a batch is still unanswered.
2. Render each message (its template, the snapshot taken when it was enqueued) and
   build what goes on the wire, in chunks; on a machine with more than one CPU the
   chunks are rendered in worker processes, so that the process that talks SMTP spends
   its time on the wire.
   A template that cannot be rendered makes that message dead, with the reason.
3. Hand each rendered chunk to its channel's sender; senders report each outcome as
   soon as they learn it.
4. Record outcomes in small batches (``mark_every``, and at least every 2 s) as they
   come in, so that a crash can only repeat what was in flight: claimed and sent, but
   not yet recorded.

While it runs, the leases of what it holds (claimed, outcome not yet recorded) are
renewed every third of ``lease_s``: a slow server delays messages, it never lets a
lease run out under a live sender, so no message is taken and sent twice. Only a
sender that died leaves leases to run out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from reminder.channels import Claimed, Outgoing, Result, Sender
from reminder.channels.email import SmtpSender
from reminder.channels.files import FileSender
from reminder.channels.mime import build_email
from reminder.channels.robots import RobotSender
from reminder.channels.sms import SmsSender
from reminder.contacts import Contacts
from reminder.errors import DeliveryError
from reminder.logs import get_logger
from reminder.outbox import claim, gives_up, mark, renew
from reminder.prepare import Preparer, render_chunk, start_worker
from reminder.render import Renderer
from reminder.secrets import secret
from reminder.settings import Settings
from reminder.store.db import Store

Clock = Callable[[], dt.datetime]
CHUNK = 200  # messages rendered (and handed to a sender) together
FLUSH_S = 2.0  # outcomes wait at most this long to be recorded


def real_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class DeliveryReport:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self) -> str:
        parts = ", ".join(f"{status} {n}" for status, n in sorted(self.outcomes.items()))
        return f"delivered {self.claimed} messages in {self.seconds:.1f} s ({parts or 'none'})"


def make_senders(settings: Settings, contacts: Contacts) -> dict[str, Sender]:
    """The sender of each channel: SMTP and the SMS gateway if configured, else files."""
    files = FileSender(Path(settings.delivery.outbox_dir))
    email: Sender = files
    if settings.smtp.host:
        email = SmtpSender(settings.smtp, secret("SMTP_PASSWORD", "smtp_password"))
    sms: Sender = files
    if settings.sms.url:
        sms = SmsSender(settings.sms, secret("SMS_TOKEN", "sms_token"))
    robots: Sender = RobotSender(settings.robots, contacts)
    return {"email": email, "sms": sms, "wecom": robots, "dingtalk": robots}


class _Recorder:
    """Step 4: outcomes buffered and committed every ``mark_every``."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.settings = delivery.settings.delivery
        self.attempts: dict[int, int] = {}
        self.keys: dict[int, str] = {}
        self.leases: dict[int, dt.datetime] = {}  # held: claimed, outcome not yet recorded
        self.pending: list[Result] = []
        self.counts: Counter[str] = Counter()
        self.unanswered = 0
        self.room = asyncio.Event()
        self.room.set()
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
            attempts.setdefault(result.id, self.attempts.pop(result.id, 0))
        self.delivery.record(results, attempts)
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


class Delivery:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        contacts: Contacts,
        renderer: Renderer,
        senders: dict[str, Sender],
        clock: Clock = real_now,
    ) -> None:
        self.store = store
        self.settings = settings
        self.contacts = contacts
        self.senders = senders
        self.clock = clock
        self.preparer = Preparer(settings, contacts, renderer)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_failed = False  # for the rest of a run, work in this process
        self._first_here = False  # the next chunk is rendered in this process
        self.log = get_logger()

    def _render_pool(self) -> ProcessPoolExecutor | None:
        workers = self.settings.delivery.workers
        if workers == 0 or self._pool_failed:
            return None
        if self._pool is None:
            # forkserver: workers start from a clean process, never from one holding
            # database connections or a running event loop
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["reminder.prepare"])
            templates = self.settings.messages.templates or None
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=context,
                initializer=start_worker,
                initargs=(self.settings, self.contacts, templates),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def record(self, results: list[Result], attempts: dict[int, int]) -> None:
        with self.store.write() as session:
            mark(session, results, attempts, self.clock(), self.settings.delivery)

    def _claim(self, due_by: dt.datetime | None) -> tuple[list[Claimed], dt.datetime]:
        """A batch, and the lease it is held under."""
        now = self.clock()
        settings = self.settings.delivery
        with self.store.write() as session:
            rows = claim(
                session,
                due_by=max(due_by or now, now),
                now=now,
                lease_s=settings.lease_s,
                limit=settings.batch,
                lock=not self.store.is_sqlite,
            )
        return rows, now + dt.timedelta(seconds=settings.lease_s)

    def renew(self, recorder: _Recorder) -> None:
        """Extend the leases of everything the recorder holds."""
        held: dict[dt.datetime, list[int]] = defaultdict(list)
        for row_id, lease_until in recorder.leases.items():
            held[lease_until].append(row_id)
        if not held:
            return
        until = self.clock() + dt.timedelta(seconds=self.settings.delivery.lease_s)
        with self.store.write() as session:
            kept = sum(renew(session, ids, old, until) for old, ids in held.items())
        total = sum(len(ids) for ids in held.values())
        for ids in held.values():
            for row_id in ids:
                recorder.leases[row_id] = until
        if kept < total:
            # only if this process was stopped for longer than a lease (a suspended VM)
            self.log.warning("lease_lost", messages=total - kept)

    async def _keep(self, recorder: _Recorder) -> None:
        """Record outcomes at least every FLUSH_S; renew leases every third of a lease."""
        lease_s = self.settings.delivery.lease_s
        interval = min(FLUSH_S, lease_s / 3)
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            recorder.flush()
            if time.monotonic() - renewed >= lease_s / 3 - interval / 2:
                self.renew(recorder)
                renewed = time.monotonic()

    async def _prepare(self, rows: Sequence[Claimed], now: dt.datetime) -> list[Outgoing | Result]:
        pool = self._render_pool() if len(rows) >= CHUNK // 2 else None
        if pool is None:
            return self.preparer.chunk(rows, now)
        if self._first_here:
            # the run's first chunk is rendered here, once the batch's other chunks went
            # to the workers: its messages go out while a worker starts or renders
            self._first_here = False
            await asyncio.sleep(0)
            return self.preparer.chunk(rows, now)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, render_chunk, rows, now)
        except BrokenProcessPool as exc:
            # a worker died (killed, out of memory); nothing of this chunk was sent yet,
            # so it is rendered here, and so is the rest of this run
            self.log.error("render_workers_failed", error=str(exc))
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._pool_failed = True
            return self.preparer.chunk(rows, now)

    async def _chunk(self, rows: Sequence[Claimed], recorder: _Recorder) -> None:
        """Steps 2 and 3 for one chunk. Whatever goes wrong, every row gets an outcome:
        a row left without one would be held (its lease renewed) until the run ends."""
        reported: set[int] = set()

        def report(result: Result) -> None:
            reported.add(result.id)
            recorder.report(result)

        try:
            by_channel: dict[str, list[Outgoing]] = defaultdict(list)
            for item in await self._prepare(rows, self.clock()):
                if isinstance(item, Result):
                    report(item)
                elif item.channel not in self.senders:
                    report(Result(item.id, "dead", None, f"no sender for {item.channel}"))
                else:
                    by_channel[item.channel].append(item)
            outcomes = await asyncio.gather(
                *(
                    self.senders[channel].send(items, report)
                    for channel, items in by_channel.items()
                ),
                return_exceptions=True,  # the other channels finish what they hold
            )
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".strip().removesuffix(":")
            left = [row for row in rows if row.id not in reported]
            self.log.error("delivery_error", error=error, messages=len(left))
            for row in left:
                recorder.report(Result(row.id, "retry", None, f"delivery failed: {error}"))

    async def run(
        self, due_by: dt.datetime | None = None, stop: asyncio.Event | None = None
    ) -> DeliveryReport:
        """Deliver everything due by ``due_by`` (default: now); see the module docstring."""
        report = DeliveryReport()
        started = time.perf_counter()
        recorder = _Recorder(self)
        self._pool_failed = False
        self._first_here = True
        chunks: set[asyncio.Task[None]] = set()
        keeper = asyncio.create_task(self._keep(recorder))
        try:
            while stop is None or not stop.is_set():
                await recorder.room.wait()  # step 1 waits while a batch is unanswered
                rows, lease_until = self._claim(due_by)
                if not rows:
                    break
                report.claimed += len(rows)
                recorder.track(rows, lease_until)
                for start in range(0, len(rows), CHUNK):
                    chunk = rows[start : start + CHUNK]
                    task = asyncio.create_task(self._chunk(chunk, recorder))
                    chunks.add(task)
                    task.add_done_callback(chunks.discard)
            await asyncio.gather(*chunks)
        finally:
            keeper.cancel()
            recorder.flush()  # what was learnt is kept, whatever happened after
        report.outcomes = recorder.counts
        report.seconds = time.perf_counter() - started
        return report


async def close_all(senders: dict[str, Sender]) -> None:
    for sender in {id(s): s for s in senders.values()}.values():
        await sender.close()


async def send_test(
    settings: Settings, contacts: Contacts, address: str, now: dt.datetime
) -> Result:
    """One test e-mail, straight through the e-mail channel (not the outbox)."""
    zone = settings.zone
    key = f"test:{address}:{now.isoformat()}"
    text = f"这是督办提醒系统的测试邮件，发送时间：{now.astimezone(zone):%Y-%m-%d %H:%M:%S}。"
    try:
        data, _ = build_email(
            from_name=settings.smtp.from_name,
            from_address=settings.smtp.from_address,
            to_name="",
            to_address=address,
            subject="督办提醒：测试邮件",
            text=text,
            html=f"<p>{text}</p>",
            key=key,
            date=now.astimezone(zone),
            reply_to=settings.reply_to,
            kind="test",
        )
    except DeliveryError as error:
        return Result(0, "dead", None, error.message)
    item = Outgoing(
        id=0,
        key=key,
        kind="test",
        channel="email",
        to=address,
        recipient_name=address,
        subject="督办提醒：测试邮件",
        data=data,
        scheduled_day=now.astimezone(zone).date().isoformat(),
    )
    sender = make_senders(settings, contacts)["email"]
    outcomes: list[Result] = []
    try:
        await sender.send([item], outcomes.append)
    finally:
        await sender.close()
    return outcomes[0]
