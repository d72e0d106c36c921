"""Targets of reminders in the store: group members, completion, ``next_at``.

The ledger lists units and groups (task_unit rows with ``via`` NULL). A group listed on
a task is expanded here to member rows (``via`` = the group) from contacts.toml, so
each member has its own completion and planning state. A group with no known members
stays a target itself: its reminders are recorded as undeliverable, never skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, update
from sqlmodel import Session, select

from reminder.contacts import Contacts
from reminder.ledger.model import Role, Section, Task, UnitKind
from reminder.planner import Target, next_at
from reminder.rules import Rules
from reminder.store.db import execute_chunks, fetch_all, fetch_columns
from reminder.store.meta import put_meta
from reminder.store.models import MetaRow, SectionRow, TaskRow, TaskUnitRow
from reminder.store.tasks import latest_import, task_of

MEMBER_POSITION = 1000  # member rows sort after the units the ledger lists
FINGERPRINT = "schedule_fingerprint"


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


def is_done(task_row: TaskState, row: UnitState) -> bool:
    """No reminders for this part: the task or the unit's part is done, or reported done
    and waiting for review."""
    return task_row.status == "done" or row.done_at is not None or row.reported_at is not None


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
        done=is_done(task_row, row),
        planned_until=row.planned_until,
        last_progress=row.last_progress_at,
    )


def _as_date(value: dt.date | str | None) -> dt.date | None:
    # a Core row on SQLite may carry a DATE as text
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def reschedule(
    session: Session,
    planning: Rules,
    context: LedgerContext,
    task_row: TaskRow,
    rows: Sequence[TaskUnitRow],
) -> None:
    """Recompute ``next_at`` of one task's rows from their state and the policy: the
    same planning as an import's (``_reschedule``), on the session's rows."""
    _reschedule(planning, context, task_row, rows)  # type: ignore[arg-type]
    for row in rows:
        session.add(row)


def refresh_tasks(session: Session, planning: Rules, task_ids: Iterable[int] | None = None) -> int:
    """Expand groups and recompute ``next_at`` for some tasks (all active ones if None).

    Set-based, for a whole ledger at once (an import of 10,000 tasks replans ~150,000
    rows): the rows are read with two Core statements, group members are synced and
    ``reschedule`` is applied in memory (``replan_tasks``), and only what changed is
    written back with one executemany statement per kind (``UnitChanges``).
    """
    context = LedgerContext.load(session)
    if context is None:
        return 0
    session.flush()
    connection = session.connection()
    task_rows, units = load_state(connection, task_ids)
    changes = UnitChanges()
    replan_tasks(planning, context, task_rows, units, changes)
    changes.write(connection)
    session.expire_all()  # ORM rows loaded before would be stale
    return len(task_rows)


def replan_tasks(
    planning: Rules,
    context: LedgerContext,
    task_rows: Sequence[Any],
    units: dict[int, list[PlannedUnit]],
    changes: UnitChanges,
) -> None:
    """Group members synced and ``reschedule`` for each task, in memory, in the given order
    (new member rows are inserted in it: tasks by number, as the per-task version did,
    so that they get the same ids)."""
    for task_row in task_rows:
        rows = units.get(task_row.id, [])
        if task_row.removed_at is None:
            rows = _sync_members(task_row.id, rows, planning.contacts, changes)
        _reschedule(planning, context, task_row, rows)
        changes.collect(rows)


_UNITS = TaskUnitRow.__table__  # type: ignore[attr-defined]
_TASKS = TaskRow.__table__  # type: ignore[attr-defined]
_CHUNK = 5000  # ids in one IN list (SQLite allows 32,766 variables)
_WRITTEN = ("is_target", "via", "role", "kind", "raw", "position", "next_at")


@dataclass(slots=True)
class PlannedUnit:
    """A task_unit row being changed in memory (a ``UnitState`` for ``target_of``);
    ``id`` None: not inserted yet."""

    id: int | None
    task_id: int
    unit: str
    role: str
    kind: str
    raw: str
    position: int
    via: str | None = None
    is_target: bool = True
    done_at: dt.datetime | None = None
    planned_until: dt.datetime | None = None
    last_progress_at: dt.datetime | None = None
    reported_at: dt.datetime | None = None
    due: dt.date | None = None
    next_at: dt.datetime | None = None
    stored: tuple[object, ...] = ()  # ``written()`` as read

    def written(self) -> tuple[object, ...]:
        return (
            self.is_target,
            self.via,
            self.role,
            self.kind,
            self.raw,
            self.position,
            self.next_at,
        )


# the columns of task_unit a ``PlannedUnit`` is made of, in the order of its fields
_READ = (
    "id", "task_id", "unit", "role", "kind", "raw", "position", "via", "is_target",
    "done_at", "planned_until", "last_progress_at", "reported_at", "due", "next_at",
)  # fmt: skip
UNIT_COLUMNS = tuple(_UNITS.c[name] for name in _READ)


def planned_units(columns: Sequence[Sequence[Any]]) -> list[PlannedUnit]:
    """Rows of task_unit, given column by column in the order of ``UNIT_COLUMNS`` (their
    values converted), as ``PlannedUnit``s: each made once, with what it was read as."""
    by_name = dict(zip(_READ, columns, strict=True))
    stored = zip(*(by_name[name] for name in _WRITTEN), strict=True)
    return list(map(PlannedUnit, *columns, stored))


def group_by_task(
    units: Iterable[PlannedUnit], task_ids: Iterable[int] = ()
) -> dict[int, list[PlannedUnit]]:
    """The units of each task (each of ``task_ids`` has a list, maybe empty), in the
    given order."""
    by_task: dict[int, list[PlannedUnit]] = {task_id: [] for task_id in task_ids}
    for unit in units:
        by_task.setdefault(unit.task_id, []).append(unit)
    return by_task


def load_state(
    connection: Connection, task_ids: Iterable[int] | None
) -> tuple[list[Any], dict[int, list[PlannedUnit]]]:
    """The active tasks (by number, as SQLite's index on active numbers returns them) or
    those of ``task_ids`` (by id), and their unit rows (by id): with no ``task_ids``, every
    active task has a list, maybe empty."""
    if task_ids is None:
        active = _TASKS.c.removed_at.is_(None)
        everything = active_tasks(connection)
        statement = (
            select(*UNIT_COLUMNS)
            .join(_TASKS, _TASKS.c.id == _UNITS.c.task_id)
            .where(active)
            .order_by(_UNITS.c.task_id, _UNITS.c.id)
        )
        units = planned_units(fetch_columns(connection, statement))
        return everything, group_by_task(units, (row.id for row in everything))
    ids = sorted(set(task_ids))
    tasks: list[Any] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        tasks += connection.execute(
            select(_TASKS).where(_TASKS.c.id.in_(chunk)).order_by(_TASKS.c.id)
        )
    return tasks, units_of(connection, ids)


def active_tasks(connection: Connection) -> list[Any]:
    """The rows of the active tasks, by number."""
    active = _TASKS.c.removed_at.is_(None)
    return fetch_all(connection, select(_TASKS).where(active).order_by(_TASKS.c.no))


def units_of(connection: Connection, task_ids: Sequence[int]) -> dict[int, list[PlannedUnit]]:
    """The unit rows of some tasks (by id), grouped by task; a task with none has no
    entry."""
    units: list[PlannedUnit] = []
    for start in range(0, len(task_ids), _CHUNK):
        statement = (
            select(*UNIT_COLUMNS)
            .where(_UNITS.c.task_id.in_(task_ids[start : start + _CHUNK]))
            .order_by(_UNITS.c.task_id, _UNITS.c.id)
        )
        units += planned_units(fetch_columns(connection, statement))
    return group_by_task(units)


def listed_units(
    connection: Connection, task_ids: Sequence[int]
) -> dict[int, list[tuple[str, str]]]:
    """The units the ledger listed on some tasks (by id), as (name, role), in the order
    of their rows; a task with none has no entry."""
    found: dict[int, list[tuple[str, str]]] = {}
    for start in range(0, len(task_ids), _CHUNK):
        statement = (
            select(_UNITS.c.task_id, _UNITS.c.unit, _UNITS.c.role)
            .where(_UNITS.c.task_id.in_(task_ids[start : start + _CHUNK]), _UNITS.c.via.is_(None))
            .order_by(_UNITS.c.task_id, _UNITS.c.id)
        )
        for task_id, unit, role in zip(*fetch_columns(connection, statement), strict=True):
            found.setdefault(task_id, []).append((unit, role))
    return found


@dataclass(slots=True)
class UnitChanges:
    """What a set-based import or refresh writes to task_unit, in the order the
    row-by-row version's flushes did (so that new rows get the same ids): the units a
    ledger lists (inserted, then deleted), then group members, then updates, then the
    members no longer wanted."""

    listed_inserts: list[PlannedUnit] = field(default_factory=list)
    listed_deletes: list[int] = field(default_factory=list)
    member_inserts: list[PlannedUnit] = field(default_factory=list)
    updates: list[PlannedUnit] = field(default_factory=list)
    member_deletes: list[int] = field(default_factory=list)

    def collect(self, rows: Sequence[PlannedUnit]) -> None:
        for row in rows:
            if row.id is None:
                if row.via is not None:  # a listed one is in listed_inserts already
                    self.member_inserts.append(row)
            elif row.written() != row.stored:
                self.updates.append(row)

    def write(self, connection: Connection) -> None:
        insert_units(connection, map(new_values, self.listed_inserts))
        delete_units(connection, self.listed_deletes)
        insert_units(connection, map(new_values, self.member_inserts))
        self.write_updates(connection)
        delete_units(connection, self.member_deletes)

    def write_updates(self, connection: Connection) -> None:
        execute_chunks(
            connection,
            update(_UNITS)
            .where(_UNITS.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in _WRITTEN}),
            (
                dict(zip(_WRITTEN, row.written(), strict=True)) | {"b_id": row.id}
                for row in self.updates
            ),
        )


def insert_units(connection: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """New task_unit rows (``new_values``), in order, a chunk at a time."""
    execute_chunks(
        connection, insert(_UNITS).values({name: bindparam(name) for name in _NEW}), rows
    )


def delete_units(connection: Connection, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), _CHUNK):
        connection.execute(delete(_UNITS).where(_UNITS.c.id.in_(ids[start : start + _CHUNK])))


_NEW = (
    "task_id", "unit", "role", "kind", "raw", "position", "via", "is_target",
    "done_note", "reminded", "returned_note", "next_at",
)  # fmt: skip


def new_values(row: PlannedUnit) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "unit": row.unit,
        "role": row.role,
        "kind": row.kind,
        "raw": row.raw,
        "position": row.position,
        "via": row.via,
        "is_target": row.is_target,
        "done_note": "",
        "reminded": 0,
        "returned_note": "",
        "next_at": row.next_at,
    }


_GROUP, _UNIT = UnitKind.GROUP.value, UnitKind.UNIT.value


def _sync_members(
    task_id: int, rows: list[PlannedUnit], contacts: Contacts, changes: UnitChanges
) -> list[PlannedUnit]:
    """Make the member rows of one task match contacts.toml (a listed group expands to
    its members, each listed once), on in-memory rows: deleted rows go to ``changes``."""
    listed = sorted((row for row in rows if row.via is None), key=lambda r: r.position)
    listed_names = {row.unit for row in listed}
    wanted: dict[str, PlannedUnit] = {}  # member name → the group row it comes through
    for row in listed:
        members: tuple[str, ...] = ()
        if row.kind == _GROUP:
            entry = contacts.directory.resolve(row.unit)
            members = entry.members if entry else ()
        row.is_target = not members
        for member in members:
            if member not in listed_names and member not in wanted:
                wanted[member] = row
    kept: list[PlannedUnit] = list(listed)
    for row in rows:
        if row.via is None:
            continue
        group = wanted.pop(row.unit, None)
        if group is None:
            assert row.id is not None
            changes.member_deletes.append(row.id)
            continue
        row.via, row.role, row.is_target = group.unit, group.role, True
        kept.append(row)
    for index, (member, group) in enumerate(wanted.items()):
        kept.append(
            PlannedUnit(
                None,
                task_id,
                member,
                group.role,
                _UNIT,
                member,
                MEMBER_POSITION + index,
                group.unit,
            )
        )
    return kept


def _reschedule(
    planning: Rules, context: LedgerContext, task_row: Any, rows: Sequence[PlannedUnit]
) -> None:
    """``next_at`` of one task's rows (in memory, or the session's). It depends on the
    target only through the task, the unit's own due date and its state, so units alike
    are planned once."""
    # the task as the ledger says it, when the caller has it (an import), or as stored
    task = getattr(task_row, "task", None)
    if task is None:
        listed = sorted((row for row in rows if row.via is None), key=lambda r: r.position)
        task = task_of(task_row, listed)  # type: ignore[arg-type]
    planned: dict[tuple[object, ...], dt.datetime | None] = {}
    for row in rows:
        if not row.is_target or task_row.removed_at is not None:
            row.next_at = None
            continue
        key = (row.due, is_done(task_row, row), row.planned_until, row.last_progress_at)
        if key not in planned:
            target = target_of(_Placeholder(row), task_row, task, context)
            planned[key] = next_at(
                target,
                planning.policy_for(target),
                planning.calendar,
                planning.zone,
                row.planned_until,
            )
        row.next_at = planned[key]


class _Placeholder:
    """A row not inserted yet, as ``target_of`` reads it (its id plays no part in
    ``next_at``)."""

    def __init__(self, row: PlannedUnit) -> None:
        self.id: int | None = row.id if row.id is not None else 0
        self.unit, self.role, self.via = row.unit, row.role, row.via
        self.done_at, self.planned_until = row.done_at, row.planned_until
        self.last_progress_at, self.reported_at, self.due = (
            row.last_progress_at,
            row.reported_at,
            row.due,
        )


def update_task_status(
    session: Session,
    planning: Rules,
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


def replan_all(session: Session, planning: Rules) -> None:
    """Step 1 for every task, and remember what it was planned with."""
    refresh_tasks(session, planning)
    remember_planning(session, planning)


def remember_planning(session: Session, planning: Rules) -> None:
    """Record that the store is planned with ``planning`` (see ``ensure_planned``)."""
    put_meta(session, FINGERPRINT, planning.fingerprint())


def ensure_planned(session: Session, planning: Rules) -> bool:
    row = session.get(MetaRow, FINGERPRINT)
    if row is not None and row.value == planning.fingerprint():
        return False
    replan_all(session, planning)
    return True
