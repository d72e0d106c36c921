"""Putting a ledger into the store in one transaction, keeping what was already done.

Re-importing a revised ledger matches each new task to a stored one:

1. same number and same text: the same task;
2. among the rest, same text under another number: renumbered;
3. among the rest, same number and similar text (difflib ratio ≥ 0.5): edited;
4. what is left is added (new) or removed (stored, no longer in the ledger).

A matched task keeps its status, completion and each remaining unit's completion;
its text, section, deadline and units are updated and the differences reported.
Removed tasks are kept with ``removed_at`` so that their history stays readable.

All of it is set-based and bounded in memory (a province's ledger has 10,000 tasks and
150,000 task × unit rows; the bench goes to a million): the stored tasks are read with
one statement and matched by keys in memory; their units are read, compared, replanned
with ``targets.replan_tasks`` and written a batch of tasks at a time (``batches``), with
executemany statements of a few thousand rows. ``plan_import`` finds what changes without
writing (a dry run), ``apply_import`` writes it.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlmodel import Session

from reminder.ledger.model import Ledger, Task
from reminder.rules import Rules
from reminder.store.batches import UnitWriter, batches
from reminder.store.bulk import bulk
from reminder.store.db import execute_chunks
from reminder.store.models import EventRow, ImportRun, SectionRow, TaskRow, TaskUnitRow
from reminder.store.targets import (
    LedgerContext,
    PlannedUnit,
    UnitChanges,
    active_tasks,
    listed_units,
    remember_planning,
    replan_tasks,
    units_of,
)
from reminder.store.tasks import deadline_of

SIMILAR_TEXT = 0.5
_TASKS = TaskRow.__table__  # type: ignore[attr-defined]
_UNITS = TaskUnitRow.__table__  # type: ignore[attr-defined]
_CHUNK = 5000  # ids in one IN list (SQLite allows 32,766 variables)


@dataclass(slots=True)
class Change:
    no: int
    what: list[str]


@dataclass(slots=True)
class ImportReport:
    ledger: Ledger
    first: bool  # the store had no tasks before
    added: list[Task] = field(default_factory=list)
    removed: list[tuple[int, str]] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    kept_done: int = 0  # tasks whose done status survived the re-import
    sha256: str = ""
    stored: int = 0  # active tasks in the store before


Pair = tuple[Any, Task]  # a stored task row (Core) and the ledger's task it became


def _match(old: list[Any], new: list[Task]) -> tuple[list[Pair], list[Any], list[Task]]:
    """Steps 1–3 of the module docstring; returns pairs, unmatched old, unmatched new.

    Each step looks a new task up by key (numbers are unique among active tasks, and a
    text is taken by the first stored task that has it, in number order)."""
    pairs: list[Pair] = []
    taken: set[int] = set()  # ids of stored rows matched
    by_no = {row.no: row for row in old}
    new_left: list[Task] = []
    for task in new:
        row = by_no.get(task.no)
        if row is not None and row.id not in taken and row.text == task.text:
            pairs.append((row, task))
            taken.add(row.id)
        else:
            new_left.append(task)
    by_text: dict[str, list[Any]] = {}
    for row in old:
        if row.id not in taken:
            by_text.setdefault(row.text, []).append(row)
    rest: list[Task] = []
    for task in new_left:
        same = by_text.get(task.text)
        while same and same[0].id in taken:
            same.pop(0)
        if same:
            row = same.pop(0)
            pairs.append((row, task))
            taken.add(row.id)
        else:
            rest.append(task)
    added: list[Task] = []
    for task in rest:
        row = by_no.get(task.no)
        if (
            row is not None
            and row.id not in taken
            and difflib.SequenceMatcher(None, row.text, task.text).ratio() >= SIMILAR_TEXT
        ):
            pairs.append((row, task))
            taken.add(row.id)
        else:
            added.append(task)
    return pairs, [row for row in old if row.id not in taken], added


def _task_values(task: Task) -> dict[str, Any]:
    """What the ledger says about a task, as its row's columns (status is left alone)."""
    return {
        "no": task.no,
        "section_no": task.section_no,
        "text": task.text,
        "deadline_raw": task.deadline.raw,
        "deadline_kind": task.deadline.kind.value,
        "deadline_start": task.deadline.start,
        "deadline_due": task.deadline.due,
        "milestones": [day.isoformat() for day in task.deadline.milestones],
        "recurrence": task.deadline.recurrence,
        "action": task.deadline.action,
        "remarks": task.remarks,
        "source_line": task.line,
    }


