"""The traffic lights in SQL: red, yellow, green, reported and done counted or listed by
the database, whatever the size of the ledger (the digest's ``light`` in Python is the
same rule for the tasks it lists).

``unit_tallies``: every unit's part in the overdue and due-soon tasks of each section,
for the digests of a day, read from ``unit_tally`` (a few thousand rows where the ledger
has a million task × unit rows, kept by triggers). The tally counts each row by its
section's policy; the tasks a policy override names are counted again from their rows,
out by their section's policy and in by their own, and the units they name are then
tallied due date by due date (a unit's first escalated due date depends on which of its
due dates still escalate)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlmodel import Session

from reminder.policy import Policy
from reminder.rules import HORIZON_DAYS, Rules
from reminder.store.models import SectionRow, TaskRow, TaskUnitRow, UnitTallyRow

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
_S = SectionRow.__table__  # type: ignore[attr-defined]
_TALLY = UnitTallyRow.__table__  # type: ignore[attr-defined]


def counts_down(
    session: Session, planning: Rules, table: Any = _T, *, overrides: bool = True
) -> Any:
    """A SQL condition: the task's due date makes it yellow and red (as in the digest:
    it has one, and its kind is among its policy's ``overdue.kinds``). ``table`` and
    ``overrides``: as ``by_policy``'s."""
    kinds = by_policy(
        session,
        planning,
        lambda policy: table.c.deadline_kind.in_(sorted(policy.overdue.kinds)),
        table,
        overrides=overrides,
    )
    return and_(table.c.deadline_due.is_not(None), kinds)


def by_policy(
    session: Session,
    planning: Rules,
    term: Callable[[Policy], Any],
    table: Any = _T,
    *,
    overrides: bool = True,
) -> Any:
    """A SQL condition on a task: ``term`` of its policy. Policies differ by section and
    by the tasks an override names, so the condition has a term per section and one per
    named task: a few terms, whatever the size of the ledger. ``table``: where the
    task's columns are (``unit_tally``'s: it has no task numbers); without
    ``overrides``, every task follows its section's policy, even one an override names
    (``named_tasks``: ``DigestReader.tallies`` counts those apart)."""
    named = named_tasks(planning) if overrides else []
    terms = []
    sections = {row.no: (row.no, row.numeral, row.title) for row in session.execute(select(_S))}
    alike: list[tuple[Policy, list[int]]] = []  # sections of one policy: one term
    for no, section in sections.items():
        policy = planning.policy_of(section, -1)
        found = next((numbers for known, numbers in alike if known == policy), None)
        if found is None:
            alike.append((policy, [no]))
        else:
            found.append(no)
    for policy, numbers in alike:
        condition = and_(table.c.section_no.in_(numbers), term(policy))
        terms.append(and_(condition, _T.c.no.not_in(named)) if named else condition)
    if named:
        for no, section_no in session.execute(
            select(_T.c.no, _T.c.section_no)
            .where(_T.c.no.in_(named), _T.c.removed_at.is_(None))
            .distinct()
        ):
            section = sections.get(section_no, (section_no, "", ""))
            policy = planning.policy_of(section, no)
            terms.append(and_(_T.c.no == no, _T.c.section_no == section_no, term(policy)))
    return or_(*terms) if terms else literal(False)


def named_tasks(planning: Rules) -> list[int]:
    """The task numbers a policy override names."""
    return sorted({no for override in planning.policy.override for no in override.tasks})


def _by_date(counts: Any, due: Any, today: dt.date) -> tuple[tuple[Any, str], ...]:
    return (
        (and_(counts, due < today), "red"),
        (and_(counts, due <= today + dt.timedelta(days=HORIZON_DAYS)), "yellow"),
    )


def unit_light(counts: Any, today: dt.date) -> Any:
    """done, reported, red, yellow, green of a task × unit, in SQL (``counts``:
    ``counts_down``); a unit's own due date, where it has one, before the task's."""
    return case(
        (or_(_T.c.status == "done", _U.c.done_at.is_not(None)), "done"),
        (_U.c.reported_at.is_not(None), "reported"),
        *_by_date(counts, func.coalesce(_U.c.due, _T.c.deadline_due), today),
        else_="green",
    )


