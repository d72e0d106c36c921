"""What the digest and the status need from the store, read in one short transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from reminder.records import DigestInputs, Progress, Reminded, Undelivered
from reminder.store.models import EventRow, OutboxRow, TaskUnitRow
from reminder.store.tasks import load_ledger

UNDELIVERED_SHOWN = 20


def digest_inputs(session: Session) -> DigestInputs | None:
    """What a digest needs."""
    ledger = load_ledger(session)
    if ledger is None:
        return None
    progress: dict[int, Progress] = {}
    for event in session.exec(
        select_rows(EventRow).where(col(EventRow.kind) == "progress").order_by(col(EventRow.at))
    ):
        if event.task_id is not None:
            progress[event.task_id] = Progress(event.unit or "", event.note, event.at)
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    told = select(units.c.task_id, units.c.unit, units.c.reminded, units.c.last_reminded_at).where(
        units.c.last_reminded_at.is_not(None)
    )
    reminded = {
        (int(task_id), str(unit)): Reminded(int(count), aware(last))
        for task_id, unit, count, last in session.connection().execute(told)
    }
    found, counts = undelivered(session)
    return DigestInputs(ledger, reminded, progress, found, counts)


def undelivered(session: Session) -> tuple[tuple[Undelivered, ...], dict[str, int]]:
    """The newest messages not delivered (dead or waiting for a retry), and how many
    there are of each."""
    found = tuple(
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
    return found, queue_counts(session, ("dead", "retry"))


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
    return aware(value) if isinstance(value, dt.datetime) else None


def aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
