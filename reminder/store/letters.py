"""Items into letters: the store around ``reminder.letters``.

``compose_letters`` runs at the end of every tick, in one transaction:

1. Nothing is composed while sending is closed (a day off, before the send hour): the
   items wait, like the planner's catch-up.
2. Take the pending items whose moment has come (on PostgreSQL under a transaction
   advisory lock, so that two daemons never compose for the same items at once).
3. Group them by recipient, channel and address: one letter each. The letter's key is
   (recipient, channel, address, day, sequence): the first letter of a day is 1, a
   later one (a late import, an override's other send hour) 2, … and says 补充提醒.
4. Enqueue the letters and mark their items ``lettered`` with the letter's id, in the
   same transaction: an item goes in exactly one letter, and a crash either keeps both
   or neither.

The week's agenda is an item too (``plan_agendas``): one per unit with open tasks and
week, carried by the unit's first letter composed on or after the week's first working
day at the send hour, and by no other.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from reminder.digest import build_agendas
from reminder.letters import LetterContext, LetterItem, build_letter
from reminder.outbox import enqueue
from reminder.planner import local_moment, sending_opens
from reminder.planning import Planning
from reminder.policy import Kind
from reminder.recipients import Item, Message, routes
from reminder.settings import Settings
from reminder.store.models import ItemRow, MetaRow, OutboxRow, TaskRow, TaskUnitRow
from reminder.store.reports import digest_inputs, reminded
from reminder.store.tasks import latest_import, task_facts

AGENDA_PLANNED = "agenda_planned"  # meta: the week whose agenda items are planned
_LOCK_ID = 0x6C657474  # "lett": the advisory lock of letter composition on PostgreSQL


def _item_row(item: Item, now: dt.datetime) -> dict[str, Any]:
    return {
        "key": item.key,
        "kind": item.kind.value,
        "task_id": item.task_id,
        "task_no": item.task_no,
        "unit": item.unit,
        "role": item.role,
        "via": item.via,
        "channel": item.channel,
        "recipient": item.to,
        "recipient_name": item.recipient_name,
        "day": item.day,
        "scheduled_for": item.scheduled_for,
        "status": item.status,
        "payload": item.payload,
        "superseded_by": item.superseded_by,
        "letter_id": None,
        "created_at": now,
    }


def enqueue_items(session: Session, items: Sequence[Item], now: dt.datetime) -> list[str]:
    """Insert the items whose key is new; returns the keys that were new."""
    if not items:
        return []
    connection = session.connection()
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    table = ItemRow.__table__  # type: ignore[attr-defined]
    statement = insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)
    unique = {item.key: item for item in items}  # the first of a key wins
    result = connection.execute(statement, [_item_row(item, now) for item in unique.values()])
    return [row.key for row in result]


def letter_key(unit: str, channel: str, to: str, day: dt.date, seq: int) -> str:
    return f"letter:{unit}:{channel}:{to}:{day.isoformat()}:{seq}"


@dataclass(frozen=True, slots=True)
class Composed:
    """A letter and the keys of the items it carries."""

    message: Message
    items: tuple[str, ...]


def _open_units(session: Session) -> list[str]:
    """Units with an open part of an open task (group members, not their groups)."""
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(units.c.unit)
        .join(tasks, tasks.c.id == units.c.task_id)
        .where(
            units.c.is_target.is_(True),
            units.c.done_at.is_(None),
            tasks.c.removed_at.is_(None),
            tasks.c.status == "open",
        )
        .distinct()
        .order_by(units.c.unit)
    )
    return [str(name) for name in session.connection().execute(statement).scalars()]


def plan_agendas(
    session: Session, planning: Planning, settings: Settings, now: dt.datetime
) -> list[Item]:
    """This week's agenda items, once the week's first working day's send hour has come;
    returns those new in the store."""
    if not settings.digest.agenda:
        return []
    zone, send_at = planning.zone, planning.policy.send_at
    today = now.astimezone(zone).date()
    first = planning.calendar.week_start(today)
    if first is None or today < first or now < local_moment(first, send_at, zone):
        return []
    planned = session.get(MetaRow, AGENDA_PLANNED)
    if planned is not None and planned.value == first.isoformat():
        return []
    moment = local_moment(first, send_at, zone)
    items = []
    for unit in _open_units(session):
        for channel, to in routes(planning.contacts.unit(unit), Kind.AGENDA, planning.policy) or []:
            items.append(
                Item(
                    key=f"agenda:-:{unit}:{channel}:{to}:{first.isoformat()}",
                    kind=Kind.AGENDA,
                    channel=channel,
                    to=to,
                    recipient_name=unit,
                    day=first,
                    scheduled_for=moment,
                    unit=unit,
                )
            )
    new = set(enqueue_items(session, items, now))
    session.merge(MetaRow(key=AGENDA_PLANNED, value=first.isoformat()))
    return [item for item in items if item.key in new]


def _sequences(session: Session, day_start: dt.datetime) -> dict[tuple[str, str, str], int]:
    """Letters already composed today, per (recipient, channel, address)."""
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(outbox.c.recipient_name, outbox.c.channel, outbox.c.recipient, func.count())
        .where(outbox.c.kind == Kind.LETTER.value, outbox.c.scheduled_for >= day_start)
        .group_by(outbox.c.recipient_name, outbox.c.channel, outbox.c.recipient)
    )
    return {
        (str(name), str(channel), str(to)): int(count)
        for name, channel, to, count in session.connection().execute(statement)
    }


def _eventful(agenda: list[dict[str, Any]] | None, day: dt.date) -> bool:
    """Whether a week's agenda has something to act on: a task overdue or due within 7
    days, or a date (a start, a milestone) this week."""
    week_end = (day + dt.timedelta(days=6)).isoformat()
    return any(
        row["light"] in ("red", "yellow") or (row["next"] and row["next"] <= week_end)
        for row in agenda or []
    )


def compose_letters(
    session: Session, planning: Planning, settings: Settings, now: dt.datetime
) -> list[Composed]:
    """Steps 1 to 4 of the module docstring, inside the caller's transaction."""
    zone = planning.zone
    if sending_opens(now, planning.policy.send_at, planning.calendar, zone) is not None:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    item = ItemRow.__table__  # type: ignore[attr-defined]
    rows = list(
        connection.execute(
            select(item)
            .where(item.c.status == "pending", item.c.scheduled_for <= now)
            .order_by(item.c.scheduled_for, item.c.id)
        )
    )
    run = latest_import(session)
    if not rows or run is None:
        return []
    today = now.astimezone(zone).date()
    facts = task_facts(session, sorted({r.task_id for r in rows if r.task_id is not None}))
    by_letter: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for row in rows:
        by_letter[(row.recipient_name, row.channel, row.recipient)].append(row)
    agendas: dict[str, dict[str, Any]] = {}
    if any(row.kind == Kind.AGENDA.value for row in rows):
        inputs = digest_inputs(session)
        agendas = build_agendas(inputs, today, planning, settings.office) if inputs else {}
    context = LetterContext(
        day=today,
        title=run.title,
        year=run.year,
        office=settings.office,
        contacts=planning.contacts,
        calendar=planning.calendar,
        reminded=reminded(session) if any(r.kind == Kind.OVERDUE.value for r in rows) else {},
    )
    done = _sequences(session, local_moment(today, dt.time(0), zone))
    composed: list[Composed] = []
    dropped: list[str] = []
    for (name, channel, to), group in by_letter.items():
        seq = done.get((name, channel, to), 0) + 1
        items = [
            LetterItem(
                key=row.key,
                kind=Kind(row.kind),
                unit=row.unit,
                role=row.role,
                via=row.via,
                payload=row.payload or {},
                task=facts.get(row.task_id) if row.task_id is not None else None,
            )
            for row in group
            if row.kind == Kind.AGENDA.value or row.task_id in facts
        ]
        with_agenda = any(i.kind is Kind.AGENDA for i in items)
        tasks = [i for i in items if i.kind is not Kind.AGENDA]
        agenda = None
        if with_agenda:  # the unit's other open tasks: those in the letter are in it already
            listed = {i.task.no for i in tasks if i.task is not None}
            agenda = [a for a in agendas.get(name, {}).get("tasks", []) if a["no"] not in listed]
        if not tasks and not _eventful(agenda, today):
            # an agenda alone, in a week with no date for the unit: no letter this week
            dropped.extend(i.key for i in items)
            continue
        payload = build_letter(context, name, tasks, seq, agenda)
        message = Message(
            key=letter_key(name, channel, to, today, seq),
            kind=Kind.LETTER,
            channel=channel,
            to=to,
            recipient_name=name,
            scheduled_for=now,
            unit=name,
            payload=payload,
        )
        composed.append(Composed(message, tuple(i.key for i in items)))
    new = set(enqueue(session, [c.message for c in composed], now))
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    found = select(outbox.c.key, outbox.c.id).where(outbox.c.key.in_(sorted(new)))
    ids: dict[str, int] = {str(key): int(row_id) for key, row_id in connection.execute(found)}
    for letter in composed:
        if letter.message.key in new:
            connection.execute(
                update(item)
                .where(item.c.key.in_(letter.items), item.c.status == "pending")
                .values(status="lettered", letter_id=ids[letter.message.key])
            )
    if dropped:
        connection.execute(
            update(item)
            .where(item.c.key.in_(dropped), item.c.status == "pending")
            .values(status="superseded", superseded_by="nothing this week")
        )
    return [letter for letter in composed if letter.message.key in new]
