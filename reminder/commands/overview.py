"""Commands about the whole picture: status, digest."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel import select as select_rows

from reminder.app import App, now, parse_moment, pass_app, refuse_broken_templates
from reminder.context import report_context
from reminder.digest import LIGHTS, build_digest
from reminder.digest_round import (
    calendar_notices,
    digest_due,
    enqueue_reports,
    next_digest,
    previous_digest_at,
)
from reminder.errors import InputError
from reminder.loop import paused_collector, run_async
from reminder.planner import local_moment
from reminder.recipients import NO_CONTACT
from reminder.store.digest_reader import DigestReader
from reminder.store.lights import task_lights
from reminder.store.meta import LAST_TICK_EVERY
from reminder.store.meta import last_tick as recorded_tick
from reminder.store.models import AttemptRow, ItemRow, OutboxRow
from reminder.store.overview import queue_counts
from reminder.store.tasks import latest_import

STATES = ("pending", "sending", "retry", "sent", "dead", "superseded")
UNREACHABLE_SHOWN = 20


def status_data(app: App, moment: dt.datetime) -> dict[str, Any]:
    settings = app.config.settings
    zone = settings.zone
    with app.store.read() as session:
        last_tick = recorded_tick(session)
        queue = queue_counts(session)
        dead = session.exec(
            select_rows(OutboxRow)
            .where(col(OutboxRow.status) == "dead")
            .order_by(col(OutboxRow.id).desc())
            .limit(10)
        ).all()
        failures = {
            str(outcome): int(count)
            for outcome, count in session.execute(
                select(AttemptRow.outcome, func.count())  # type: ignore[call-overload]
                .where(col(AttemptRow.at) > moment - dt.timedelta(hours=24))
                .group_by(AttemptRow.outcome)
            ).all()
        }
        item = ItemRow.__table__  # type: ignore[attr-defined]
        nobody = (
            select(item.c.recipient_name, item.c.channel, item.c.recipient)
            .where(item.c.status == "unreachable")
            .distinct()
            .order_by(item.c.recipient_name, item.c.channel, item.c.recipient)
        )
        unreachable: list[str] = []  # units nobody can reach
        invalid: list[dict[str, str]] = []  # addresses their reminders could not use
        for name, channel, to in session.connection().execute(nobody):
            if channel == NO_CONTACT:
                unreachable.append(str(name))
            else:
                invalid.append({"unit": str(name), "channel": str(channel), "to": str(to)})
        run = latest_import(session)
        lights = task_lights(session, app.planning, moment.astimezone(zone).date())
    # no tick written for three intervals (and a minute) beyond the idle daemon's
    # writing interval: the daemon is down or stuck
    stale = last_tick is not None and moment - dt.datetime.fromisoformat(
        last_tick["at"]
    ) > LAST_TICK_EVERY + dt.timedelta(seconds=3 * settings.daemon.tick_s + 60)
    return {
        "now": moment.astimezone(zone).isoformat(),
        "last_tick": last_tick,
        "stale": stale,
        "next_digest": next_digest(settings, app.planning, moment).astimezone(zone).isoformat(),
        "queue": {state: queue.get(state, 0) for state in STATES},
        "dead": [{"key": row.key, "error": row.last_error} for row in dead],
        "failures_24h": failures,
        "unreachable": unreachable[:UNREACHABLE_SHOWN],
        "invalid_addresses": invalid[:UNREACHABLE_SHOWN],
        "ledger": {
            "title": run.title if run else None,
            "tasks": sum(lights.values()),
            **{name: lights[name] for name in LIGHTS},
        },
    }


def status_lines(data: dict[str, Any]) -> list[str]:
    tick = data["last_tick"]
    ledger = data["ledger"]
    zone = dt.datetime.fromisoformat(data["now"]).tzinfo
    last = (
        f"{dt.datetime.fromisoformat(tick['at']).astimezone(zone):%Y-%m-%d %H:%M:%S}"
        if tick
        else "never (is the daemon running?)"
    )
    if data["stale"]:
        last += " — stale: is the daemon running?"
    failures = ", ".join(f"{k} {n}" for k, n in data["failures_24h"].items()) or "none"
    lines = [
        f"last tick:     {last}",
        f"next digest:   {data['next_digest'][:16].replace('T', ' ')}",
        "queue:         " + ", ".join(f"{state} {n}" for state, n in data["queue"].items()),
        f"failures, 24h: {failures}",
        f"ledger:        {ledger['title'] or 'none imported'} — {ledger['tasks']} tasks: "
        f"red {ledger['red']}, yellow {ledger['yellow']}, "
        f"green {ledger['green']}, done {ledger['done']}",
    ]
    if data["unreachable"]:
        lines.append("no contact:    " + ", ".join(data["unreachable"]) + " (see `reminder check`)")
    if data["invalid_addresses"]:
        bad = ", ".join(f"{a['unit']} {a['channel']}:{a['to']}" for a in data["invalid_addresses"])
        lines.append(f"bad address:   {bad} (not sent to; see `reminder check`)")
    if data["dead"]:
        lines.append(f"dead letters ({data['queue']['dead']}), newest first:")
        lines += [f"  {item['key']}: {item['error']}" for item in data["dead"]]
    return lines


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status_command(app: App, as_json: bool) -> None:
    """Last tick, next digest, the queue, dead letters, recent failures, the ledger's lights."""
    data = status_data(app, now())
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for line in status_lines(data):  # as they are: a key's ":email:" is no emoji here
        click.echo(line)


