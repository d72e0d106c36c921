"""What the digest and the status need from the store, read in one short transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from reminder.digest import DigestInputs, Progress, Undelivered
from reminder.store.models import EventRow, ItemRow, OutboxRow
from reminder.store.tasks import StoredLedger, load_ledger

UNDELIVERED_SHOWN = 20


def reminded(session: Session) -> dict[tuple[int, str], int]:
    """Overdue reminders per (task number, unit): the days one went out, in a letter or
    (before letters) on its own."""
    item = ItemRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(item.c.task_no, item.c.unit, func.count(func.distinct(item.c.day)))
        .where(item.c.kind == "overdue", item.c.status.in_(("lettered", "sent")))
        .group_by(item.c.task_no, item.c.unit)
    )
    return {
        (int(no), str(unit)): int(count)
        for no, unit, count in session.connection().execute(statement)
        if no is not None
    }


def last_reminders(session: Session) -> dict[int, dt.datetime]:
    """When each task was last reminded of: its letters sent, or (before letters) its items."""
    item = ItemRow.__table__  # type: ignore[attr-defined]
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    found: dict[int, dt.datetime] = {}
    lettered = (
        select(item.c.task_id, func.max(outbox.c.sent_at))
        .join(outbox, outbox.c.id == item.c.letter_id)
        .where(outbox.c.status == "sent", item.c.task_id.is_not(None))
        .group_by(item.c.task_id)
    )
    alone = (
        select(item.c.task_id, func.max(item.c.scheduled_for))
        .where(item.c.status == "sent", item.c.task_id.is_not(None))
        .group_by(item.c.task_id)
    )
    for statement in (alone, lettered):
        for task_id, moment in session.connection().execute(statement):
            if moment is not None:
                at = _aware(moment)
                found[task_id] = max(found.get(task_id, at), at)
    return found


def digest_inputs(session: Session, ledger: StoredLedger | None = None) -> DigestInputs | None:
    """What a digest needs; ``ledger``: the ledger as loaded already (a simulation)."""
    ledger = ledger or load_ledger(session)
    if ledger is None:
        return None
    progress: dict[int, Progress] = {}
    for event in session.exec(
        select_rows(EventRow).where(col(EventRow.kind) == "progress").order_by(col(EventRow.at))
    ):
        if event.task_id is not None:
            progress[event.task_id] = Progress(event.unit or "", event.note, event.at)
    undelivered = tuple(
        Undelivered(
            row.status, row.kind, row.task_no, row.recipient_name, row.channel, row.last_error
        )
        for row in session.exec(
            select_rows(OutboxRow)
            .where(col(OutboxRow.status).in_(("dead", "retry")))
            .order_by(col(OutboxRow.id).desc())
            .limit(UNDELIVERED_SHOWN)
        )
    )
    return DigestInputs(
        ledger,
        last_reminders(session),
        progress,
        undelivered,
        queue_counts(session, ("dead", "retry")),
        reminded(session),
    )


def queue_counts(session: Session, states: tuple[str, ...] | None = None) -> dict[str, int]:
    """How many messages are in each state (of ``states``: read through the status index,
    without counting the sent ones), states with none left out."""
    query = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)  # type: ignore[call-overload]
    if states is not None:
        query = query.where(col(OutboxRow.status).in_(states))
    return {str(status): int(count) for status, count in session.execute(query).all()}


def last_sent_to(
    session: Session, kind: str, recipient: str, before: dt.datetime
) -> dt.datetime | None:
    """When the last message of a kind (a digest) before ``before`` was meant for someone."""
    value = session.execute(
        select(func.max(OutboxRow.scheduled_for)).where(
            col(OutboxRow.kind) == kind,
            col(OutboxRow.recipient_name) == recipient,
            col(OutboxRow.scheduled_for) < before,
        )
    ).scalar()
    return _aware(value) if isinstance(value, dt.datetime) else None


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
