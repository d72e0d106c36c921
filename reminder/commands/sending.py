"""Commands about sending: run, outbox, retry, send-test."""

from __future__ import annotations

import datetime as dt
import json
import os

import click

from reminder.app import App, now, parse_moment, pass_app, refuse_broken_templates
from reminder.errors import DeliveryError, InputError
from reminder.loop import run_async
from reminder.outbox import anything_to_claim, outbox_rows, requeue, run_cutoff
from reminder.rows import DeliveryReport
from reminder.store.meta import save_last_tick, tick_record
from reminder.store.overview import queue_counts

# the daemon (APScheduler), delivery (the SMTP and HTTP clients, Jinja2), the tick and
# rich's tables are imported by the commands that use them: `outbox --json` and `retry`
# start without them


@click.command("run")
@click.option("--once", is_flag=True, help="One tick (plan, enqueue, deliver), then exit.")
@click.option("--at", "at", metavar="'YYYY-MM-DD HH:MM'", help="With --once: the tick's moment.")
@pass_app
def run_command(app: App, once: bool, at: str | None) -> None:
    """The daemon; with --once, one tick and exit (0, or non-zero if the tick failed)."""
    if not once:
        if at is not None:
            raise InputError("--at goes with --once; the daemon runs on the clock")
        from reminder import logs  # noqa: PLC0415 - see the imports

        with logs.imports_without_rich():  # httpx's CLI: see reminder/logs.py
            from reminder.daemon import lock_for, supervise  # noqa: PLC0415 - see the imports

        logs.configure(
            to_stdout=True, level=os.environ.get("REMINDER_LOG_LEVEL", "info"), force=True
        )
        lock = lock_for(app.config.settings.db)
        if lock is not None:
            lock.acquire()
        try:
            supervise(app.store, lock)  # becomes the supervisor: returns only if it fails
        finally:
            if lock is not None:
                lock.release()
    from reminder.tick import run_tick  # noqa: PLC0415 - see the imports

    moment = parse_moment(app, at, "--at")
    app.require_ledger()
    settings = app.config.settings
    refuse_broken_templates(app.store, app.planning, app.renderer, settings, moment)
    result = run_tick(app.store, app.planning, app.config.settings, moment)
    local = moment.astimezone(app.config.settings.zone)
    app.out.print(
        f"tick at {local:%Y-%m-%d %H:%M}: {result.targets} due, {len(result.items)} items "
        f"({result.superseded} superseded), {len(result.letters)} letters",
        markup=False,
    )
    report = run_async(deliver_due(app, moment))
    # what the daemon records after each tick, so that `status` tells of this one too
    with app.store.write() as session:
        queue = queue_counts(session, ("pending", "sending", "retry", "dead"))
        save_last_tick(
            session,
            tick_record(moment, result.targets, len(result.letters), report.outcomes, queue),
        )
    app.out.print(report.line(), markup=False)


async def deliver_due(app: App, due_by: dt.datetime) -> DeliveryReport:
    begun = now()
    with app.store.read() as session:  # what the run below would claim
        if not anything_to_claim(session, due_by=run_cutoff(due_by, begun), now=begun):
            return DeliveryReport()  # no channel, template or render worker started
    from reminder.delivery import Delivery, close_all, make_senders  # noqa: PLC0415

    senders = make_senders(app.config.settings, app.contacts)
    delivery = Delivery(app.store, app.config.settings, app.contacts, app.renderer, senders)
    try:
        return await delivery.run(due_by, deadline_s=app.config.settings.delivery.run_deadline_s)
    finally:
        delivery.close()
        await close_all(senders)


@click.command("outbox")
@click.option(
    "--status",
    type=click.Choice(["pending", "sending", "sent", "retry", "dead", "superseded"]),
    help="Only messages in this state.",
)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def outbox_command(app: App, status: str | None, limit: int, as_json: bool) -> None:
    """The newest messages of the outbox, with their last attempt."""
    with app.store.read() as session:
        rows = outbox_rows(session, status, limit)
    zone = app.config.settings.zone
    from reminder.views import outbox_json, outbox_table  # noqa: PLC0415 - rich: tables only

    if as_json:
        click.echo(
            json.dumps([outbox_json(row, zone) for row in rows], ensure_ascii=False, indent=2)
        )
        return
    if not app.out.is_terminal:  # piped: a row on one line, however long its key
        app.out.width = 1000
    app.out.print(outbox_table(rows, zone))


@click.command("retry")
@click.argument("key", required=False)
@click.option("--dead", is_flag=True, help="Every dead message.")
@pass_app
def retry_command(app: App, key: str | None, dead: bool) -> None:
    """Send a dead (or waiting) message again at the next delivery."""
    if key is None and not dead:
        raise InputError("give a message KEY (as `reminder outbox` shows it) or --dead")
    if key is not None and dead:
        raise InputError("give a message KEY or --dead, not both")
    with app.store.write() as session:
        count = requeue(session, key, now())
    if key is not None and count == 0:
        raise InputError(f"{key}: no such message waiting or dead in the outbox")
    app.out.print(f"{count} messages queued again", markup=False)


@click.command("send-test")
@click.option("--to", "address", required=True, help="Where to send the test message.")
@pass_app
def send_test_command(app: App, address: str) -> None:
    """Send one test e-mail now through the configured SMTP server (or the file channel)."""
    from reminder.delivery import send_test  # noqa: PLC0415 - see the imports

    outcome = run_async(send_test(app.config.settings, app.contacts, address, now()))
    if outcome.status != "sent":
        raise DeliveryError(f"test message to {address}: {outcome.detail}", permanent=True)
    app.out.print(f"sent to {address}: {outcome.detail}", markup=False)


COMMANDS = [run_command, outbox_command, retry_command, send_test_command]