def _differences(row: Any, units: list[tuple[str, str]], task: Task) -> list[str]:
    """What changed in a task; ``units``: its listed units as stored, (name, role)."""
    what: list[str] = []
    if row.no != task.no:
        what.append(f"renumbered from {row.no}")
    if row.text != task.text:
        what.append("text changed")
    if row.section_no != task.section_no:
        what.append(f"moved from section {row.section_no} to {task.section_no}")
    if deadline_of(row) != task.deadline:
        what.append(f"deadline {row.deadline_raw!r} → {task.deadline.raw!r}")
    old_units = dict(units)
    new_units = {unit.name: unit.role.value for unit in task.units}
    what += [f"unit added: {name}" for name in new_units if name not in old_units]
    what += [f"unit removed: {name}" for name in old_units if name not in new_units]
    what += [
        f"{name} now {role}"
        for name, role in new_units.items()
        if name in old_units and old_units[name] != role
    ]
    if row.remarks != task.remarks:
        what.append("remarks changed")
    return what


def _match_units(
    task_id: int, rows: list[PlannedUnit], task: Task, changes: UnitChanges
) -> list[PlannedUnit]:
    """Listed units as the ledger now says; member rows are left to ``replan_tasks``.

    A unit that was a group's member and is now listed itself keeps its row (and so
    its completion and planning state). Returns the task's rows, as a flush would leave
    them: the kept ones by id, then the new ones.
    """
    listed = {row.unit: row for row in rows if row.via is None}
    members = {row.unit: row for row in rows if row.via is not None}
    wanted = {ref.name for ref in task.units}
    gone = {row.id for name, row in listed.items() if name not in wanted}
    changes.listed_deletes += [row_id for row_id in gone if row_id is not None]
    kept = [row for row in rows if row.id not in gone]
    for position, ref in enumerate(task.units):
        row = listed.get(ref.name) or members.get(ref.name)
        if row is None:
            new = _new_unit(task_id, position, task)
            changes.listed_inserts.append(new)
            kept.append(new)
            continue
        row.role, row.kind, row.raw = ref.role.value, ref.kind.value, ref.raw
        row.position, row.via = position, None
    return kept


def _new_unit(task_id: int, position: int, task: Task) -> PlannedUnit:
    unit = task.units[position]
    return PlannedUnit(
        None, task_id, unit.name, unit.role.value, unit.kind.value, unit.raw, position
    )


def _retire(
    connection: Connection, pairs: Sequence[Pair], removed: Sequence[Any], now: dt.datetime
) -> None:
    """Park matched rows on temporary numbers (numbers stay unique among active tasks
    while they move) and mark removed tasks, with no reminder left for their units."""
    by_id = update(_TASKS).where(_TASKS.c.id == bindparam("b_id"))
    parked = ({"b_id": row.id, "no": -row.id} for row, _ in pairs)
    execute_chunks(connection, by_id.values(no=bindparam("no")), parked)
    execute_chunks(
        connection,
        by_id.values(removed_at=bindparam("removed_at")),
        ({"b_id": row.id, "removed_at": now} for row in removed),
    )
    ids = [row.id for row in removed]
    for start in range(0, len(ids), _CHUNK):
        connection.execute(
            update(_UNITS)
            .where(_UNITS.c.task_id.in_(ids[start : start + _CHUNK]), _UNITS.c.next_at.is_not(None))
            .values(next_at=None)
        )


_TASK_COLUMNS = (
    "no", "section_no", "text", "deadline_raw", "deadline_kind", "deadline_start",
    "deadline_due", "milestones", "recurrence", "action", "remarks", "source_line",
)  # fmt: skip


