"""Reading the ledger back from the store: what `tasks`, `check` and the planner see."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Row, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from reminder.ledger.model import (
    Deadline,
    DeadlineKind,
    Role,
    Section,
    Task,
    TaskFacts,
    UnitKind,
    UnitRef,
)
from reminder.records import StoredLedger, StoredTask, StoredUnit
from reminder.store.models import ImportRun, SectionRow, TaskRow, TaskUnitRow

# the stored values' members, looked up in a dict: calling the Enum class cost ~2 µs a
# value, 270,000 values a 10,000-unit catch-up tick
_DEADLINE_KINDS = {kind.value: kind for kind in DeadlineKind}
_ROLES = {role.value: role for role in Role}
_UNIT_KINDS = {kind.value: kind for kind in UnitKind}

# the columns the ledger's readers use (``_assembled``): not the planning state
TASK_COLUMNS = (
    "id", "no", "section_no", "text", "deadline_raw", "deadline_kind", "deadline_start",
    "milestones", "recurrence", "action", "remarks", "source_line", "status", "done_at",
)  # fmt: skip
# the columns of a unit's row (``_stored_units`` unpacks them in this order)
UNIT_COLUMNS = (
    "task_id", "unit", "role", "kind", "raw", "position", "via", "done_at", "done_note",
    "reported_at", "due",
)  # fmt: skip


def deadline_of(row: TaskRow | Row[Any]) -> Deadline:
    return Deadline(
        raw=row.deadline_raw,
        kind=_DEADLINE_KINDS[row.deadline_kind],
        start=row.deadline_start,
        milestones=tuple(dt.date.fromisoformat(day) for day in row.milestones),
        recurrence=row.recurrence,
        action=row.action,
    )


def unit_ref_of(row: TaskUnitRow | Row[Any]) -> UnitRef:
    return UnitRef(name=row.unit, role=_ROLES[row.role], kind=_UNIT_KINDS[row.kind], raw=row.raw)


def task_of(row: TaskRow | Row[Any], units: Sequence[TaskUnitRow | Row[Any]]) -> Task:
    ordered = sorted(units, key=lambda u: u.position)
    return _task_with(row, tuple(unit_ref_of(unit) for unit in ordered))


def _task_with(row: TaskRow | Row[Any], units: tuple[UnitRef, ...]) -> Task:
    assert row.id is not None
    return Task(
        no=row.no,
        section_no=row.section_no,
        text=row.text,
        units=units,
        deadline=deadline_of(row),
        remarks=row.remarks,
        line=row.source_line,
    )


def active_task_rows(session: Session) -> list[TaskRow]:
    statement = select(TaskRow).where(col(TaskRow.removed_at).is_(None)).order_by(col(TaskRow.no))
    return list(session.exec(statement))


def units_by_task(
    session: Session, task_ids: list[int], *, listed_only: bool = False
) -> dict[int, list[TaskUnitRow]]:
    """The unit rows of some tasks; ``listed_only``: as the ledger lists them (no members)."""
    grouped: dict[int, list[TaskUnitRow]] = defaultdict(list)
    if not task_ids:
        return grouped
    statement = select(TaskUnitRow).where(col(TaskUnitRow.task_id).in_(task_ids))
    if listed_only:
        statement = statement.where(col(TaskUnitRow.via).is_(None))
    for unit in session.exec(statement):
        grouped[unit.task_id].append(unit)
    return grouped


def latest_import(session: Session) -> ImportRun | None:
    return session.exec(select(ImportRun).order_by(col(ImportRun.id).desc()).limit(1)).first()


def load_ledger(session: Session) -> StoredLedger | None:
    """The current ledger, or None before the first import.

    Read as plain rows (SQLAlchemy Core), not as ORM objects: nothing here is written
    back, and a 10,000-unit ledger's 30,000 identity-mapped objects cost seconds of a
    catch-up tick (the agenda of a Monday reads the whole open ledger)."""
    header = ledger_header(session)
    if header is None:
        return None
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    rows = connection.execute(
        sa_select(*(tasks.c[name] for name in TASK_COLUMNS))
        .where(tasks.c.removed_at.is_(None))
        .order_by(tasks.c.no)
    ).all()
    grouped = _stored_units(
        connection.execute(
            sa_select(*(units.c[name] for name in UNIT_COLUMNS))
            .join(tasks, tasks.c.id == units.c.task_id)
            .where(tasks.c.removed_at.is_(None))
        )
    )
    return replace(header, tasks=_assembled(rows, grouped))


def ledger_header(session: Session) -> StoredLedger | None:
    """The current ledger's title, year and sections, without its tasks; None before
    the first import."""
    run = latest_import(session)
    if run is None:
        return None
    sections = tuple(
        Section(no=s.no, numeral=s.numeral, title=s.title)
        for s in session.exec(select(SectionRow).order_by(col(SectionRow.no)))
    )
    return StoredLedger(run.title, run.year, run.source, run.at, sections, ())


# a batch of ``task_batches`` holds about this many task × unit rows (after its first)
BATCH_ROWS = 10_000


def task_batches(session: Session, size: int = 1000) -> Iterator[tuple[StoredTask, ...]]:
    """The ledger's active tasks in order, at most ``size`` at a time (through the index
    of the active task numbers): a command can print the first before it reads the last.
    The first batch is small, the next as many tasks as come to ``BATCH_ROWS`` rows at
    the units a task had so far: a ledger of 100 units a task prints as soon as one of
    a few units a task, and holds no more."""
    after: int | None = None
    take, tasks, rows_read = min(size, 50), 0, 0
    while True:
        query = select(TaskRow).where(col(TaskRow.removed_at).is_(None))
        if after is not None:
            query = query.where(col(TaskRow.no) > after)
        rows = list(session.exec(query.order_by(col(TaskRow.no)).limit(take)))
        if not rows:
            return
        batch = stored_tasks(session, rows)
        yield batch
        after = rows[-1].no
        tasks += len(batch)
        rows_read += sum(len(task.units) + len(task.members) for task in batch)
        take = max(1, min(size, BATCH_ROWS * tasks // max(rows_read, 1)))


def stored_tasks(session: Session, rows: Sequence[TaskRow]) -> tuple[StoredTask, ...]:
    """Some tasks of the ledger with their units, in the order of ``rows``."""
    units = units_by_task(session, [row.id for row in rows if row.id is not None])
    return _assembled(
        rows, {task_id: [_stored_unit(unit) for unit in found] for task_id, found in units.items()}
    )


def tasks_by_id(session: Session, ids: Sequence[int]) -> dict[int, StoredTask]:
    """Some tasks with their units, by id, read as plain rows (as ``load_ledger``: no
    ORM object for each of a wide task's hundred units)."""
    if not ids:
        return {}
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    rows = connection.execute(
        sa_select(*(tasks.c[name] for name in TASK_COLUMNS)).where(tasks.c.id.in_(ids))
    ).all()
    grouped = _stored_units(
        connection.execute(
            sa_select(*(units.c[name] for name in UNIT_COLUMNS)).where(units.c.task_id.in_(ids))
        )
    )
    return {stored.id: stored for stored in _assembled(rows, grouped)}


# (position, stored part) of each unit of a task
_Parts = Mapping[int, Sequence[tuple[int, StoredUnit]]]


def _stored_units(rows: Iterable[Any]) -> _Parts:
    """The stored parts of plain rows of ``UNIT_COLUMNS``, by task id: unpacked, not read
    by name (~3.5 µs a row, two thirds of reading 100 tasks of 100 units), and a unit's
    reference made once for the rows that name it in one role."""
    refs: dict[tuple[str, str, str, str], UnitRef] = {}
    grouped: dict[int, list[tuple[int, StoredUnit]]] = defaultdict(list)
    for task_id, unit, role, kind, raw, position, via, done_at, note, reported_at, due in rows:
        ref = refs.get((unit, role, kind, raw))
        if ref is None:
            ref = refs[(unit, role, kind, raw)] = UnitRef(
                name=unit, role=_ROLES[role], kind=_UNIT_KINDS[kind], raw=raw
            )
        part = StoredUnit(ref, done_at, note, via, reported_at, due)
        grouped[task_id].append((position, part))
    return grouped


def _assembled(rows: Sequence[TaskRow | Row[Any]], units: _Parts) -> tuple[StoredTask, ...]:
    """Tasks (ORM objects or plain rows of ``TASK_COLUMNS``) with their stored parts."""
    tasks = []
    for row in rows:
        assert row.id is not None
        stored = [part for _, part in sorted(units[row.id], key=lambda found: found[0])]
        listed = tuple(unit for unit in stored if unit.via is None)
        tasks.append(
            StoredTask(
                id=row.id,
                task=_task_with(row, tuple(unit.ref for unit in listed)),
                status=row.status,
                done_at=row.done_at,
                units=listed,
                members=tuple(unit for unit in stored if unit.via is not None),
            )
        )
    return tuple(tasks)


def _stored_unit(row: TaskUnitRow) -> tuple[int, StoredUnit]:
    part = StoredUnit(
        unit_ref_of(row), row.done_at, row.done_note, row.via, row.reported_at, row.due
    )
    return row.position, part


def ledger_facts(ledger: StoredLedger) -> dict[int, TaskFacts]:
    """What messages say about each task of the ledger, by task id."""
    sections = {s.no: f"{s.numeral}、{s.title}" for s in ledger.sections}
    return {stored.id: _facts_of(stored.task, sections) for stored in ledger.tasks}


def _facts_of(task: Task, sections: Mapping[int, str]) -> TaskFacts:
    deadline = task.deadline
    return TaskFacts(
        no=task.no,
        text=task.text,
        section=sections.get(task.section_no, ""),
        deadline=deadline.raw,
        due=deadline.due,
        start=deadline.start,
        action=deadline.action,
        kind=deadline.kind.value,
        units=tuple((unit.name, unit.role.value) for unit in task.units),
    )


def ledger_years(session: Session) -> set[int]:
    """The years the current ledger touches: its own and those of its dates (aggregates)."""
    run = latest_import(session)
    if run is None:
        return set()
    active = col(TaskRow.removed_at).is_(None)
    first_start, last_start, first_due, last_due = session.exec(
        select(
            func.min(TaskRow.deadline_start),
            func.max(TaskRow.deadline_start),
            func.min(TaskRow.deadline_due),
            func.max(TaskRow.deadline_due),
        ).where(active)
    ).one()
    days = [d for d in (first_start, last_start, first_due, last_due) if d is not None]
    years = [run.year, *(as_date(day).year for day in days)]
    return set(range(min(years), max(years) + 1))


def as_date(value: dt.date | str) -> dt.date:
    # SQLite's MIN/MAX over a DATE column come back as text
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def units_listed(session: Session, names: set[str]) -> bool:
    """Whether an active task of the ledger lists one of these units."""
    query = (
        select(TaskUnitRow.id)
        .join(TaskRow, col(TaskRow.id) == col(TaskUnitRow.task_id))
        .where(
            col(TaskUnitRow.unit).in_(sorted(names)),
            col(TaskUnitRow.via).is_(None),
            col(TaskRow.removed_at).is_(None),
        )
        .limit(1)
    )
    return session.exec(query).first() is not None
