"""One digest round: the supervisors' daily digest (and 逾期督办清单) from the store
into the outbox, around the pure ``reminder.digest`` (as ``tick`` does for letters).

They go through the outbox like every message, keyed by recipient and day, so a job
that runs twice, a restart or a clock that jumps cannot send one twice, and a daemon
that was down at 08:30 sends today's digest when it starts. (The units' weekly agenda
goes in their first letter of the week: ``reminder.letter_round``.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from reminder.calendar import WorkCalendar
from reminder.contacts import Supervisor
from reminder.digest import ESCALATION_FIELDS, build_digest
from reminder.outbox import enqueue
from reminder.planner import local_moment
from reminder.policy import Kind
from reminder.recipients import message_key, routes
from reminder.records import DigestInputs
from reminder.rows import Message
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.digest_reader import DigestReader
from reminder.store.overview import last_sent_to
from reminder.web.links import Link, Links, Scope, save_links

# what a 逾期督办清单 holds of its supervisor's digest


def next_digest(settings: Settings, planning: Rules, now: dt.datetime) -> dt.datetime:
    """The next moment a digest goes out."""
    day = now.astimezone(settings.zone).date()
    today = local_moment(day, settings.digest.at, settings.zone)
    if today <= now or not planning.calendar.is_working_day(day):
        day = planning.calendar.on_or_after(day + dt.timedelta(days=1))
    return local_moment(day, settings.digest.at, settings.zone)


def digest_due(settings: Settings, planning: Rules, now: dt.datetime) -> dt.datetime | None:
    """Today's digest moment, once it has come on a working day."""
    day = now.astimezone(settings.zone).date()
    moment = local_moment(day, settings.digest.at, settings.zone)
    if now < moment or not planning.calendar.is_working_day(day):
        return None
    return moment


def notices(calendar: WorkCalendar, years: set[int], day: dt.date) -> list[str]:
    """The digest's first lines: those of the ledger's ``years`` and of the days ahead of
    ``day`` whose 调休 is unknown."""
    warning = calendar.warning(years, day)
    return [warning] if warning else []


def calendar_notices(reader: DigestReader, planning: Rules, day: dt.date) -> list[str]:
    """``notices`` for the ledger in the store."""
    return notices(planning.calendar, reader.years(), day)


def _messages(
    kind: Kind,
    name: str,
    found: list[tuple[str, str]],
    day: dt.date,
    moment: dt.datetime,
    payload: dict[str, Any],
) -> list[Message]:
    return [
        Message(
            key=message_key(kind, None, name, channel, to, day),
            kind=kind,
            channel=channel,
            to=to,
            recipient_name=name,
            scheduled_for=moment,
            payload=payload,
        )
        for channel, to in found
    ]


def previous_digest_at(planning: Rules, digest_at: dt.datetime) -> dt.datetime:
    """When the digest before this one went out, had it been sent: the same hour on the
    working day before (not yesterday, a day off after a holiday): what a first digest,
    or `digest --print`, counts from."""
    day = digest_at.astimezone(planning.zone).date()
    before = planning.calendar.on_or_before(day - dt.timedelta(days=1))
    return digest_at - dt.timedelta(days=(day - before).days)


# what a digest of a supervisor (None: the whole ledger) since a moment is built from: a
# ledger in memory (``lambda *_: inputs``), or read from the store (``DigestReader.inputs``)
InputsFor = Callable[[Supervisor | None, dt.datetime], DigestInputs]


def report_messages(
    inputs_for: InputsFor,
    planning: Rules,
    digest_at: dt.datetime,
    last_digest: Callable[[str], dt.datetime | None],
    notices: Sequence[str],
    *,
    lean: bool = False,
) -> list[Message]:
    """The digests of ``digest_at`` for every supervisor, and the 逾期督办清单 for those who
    ask for one and have something in it. Pure; ``last_digest``: when a supervisor's
    last digest went out (None: never; the digest then covers the day before). ``lean``
    digests are empty: what they say decides nothing (what `simulate` counts)."""
    day = digest_at.astimezone(planning.zone).date()
    messages: list[Message] = []
    for supervisor in planning.contacts.supervisors:
        digest = routes(supervisor, Kind.DIGEST, planning.policy) or []
        escalation = routes(supervisor, Kind.ESCALATION, planning.policy) or []
        if not digest and not escalation:
            continue
        if lean and not escalation:
            messages += _messages(Kind.DIGEST, supervisor.name, digest, day, digest_at, {})
            continue
        since = last_digest(supervisor.name) or previous_digest_at(planning, digest_at)
        inputs = inputs_for(supervisor, since)
        payload = build_digest(inputs, supervisor, planning, day, since, notices)
        messages += _messages(Kind.DIGEST, supervisor.name, digest, day, digest_at, payload)
        if payload["escalated"]:
            listed = {key: payload[key] for key in ESCALATION_FIELDS}
            messages += _messages(
                Kind.ESCALATION, supervisor.name, escalation, day, digest_at, listed
            )
    return messages


def enqueue_reports(
    store: Store,
    planning: Rules,
    settings: Settings,
    now: dt.datetime,
    *,
    only_new: bool = False,
) -> list[Message]:
    """Today's digests (and 逾期督办清单), once their hour has come on a working day, in one
    transaction; ``only_new``: only those not in the outbox before (a second call on one
    day enqueues nothing)."""
    digest_at = digest_due(settings, planning, now)
    if digest_at is None:
        return []
    day = now.astimezone(settings.zone).date()
    with store.write() as session:
        reader = DigestReader.open(session, planning, day)
        if reader is None:
            return []

        def last_digest(name: str) -> dt.datetime | None:
            return last_sent_to(session, Kind.DIGEST.value, name, digest_at)

        notices = calendar_notices(reader, planning, day)
        messages = report_messages(reader.inputs, planning, digest_at, last_digest, notices)
        boards = _board_links(settings, messages)
        new = set(enqueue(session, messages, now))
        save_links(session, [link for key, link in boards if key in new], now)
    return [m for m in messages if m.key in new] if only_new else messages


def _board_links(settings: Settings, messages: Sequence[Message]) -> list[tuple[str, Link]]:
    """Each supervisor's digest carries a link to the board (one a day, on every channel:
    its channels share one payload); returned with the key of a message carrying it."""
    found: dict[str, tuple[str, Link]] = {}
    maker = Links(settings.web)
    for message in messages:
        if message.kind is not Kind.DIGEST or message.recipient_name in found:
            continue
        link = maker.new(Scope.SUPERVISOR, message.recipient_name)
        if link is not None:
            message.payload["board"] = link.url
            found[message.recipient_name] = (message.key, link)
    return list(found.values())
