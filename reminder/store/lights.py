"""The traffic lights in SQL: red, yellow, green, reported and done counted or listed by
the database, whatever the size of the ledger (the digest's ``light`` in Python is the
same rule for the tasks it lists)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlmodel import Session

from reminder.policy import Policy
from reminder.rules import HORIZON_DAYS, Rules
from reminder.store.models import SectionRow, TaskRow, TaskUnitRow

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
_S = SectionRow.__table__  # type: ignore[attr-defined]


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
