"""One tick: store → planner → recipients → outbox. The I/O around the pure planner.

``run_tick`` is what the daemon does every minute and what `reminder run --once` does:

1. If the policy, calendar or contacts changed since the targets were last planned
   (a fingerprint kept in ``meta``), expand groups again and recompute every
   ``next_at``.
2. Read a batch of targets whose ``next_at`` has come (an index range scan: a ledger
   with nothing due costs one query), locking them on PostgreSQL with
   ``FOR UPDATE SKIP LOCKED`` so several daemons share the work.
3. Ask the planner what is due, address it, enqueue it (insert-or-ignore by key) and
   move each target's ``planned_until`` and ``next_at`` on, in the same transaction.
4. Repeat until a batch comes back short.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, bindparam, update
from sqlmodel import Session, col, select

from reminder.outbox import enqueue
from reminder.planner import due
from reminder.planning import Planning
from reminder.recipients import Message, address, superseded
from reminder.store.db import Store
from reminder.store.models import TaskRow, TaskUnitRow
from reminder.store.targets import LedgerContext, ensure_planned, target_of
from reminder.store.tasks import task_of, units_by_task

BATCH = 500


@dataclass(slots=True)
class TickResult:
    targets: int = 0
    messages: list[Message] = field(default_factory=list)  # to send, or undeliverable
    superseded: int = 0
    enqueued: int = 0

    def add(self, other: TickResult) -> None:
        self.targets += other.targets
        self.messages += other.messages
        self.superseded += other.superseded
        self.enqueued += other.enqueued


def plan_batch(
    session: Session, planning: Planning, now: dt.datetime, limit: int | None, lock: bool
) -> TickResult:
    """Steps 2 and 3 for at most ``limit`` targets, inside the caller's transaction.

    Targets are read and updated with Core statements (one row each, no ORM state):
    a busy tick touches thousands of them. Tasks are loaded once per task.
    """
    result = TickResult()
    context = LedgerContext.load(session)
    if context is None:
        return result
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    statement = (
        select(units)
        .join(tasks, tasks.c.id == units.c.task_id)
        .where(units.c.next_at <= now, tasks.c.removed_at.is_(None))
        .order_by(units.c.next_at, units.c.id)
    )
    if limit is not None:
        statement = statement.limit(limit)
    if lock:
        statement = statement.with_for_update(skip_locked=True, of=units)
    connection = session.connection()
    due_rows = list(connection.execute(statement))
    result.targets = len(due_rows)
    if not due_rows:
        return result
    task_ids = sorted({row.task_id for row in due_rows})
    task_rows = {
        row.id: row for row in session.exec(select(TaskRow).where(col(TaskRow.id).in_(task_ids)))
    }
    listed = units_by_task(session, task_ids, listed_only=True)
    ledger_tasks = {task_id: task_of(task_rows[task_id], listed[task_id]) for task_id in task_ids}
    targets = [
        target_of(row, task_rows[row.task_id], ledger_tasks[row.task_id], context)
        for row in due_rows
    ]
    plan = due(targets, planning.policy_for, planning.calendar, planning.zone, now)
    messages: list[Message] = []
    chosen = {reminder.target.id: reminder for reminder in plan.send}
    for reminder in plan.send:
        messages += address(reminder, planning.contacts, planning.policy_for(reminder.target))
    records: list[Message] = []
    for reminder in plan.superseded:
        policy = planning.policy_for(reminder.target)
        records += superseded(reminder, chosen[reminder.target.id], planning.contacts, policy)
    result.messages = messages
    result.superseded = len(records)
    result.enqueued = len(enqueue(session, [*messages, *records], now))

    def planned(row: Row[Any]) -> dt.datetime | None:
        if row.id in plan.held:  # sending is closed: what is owed waits, planned as it was
            return row.planned_until  # type: ignore[no-any-return]
        return max(row.planned_until, now) if row.planned_until else now

    connection.execute(
        update(units)
        .where(units.c.id == bindparam("row_id"))
        .values(planned_until=bindparam("planned"), next_at=bindparam("next")),
        [
            {
                "row_id": row.id,
                "planned": planned(row),
                "next": plan.next_at[row.id],
            }
            for row in due_rows
        ],
    )
    return result


def run_tick(store: Store, planning: Planning, now: dt.datetime) -> TickResult:
    """Plan and enqueue everything due at ``now``, in short transactions."""
    total = TickResult()
    with store.write() as session:
        ensure_planned(session, planning)
    for _ in range(1_000_000):  # bounded: every batch moves its targets' next_at past now
        with store.write() as session:
            batch = plan_batch(session, planning, now, BATCH, lock=not store.is_sqlite)
        total.add(batch)
        if batch.targets < BATCH:
            break
    return total


def preview(store: Store, planning: Planning, now: dt.datetime) -> list[Message]:
    """What a tick at ``now`` would send, computed in a transaction that is rolled back."""
    with store.write() as session:
        ensure_planned(session, planning)
        result = plan_batch(session, planning, now, limit=None, lock=False)
        session.rollback()
    return sorted(
        result.messages, key=lambda m: (m.scheduled_for, m.task_no or 0, m.unit or "", m.key)
    )
