"""One tick: store → planner → items → letters → outbox. The I/O around the pure planner.

``run_tick`` is what the daemon does every minute and what `reminder run --once` does:

1. If the policy, calendar or contacts changed since the targets were last planned
   (a fingerprint kept in ``meta``), expand groups again and recompute every
   ``next_at``.
2. Read a batch of targets whose ``next_at`` has come (an index range scan: a ledger
   with nothing due costs one query), locking them on PostgreSQL with
   ``FOR UPDATE SKIP LOCKED`` so several daemons share the work.
3. Ask the planner what is due, address it as items (insert-or-ignore by key) and move
   each target's ``planned_until`` and ``next_at`` on, in the same transaction.
4. Repeat until a batch comes back short.
5. Plan the week's agenda items when their day has come, and compose the pending items
   into letters (``reminder.letter_round``): one per recipient, channel and moment, in
   rounds of a few thousand items, each in its own transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlmodel import Session

from reminder.letter_round import (
    compose_letters,
    compose_rounds,
    enqueue_items,
    plan_agendas,
    sending_closed,
)
from reminder.letters import Letter
from reminder.planner import Plan, Target, due
from reminder.policy import Kind
from reminder.recipients import Item, address, superseded
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.models import TaskRow, TaskUnitRow
from reminder.store.targets import LedgerContext, ensure_planned, target_of
from reminder.store.tasks import TASK_COLUMNS, UNIT_COLUMNS, task_of

BATCH = 500


@dataclass(slots=True)
class TickResult:
    targets: int = 0
    items: list[Item] = field(default_factory=list)  # to send, or unreachable
    superseded: int = 0
    enqueued: int = 0  # items new in the store
    letters: list[Letter] = field(default_factory=list)

    def add(self, other: TickResult) -> None:
        self.targets += other.targets
        self.items += other.items
        self.superseded += other.superseded
        self.enqueued += other.enqueued
        self.letters += other.letters


@dataclass(slots=True)
class Planned:
    """What planning some targets at one moment decides (pure: ``plan_targets``)."""

    items: list[Item]  # to send, or unreachable
    superseded: list[Item]  # owed, but a more urgent one of the same target goes out
    planned_until: dict[int, dt.datetime | None]  # target id → planned up to
    next_at: dict[int, dt.datetime | None]  # target id → its next occasion


def plan_targets(targets: Sequence[Target], planning: Rules, now: dt.datetime) -> Planned:
    """The planner's decisions at ``now`` for targets that are due, as items, and each
    target's new planning state: planned up to ``now``, unless sending is closed (a day
    off, before the send hour), when what is owed waits, planned as it was."""
    plan = due(targets, planning.policy_for, planning.calendar, planning.zone, now)
    return planned_from(plan, targets, planning, now)


def planned_from(
    plan: Plan, targets: Sequence[Target], planning: Rules, now: dt.datetime
) -> Planned:
    """``plan_targets`` from the planner's plan."""
    items: list[Item] = []
    chosen = {reminder.target.id: reminder for reminder in plan.send}
    for reminder in plan.send:
        items += address(reminder, planning.contacts, planning.policy_for(reminder.target))
    records: list[Item] = []
    for reminder in plan.superseded:
        policy = planning.policy_for(reminder.target)
        records += superseded(reminder, chosen[reminder.target.id], planning.contacts, policy)
    until = {t.id: _planned_until(t, plan.held, now) for t in targets}
    return Planned(items, records, until, plan.next_at)


def _planned_until(target: Target, held: set[int], now: dt.datetime) -> dt.datetime | None:
    if target.id in held:  # sending is closed: what is owed waits, planned as it was
        return target.planned_until
    return max(target.planned_until, now) if target.planned_until else now


def plan_batch(
    session: Session, planning: Rules, now: dt.datetime, limit: int | None, lock: bool
) -> TickResult:
    """Steps 2 and 3 for at most ``limit`` targets, inside the caller's transaction.

    Targets are read and updated with Core statements (one row each, no ORM state):
    a busy tick touches thousands of them. Tasks are loaded once per task.
    """
    result = TickResult()
    context = LedgerContext.load(session)
    if context is None:
        return result
    due_rows = _due_rows(session, now, limit, lock)
    result.targets = len(due_rows)
    if not due_rows:
        return result
    targets = _targets_of(session, due_rows, context)
    planned = plan_targets(targets, planning, now)
    result.items = planned.items
    result.superseded = len(planned.superseded)
    result.enqueued = len(enqueue_items(session, [*planned.items, *planned.superseded], now))
    _move_on(session, due_rows, planned)
    return result


