"""Recording work: `done`, `reopen` and `progress`, with who and when, in the journal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import Session, col, select

from reminder.errors import InputError
from reminder.rules import Rules
from reminder.store.models import EventRow, TaskRow, TaskUnitRow
from reminder.store.targets import (
    LedgerContext,
    ensure_planned,
    reschedule,
    update_task_status,
)
from reminder.store.tasks import units_by_task


@dataclass(frozen=True, slots=True)
class Outcome:
    task_no: int
    status: str  # the task's status afterwards
    units: list[str]  # the units the action applied to
    changed: bool


def journal(
    session: Session,
    kind: str,
    task: TaskRow | None,
    unit: str | None,
    note: str,
    actor: str,
    origin: str,
    now: dt.datetime,
    attachment: str = "",
    due: dt.date | None = None,
) -> None:
    """One entry of the journal (``event``): what, on which task and unit, by whom, from
    where (a client's address, or "cli"), when."""
    session.add(
        EventRow(
            at=now,
            kind=kind,
            task_id=task.id if task else None,
            unit=unit,
            note=note,
            actor=actor,
            origin=origin,
            attachment=attachment,
            due=due,
        )
    )


def _task(session: Session, number: int) -> tuple[TaskRow, list[TaskUnitRow]]:
    statement = select(TaskRow).where(col(TaskRow.no) == number, col(TaskRow.removed_at).is_(None))
    row = session.exec(statement).first()
    if row is None or row.id is None:
        raise InputError(f"task {number}: no such task in the ledger")
    return row, units_by_task(session, [row.id])[row.id]


def _select_units(
    planning: Rules, number: int, rows: list[TaskUnitRow], unit: str | None
) -> list[TaskUnitRow]:
    """The target rows a --unit names: the unit, or every member of a group."""
    targets = [row for row in rows if row.is_target]
    if unit is None:
        return targets
    entry = planning.contacts.directory.resolve(unit)
    name = entry.name if entry else unit
    chosen = [row for row in targets if name in (row.unit, row.via)]
    if not chosen:
        names = "、".join(row.unit for row in rows if row.via is None)
        raise InputError(f"task {number}: {unit!r} is not one of its units ({names})")
    return chosen


def ledger_context(session: Session) -> LedgerContext:
    context = LedgerContext.load(session)
    if context is None:
        raise InputError("no ledger imported yet; run `reminder import FILE` first")
    return context


def mark_done(
    session: Session,
    planning: Rules,
    number: int,
    unit: str | None,
    note: str,
    actor: str,
    now: dt.datetime,
    origin: str = "cli",
) -> Outcome:
    """Mark a unit's part (or, without a unit, the whole task) done."""
    context = ledger_context(session)
    ensure_planned(session, planning)  # group members as contacts.toml has them now
    task_row, rows = _task(session, number)
    chosen = _select_units(planning, number, rows, unit)
    changed = False
    for row in chosen:
        if row.done_at is None:
            row.done_at, row.done_note, changed = now, note, True
        row.reported_at, row.returned_note = None, ""
        session.add(row)
    if unit is None and task_row.status != "done":
        task_row.status, task_row.done_at, changed = "done", now, True
        session.add(task_row)
    else:
        update_task_status(session, planning, context, task_row, rows, now)
    journal(session, "done", task_row, unit, note, actor, origin, now)
    reschedule(session, planning, context, task_row, rows)
    return Outcome(number, task_row.status, [row.unit for row in chosen], changed)


def reopen(
    session: Session, planning: Rules, number: int, note: str, actor: str, now: dt.datetime
) -> Outcome:
    """Open a task again, with every unit's part; its reminders resume."""
    context = ledger_context(session)
    task_row, rows = _task(session, number)
    changed = task_row.status == "done" or any(row.done_at for row in rows)
    for row in rows:
        row.done_at, row.done_note, row.reported_at = None, "", None
        session.add(row)
    task_row.status, task_row.done_at = "open", None
    session.add(task_row)
    journal(session, "reopen", task_row, None, note, actor, "cli", now)
    reschedule(session, planning, context, task_row, rows)
    return Outcome(number, task_row.status, [row.unit for row in rows if row.is_target], changed)


def record_progress(
    session: Session,
    planning: Rules,
    number: int,
    unit: str,
    note: str,
    actor: str,
    now: dt.datetime,
    origin: str = "cli",
) -> Outcome:
    """A progress note: it shows in the digest and answers this month's check-in."""
    if not note.strip():
        raise InputError("a progress note needs --note")
    context = ledger_context(session)
    ensure_planned(session, planning)
    task_row, rows = _task(session, number)
    chosen = _select_units(planning, number, rows, unit)
    for row in chosen:
        row.last_progress_at = now
        session.add(row)
    journal(session, "progress", task_row, unit, note, actor, origin, now)
    reschedule(session, planning, context, task_row, rows)
    return Outcome(number, task_row.status, [row.unit for row in chosen], True)