def task_light(counts: Any, today: dt.date, table: Any = _T) -> Any:
    """done, red, yellow, green of a task, in SQL: the digest's ``light``."""
    return case(
        (table.c.status == "done", "done"),
        *_by_date(counts, table.c.deadline_due, today),
        else_="green",
    )


def task_lights(session: Session, planning: Rules, today: dt.date) -> Counter[str]:
    """How many of the ledger's tasks are red, yellow, green and done, counted in SQL."""
    light = task_light(counts_down(session, planning), today).label("light")
    query = select(light, func.count()).where(_T.c.removed_at.is_(None)).group_by(light)
    return Counter({str(name): int(count) for name, count in session.execute(query)})


# (section, unit, role) → red, yellow, escalated, first escalated due date
Tallies = dict[tuple[int, str, str], tuple[int, int, int, dt.date | None]]
# a SQL condition: overdue enough to escalate by a policy, in a table's rows
LateEnough = Callable[[Policy, Any], Any]


def unit_tallies(
    session: Session, planning: Rules, day: dt.date, late_enough: LateEnough
) -> Tallies:
    """Each unit's part in the tasks of each section on ``day``: how many red tasks its
    part is late in, how many yellow ones it is open in, how many of the red escalate,
    and the earliest due date of those."""
    tally = _TALLY
    late = and_(
        tally.c.unit_done.is_(False), tally.c.unit_reported.is_(False), tally.c.unit_due < day
    )
    counter = _Counter(session, planning, day, late_enough)
    if session.connection().dialect.name == "sqlite":
        query = counter.by_unit(late)
    else:  # PostgreSQL joined the kinds of rows by sorting on disk: 40 ms more (wide, 10⁶)
        keys = (tally.c.section_no, tally.c.unit, tally.c.role)
        query = counter.counts(tally, late, overrides=False).where(tally.c.n != 0).group_by(*keys)
    tallies: Tallies = {}
    for no, unit, role, red, yellow, escalated, rows, first in session.execute(query):
        if rows:
            tallies[(int(no), str(unit), str(role))] = (
                int(red or 0),
                int(yellow or 0),
                int(escalated or 0),
                first,
            )
    named = named_tasks(planning)
    if named:
        _recount(tallies, counter, late, named)
    return tallies