def _update_matched(connection: Connection, pairs: Sequence[Pair], now: dt.datetime) -> None:
    names = [*_TASK_COLUMNS, "updated_at"]
    execute_chunks(
        connection,
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("b_id"))
        .values({name: bindparam(name) for name in names}),
        (_task_values(task) | {"updated_at": now, "b_id": row.id} for row, task in pairs),
    )


def _insert_added(connection: Connection, added: Sequence[Task], now: dt.datetime) -> list[int]:
    """Insert the new tasks; returns their ids, in order (found by number: numbers are
    unique among active tasks; RETURNING in a defined order would insert row by row)."""
    if not added:
        return []
    names = [*_TASK_COLUMNS, "status", "created_at", "updated_at"]
    rows = (
        _task_values(task) | {"status": "open", "created_at": now, "updated_at": now}
        for task in added
    )
    statement = insert(_TASKS).values({name: bindparam(name) for name in names})
    execute_chunks(connection, statement, rows)
    active = select(_TASKS.c.no, _TASKS.c.id).where(_TASKS.c.removed_at.is_(None))
    ids = {int(no): int(task_id) for no, task_id in connection.execute(active)}
    return [ids[task.no] for task in added]


def _record_run(connection: Connection, report: ImportReport, now: dt.datetime, actor: str) -> None:
    """The ledger's sections, the import run and its journal entry."""
    ledger = report.ledger
    connection.execute(delete(SectionRow.__table__))  # type: ignore[attr-defined]
    connection.execute(
        insert(SectionRow.__table__),  # type: ignore[attr-defined]
        [{"no": s.no, "numeral": s.numeral, "title": s.title} for s in ledger.sections],
    )
    counts = {
        "tasks": len(ledger.tasks),
        "added": len(report.added),
        "removed": len(report.removed),
        "changed": len(report.changed),
    }
    connection.execute(
        insert(ImportRun.__table__),  # type: ignore[attr-defined]
        [
            {
                "at": now,
                "source": ledger.source,
                "format": ledger.format,
                "sha256": report.sha256,
                "title": ledger.title,
                "year": ledger.year,
            }
            | counts
        ],
    )
    note = (
        f"{ledger.source}: {counts['tasks']} tasks, {counts['added']} added, "
        f"{counts['removed']} removed, {counts['changed']} changed"
    )
    connection.execute(
        insert(EventRow.__table__),  # type: ignore[attr-defined]
        [
            {
                "at": now,
                "kind": "import",
                "note": note,
                "actor": actor,
                "origin": "cli",
                "unit": None,
                "task_id": None,
                "attachment": "",
                "due": None,
            }
        ],
    )


def plan_import(session: Session, ledger: Ledger, sha256: str) -> tuple[ImportReport, _Plan]:
    """What importing ``ledger`` would change (no writes): the report, and the plan that
    ``apply_import`` carries out."""
    session.flush()
    connection = session.connection()
    old = active_tasks(connection)
    pairs, removed, added = _match(old, list(ledger.tasks))
    report = _report(ledger, sha256, old, pairs, removed, added)
    report.changed = _changed(connection, pairs)
    return report, _Plan(pairs, removed, added)


def compare(ledger: Ledger, sha256: str) -> ImportReport:
    """The report of importing ``ledger`` into an empty store: what a dry run prints
    when there is no store yet."""
    return _report(ledger, sha256, [], [], [], list(ledger.tasks))


def _report(
    ledger: Ledger,
    sha256: str,
    old: list[Any],
    pairs: list[Pair],
    removed: list[Any],
    added: list[Task],
) -> ImportReport:
    """The report but its changed tasks (``_changed``)."""
    report = ImportReport(ledger=ledger, first=not old, sha256=sha256, stored=len(old))
    report.removed = [(row.no, row.text) for row in removed]
    report.added = list(added)
    report.kept_done = sum(1 for row, _task in pairs if row.status == "done")
    return report


def _changed(connection: Connection, pairs: list[Pair]) -> list[Change]:
    """The differences of each matched task, by number; the stored units read a batch
    of tasks at a time."""
    changed: list[Change] = []
    ordered = sorted(pairs, key=lambda pair: pair[1].no)
    for batch in batches(ordered, lambda pair: len(pair[1].units)):
        units = listed_units(connection, [row.id for row, _ in batch])
        for row, task in batch:
            what = _differences(row, units.get(row.id, []), task)
            if what:
                changed.append(Change(task.no, what))
    return changed


