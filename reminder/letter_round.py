"""One letter round: the items due, from the store into letters in the outbox, around
the pure ``reminder.letters``.

``compose_letters`` runs at the end of every tick, in rounds of about ``ROUND_ITEMS``
items (``compose_rounds``), each in one transaction, so that a catch-up of tens of
thousands of items holds SQLite's write lock a second or so at a time. A recipient's
items are one round however many there are (its letters are composed in one go). The
ledger is read once, before the rounds: a task removed or done since is seen by step 2
in the round's transaction; the items of a task imported since wait for the next tick.
A round that fails leaves the rounds before it done (their letters go out); the rest
is composed by the next tick.

1. Nothing is composed while sending is closed (a day off, before the send hour): the
   items wait, like the planner's catch-up.
2. Take the pending items whose moment has come (on PostgreSQL under a transaction
   advisory lock, so that two daemons never compose for the same items at once). An
   item whose work was done, or whose task was removed, since it was planned is
   superseded instead: nobody is reminded of finished work.
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
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text, update
from sqlmodel import Session

from reminder.digest import build_agendas
from reminder.letters import (
    Composition,
    Letter,
    LetterContext,
    Waiting,
    agenda_items,
    agenda_week,
    compose,
    told,
)
from reminder.outbox import enqueue
from reminder.planner import local_midnight, sending_opens
from reminder.policy import Kind
from reminder.recipients import Item
from reminder.records import StoredLedger
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store, Turns, execute_many, insert_new
from reminder.store.meta import put_meta
from reminder.store.models import ItemRow, MetaRow, OutboxRow, TaskRow, TaskUnitRow
from reminder.store.tasks import ledger_facts, load_ledger
from reminder.web.links import Links, save_links

ROUND_ITEMS = 5_000  # items composed per transaction: a round holds SQLite's lock ~1 s
ROUND_RECIPIENTS = 500  # and at most so many recipients (an IN (…) of their names)
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
    table = ItemRow.__table__  # type: ignore[attr-defined]
    return insert_new(session, table, [_item_row(item, now) for item in items])


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
    session: Session, planning: Rules, settings: Settings, now: dt.datetime
) -> list[Item]:
    """This week's agenda items, once the week's first working day's send hour has come;
    returns those new in the store."""
    first = agenda_week(planning, settings, now)
    if first is None:
        return []
    planned = session.get(MetaRow, AGENDA_PLANNED)
    if planned is not None and planned.value == first.isoformat():
        return []
    items = agenda_items(_open_units(session), planning, first)
    new = set(enqueue_items(session, items, now))
    put_meta(session, AGENDA_PLANNED, first.isoformat())
    return [item for item in items if item.key in new]


def _sequences(
    session: Session, day_start: dt.datetime, day_end: dt.datetime
) -> dict[tuple[str, str, str], int]:
    """Letters already composed that day, per (recipient, channel, address)."""
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(outbox.c.recipient_name, outbox.c.channel, outbox.c.recipient, func.count())
        .where(
            outbox.c.kind == Kind.LETTER.value,
            outbox.c.scheduled_for >= day_start,
            outbox.c.scheduled_for < day_end,  # `run --once --at` an earlier day
        )
        .group_by(outbox.c.recipient_name, outbox.c.channel, outbox.c.recipient)
    )
    return {
        (str(name), str(channel), str(to)): int(count)
        for name, channel, to, count in session.connection().execute(statement)
    }


class LedgerRead:
    """The ledger as the rounds of one tick at ``today`` read it: once, and its agendas
    only if an agenda item is waiting."""

    def __init__(
        self, ledger: StoredLedger, today: dt.date, planning: Rules, settings: Settings
    ) -> None:
        self.ledger = ledger
        self.facts = ledger_facts(ledger)
        self.today = today
        self._planning = planning
        self._office = settings.office

    @cached_property
    def agendas(self) -> dict[str, list[dict[str, Any]]]:
        return build_agendas(self.ledger, self.today, self._planning, self._office)


def sending_closed(planning: Rules, now: dt.datetime) -> bool:
    """Step 1: a day off, or before the send hour."""
    return sending_opens(now, planning.policy.send_at, planning.calendar, planning.zone) is not None


def compose_rounds(
    store: Store, planning: Rules, settings: Settings, now: dt.datetime, turns: Turns
) -> list[Letter]:
    """Steps 1 to 4 for everything waiting at ``now``, a round per transaction, taking
    ``turns`` with other writers between them."""
    if sending_closed(planning, now):
        return []
    with store.read() as session:
        rounds = recipient_rounds(session, now, ROUND_ITEMS)
        ledger = load_ledger(session) if rounds else None
    if ledger is None:
        return []
    read = LedgerRead(ledger, now.astimezone(planning.zone).date(), planning, settings)
    letters: list[Letter] = []
    for recipients in rounds:
        turns.before_write()
        with store.write() as session:
            letters += compose_letters(session, planning, settings, now, recipients, read)
    return letters


def recipient_rounds(session: Session, now: dt.datetime, size: int) -> list[list[str]]:
    """The recipients with items waiting at ``now``, in rounds of about ``size`` items
    (a recipient with more is a round of its own) and ``ROUND_RECIPIENTS`` at most."""
    item = ItemRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(item.c.recipient_name, func.count())
        .where(item.c.status == "pending", item.c.scheduled_for <= now)
        .group_by(item.c.recipient_name)
        .order_by(func.min(item.c.scheduled_for), item.c.recipient_name)
    )
    rounds: list[list[str]] = []
    count = 0
    for name, items in session.connection().execute(statement):
        if not rounds or count + items > size or len(rounds[-1]) >= ROUND_RECIPIENTS:
            rounds.append([])
            count = 0
        rounds[-1].append(str(name))
        count += int(items)
    return rounds


def compose_letters(
    session: Session,
    planning: Rules,
    settings: Settings,
    now: dt.datetime,
    recipients: Sequence[str] | None = None,
    read: LedgerRead | None = None,
) -> list[Letter]:
    """Steps 2 to 4 of the module docstring (the caller checks step 1), inside the
    caller's transaction, for the items of ``recipients`` (all when None); ``read``: the
    ledger, read once per tick (read here when None)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    waiting = _waiting(connection, now, recipients)
    if not waiting:
        return []
    today = now.astimezone(planning.zone).date()
    if read is None:
        ledger = load_ledger(session)
        if ledger is None:
            return []
        read = LedgerRead(ledger, today, planning, settings)
    waiting, parts = _still_owed(session, waiting)
    ledger, facts = read.ledger, read.facts
    agendas: dict[str, list[dict[str, Any]]] = {}
    if any(i.kind is Kind.AGENDA for i in waiting):
        agendas = read.agendas
    context = LetterContext(
        day=today,
        title=ledger.title,
        year=ledger.year,
        office=settings.office,
        contacts=planning.contacts,
        calendar=planning.calendar,
        # a task imported after the ledger was read: its items wait for the next tick
        reminded={(facts[t].no, unit): n for (t, unit), (n, _) in parts.items() if t in facts},
        returned={
            (facts[t].no, unit): why for (t, unit), (_, why) in parts.items() if why and t in facts
        },
    )
    tomorrow = today + dt.timedelta(days=1)
    zone = planning.zone
    sequences = _sequences(session, local_midnight(today, zone), local_midnight(tomorrow, zone))
    result = compose(waiting, facts, agendas, context, sequences, now)
    maker = Links(settings.web)
    links = {letter.message.key: maker.for_letter(letter.message) for letter in result.letters}
    new = set(enqueue(session, [letter.message for letter in result.letters], now))
    sent = [letter for letter in result.letters if letter.message.key in new]
    save_links(session, [link for key, link in links.items() if link and key in new], now)
    _mark(session, sent, result, now)
    return sent


