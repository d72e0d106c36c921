"""Targets of reminders in the store: group members, completion, ``next_at``.

The ledger lists units and groups (task_unit rows with ``via`` NULL). A group listed on
a task is expanded here to member rows (``via`` = the group) from contacts.toml, so
each member has its own completion and planning state. A group with no known members
stays a target itself: its reminders are recorded as undeliverable, never skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlmodel import Session, col, select

from reminder.contacts import Contacts
from reminder.ledger.model import Role, Section, Task, UnitKind
from reminder.planner import Target, next_at
from reminder.planning import Planning
from reminder.store.models import MetaRow, SectionRow, TaskRow, TaskUnitRow
from reminder.store.tasks import latest_import, task_of, units_by_task

MEMBER_POSITION = 1000  # member rows sort after the units the ledger lists
FINGERPRINT = "schedule_fingerprint"


def _listed(rows: Iterable[TaskUnitRow]) -> list[TaskUnitRow]:
    return sorted((row for row in rows if row.via is None), key=lambda r: r.position)


def sync_members(
    session: Session, task_id: int, rows: list[TaskUnitRow], contacts: Contacts
) -> list[TaskUnitRow]:
    """Make the member rows of one task match contacts.toml; returns the task's rows."""
    listed = _listed(rows)
    listed_names = {row.unit for row in listed}
    wanted: dict[str, TaskUnitRow] = {}  # member name → the group row it comes through
    for row in listed:
        members: tuple[str, ...] = ()
        if row.kind == UnitKind.GROUP.value:
            entry = contacts.directory.resolve(row.unit)
            members = entry.members if entry else ()
        row.is_target = not members
        session.add(row)
        for member in members:
            if member not in listed_names and member not in wanted:
                wanted[member] = row
    kept: list[TaskUnitRow] = list(listed)
    for row in rows:
        if row.via is None:
            continue
        group = wanted.pop(row.unit, None)
        if group is None:
            session.delete(row)
            continue
        row.via, row.role, row.is_target = group.unit, group.role, True
        session.add(row)
        kept.append(row)
    for index, (member, group) in enumerate(wanted.items()):
        row = TaskUnitRow(
            task_id=task_id,
            unit=member,
            role=group.role,
            kind=UnitKind.UNIT.value,
            raw=member,
            position=MEMBER_POSITION + index,
            via=group.unit,
            is_target=True,
        )
        session.add(row)
        kept.append(row)
    session.flush()
    return kept


@dataclass(frozen=True, slots=True)
class LedgerContext:
    """What every target of the ledger shares: its year and its sections."""

    year: int
    sections: dict[int, Section]

    @classmethod
    def load(cls, session: Session) -> LedgerContext | None:
        run = latest_import(session)
        if run is None:
            return None
        sections = {
            row.no: Section(row.no, row.numeral, row.title)
            for row in session.exec(select(SectionRow))
        }
        return cls(run.year, sections)

    def section(self, no: int) -> tuple[int, str, str]:
        section = self.sections.get(no)
        return (no, section.numeral, section.title) if section else (no, "", "")


class UnitState(Protocol):
    """A task_unit row as the planner needs it: an ORM row or a Core result row."""

    id: int | None
    unit: str
    role: str
    via: str | None
    done_at: dt.datetime | None
    planned_until: dt.datetime | None
    last_progress_at: dt.datetime | None
    reported_at: dt.datetime | None
    due: dt.date | None


class TaskState(Protocol):
    """A task as a target needs it: its row, or the task as ``load_ledger`` reads it."""

    @property
    def id(self) -> int | None: ...

    @property
    def status(self) -> str: ...


def target_of(row: UnitState, task_row: TaskState, task: Task, context: LedgerContext) -> Target:
    """The row as the planner sees it: a part reported done waits for review without
    reminders; an approved extension is the unit's own due date."""
    assert row.id is not None
    assert task_row.id is not None
    due = _as_date(row.due)
    if due is not None and task.deadline.due is not None and due != task.deadline.due:
        task = replace(task, deadline=task.deadline.extended(due))
    return Target(
        id=row.id,
        task_id=task_row.id,
        task=task,
        section=context.section(task.section_no),
        year=context.year,
        unit=row.unit,
        role=Role(row.role),
        via=row.via,
        done=task_row.status == "done" or row.done_at is not None or row.reported_at is not None,
        planned_until=row.planned_until,
        last_progress=row.last_progress_at,
    )


def _as_date(value: dt.date | str | None) -> dt.date | None:
    # a Core row on SQLite may carry a DATE as text
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def reschedule(
    session: Session,
    planning: Planning,
    context: LedgerContext,
    task_row: TaskRow,
    rows: Sequence[TaskUnitRow],
) -> None:
    """Recompute ``next_at`` of one task's rows from their state and the policy."""
    task = task_of(task_row, _listed(rows))
    for row in rows:
        if not row.is_target or task_row.removed_at is not None:
            row.next_at = None
        else:
            target = target_of(row, task_row, task, context)
            row.next_at = next_at(
                target,
                planning.policy_for(target),
                planning.calendar,
                planning.zone,
                row.planned_until,
            )
        session.add(row)


def refresh_tasks(
    session: Session, planning: Planning, task_ids: Iterable[int] | None = None
) -> int:
    """Expand groups and recompute ``next_at`` for some tasks (all active ones if None)."""
    context = LedgerContext.load(session)
    if context is None:
        return 0
    statement = select(TaskRow).where(col(TaskRow.removed_at).is_(None))
    if task_ids is not None:
        statement = select(TaskRow).where(col(TaskRow.id).in_(list(task_ids)))
    task_rows = list(session.exec(statement))
    units = units_by_task(session, [row.id for row in task_rows if row.id is not None])
    for task_row in task_rows:
        assert task_row.id is not None
        rows = units[task_row.id]
        if task_row.removed_at is None:
            rows = sync_members(session, task_row.id, rows, planning.contacts)
        reschedule(session, planning, context, task_row, rows)
    session.flush()
    return len(task_rows)


def update_task_status(
    session: Session,
    planning: Planning,
    context: LedgerContext,
    task_row: TaskRow,
    rows: Sequence[TaskUnitRow],
    now: dt.datetime,
) -> None:
    """A task is done when its lead units are (or all of them, if the policy says so)."""
    targets = [row for row in rows if row.is_target]
    policy = planning.policy_of(context.section(task_row.section_no), task_row.no)
    if policy.done_when == "lead":
        targets = [row for row in targets if row.role == Role.LEAD.value]
    done = bool(targets) and all(row.done_at is not None for row in targets)
    if done and task_row.status != "done":
        task_row.status, task_row.done_at = "done", now
    elif not done and task_row.status == "done":
        task_row.status, task_row.done_at = "open", None
    session.add(task_row)


def replan_all(session: Session, planning: Planning) -> None:
    """Step 1 for every task, and remember what it was planned with."""
    refresh_tasks(session, planning)
    row = session.get(MetaRow, FINGERPRINT)
    value = planning.fingerprint()
    if row is None:
        session.add(MetaRow(key=FINGERPRINT, value=value))
    else:
        row.value = value
        session.add(row)


def ensure_planned(session: Session, planning: Planning) -> bool:
    row = session.get(MetaRow, FINGERPRINT)
    if row is not None and row.value == planning.fingerprint():
        return False
    replan_all(session, planning)
    return True