@click.command("digest")
@click.option(
    "--at", "at", metavar="'YYYY-MM-DD HH:MM'", help="The moment (local time); now if not given."
)
@click.option(
    "--print", "show", is_flag=True, help="Print each supervisor's digest instead of sending it."
)
@pass_app
def digest_command(app: App, at: str | None, show: bool) -> None:
    """Send today's digests (and escalation lists) now, if not sent yet; or print them."""
    moment = parse_moment(app, at, "--at")
    settings = app.config.settings
    if show:
        # batch work: the collector would walk the rows read and the digests made again
        # and again (0.1-0.2 s of a 10⁶-row ledger's digests), and they form no cycles
        with paused_collector():
            print_digests(app, moment)
        return
    # as `run --once`: a templates folder that fails on the ledger sends nothing
    refuse_broken_templates(app.store, app.planning, app.renderer, settings, moment)
    messages = enqueue_reports(app.store, app.planning, settings, moment, only_new=True)
    digests = sum(1 for m in messages if m.kind == "digest")
    if messages:
        said = f"{digests} digest and {len(messages) - digests} escalation list messages enqueued"
    elif digest_due(settings, app.planning, moment) is None:
        local = moment.astimezone(settings.zone)
        said = (
            f"no digest due at {local:%Y-%m-%d %H:%M}: digests go out at "
            f"{settings.digest.at:%H:%M} on working days"
        )
    else:
        said = "today's digests are already in the outbox: nothing new enqueued"
    app.out.print(said, markup=False)
    from reminder.commands.sending import deliver_due  # noqa: PLC0415 - the senders

    report = run_async(deliver_due(app, moment))
    app.out.print(report.line(), markup=False)


def print_digests(app: App, moment: dt.datetime) -> None:
    """Each supervisor's digest of ``moment``'s day, as its text part (digest --print)."""
    settings = app.config.settings
    day = moment.astimezone(settings.zone).date()
    digest_at = local_moment(day, settings.digest.at, settings.zone)
    since = previous_digest_at(app.planning, digest_at)
    with app.store.read() as session:
        reader = DigestReader.open(session, app.planning, day)
        if reader is None:
            raise InputError("no ledger imported yet; run `reminder import FILE` first")
        notices = calendar_notices(reader, app.planning, day)
        payloads = [
            (
                supervisor,
                build_digest(
                    reader.inputs(supervisor, since), supervisor, app.planning, day, since, notices
                ),
            )
            for supervisor in app.contacts.supervisors or [None]
        ]
    for supervisor, payload in payloads:
        values = report_context(
            kind="digest",
            recipient=supervisor.name if supervisor else "督查",
            payload=payload,
            settings=settings.office,
        )
        click.echo(app.renderer.part("digest", "text", values))
        click.echo("")


COMMANDS = [status_command, digest_command]
