"""Enqueueing the daily digest and the weekly agenda: the store around digest.py.

Both go through the outbox like every message, keyed by recipient and day (digest) or
week (agenda), so a job that runs twice, a restart or a clock that jumps cannot send
one twice, and a daemon that was down at 08:30 sends today's digest when it starts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import Session

from reminder.calendar import years_ahead
from reminder.digest import build_agendas, build_digest
from reminder.outbox import enqueue
from reminder.planner import local_moment
from reminder.planning import Planning
from reminder.policy import Kind
from reminder.recipients import Message, message_key, routes
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.reports import digest_inputs, last_sent_to
from reminder.store.tasks import ledger_years


def first_working_day_of_week(planning: Planning, day: dt.date) -> dt.date | None:
    monday = day - dt.timedelta(days=day.weekday())
    first = planning.calendar.on_or_after(monday)
    return first if (first - monday).days < 7 else None


def next_digest(settings: Settings, planning: Planning, now: dt.datetime) -> dt.datetime:
    """The next moment a digest goes out."""
    day = now.astimezone(settings.zone).date()
    today = local_moment(day, settings.digest.at, settings.zone)
    if today <= now or not planning.calendar.is_working_day(day):
        day = planning.calendar.on_or_after(day + dt.timedelta(days=1))
    return local_moment(day, settings.digest.at, settings.zone)


def _digest_due(settings: Settings, planning: Planning, now: dt.datetime) -> dt.datetime | None:
    """Today's digest moment, once it has come on a working day."""
    day = now.astimezone(settings.zone).date()
    moment = local_moment(day, settings.digest.at, settings.zone)
    if now < moment or not planning.calendar.is_working_day(day):
        return None
    return moment


def _agenda_due(
    settings: Settings, planning: Planning, now: dt.datetime
) -> tuple[dt.date, dt.datetime] | None:
    """This week's first working day and agenda moment, once it has come."""
    if not settings.digest.agenda:
        return None
    day = now.astimezone(settings.zone).date()
    first = first_working_day_of_week(planning, day)
    # a daemon that was down on that day catches up on a later working day of the week
    if first is None or day < first or not planning.calendar.is_working_day(day):
        return None
    moment = local_moment(first, settings.digest.agenda_at, settings.zone)
    return None if now < moment else (first, moment)


def calendar_notices(session: Session, planning: Planning, day: dt.date) -> list[str]:
    """The digest's first lines: the years ahead and of the ledger whose 调休 is unknown."""
    warning = planning.calendar.warning(ledger_years(session) | years_ahead(day))
    return [warning] if warning else []


def _messages(
    kind: Kind,
    name: str,
    found: list[tuple[str, str]],
    day: dt.date,
    moment: dt.datetime,
    payload: dict[str, Any],
    unit: str | None = None,
) -> list[Message]:
    return [
        Message(
            key=message_key(kind, None, name, channel, to, day),
            kind=kind,
            channel=channel,
            to=to,
            recipient_name=name,
            scheduled_for=moment,
            unit=unit,
            payload=payload,
        )
        for channel, to in found
    ]


def enqueue_reports(
    store: Store, planning: Planning, settings: Settings, now: dt.datetime
) -> tuple[list[Message], list[Message]]:
    """Today's digest for every supervisor, once its hour has come on a working day, and
    this week's agenda for every unit with open tasks, from the week's first working day:
    the store read once, both enqueued in one transaction."""
    digest_at = _digest_due(settings, planning, now)
    agenda_at = _agenda_due(settings, planning, now)
    if digest_at is None and agenda_at is None:
        return [], []
    day = now.astimezone(settings.zone).date()
    digests: list[Message] = []
    agendas: list[Message] = []
    with store.write() as session:
        inputs = digest_inputs(session)
        if inputs is None:
            return [], []
        if digest_at is not None:
            notices = calendar_notices(session, planning, day)
            for supervisor in planning.contacts.supervisors:
                found = routes(supervisor, Kind.DIGEST, planning.policy)
                if not found:
                    continue
                since = last_sent_to(session, Kind.DIGEST.value, supervisor.name, digest_at)
                payload = build_digest(
                    inputs,
                    supervisor,
                    planning.contacts,
                    day,
                    since or digest_at - dt.timedelta(days=1),
                    settings.zone,
                    notices,
                )
                digests += _messages(Kind.DIGEST, supervisor.name, found, day, digest_at, payload)
        if agenda_at is not None:
            first, moment = agenda_at
            for name, payload in sorted(build_agendas(inputs, day).items()):
                found = routes(planning.contacts.unit(name), Kind.AGENDA, planning.policy)
                if found:
                    agendas += _messages(Kind.AGENDA, name, found, first, moment, payload, name)
        enqueue(session, digests + agendas, now)
    return digests, agendas
