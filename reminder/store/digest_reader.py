"""What a supervisor's digest shows, read from the store whatever the ledger's size.

The digest (``reminder.digest``) is built from a ledger in memory, which `simulate` and
`check` hold anyway. For the daemon and `digest --print`, a ledger of 10⁶ task × unit
rows would not fit that way, so a ``DigestReader`` gives it the same inputs, cut down:
the tasks the digest lists (the first ``LISTED`` overdue, due soon and done since), and
``DigestCounts``: the lights counted by section, each unit's part tallied, the first
tasks of the first escalated units. Both follow one rule; the tests build every digest
of the seed both ways and compare them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from reminder.contacts import Supervisor
from reminder.ledger.model import names_section
from reminder.records import (
    DigestCounts,
    DigestInputs,
    Escalation,
    Progress,
    Reminded,
    StoredTask,
    UnitTally,
    escalated_units,
)
from reminder.rules import HORIZON_DAYS, LISTED, Rules
from reminder.store.lights import Tallies, by_policy, counts_down, task_light, unit_tallies
from reminder.store.models import EventRow, TaskRow, TaskUnitRow
from reminder.store.overview import aware, undelivered
from reminder.store.tasks import ledger_header, tasks_by_id

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
# tasks whose units are read at a time, when the escalated units' tasks are listed
_CHUNK = 1000
# a unit's 催办次数, as the digest counts it (none before its first reminder)
_TOLD = case((_U.c.last_reminded_at.is_(None), 0), else_=_U.c.reminded)


class DigestReader:
    """The digests of one day, read in one session (``open``: None before an import)."""

    def __init__(self, session: Session, planning: Rules, day: dt.date) -> None:
        self.session = session
        self.planning = planning
        self.day = day
        self.light = task_light(counts_down(session, planning), day)
        self.late = and_(  # a unit's part, late today (as the digest's ``_open_units``)
            _U.c.done_at.is_(None),
            _U.c.reported_at.is_(None),
            or_(_U.c.due.is_(None), _U.c.due < day),
        )
        self.escalates = by_policy(session, planning, self._late_enough)
        # red, its date said too: the tasks' index on due dates finds the first in order
        self._red = and_(self.light == "red", _T.c.deadline_due < day)
        header = ledger_header(session)
        assert header is not None  # ``open`` says
        self.header = header  # the ledger's title, year and sections: the same every digest
        self.sections = header.sections
        self.undelivered = undelivered(session)  # the same in every digest of the day
        self._tallies: Tallies | None = None
        self._tasks: dict[int, StoredTask] = {}  # the listed tasks read so far

    @classmethod
    def open(cls, session: Session, planning: Rules, day: dt.date) -> DigestReader | None:
        return cls(session, planning, day) if ledger_header(session) is not None else None

    def _late_enough(self, policy: Any, table: Any = _T) -> Any:
        """A SQL condition: overdue by the policy's ``escalate_after`` working days."""
        overdue = policy.overdue
        if not overdue.escalate:
            return literal(False)
        calendar, day = self.planning.calendar, self.day
        due = day - dt.timedelta(days=1)
        for _ in range(3660):  # the latest due date that is late enough
            if calendar.working_days_between(due, day) >= overdue.escalate_after:
                return table.c.deadline_due <= due
            due -= dt.timedelta(days=1)
        return literal(False)

    def inputs(self, supervisor: Supervisor | None, since: dt.datetime) -> DigestInputs:
        """What ``build_digest`` needs for one supervisor (None: the whole ledger)."""
        scope = self._scope(supervisor)
        lights, new_overdue = self._lights(scope, since)
        done = and_(scope, _T.c.status == "done", _T.c.done_at > since)
        listed = {
            "overdue": sum(counts.get("red", 0) for counts in lights.values()),
            "upcoming": sum(counts.get("yellow", 0) for counts in lights.values()),
            "done": int(self.session.execute(select(func.count()).where(done)).scalar() or 0),
        }
        red, yellow = self._first(scope, "red"), self._first(scope, "yellow")
        ids = [row.id for row in [*red, *yellow, *self._done(done)] if row.id is not None]
        tasks = self._listed(ids)
        tallies = self._scoped(supervisor)
        counts = DigestCounts(
            lights=lights,
            new_overdue=new_overdue,
            listed=listed,
            tallies=tallies,
            escalated=tuple(self._escalations(scope, tallies)),
            names=self._names(supervisor, scope),
        )
        ledger = replace(self.header, tasks=tasks)
        ids = [row.id for row in red if row.id is not None]
        found, counted = self.undelivered
        return DigestInputs(
            ledger, self._reminded(ids), self._progress(ids), found, counted, counts
        )

    def _scope(self, supervisor: Supervisor | None) -> Any:
        """A SQL condition: the active tasks a supervisor watches (as ``digest._scope``)."""
        terms = [_T.c.removed_at.is_(None)]
        if supervisor is not None and supervisor.sections:
            terms.append(_T.c.section_no.in_(self._watched_sections(supervisor)))
        if supervisor is not None and supervisor.units:
            naming = select(_U.c.task_id).where(_U.c.unit.in_(supervisor.units))
            terms.append(_T.c.id.in_(naming))
        return and_(*terms)

    def _watched_sections(self, supervisor: Supervisor) -> list[int]:
        return [
            s.no
            for s in self.sections
            if any(names_section(item, s.no, s.numeral, s.title) for item in supervisor.sections)
        ]

    def _lights(self, scope: Any, since: dt.datetime) -> tuple[dict[int, dict[str, int]], int]:
        """Tasks by section and light, and how many of the red fell due since the last
        digest (今日新增逾期)."""
        since_day = since.astimezone(self.planning.zone).date()
        light = self.light.label("light")
        new = func.sum(case((and_(light == "red", _T.c.deadline_due >= since_day), 1), else_=0))
        query = (
            select(_T.c.section_no, light, func.count(), new)
            .where(scope)
            .group_by(_T.c.section_no, light)
        )
        lights: dict[int, dict[str, int]] = defaultdict(dict)
        new_overdue = 0
        for section_no, name, count, fresh in self.session.execute(query):
            lights[int(section_no)][str(name)] = int(count)
            new_overdue += int(fresh or 0)
        return dict(lights), new_overdue

    def _first(self, scope: Any, light: str) -> list[TaskRow]:
        """The first ``LISTED`` tasks of a light, the soonest due first."""
        # the light's dates too: the tasks' index on them finds the first in order
        dates = (
            _T.c.deadline_due < self.day
            if light == "red"
            else _T.c.deadline_due.between(self.day, self.day + dt.timedelta(days=HORIZON_DAYS))
        )
        query = (
            select_rows(TaskRow)
            .where(scope, self.light == light, dates)
            .order_by(col(TaskRow.deadline_due), col(TaskRow.no))
            .limit(LISTED)
        )
        return list(self.session.exec(query))

    def _done(self, done: Any) -> list[TaskRow]:
        query = select_rows(TaskRow).where(done).order_by(col(TaskRow.no)).limit(LISTED)
        return list(self.session.exec(query))

    def _listed(self, ids: Sequence[int]) -> tuple[StoredTask, ...]:
        """The tasks of these ids with their units, in the ledger's order (each read once
        for the day's digests)."""
        self._tasks |= tasks_by_id(self.session, [i for i in ids if i not in self._tasks])
        return tuple(sorted((self._tasks[i] for i in ids), key=lambda t: t.task.no))

    def tallies(self) -> Tallies:
        """Every unit's part in the tasks of each section, shared by the day's digests."""
        if self._tallies is None:
            self._tallies = unit_tallies(self.session, self.planning, self.day, self._late_enough)
        return self._tallies

    def _scoped(self, supervisor: Supervisor | None) -> tuple[UnitTally, ...]:
        """The tallies of the units a supervisor watches, in its sections, itself left
        out (a watched unit's tasks are in its scope: they name it)."""
        sections = (
            set(self._watched_sections(supervisor)) if supervisor and supervisor.sections else None
        )
        watched = set(supervisor.units) if supervisor and supervisor.units else None
        summed: dict[tuple[str, str], list[Any]] = {}
        for (no, unit, role), (red, yellow, escalated, first) in self.tallies().items():
            if sections is not None and no not in sections:
                continue
            if (watched is not None and unit not in watched) or (
                supervisor and unit == supervisor.name
            ):
                continue
            found = summed.setdefault((unit, role), [0, 0, 0, None])
            found[0] += red
            found[1] += yellow
            found[2] += escalated
            if first is not None and (found[3] is None or first < found[3]):
                found[3] = first
        return tuple(
            UnitTally(unit, role, *values) for (unit, role), values in sorted(summed.items())
        )

    def _names(self, supervisor: Supervisor | None, scope: Any) -> tuple[str, ...]:
        """Every unit reminded of a task in scope."""
        if supervisor is None or not supervisor.units:
            sections = (
                set(self._watched_sections(supervisor))
                if supervisor and supervisor.sections
                else None
            )
            names = {
                unit
                for (no, unit, _), _ in self.tallies().items()
                if sections is None or no in sections
            }
            return tuple(sorted(names))
        query = (
            select(_U.c.unit)
            .distinct()
            .select_from(_U.join(_T, _T.c.id == _U.c.task_id))
            .where(scope, _U.c.is_target.is_(True))
        )
        return tuple(sorted(str(name) for name in self.session.execute(query).scalars()))

    def _escalations(self, scope: Any, tallies: Sequence[UnitTally]) -> list[Escalation]:
        """The first ``LISTED`` tasks of the first ``LISTED`` escalated units, the
        longest overdue first: the tasks are read in that order, a chunk at a time, and
        the parts of the units still short of theirs in each chunk, until none is."""
        wanted = {
            unit: min(count, LISTED) for unit, _, count, _ in escalated_units(tallies)[:LISTED]
        }
        found: dict[str, list[Escalation]] = {unit: [] for unit in wanted}
        tasks = self.session.execute(
            select(_T.c.id, _T.c.no, _T.c.text, _T.c.deadline_due)
            .where(scope, self._red, self.escalates)
            .order_by(_T.c.deadline_due, _T.c.no)
            .execution_options(yield_per=_CHUNK)
        )
        for chunk in tasks.partitions() if wanted else ():
            short = [unit for unit, count in wanted.items() if len(found[unit]) < count]
            if not short:
                break
            parts = self._late_parts([int(row[0]) for row in chunk], short)
            for task_id, no, text, due in chunk:
                for unit, role, reminded in parts.get(int(task_id), ()):
                    if len(found[unit]) < wanted[unit]:
                        found[unit].append(
                            Escalation(unit, int(no), str(text), role, due, reminded)
                        )
        tasks.close()
        return [escalation for listed in found.values() for escalation in listed]

    def _late_parts(
        self, task_ids: list[int], units: list[str]
    ) -> dict[int, list[tuple[str, str, int]]]:
        """(unit, role, 催办次数) of the late parts of some tasks, of some units."""
        query = select(_U.c.task_id, _U.c.unit, _U.c.role, _TOLD).where(
            _U.c.task_id.in_(task_ids), _U.c.unit.in_(units), _U.c.is_target.is_(True), self.late
        )
        found: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        for task_id, unit, role, reminded in self.session.execute(query):
            found[int(task_id)].append((str(unit), str(role), int(reminded)))
        return found

    def _reminded(self, task_ids: list[int]) -> dict[tuple[int, str], Reminded]:
        query = select(_U.c.task_id, _U.c.unit, _U.c.reminded, _U.c.last_reminded_at).where(
            _U.c.task_id.in_(task_ids), _U.c.last_reminded_at.is_not(None)
        )
        return {
            (int(task_id), str(unit)): Reminded(int(count), aware(last))
            for task_id, unit, count, last in self.session.execute(query)
        }

    def _progress(self, task_ids: list[int]) -> dict[int, Progress]:
        progress: dict[int, Progress] = {}
        for event in self.session.exec(
            select_rows(EventRow)
            .where(col(EventRow.kind) == "progress", col(EventRow.task_id).in_(task_ids))
            .order_by(col(EventRow.at))
        ):
            if event.task_id is not None:
                progress[event.task_id] = Progress(event.unit or "", event.note, event.at)
        return progress
