"""Enqueueing the daily digest and the weekly agenda: the store around digest.py.

Both go through the outbox like every message, keyed by recipient and day (digest) or
week (agenda), so a job that runs twice, a restart or a clock that jumps cannot send
one twice, and a daemon that was down at 08:30 sends today's digest when it starts.
"""

from __future__ import annotations

import datetime as dt

from reminder.digest import build_agenda, build_digest
from reminder.outbox import enqueue
from reminder.planning import Planning
from reminder.policy import Kind
from reminder.recipients import Message, message_key, routes
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.reports import digest_inputs, last_sent_to


def local_moment(settings: Settings, day: dt.date, at: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, at, tzinfo=settings.zone).astimezone(dt.UTC)


def first_working_day_of_week(planning: Planning, day: dt.date) -> dt.date | None:
    monday = day - dt.timedelta(days=day.weekday())
    for offset in range(7):
        candidate = monday + dt.timedelta(days=offset)
        if planning.calendar.is_working_day(candidate):
            return candidate
    return None


def next_digest(settings: Settings, planning: Planning, now: dt.datetime) -> dt.datetime:
    """The next moment a digest goes out."""
    day = now.astimezone(settings.zone).date()
    for offset in range(370):
        candidate = day + dt.timedelta(days=offset)
        moment = local_moment(settings, candidate, settings.digest.at)
        if moment > now and planning.calendar.is_working_day(candidate):
            return moment
    return local_moment(settings, day + dt.timedelta(days=1), settings.digest.at)


def enqueue_digests(
    store: Store, planning: Planning, settings: Settings, now: dt.datetime
) -> list[Message]:
    """Today's digest for every supervisor, once its hour has come on a working day."""
    day = now.astimezone(settings.zone).date()
    moment = local_moment(settings, day, settings.digest.at)
    if now < moment or not planning.calendar.is_working_day(day):
        return []
    messages: list[Message] = []
    with store.write() as session:
        inputs = digest_inputs(session)
        if inputs is None:
            return []
        for supervisor in planning.contacts.supervisors:
            found = routes(supervisor, Kind.DIGEST, planning.policy)
            if not found:
                continue
            since = last_sent_to(session, Kind.DIGEST.value, supervisor.name, moment)
            payload = build_digest(
                inputs,
                supervisor,
                planning.contacts,
                day,
                since or moment - dt.timedelta(days=1),
                settings.zone,
            )
            messages += [
                Message(
                    key=message_key(Kind.DIGEST, None, supervisor.name, channel, to, day),
                    kind=Kind.DIGEST,
                    channel=channel,
                    to=to,
                    recipient_name=supervisor.name,
                    scheduled_for=moment,
                    payload=payload,
                )
                for channel, to in found
            ]
        enqueue(session, messages, now)
    return messages


def enqueue_agendas(
    store: Store, planning: Planning, settings: Settings, now: dt.datetime
) -> list[Message]:
    """This week's agenda for every unit with open tasks, from the week's first working day."""
    if not settings.digest.agenda:
        return []
    day = now.astimezone(settings.zone).date()
    first = first_working_day_of_week(planning, day)
    # a daemon that was down on that day catches up on a later working day of the week
    if first is None or day < first or not planning.calendar.is_working_day(day):
        return []
    moment = local_moment(settings, first, settings.digest.agenda_at)
    if now < moment:
        return []
    messages: list[Message] = []
    with store.write() as session:
        inputs = digest_inputs(session)
        if inputs is None:
            return []
        names = sorted(
            {u.ref.name for t in inputs.ledger.tasks if t.status != "done" for u in t.targets()}
        )
        for name in names:
            found = routes(planning.contacts.unit(name), Kind.AGENDA, planning.policy)
            payload = build_agenda(inputs, name, day) if found else None
            if not found or payload is None:
                continue
            messages += [
                Message(
                    key=message_key(Kind.AGENDA, None, name, channel, to, first),
                    kind=Kind.AGENDA,
                    channel=channel,
                    to=to,
                    recipient_name=name,
                    scheduled_for=moment,
                    unit=name,
                    payload=payload,
                )
                for channel, to in found
            ]
        enqueue(session, messages, now)
    return messages
