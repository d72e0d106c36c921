"""Delivery: outbox → render → channel → outcome recorded. The only place messages leave.

One pass, ``Delivery.run``, reads claim → prepare → send → record, as a pipeline, until
nothing is left to claim (or ``stop`` is set, or its deadline passes):

1. Claim a batch of messages due by the run's start, with a lease, in one short
   transaction; claiming waits while more than a batch is still unanswered. A message
   this run tried and that failed is due again at its backoff time, after the run's
   start: it waits for a later run, however long this one lasts (a server that takes
   DATA and never answers would otherwise get each message again and again).
2. Prepare each message (``RenderPool``: its template, the snapshot taken when it was
   enqueued, built for the wire), in chunks. A template that cannot be rendered makes
   that message dead, with the reason.
3. Hand each prepared chunk to its channel's sender; senders report each outcome as
   soon as they learn it.
4. Record outcomes (``Recorder``) in small batches as they come in, and renew the
   leases of what the run holds.

Nothing that can wait on the disk runs on the event loop: claims, commits and lease
renewals go, one at a time and in order, to the run's store thread, files to the file
channel's threads, and a chunk rendered in this process yields to the loop as it goes.
The cyclic garbage collector's full passes would still hold the loop for 100–200 ms
each, walking every object the process made before the run (modules, templates, the
store's metadata): a run freezes those (``gc.freeze``) and hands them back when it ends.

A run with a deadline (``run --once``: ``[delivery] run_deadline_s``) that passes, or a
run that is cancelled (a stop that ran out of time), drops what it has not sent: those
messages keep their lease, which runs out, and a later run sends them. Nothing is lost;
a message that was on the wire may go out twice, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gc
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reminder.channels import Claimed, Outgoing, Result, Sender, Window
from reminder.channels.email import SmtpSender
from reminder.channels.files import FileSender
from reminder.channels.mime import build_email
from reminder.channels.robots import RobotSender
from reminder.channels.sms import SmsSender
from reminder.clock import WallClock, now
from reminder.contacts import Contacts
from reminder.errors import DeliveryError
from reminder.logs import get_logger
from reminder.outbox import claim, run_cutoff
from reminder.recorder import Recorder
from reminder.render import Renderer
from reminder.render_pool import CHUNK, RenderPool
from reminder.rows import DeliveryReport
from reminder.secrets import secret
from reminder.settings import Settings
from reminder.store.db import Store

FLUSH_S = 2.0  # outcomes wait at most this long to be recorded


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


class Delivery:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        contacts: Contacts,
        renderer: Renderer,
        senders: dict[str, Sender],
        clock: WallClock = now,
    ) -> None:
        self.store = store
        self.settings = settings
        self.contacts = contacts
        self.senders = senders
        self.clock = clock
        self.pool = RenderPool(settings, contacts, renderer)
        self.log = get_logger()

    def close(self) -> None:
        self.pool.close()

    def abort(self) -> None:
        """Stop at once: render workers killed, SMTP connections dropped without QUIT."""
        self.pool.kill()
        abort_all(self.senders)

    # --- the four steps ------------------------------------------------------------------

    def claim(
        self, due_by: dt.datetime, retry_by: dt.datetime | None = None
    ) -> tuple[list[Claimed], dt.datetime]:
        """Step 1: a batch, and the lease it is held under."""
        moment = self.clock()
        settings = self.settings.delivery
        with self.store.write() as session:
            rows = claim(
                session,
                due_by=due_by,
                now=moment,
                lease_s=settings.lease_s,
                limit=settings.batch,
                lock=not self.store.is_sqlite,
                retry_by=retry_by,
            )
        return rows, moment + dt.timedelta(seconds=settings.lease_s)

    async def send(
        self, outgoing: list[Outgoing], report: Callable[[Result], None], window: Window
    ) -> None:
        """Step 3: each message to its channel's sender, the channels side by side, each
        message once the recorder's in-flight window has room."""
        by_channel: dict[str, list[Outgoing]] = defaultdict(list)
        for item in outgoing:
            if item.channel not in self.senders:
                report(Result(item.id, "dead", None, f"no sender for {item.channel}"))
            else:
                by_channel[item.channel].append(item)
        outcomes = await asyncio.gather(
            *(
                self.senders[channel].send(items, report, window)
                for channel, items in by_channel.items()
            ),
            return_exceptions=True,  # the other channels finish what they hold
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    async def _chunk(self, rows: Sequence[Claimed], recorder: Recorder) -> None:
        """Steps 2, 3 and 4 for one chunk. Whatever goes wrong, every row gets an outcome:
        a row left without one would be held (its lease renewed) until the run ends."""
        reported: set[int] = set()

        def report(result: Result) -> None:
            reported.add(result.id)
            recorder.report(result)

        try:
            outgoing: list[Outgoing] = []
            for item in await self.pool.prepare(rows, self.clock()):
                if isinstance(item, Result):
                    report(item)
                else:
                    outgoing.append(item)
            await self.send(outgoing, report, recorder.window)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".strip().removesuffix(":")
            left = [row for row in rows if row.id not in reported]
            self.log.error("delivery_error", error=error, messages=len(left))
            for row in left:
                recorder.report(Result(row.id, "retry", None, f"delivery failed: {error}"))

    async def _keep(self, recorder: Recorder) -> None:
        """Record outcomes at least every FLUSH_S; renew leases every third of a lease."""
        lease_s = self.settings.delivery.lease_s
        interval = min(FLUSH_S, lease_s / 3)
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await recorder.flush()
                if time.monotonic() - renewed >= lease_s / 3 - interval / 2:
                    await recorder.renew()
                    renewed = time.monotonic()
            except Exception as exc:  # the store went away for a moment: try again
                recorder.failed(exc)

    async def _claim(
        self, recorder: Recorder, cutoff: dt.datetime, begun: dt.datetime
    ) -> tuple[list[Claimed], dt.datetime]:
        """Step 1 in the store thread. A retry is due by the run's start at the latest:
        what fails in this run waits for a later one, even in a run for a moment ahead.
        A store that refuses the claim (its disk full) ends the claiming, not the run:
        what is on the wire is answered and recorded first (``Recorder.close``)."""
        try:
            return await recorder.in_store_thread(
                functools.partial(self.claim, cutoff, retry_by=begun)
            )
        except Exception as exc:
            reason = self.store.failure(exc)
            if reason is None:
                raise
            self.log.error("delivery_claim_failed", error=reason)
            return [], begun

    async def run(
        self,
        due_by: dt.datetime | None = None,
        stop: asyncio.Event | None = None,
        deadline_s: float | None = None,
    ) -> DeliveryReport:
        """Deliver what is due by ``due_by`` (default: now); see the module docstring."""
        report = DeliveryReport()
        started = time.perf_counter()
        gc.freeze()  # see the module docstring; undone in ``finally``
        store_thread = ThreadPoolExecutor(1, thread_name_prefix="delivery-store")
        recorder = Recorder(self.store, self.settings.delivery, self.clock, store_thread)
        self.pool.begin_run()
        begun = self.clock()
        cutoff = run_cutoff(due_by, begun)
        chunks: set[asyncio.Task[None]] = set()
        keeper = asyncio.create_task(self._keep(recorder))
        try:
            async with asyncio.timeout(deadline_s):
                while stop is None or not stop.is_set():
                    await recorder.room.wait()  # step 1 waits while a batch is unanswered
                    rows, lease_until = await self._claim(recorder, cutoff, begun)
                    if not rows:
                        break
                    report.claimed += len(rows)
                    recorder.track(rows, lease_until)
                    for start in range(0, len(rows), CHUNK):
                        task = asyncio.create_task(
                            self._chunk(rows[start : start + CHUNK], recorder)
                        )
                        chunks.add(task)
                        task.add_done_callback(chunks.discard)
                await asyncio.gather(*chunks)
        except TimeoutError:
            abort_all(self.senders)  # what they still hold is not sent
            self.log.warning("delivery_deadline", seconds=deadline_s, held=len(recorder.leases))
        finally:
            keeper.cancel()
            for task in chunks:
                task.cancel()
            try:
                # what was learnt is kept, whatever happened (a full disk: until stopped)
                report.cut = await recorder.close(stop)
            finally:
                store_thread.shutdown(wait=False)  # its last transaction was awaited
                gc.unfreeze()
        report.outcomes = recorder.counts
        report.seconds = time.perf_counter() - started
        return report


def abort_all(senders: dict[str, Sender]) -> None:
    """Drop what the senders hold. Only SMTP keeps work queued past a cancelled send (its
    sessions); HTTP requests and files end with the task that awaits them."""
    for sender in {id(s): s for s in senders.values()}.values():
        if isinstance(sender, SmtpSender):
            sender.abort()


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
