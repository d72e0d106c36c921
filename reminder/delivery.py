"""Delivery: outbox → render → channel → outcome recorded. The only place messages leave.

``Delivery.run`` works as a pipeline until nothing is left to claim (or ``stop`` is set):

1. Claim a batch of due messages with a lease, in one short transaction; claiming
   waits while more than a batch is still unanswered.
2. Render each message (its template, the task as it is now) and build what goes on
   the wire, in chunks; on a machine with more than one CPU the chunks are rendered in
   worker processes, so that the process that talks SMTP spends its time on the wire.
   A template that cannot be rendered makes that message dead, with the reason.
3. Hand each rendered chunk to its channel's sender; senders report each outcome as
   soon as they learn it.
4. Record outcomes in small batches (``mark_every``) as they come in, so that a crash
   can only repeat what was in flight: claimed and sent, but not yet recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from reminder.channels import Outgoing, Result, Sender
from reminder.channels.email import SmtpSender, build_email, is_wire_ready
from reminder.channels.files import FileSender
from reminder.channels.robots import RobotSender
from reminder.channels.sms import SmsSender, fit
from reminder.contacts import Contacts
from reminder.errors import DeliveryError
from reminder.logs import get_logger
from reminder.messages import TaskFacts, context
from reminder.outbox import Claimed, claim, mark
from reminder.render import Renderer, TemplateProblem
from reminder.secrets import secret
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.tasks import task_facts

Clock = Callable[[], dt.datetime]
CHUNK = 200  # messages rendered (and handed to a sender) together


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


def make_senders(
    settings: Settings, contacts: Contacts, *, durable: bool = True, folder: Path | None = None
) -> dict[str, Sender]:
    """The sender of each channel: SMTP and the SMS gateway if configured, else files."""
    files = FileSender(folder or Path(settings.delivery.outbox_dir), durable=durable)
    email: Sender = files
    if settings.smtp.host and folder is None:
        email = SmtpSender(settings.smtp, secret("SMTP_PASSWORD", "smtp_password"))
    sms: Sender = files
    if settings.sms.url and folder is None:
        sms = SmsSender(settings.sms, secret("SMS_TOKEN", "sms_token"))
    robots: Sender = files if folder is not None else RobotSender(settings.robots, contacts)
    return {"email": email, "sms": sms, "wecom": robots, "dingtalk": robots}


class Preparer:
    """Step 2 for one message: pure (the clock's reading is passed in)."""

    def __init__(self, settings: Settings, contacts: Contacts, renderer: Renderer) -> None:
        self.settings = settings
        self.contacts = contacts
        self.renderer = renderer
        self.zone = ZoneInfo(settings.timezone)

    def prepare(self, row: Claimed, task: TaskFacts | None, now: dt.datetime) -> Outgoing:
        """Raises ``DeliveryError`` or ``TemplateProblem`` if it cannot be built."""
        if task is None:
            raise DeliveryError(f"task {row.task_no} is no longer in the ledger", permanent=True)
        values = context(
            kind=row.kind,
            unit=row.unit or "",
            role=row.role or "",
            recipient=row.recipient_name,
            task=task,
            payload=row.payload,
            contacts=self.contacts,
            settings=self.settings.messages,
        )
        base = Outgoing(
            id=row.id,
            key=row.key,
            kind=row.kind,
            channel=row.channel,
            to=row.recipient,
            recipient_name=row.recipient_name,
            task_no=row.task_no,
            scheduled_day=row.scheduled_for.astimezone(self.zone).date().isoformat(),
        )
        if row.channel == "email":
            parts = self.renderer.render(row.kind, values, ("subject", "text", "html"))
            smtp = self.settings.smtp
            data, message_id = build_email(
                from_name=smtp.from_name,
                from_address=smtp.from_address,
                to_name=row.recipient_name,
                to_address=row.recipient,
                subject=parts.subject,
                text=parts.text,
                html=parts.html,
                key=row.key,
                date=now.astimezone(self.zone),
                reply_to=smtp.reply_to,
                kind=row.kind,
            )
            return base._replace(
                subject=parts.subject,
                data=data,
                message_id=message_id,
                wire_ready=is_wire_ready(data),
            )
        if row.channel == "sms":
            parts = self.renderer.render(row.kind, values, ("sms",))
            sms = self.settings.sms
            return base._replace(body=fit(sms.signature + parts.sms, sms.max_segments))
        parts = self.renderer.render(row.kind, values, ("subject", "md"))
        return base._replace(subject=parts.subject, body=parts.md)

    def chunk(
        self, rows: Sequence[Claimed], facts: dict[int, TaskFacts], now: dt.datetime
    ) -> list[Outgoing | Result]:
        out: list[Outgoing | Result] = []
        for row in rows:
            try:
                out.append(self.prepare(row, facts.get(row.task_id or -1), now))
            except (TemplateProblem, DeliveryError) as exc:
                out.append(Result(row.id, "dead", None, str(exc)))
        return out


# --- the render pool (worker processes) -----------------------------------------------

_WORKER: Preparer | None = None


def _start_worker(settings: Settings, contacts: Contacts, templates: str | None) -> None:
    global _WORKER  # noqa: PLW0603 - one Preparer per worker process, built once
    _WORKER = Preparer(settings, contacts, Renderer(Path(templates) if templates else None))


def _render_chunk(
    rows: Sequence[Claimed], facts: dict[int, TaskFacts], now: dt.datetime
) -> list[Outgoing | Result]:
    assert _WORKER is not None, "the worker was not started"
    return _WORKER.chunk(rows, facts, now)


class _Recorder:
    """Step 4: outcomes buffered and committed every ``mark_every``."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.settings = delivery.settings.delivery
        self.attempts: dict[int, int] = {}
        self.keys: dict[int, str] = {}
        self.pending: list[Result] = []
        self.counts: Counter[str] = Counter()
        self.unanswered = 0
        self.room = asyncio.Event()
        self.room.set()
        self.log = get_logger()

    def track(self, rows: Sequence[Claimed]) -> None:
        for row in rows:
            self.attempts[row.id] = row.attempts
            self.keys[row.id] = row.key
        self.unanswered += len(rows)
        if self.unanswered > self.settings.batch:
            self.room.clear()

    def report(self, result: Result) -> None:
        self.pending.append(result)
        status = result.status
        if status == "retry" and self.attempts[result.id] + 1 >= self.settings.max_attempts:
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
        attempts = {r.id: self.attempts.pop(r.id) for r in results}
        self.delivery.record(results, attempts)
        for result in results:
            key = self.keys.pop(result.id, "")
            if result.status == "sent":
                self.log.info("reminder_sent", key=key)
            elif result.status == "dead" or attempts[result.id] + 1 >= self.settings.max_attempts:
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
        self._facts: dict[int, TaskFacts] = {}
        self.log = get_logger()

    def _render_pool(self) -> ProcessPoolExecutor | None:
        workers = self.settings.delivery.workers
        if workers == 0:
            return None
        if self._pool is None:
            # forkserver: workers start from a clean process, never from one holding
            # database connections or a running event loop
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["reminder.delivery"])
            templates = self.settings.messages.templates or None
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self.settings, self.contacts, templates),
            )
        return self._pool

    def warm_up(self) -> None:
        """Start the render workers now (the daemon does, so the first tick is not slower)."""
        pool = self._render_pool()
        if pool is not None:
            warm = [
                pool.submit(_render_chunk, [], {}, self.clock())
                for _ in range(self.settings.delivery.workers)
            ]
            for future in warm:
                future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def record(self, results: list[Result], attempts: dict[int, int]) -> None:
        with self.store.write() as session:
            mark(session, results, attempts, self.clock(), self.settings.delivery)

    def _claim(self, due_by: dt.datetime | None) -> list[Claimed]:
        now = self.clock()
        settings = self.settings.delivery
        with self.store.write() as session:
            return claim(
                session,
                due_by=max(due_by or now, now),
                now=now,
                lease_s=settings.lease_s,
                limit=settings.batch,
                lock=not self.store.is_sqlite,
            )

    def _task_facts(self, rows: Sequence[Claimed]) -> dict[int, TaskFacts]:
        """The tasks of a batch, read once per run."""
        missing = sorted({r.task_id for r in rows if r.task_id is not None} - self._facts.keys())
        if missing:
            with self.store.read() as session:
                self._facts.update(task_facts(session, missing))
        return self._facts

    async def _prepare(
        self, rows: Sequence[Claimed], facts: dict[int, TaskFacts], now: dt.datetime
    ) -> list[Outgoing | Result]:
        pool = self._render_pool() if len(rows) >= CHUNK // 2 else None
        if pool is None:
            return self.preparer.chunk(rows, facts, now)
        subset = {r.task_id: facts[r.task_id] for r in rows if r.task_id in facts}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, _render_chunk, rows, subset, now)

    async def _chunk(
        self, rows: Sequence[Claimed], facts: dict[int, TaskFacts], recorder: _Recorder
    ) -> None:
        """Steps 2 and 3 for one chunk."""
        by_channel: dict[str, list[Outgoing]] = defaultdict(list)
        for item in await self._prepare(rows, facts, self.clock()):
            if isinstance(item, Result):
                recorder.report(item)
            elif item.channel not in self.senders:
                recorder.report(Result(item.id, "dead", None, f"no sender for {item.channel}"))
            else:
                by_channel[item.channel].append(item)
        await asyncio.gather(
            *(
                self.senders[channel].send(items, recorder.report)
                for channel, items in by_channel.items()
            )
        )

    async def run(
        self, due_by: dt.datetime | None = None, stop: asyncio.Event | None = None
    ) -> DeliveryReport:
        """Deliver everything due by ``due_by`` (default: now); see the module docstring."""
        report = DeliveryReport()
        started = time.perf_counter()
        recorder = _Recorder(self)
        self._facts = {}
        chunks: set[asyncio.Task[None]] = set()
        try:
            while stop is None or not stop.is_set():
                await recorder.room.wait()  # step 1 waits while a batch is unanswered
                rows = self._claim(due_by)
                if not rows:
                    break
                report.claimed += len(rows)
                recorder.track(rows)
                facts = self._task_facts(rows)
                for start in range(0, len(rows), CHUNK):
                    chunk = rows[start : start + CHUNK]
                    task = asyncio.create_task(self._chunk(chunk, facts, recorder))
                    chunks.add(task)
                    task.add_done_callback(chunks.discard)
            await asyncio.gather(*chunks)
        finally:
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
    zone = ZoneInfo(settings.timezone)
    key = f"test:{address}:{now.isoformat()}"
    text = f"这是督办提醒系统的测试邮件，发送时间：{now.astimezone(zone):%Y-%m-%d %H:%M:%S}。"
    try:
        data, message_id = build_email(
            from_name=settings.smtp.from_name,
            from_address=settings.smtp.from_address,
            to_name="",
            to_address=address,
            subject="督办提醒：测试邮件",
            text=text,
            html=f"<p>{text}</p>",
            key=key,
            date=now.astimezone(zone),
            reply_to=settings.smtp.reply_to,
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
        message_id=message_id,
        wire_ready=is_wire_ready(data),
        scheduled_day=now.astimezone(zone).date().isoformat(),
    )
    sender = make_senders(settings, contacts)["email"]
    outcomes: list[Result] = []
    try:
        await sender.send([item], outcomes.append)
    finally:
        await sender.close()
    return outcomes[0]