@dataclass(slots=True)
class _Plan:
    pairs: list[Pair]
    removed: list[Any]
    added: list[Task]


@dataclass(slots=True)
class _TaskState:
    """A task as ``replan_tasks`` reads it, with what the ledger now says."""

    id: int
    status: str
    no: int
    section_no: int
    text: str
    deadline_raw: str
    deadline_kind: str
    deadline_start: dt.date | None
    deadline_due: dt.date | None
    milestones: list[str]
    recurrence: str | None
    action: str | None
    remarks: str
    source_line: int
    removed_at: dt.datetime | None = None
    task: Task | None = None  # the ledger's task: what ``task_of`` would read back


# a task to write: its id, its stored status (None: added by this import), the ledger's task
_Work = tuple[int, str | None, Task]


def apply_import(
    session: Session,
    report: ImportReport,
    plan: _Plan,
    now: dt.datetime,
    actor: str,
    planning: Rules | None = None,
) -> None:
    """Write what ``plan_import`` found, in the caller's transaction; with ``planning``,
    replan every task in the same pass (what ``replan_all`` does after an import)."""
    connection = session.connection()
    with bulk(connection, sum(len(task.units) for task in plan.added)):
        _apply(connection, plan, report, planning, now)
    _record_run(connection, report, now, actor)
    if planning is not None:
        remember_planning(session, planning)
    session.expire_all()  # ORM rows loaded before would be stale


def _apply(
    connection: Connection,
    plan: _Plan,
    report: ImportReport,
    planning: Rules | None,
    now: dt.datetime,
) -> None:
    _retire(connection, plan.pairs, plan.removed, now)
    _update_matched(connection, plan.pairs, now)
    work: list[_Work] = [(row.id, row.status, task) for row, task in plan.pairs]
    added = _insert_added(connection, plan.added, now)
    work += [(task_id, None, task) for task_id, task in zip(added, plan.added, strict=True)]
    ledger = report.ledger
    context = LedgerContext(ledger.year, {s.no: s for s in ledger.sections})
    writer = UnitWriter(connection)
    # in the order of ``work``: the order of the listed units' new rows (see batches.py)
    for batch in batches(work, lambda item: len(item[2].units)):
        writer.write(*_batch_changes(connection, batch, context, planning))
    writer.finish()


def _batch_changes(
    connection: Connection,
    batch: Sequence[_Work],
    context: LedgerContext,
    planning: Rules | None,
) -> tuple[UnitChanges, dict[int, int]]:
    """The task_unit changes of one batch of tasks (their stored units read here), and
    the number of each of its tasks by id."""
    stored = units_of(connection, [task_id for task_id, status, _ in batch if status is not None])
    changes = UnitChanges()
    tasks: list[_TaskState] = []
    units: dict[int, list[PlannedUnit]] = {}
    for task_id, status, task in batch:
        if status is None:
            units[task_id] = [_new_unit(task_id, i, task) for i in range(len(task.units))]
            changes.listed_inserts += units[task_id]
        else:
            units[task_id] = _match_units(task_id, stored.get(task_id, []), task, changes)
        tasks.append(_TaskState(task_id, status or "open", **_task_values(task), task=task))
    if planning is not None:
        tasks.sort(key=lambda state: state.no)
        replan_tasks(planning, context, tasks, units, changes)
    else:  # the caller replans (``replan_all``); the listed units' changes are written
        for rows in units.values():
            changes.collect(rows)
    return changes, {state.id: state.no for state in tasks}


def import_ledger(
    session: Session,
    ledger: Ledger,
    sha256: str,
    now: dt.datetime,
    actor: str,
    planning: Rules | None = None,
) -> ImportReport:
    """Apply ``ledger`` (whose file hashes to ``sha256``) inside the caller's transaction;
    with ``planning``, replanned too (else the caller runs ``replan_all``).

    Set-based, a batch of tasks at a time (see the module doc)."""
    report, plan = plan_import(session, ledger, sha256)
    apply_import(session, report, plan, now, actor, planning)
    return report
