"""What a supervisor's digest shows, read from the store whatever the ledger's size.

The digest (``reminder.digest``) is built from a ledger in memory, which `simulate` and
`check` hold anyway. For the daemon and `digest --print`, a ledger of 10⁶ task × unit
rows would not fit that way, so a ``DigestReader`` gives it the same inputs, cut down:
the tasks the digest lists (the first ``LISTED`` overdue, due soon and done since), and
``DigestCounts``: the lights counted by section, each unit's part tallied, the first
tasks of the first escalated units. Both follow one rule; the tests build every digest
of the seed both ways and compare them.

What does not depend on the supervisor is read once for the day's digests: the tasks
counted by section, due date and light (``_day_groups``), every unit's tally
(``lights.unit_tallies``), the listed tasks already loaded.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, or_, select, tuple_
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
from reminder.store.tasks import as_date, ledger_header, tasks_by_id

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
# the units a task names, in a supervisor's scope (apart from the rows a query reads)
_NAMING = _U.alias("naming")
# tasks read at a time when the escalated units' tasks are listed: a unit's quota at
# most, so that a unit with a part in every task meets it in one batch, and few of the
# parts read are past the quotas (batches of 500 tasks read four times the parts listed);
# more where the parts of the units still short are sparse (a wide ledger: ten batches
# of 100 became two)
_BATCH = 100
_MAX_BATCH = 2000
# tasks where none of the units still short may have a part that a batch reads through
# rather than end before them (PostgreSQL read the other sections' 29,000 tasks of one
# due date to find a section's next 100; a batch each 300 tasks cost more than that)
_GAP = 5000
# a unit's 催办次数, as the digest counts it (none before its first reminder)
_TOLD = case((_U.c.last_reminded_at.is_(None), 0), else_=_U.c.reminded)
# where a task stands in the order of the overdue lists: (due date, number)
_Place = tuple[dt.date, int]
# a group of overdue tasks of one section and due date: (due date, first and last number)
_Span = tuple[dt.date, int, int]


@dataclass(frozen=True, slots=True)
class _Group:
    """The active tasks of one section, due date and light."""

    section: int
    due: dt.date | None
    light: str
    count: int
    first: int  # the lowest task number
    last: int  # the highest
    starts: tuple[dt.date | None, dt.date | None]  # the earliest and latest start dates


class DigestReader:
    """The digests of one day, read in one session (``open``: None before an import)."""

    def __init__(self, session: Session, planning: Rules, day: dt.date) -> None:
        self.session = session
        self.planning = planning
        self.day = day
        counted = counts_down(session, planning)
        self.light = task_light(counted, day)
        self.late = and_(  # a unit's part, late today (as the digest's ``_open_units``)
            _U.c.done_at.is_(None),
            _U.c.reported_at.is_(None),
            or_(_U.c.due.is_(None), _U.c.due < day),
        )
        self.escalates = by_policy(session, planning, self._late_enough)
        # red and yellow (``light``) said without its CASE: PostgreSQL then expects as many
        # rows as there are and reads the first in order through the index on due dates
        # (for ``CASE … = 'red'`` it expected a few, read them all and sorted them)
        undone = and_(_T.c.status != "done", counted)
        self._red = and_(undone, _T.c.deadline_due < day)
        soon = day + dt.timedelta(days=HORIZON_DAYS)
        self._yellow = and_(undone, _T.c.deadline_due.between(day, soon))
        header = ledger_header(session)
        assert header is not None  # ``open`` says
        self.header = header  # the ledger's title, year and sections: the same every digest
        self.sections = header.sections
        self.undelivered = undelivered(session)  # the same in every digest of the day
        self._tallies: Tallies | None = None
        self._all_groups: list[_Group] | None = None
        self._done_since: dict[dt.datetime, dict[int, int]] = {}
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
        lights, new_overdue, done = self._lights(supervisor, scope, since)
        listed = {
            "overdue": sum(counts.get("red", 0) for counts in lights.values()),
            "upcoming": sum(counts.get("yellow", 0) for counts in lights.values()),
            "done": done,
        }
        red = self._first(scope, "red")
        ids = [*red, *self._first(scope, "yellow"), *(self._done(scope, since) if done else ())]
        tallies = self._scoped(supervisor)
        counts = DigestCounts(
            lights=lights,
            new_overdue=new_overdue,
            listed=listed,
            tallies=tallies,
            escalated=tuple(self._escalations(supervisor, tallies)),
            names=self._names(supervisor),
        )
        ledger = replace(self.header, tasks=self._listed(ids))
        found, counted = self.undelivered
        return DigestInputs(
            ledger, self._reminded(red), self._progress(red), found, counted, counts
        )

    def _scope(self, supervisor: Supervisor | None, *, units: bool = True) -> Any:
        """A SQL condition: the active tasks a supervisor watches (as ``digest._scope``);
        without ``units``, of its sections only."""
        terms = [_T.c.removed_at.is_(None)]
        if supervisor is not None and supervisor.sections:
            terms.append(_T.c.section_no.in_(self._watched_sections(supervisor)))
        if units and supervisor is not None and supervisor.units:
            # a look-up in the (task, unit) index for each task, where ``id IN (the tasks
            # naming one)`` listed every such task first (SQLite: 60 ms a query at 10⁶ rows)
            naming = exists().where(
                _NAMING.c.task_id == _T.c.id, _NAMING.c.unit.in_(supervisor.units)
            )
            terms.append(naming)
        return and_(*terms)

    def _watched_sections(self, supervisor: Supervisor) -> list[int]:
        return [
            s.no
            for s in self.sections
            if any(names_section(item, s.no, s.numeral, s.title) for item in supervisor.sections)
        ]

    def _sections_of(self, supervisor: Supervisor | None) -> set[int] | None:
        """The sections a supervisor watches; None: all."""
        if supervisor is None or not supervisor.sections:
            return None
        return set(self._watched_sections(supervisor))

    def _lights(
        self, supervisor: Supervisor | None, scope: Any, since: dt.datetime
    ) -> tuple[dict[int, dict[str, int]], int, int]:
        """Tasks in scope by section and light, how many of the red fell due since the
        last digest (今日新增逾期), and how many were done since it. Of the whole ledger's
        counts, read once, unless the supervisor watches some units."""
        sections = self._sections_of(supervisor)
        if supervisor is not None and supervisor.units:
            groups = self._groups(scope)
        else:
            groups = [g for g in self._day_groups() if sections is None or g.section in sections]
        since_day = since.astimezone(self.planning.zone).date()
        lights: dict[int, dict[str, int]] = defaultdict(dict)
        new_overdue = 0
        for group in groups:
            counted = lights[group.section]
            counted[group.light] = counted.get(group.light, 0) + group.count
            if group.light == "red" and group.due is not None and group.due >= since_day:
                new_overdue += group.count
        if not any(group.light == "done" for group in groups):
            return dict(lights), new_overdue, 0  # none was done, since or before
        if supervisor is not None and supervisor.units:
            done = self._done_count(scope, since)
        else:  # of the whole ledger, once for the day's digests
            if since not in self._done_since:
                self._done_since[since] = self._done_count(self._scope(None), since)
            done = self._done_since[since]
        return (
            dict(lights),
            new_overdue,
            sum(n for no, n in done.items() if sections is None or no in sections),
        )

    def _done_count(self, scope: Any, since: dt.datetime) -> dict[int, int]:
        """The tasks in scope done since a moment, by section (a pass over the tasks: no
        index on their status)."""
        query = (
            select(_T.c.section_no, func.count())
            .where(scope, _T.c.status == "done", _T.c.done_at > since)
            .group_by(_T.c.section_no)
        )
        return {int(no): int(n) for no, n in self.session.execute(query)}

    def _groups(self, scope: Any) -> list[_Group]:
        """The tasks in scope by section, due date and light (one pass over them)."""
        light = self.light.label("light")
        query = (
            select(
                _T.c.section_no,
                _T.c.deadline_due,
                light,
                func.count(),
                func.min(_T.c.no),
                func.max(_T.c.no),
                func.min(_T.c.deadline_start),
                func.max(_T.c.deadline_start),
            )
            .where(scope)
            .group_by(_T.c.section_no, _T.c.deadline_due, light)
        )
        return [
            _Group(int(no), due, str(name), int(n), int(lo), int(hi), (start, end))
            for no, due, name, n, lo, hi, start, end in self.session.execute(query)
        ]

    def _day_groups(self) -> list[_Group]:
        """The whole ledger's tasks by section, due date and light, read once a day."""
        if self._all_groups is None:
            self._all_groups = self._groups(self._scope(None))
        return self._all_groups

    def years(self) -> set[int]:
        """The years the ledger touches: its own and those of its dates (``ledger_years``,
        from the day's counts rather than from aggregates of their own: the start dates
        have no index)."""
        days = [
            day
            for group in self._day_groups()
            for day in (group.due, *group.starts)
            if day is not None
        ]
        years = [self.header.year, *(as_date(day).year for day in days)]
        return set(range(min(years), max(years) + 1))

    def _first(self, scope: Any, light: str) -> list[int]:
        """The ids of the first ``LISTED`` tasks of a light, the soonest due first."""
        query = (
            select(_T.c.id)
            .where(scope, self._red if light == "red" else self._yellow)
            .order_by(_T.c.deadline_due, _T.c.no)
            .limit(LISTED)
        )
        return [int(task_id) for task_id in self.session.execute(query).scalars()]

    def _done(self, scope: Any, since: dt.datetime) -> list[int]:
        """The ids of the first ``LISTED`` tasks done since the digest before."""
        query = (
            select(_T.c.id)
            .where(scope, _T.c.status == "done", _T.c.done_at > since)
            .order_by(_T.c.no)
            .limit(LISTED)
        )
        return [int(task_id) for task_id in self.session.execute(query).scalars()]

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
        sections = self._sections_of(supervisor)
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

    def _names(self, supervisor: Supervisor | None) -> tuple[str, ...]:
        """Every unit reminded of a task in scope."""
        if supervisor is None or not supervisor.units:
            sections = self._sections_of(supervisor)
            names = {
                unit
                for (no, unit, _), _ in self.tallies().items()
                if sections is None or no in sections
            }
            return tuple(sorted(names))
        # the tasks naming a watched unit listed first (``IN``, not the scope's ``EXISTS``:
        # a join looked that up for every row, 1.2 s on SQLite at 10⁶ rows)
        naming = select(_U.c.task_id).where(_U.c.unit.in_(supervisor.units))
        query = (
            select(_U.c.unit)
            .distinct()
            .select_from(_U.join(_T, _T.c.id == _U.c.task_id))
            .where(
                self._scope(supervisor, units=False),
                _T.c.id.in_(naming),
                _U.c.is_target.is_(True),
            )
        )
        return tuple(sorted(str(name) for name in self.session.execute(query).scalars()))

    def _escalations(
        self, supervisor: Supervisor | None, tallies: Sequence[UnitTally]
    ) -> list[Escalation]:
        """The first ``LISTED`` tasks of the first ``LISTED`` escalated units, the
        longest overdue first:

        1. each unit's quota: its escalated parts (as tallied), at most ``LISTED``;
        2. from the first place where a unit still short of its quota may have a part
           to the end of the groups of tasks in a row where one of them may (``_Ahead``:
           the sections and due dates their tallies name), read the next escalated tasks
           where one of them has a late part (``_BATCH`` of them first, then as many as
           ``_next_size`` says), in the order of their due dates and numbers (through
           the index on due dates), then those parts;
        3. give each unit its parts until its quota is met; go on after the last task
           read (or the end of those groups), with the units still short, until none is
           or no group is left where one of them may have a part.

        The places skipped are what made it fast: the old scan of every escalated task
        in order, its units read a thousand tasks at a time, read 40,000 tasks of a 10⁶
        row ledger for the last units (those of the later sections).
        """
        wanted = {
            unit: min(count, LISTED) for unit, _, count, _ in escalated_units(tallies)[:LISTED]
        }
        found: dict[str, list[Escalation]] = {unit: [] for unit in wanted}
        ahead = self._ahead(list(wanted), self._sections_of(supervisor))
        # a part of a watched unit names it: its task is in scope, whatever the units
        scope = self._scope(supervisor, units=False)
        after: _Place | None = None
        size = _BATCH
        while short := [unit for unit, count in wanted.items() if len(found[unit]) < count]:
            span = ahead.span(short, after)
            if span is None:
                break
            after, end = span
            query = self._escalated_tasks(scope, short, after, end, size)
            tasks = self.session.execute(query).all()
            parts = self._late_parts([int(row[0]) for row in tasks], short)
            for task_id, no, text, due in tasks:
                for unit, role, reminded in parts.get(int(task_id), ()):
                    if len(found[unit]) < wanted[unit]:
                        found[unit].append(Escalation(unit, int(no), text, role, due, reminded))
            if len(tasks) < size:  # that span is read: on to the next
                after = end
                continue
            after = (tasks[-1][3], int(tasks[-1][1]))
            left = {unit: wanted[unit] - len(found[unit]) for unit in short}
            size = _next_size(size, parts.values(), {u: n for u, n in left.items() if n > 0})
        return [escalation for listed in found.values() for escalation in listed]

    def _ahead(self, units: list[str], sections: set[int] | None) -> _Ahead:
        """Where the escalated parts of these units may be: the groups of overdue tasks
        of the sections where each has some, from the first due date of those."""
        places = self._places()
        firsts: dict[str, dict[int, dt.date]] = defaultdict(dict)
        for (no, unit, _), (_, _, escalated, first) in self.tallies().items():
            if escalated and first is not None and (sections is None or no in sections):
                known = firsts[unit].get(no)
                firsts[unit][no] = first if known is None else min(known, first)
        spans = {
            unit: deque(
                sorted(
                    (due, first, last)
                    for no, since in firsts[unit].items()
                    for due, (first, last) in places[no].items()
                    if due >= since
                )
            )
            for unit in units
        }
        every = sorted(
            (due, lo, hi) for groups in places.values() for due, (lo, hi) in groups.items()
        )
        return _Ahead(spans, every)

    def _places(self) -> dict[int, dict[dt.date, tuple[int, int]]]:
        """The first and last numbers of the overdue tasks of each section and due date
        (from the day's counts of the whole ledger: whatever their ``since``)."""
        places: dict[int, dict[dt.date, tuple[int, int]]] = defaultdict(dict)
        for group in self._day_groups():
            if group.due is None or group.due >= self.day:
                continue
            first, last = places[group.section].get(group.due, (group.first, group.last))
            places[group.section][group.due] = (min(first, group.first), max(last, group.last))
        return places

    def _escalated_tasks(
        self, scope: Any, units: list[str], after: _Place, end: _Place, size: int
    ) -> Any:
        """The next ``size`` escalated tasks after a place, up to another, where one of
        these units' part is late, in order: (id, number, text, due date)."""
        late = exists().where(
            _U.c.task_id == _T.c.id, _U.c.unit.in_(units), _U.c.is_target.is_(True), self.late
        )
        return (
            select(_T.c.id, _T.c.no, _T.c.text, _T.c.deadline_due)
            .where(
                scope,
                self._red,
                self.escalates,
                tuple_(_T.c.deadline_due, _T.c.no) > after,
                tuple_(_T.c.deadline_due, _T.c.no) <= end,
                late,
            )
            .order_by(_T.c.deadline_due, _T.c.no)
            .limit(size)
        )

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