def _recount(tallies: Tallies, counter: _Counter, late: Any, named: list[int]) -> None:
    """The tallies of the units the tasks of an override name, counted again due date by
    due date with those tasks by their own policy (in place)."""
    tally = _TALLY
    found: dict[tuple[int, str, str, dt.date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    rows = _U.join(_T, _T.c.id == _U.c.task_id)
    where = (_T.c.removed_at.is_(None), _U.c.is_target.is_(True), _T.c.no.in_(named))
    keys = (_T.c.section_no, _U.c.unit, _U.c.role, _T.c.deadline_due)
    for overrides, sign in ((False, -1), (True, 1)):
        query = counter.counts(_T, counter.late, overrides=overrides, by_due=True)
        _add(
            found,
            counter.session.execute(query.select_from(rows).where(*where).group_by(*keys)),
            sign,
        )
    units = sorted({unit for _, unit, _, _ in found})
    keys = (tally.c.section_no, tally.c.unit, tally.c.role, tally.c.deadline_due)
    query = counter.counts(tally, late, overrides=False, by_due=True)
    query = query.where(tally.c.n != 0, tally.c.unit.in_(units)).group_by(*keys)
    _add(found, counter.session.execute(query), 1)
    for key in [key for key in tallies if key[1] in units]:
        del tallies[key]
    # in the order of the due dates (a task without one: the tally's ``NO_DUE``, last)
    for (no, unit, role, due), (red, yellow, escalated, rows_left) in sorted(
        found.items(), key=lambda item: item[0][3] or dt.date.max
    ):
        if not rows_left:
            continue
        r, y, e, first = tallies.get((no, unit, role), (0, 0, 0, None))
        if escalated and first is None:  # by due date: the first one escalated
            first = due
        tallies[(no, unit, role)] = (r + red, y + yellow, e + escalated, first)


class _Counter:
    """The sums a tally is made of, in SQL."""

    def __init__(
        self, session: Session, planning: Rules, day: dt.date, late_enough: LateEnough
    ) -> None:
        self.session = session
        self.planning = planning
        self.day = day
        self.late_enough = late_enough
        self.late = and_(  # a unit's part in task_unit, late today
            _U.c.done_at.is_(None),
            _U.c.reported_at.is_(None),
            (_U.c.due.is_(None)) | (_U.c.due < day),
        )

    def light_and_escalation(self, table: Any, *, overrides: bool) -> tuple[Any, Any]:
        """The light of ``table``'s rows today, and whether their policy escalates them."""
        light = task_light(
            counts_down(self.session, self.planning, table, overrides=overrides), self.day, table
        )
        escalates = by_policy(
            self.session,
            self.planning,
            lambda policy: self.late_enough(policy, table),
            table,
            overrides=overrides,
        )
        return light, escalates

    def by_unit(self, late: Any) -> Any:
        """``counts`` of ``unit_tally`` by section, unit and role, the first escalated due
        date last, each section's policy followed, for SQLite: the light and the
        escalation of each section, kind, due date and status of its rows are worked out
        once (a few hundred, ``MATERIALIZED``: else they are put back in place for each
        row; SQLite 3.35 or later), not for each row (35 ms less for a wide ledger's
        47,000 rows at 10⁶)."""
        tally = _TALLY
        names = ("section_no", "deadline_kind", "deadline_due", "status")
        keys = select(*(tally.c[name] for name in names)).distinct().subquery()
        light, escalates = self.light_and_escalation(keys, overrides=False)
        kinds = (
            select(
                *keys.c,
                (light == "red").label("red"),
                (light == "yellow").label("yellow"),
                escalates.label("escalates"),
            )
            .cte("kinds")
            .prefix_with("MATERIALIZED")
        )
        red = and_(kinds.c.red, late)
        yellow = and_(kinds.c.yellow, tally.c.unit_done.is_(False))
        escalated = and_(red, kinds.c.escalates)
        return (
            select(
                tally.c.section_no,
                tally.c.unit,
                tally.c.role,
                func.sum(case((red, tally.c.n), else_=0)),
                func.sum(case((yellow, tally.c.n), else_=0)),
                func.sum(case((escalated, tally.c.n), else_=0)),
                func.sum(tally.c.n),
                func.min(case((escalated, tally.c.deadline_due), else_=None)),
            )
            .select_from(kinds.join(tally, and_(*(tally.c[n] == kinds.c[n] for n in names))))
            .where(tally.c.n != 0)
            .group_by(tally.c.section_no, tally.c.unit, tally.c.role)
        )

    def counts(self, table: Any, late: Any, *, overrides: bool, by_due: bool = False) -> Any:
        """red, yellow, escalated and rows of each section, unit and role (and due date:
        ``by_due``; else the first escalated due date last), in ``table``: ``unit_tally``
        (a row stands for ``n``) or the tasks joined to their rows (rows not counted)."""
        units = table if table is not _T else _U
        weight = table.c.n if table is not _T else literal(1)
        light, escalates = self.light_and_escalation(table, overrides=overrides)
        red = and_(light == "red", late)
        yellow = and_(light == "yellow", _undone(units))
        columns = [table.c.section_no, units.c.unit, units.c.role]
        sums = [
            func.sum(case((red, weight), else_=0)),
            func.sum(case((yellow, weight), else_=0)),
            func.sum(case((and_(red, escalates), weight), else_=0)),
            func.sum(table.c.n) if table is not _T else literal(0),
        ]
        if by_due:
            return select(*columns, table.c.deadline_due, *sums)
        first = func.min(case((and_(red, escalates), table.c.deadline_due), else_=None))
        return select(*columns, *sums, first)


def _undone(units: Any) -> Any:
    """A unit's part is not done (in task_unit or in unit_tally)."""
    return units.c.unit_done.is_(False) if units is not _U else units.c.done_at.is_(None)


def _add(
    found: dict[tuple[int, str, str, dt.date], list[int]], rows: Iterable[Any], sign: int
) -> None:
    for no, unit, role, due, *counts in rows:
        into = found[(int(no), str(unit), str(role), due)]
        for k, count in enumerate(counts):
            into[k] += sign * int(count or 0)