def _waiting(
    connection: Connection, now: dt.datetime, recipients: Sequence[str] | None
) -> list[Waiting]:
    """The items due by ``now`` and not yet in a letter, of ``recipients`` (all when
    None), oldest first."""
    item = ItemRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(item)
        .where(item.c.status == "pending", item.c.scheduled_for <= now)
        .order_by(item.c.scheduled_for, item.c.id)
    )
    if recipients is not None:
        statement = statement.where(item.c.recipient_name.in_(recipients))
    return [
        Waiting(
            id=row.id,
            key=row.key,
            kind=Kind(row.kind),
            task_id=row.task_id,
            unit=row.unit,
            role=row.role,
            via=row.via,
            channel=row.channel,
            to=row.recipient,
            recipient_name=row.recipient_name,
            payload=row.payload or {},
        )
        for row in connection.execute(statement)
    ]


def _still_owed(
    session: Session, waiting: Sequence[Waiting]
) -> tuple[list[Waiting], dict[tuple[int, str], tuple[int, str]]]:
    """The items whose work is still open, and for each of those (task id, unit) how
    often it was reminded overdue so far (催办次数) and the last 退回 reason. The others
    are superseded: their task or the unit's part was done or reported done (it waits
    for review), or the task removed, after they were planned (in the same tick, or
    before a daemon that stopped in between composed them)."""
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    task_ids = sorted({i.task_id for i in waiting if i.task_id is not None})
    # the parts of these items' units only: a round's tasks have parts of every unit
    unit_names = sorted({i.unit for i in waiting if i.task_id is not None and i.unit})
    open_parts = {
        (row.task_id, row.unit): (int(row.reminded), str(row.returned_note or ""))
        for row in session.connection().execute(
            select(units.c.task_id, units.c.unit, units.c.reminded, units.c.returned_note)
            .join(tasks, tasks.c.id == units.c.task_id)
            .where(
                units.c.task_id.in_(task_ids),
                units.c.unit.in_(unit_names),
                units.c.done_at.is_(None),
                units.c.reported_at.is_(None),
                tasks.c.status != "done",
                tasks.c.removed_at.is_(None),
            )
        )
    }
    closed = [
        i.id for i in waiting if i.task_id is not None and (i.task_id, i.unit) not in open_parts
    ]
    if not closed:
        return list(waiting), open_parts
    item = ItemRow.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        update(item)
        .where(item.c.id.in_(closed), item.c.status == "pending")
        .values(status="superseded", superseded_by="done before its letter")
    )
    gone = set(closed)
    return [i for i in waiting if i.id not in gone], open_parts