def _next_size(size: int, parts: Iterable[list[tuple[str, str, int]]], left: dict[str, int]) -> int:
    """How many tasks the next batch reads: as many as the unit that will meet its quota
    first needs at the rate its parts came in the last batch of ``size`` tasks (a part
    in every task for a unit that had none: the next section may be its), from
    ``_BATCH`` to ``_MAX_BATCH``: few parts are read past the quotas, in few batches
    where the parts left are few and far between."""
    seen: Counter[str] = Counter(unit for found in parts for unit, _, _ in found)
    needs = [count * size // seen[unit] if seen[unit] else count for unit, count in left.items()]
    return max(_BATCH, min([*needs, _MAX_BATCH]))


class _Ahead:
    """Where the escalated parts of some units may still be: for each, the groups of
    overdue tasks (due date, first and last number) it may have parts in, in order; and
    every group, to tell which follow one another in the order of the overdue lists."""

    def __init__(self, units: dict[str, deque[_Span]], spans: list[_Span]) -> None:
        self.units = units
        self.following = dict(itertools.pairwise(spans))
        self.holders: dict[_Span, list[str]] = defaultdict(list)  # who may have parts in it
        for unit, places in units.items():
            for place in places:
                self.holders[place].append(unit)

    def span(self, short: list[str], after: _Place | None) -> tuple[_Place, _Place] | None:
        """Where the next parts of these units may be: after a place (just before the
        first group one of them may have parts in, or ``after`` inside it) up to the end
        of that group and of those after it where one of them may have parts too, up to
        a gap of more than ``_GAP`` tasks where none may (a supervisor's sections: their
        tasks alone, not the others' of the same due date); None if no group is left.
        The groups read past are dropped."""
        start: _Place | None = None
        first: _Span | None = None
        for unit in short:
            places = self.units[unit]
            while places and after is not None and (places[0][0], places[0][2]) <= after:
                places.popleft()
            if not places:
                continue
            place = (places[0][0], places[0][1] - 1)  # just before the group's first task
            if after is not None and after > place:
                place = after
            if start is None or place < start:
                start, first = place, places[0]
        if start is None or first is None:
            return None
        still = set(short)
        last, gap = first, 0
        probe = self.following.get(first)
        while probe is not None and gap <= _GAP:
            if any(unit in still for unit in self.holders.get(probe, ())):
                last, gap = probe, 0
            else:
                gap += probe[2] - probe[1] + 1
            probe = self.following.get(probe)
        return start, (last[0], last[2])