def _due_rows(session: Session, now: dt.datetime, limit: int | None, lock: bool) -> list[Row[Any]]:
    """Step 2: the targets whose ``next_at`` has come, of tasks still in the ledger."""
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
    return list(session.connection().execute(statement))


def _targets_of(
    session: Session, due_rows: Sequence[Row[Any]], context: LedgerContext
) -> list[Target]:
    """The planner's view of each due row, its task loaded once (plain rows, no ORM
    objects: a catch-up reads thousands of tasks and writes none of them back)."""
    connection = session.connection()
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    task_ids = sorted({row.task_id for row in due_rows})
    task_rows = {
        row.id: row
        for row in connection.execute(
            select(*(tasks.c[name] for name in TASK_COLUMNS)).where(tasks.c.id.in_(task_ids))
        )
    }
    listed: dict[int, list[Row[Any]]] = {task_id: [] for task_id in task_ids}
    for unit in connection.execute(
        select(*(units.c[name] for name in UNIT_COLUMNS)).where(
            units.c.task_id.in_(task_ids), units.c.via.is_(None)
        )
    ):
        listed[unit.task_id].append(unit)
    ledger_tasks = {task_id: task_of(task_rows[task_id], listed[task_id]) for task_id in task_ids}
    return [
        target_of(row, task_rows[row.task_id], ledger_tasks[row.task_id], context)
        for row in due_rows
    ]


def _move_on(session: Session, due_rows: Sequence[Row[Any]], planned: Planned) -> None:
    """Step 3's end: each target's ``planned_until`` and ``next_at`` moved on."""
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        update(units)
        .where(units.c.id == bindparam("row_id"))
        .values(planned_until=bindparam("planned"), next_at=bindparam("next")),
        [
            {
                "row_id": row.id,
                "planned": planned.planned_until[row.id],
                "next": planned.next_at[row.id],
            }
            for row in due_rows
        ],
    )


def run_tick(store: Store, planning: Rules, settings: Settings, now: dt.datetime) -> TickResult:
    """Plan everything due at ``now`` and compose it into letters, in short transactions."""
    total = TickResult()
    turns = store.turns()  # other writers get the lock every second or so
    with store.write() as session:
        ensure_planned(session, planning)
    for _ in range(1_000_000):  # bounded: every batch moves its targets' next_at past now
        turns.before_write()
        with store.write() as session:
            batch = plan_batch(session, planning, now, BATCH, lock=not store.is_sqlite)
        total.add(batch)
        if batch.targets < BATCH:
            break
    turns.before_write()
    with store.write() as session:
        agendas = plan_agendas(session, planning, settings, now)
    total.items += agendas
    total.enqueued += len(agendas)
    total.letters = compose_rounds(store, planning, settings, now, turns)
    return total


@dataclass(frozen=True, slots=True)
class Preview:
    """What a tick at a moment would do: the items, and the letter each goes in."""

    items: list[Item]
    letters: dict[str, str]  # item key → letter key


def preview(store: Store, planning: Rules, settings: Settings, now: dt.datetime) -> Preview:
    """What a tick at ``now`` would send, computed in a transaction that is rolled back."""
    with store.write() as session:
        ensure_planned(session, planning)
        result = plan_batch(session, planning, now, limit=None, lock=False)
        result.items += plan_agendas(session, planning, settings, now)
        closed = sending_closed(planning, now)
        letters = [] if closed else compose_letters(session, planning, settings, now)
        session.rollback()
    in_letter = {i.key: letter.message.key for letter in letters for i in letter.items}
    # an agenda in no letter (a week with nothing for the unit) does not go out
    shown = [i for i in result.items if i.kind is not Kind.AGENDA or i.key in in_letter]
    items = sorted(shown, key=lambda m: (m.scheduled_for, m.task_no or 0, m.unit or "", m.key))
    return Preview(items, in_letter)