def _mark(session: Session, sent: Sequence[Letter], result: Composition, now: dt.datetime) -> None:
    """Step 4: each item in its letter; each task × unit told counts it (催办次数, the
    last reminder); an agenda with nothing to say superseded."""
    connection = session.connection()
    item = ItemRow.__table__  # type: ignore[attr-defined]
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    keys = [letter.message.key for letter in sent]
    found = select(outbox.c.key, outbox.c.id).where(outbox.c.key.in_(keys))
    ids: dict[str, int] = {str(key): int(row_id) for key, row_id in connection.execute(found)}
    # through the driver's executemany (``execute_many``): a catch-up marks tens of
    # thousands of items, and SQLAlchemy's processing of each row's parameters cost more
    # than SQLite's update
    lettered = [
        {
            "b_id": i.id,
            "b_pending": "pending",
            "status": "lettered",
            "letter_id": ids[letter.message.key],
        }
        for letter in sent
        for i in letter.items
    ]
    execute_many(
        connection,
        update(item)
        .where(item.c.id == bindparam("b_id"), item.c.status == bindparam("b_pending"))
        .values(status=bindparam("status"), letter_id=bindparam("letter_id")),
        lettered,
    )
    if result.dropped:
        connection.execute(
            update(item)
            .where(item.c.id.in_([i.id for i in result.dropped]), item.c.status == "pending")
            .values(status="superseded", superseded_by="nothing this week")
        )
    counted = told(sent)  # a letter whose key was taken already: its items wait
    if counted:
        units = TaskUnitRow.__table__  # type: ignore[attr-defined]
        execute_many(
            connection,
            update(units)
            .where(units.c.task_id == bindparam("b_t"), units.c.unit == bindparam("b_u"))
            .values(
                reminded=units.c.reminded + bindparam("b_overdue"),
                last_reminded_at=bindparam("last_reminded_at"),
            ),
            [
                {"b_t": t, "b_u": u, "b_overdue": n, "last_reminded_at": now}
                for (t, u), n in counted.items()
            ],
        )
