"""`reminder check`: what in the config and the ledger would stop a reminder going out.

Pure: takes what was loaded, returns ``Problem``s. Errors make the command exit 1:
an unknown unit or an invalid address means someone will not hear of a deadline.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

from reminder.calendar import adjustment_warning
from reminder.contacts import Contacts, Problem
from reminder.digest import DigestInputs, build_agendas, build_digest
from reminder.ledger.model import DeadlineKind, Role, Task, UnitKind
from reminder.messages import TaskFacts, context, report_context
from reminder.policy import Kind
from reminder.render import PARTS, Renderer, TemplateProblem
from reminder.settings import MessagesSettings
from reminder.store.tasks import StoredLedger

UNIT_KINDS = (
    Kind.UPCOMING,
    Kind.DUE_TODAY,
    Kind.WINDOW_START,
    Kind.OVERDUE,
    Kind.ESCALATION,
    Kind.PROGRESS,
)


def unit_problems(tasks: list[Task], contacts: Contacts) -> list[Problem]:
    """Units the directory does not know, and known units nobody can reach."""
    unknown: dict[str, list[int]] = defaultdict(list)
    unreachable: dict[str, list[int]] = defaultdict(list)
    for task in tasks:
        for unit in task.units:
            if contacts.directory.resolve(unit.name) is None:
                unknown[unit.name].append(task.no)
            elif not contacts.has_contact(unit.name):
                unreachable[unit.name].append(task.no)
    problems = [
        Problem(
            "error",
            f"unit {name}",
            f"not in {contacts.path} (tasks {_numbers(numbers)}); add it or an alias",
        )
        for name, numbers in unknown.items()
    ]
    for name, numbers in unreachable.items():
        entry = contacts.directory.resolve(name)
        what = "group has no members" if entry and entry.kind is UnitKind.GROUP else "no contact"
        problems.append(Problem("warning", f"unit {name}", f"{what} (tasks {_numbers(numbers)})"))
    return problems


def ledger_problems(ledger: StoredLedger) -> list[Problem]:
    problems: list[Problem] = []
    for stored in ledger.tasks:
        task = stored.task
        where = f"task {task.no} (line {task.line})"
        if task.deadline.kind is DeadlineKind.UNKNOWN:
            problems.append(
                Problem(
                    "warning",
                    where,
                    f"cannot read 完成时限 {task.deadline.raw!r}: kept as written, "
                    "no deadline reminders",
                )
            )
        if not task.units:
            problems.append(Problem("error", where, "no responsible unit"))
    return problems


def check(
    contacts: Contacts, ledger: StoredLedger | None, templates: list[Problem] | None = None
) -> list[Problem]:
    problems = list(contacts.problems)
    if ledger is None:
        problems.append(Problem("warning", "store", "no ledger imported yet"))
        return problems
    problems += ledger_problems(ledger)
    problems += unit_problems([stored.task for stored in ledger.tasks], contacts)
    problems += templates or []
    return problems


def _numbers(numbers: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def template_problems(
    renderer: Renderer,
    facts: dict[int, TaskFacts],
    contacts: Contacts,
    settings: MessagesSettings,
) -> list[Problem]:
    """Render every part of every unit template for every task, in both roles.

    A template that fails is reported once, with the first task it failed on and how
    many more it would fail on.
    """
    failures: dict[str, list[int]] = defaultdict(list)
    for task in facts.values():
        lead = next((name for name, role in task.units if role == Role.LEAD.value), "")
        cooperating = next(
            (name for name, role in task.units if role == Role.COOPERATING.value), lead
        )
        day = task.due or task.start or dt.date.today()
        for kind in UNIT_KINDS:
            for role, unit in ((Role.LEAD.value, lead), (Role.COOPERATING.value, cooperating)):
                payload = {
                    "day": day.isoformat(),
                    "milestone": day.isoformat(),
                    "days_left": 3,
                    "overdue_days": 7,
                    "escalated": kind is Kind.OVERDUE,
                }
                values = context(
                    kind=kind.value,
                    unit=unit,
                    role=role,
                    recipient=unit,
                    task=task,
                    payload=payload,
                    contacts=contacts,
                    settings=settings,
                )
                for part in PARTS:
                    try:
                        renderer.part(kind.value, part, values)
                    except TemplateProblem as problem:
                        if task.no not in failures[problem.message]:
                            failures[problem.message].append(task.no)
    return [
        Problem(
            "error",
            "templates",
            f"{message} (task {numbers[0]}"
            + (f" and {len(numbers) - 1} more)" if len(numbers) > 1 else ")"),
        )
        for message, numbers in failures.items()
    ]


def report_samples(
    inputs: DigestInputs, contacts: Contacts, days: list[dt.date], zone: dt.tzinfo
) -> list[tuple[str, dict[str, Any]]]:
    """Digests for every supervisor (and the whole ledger) and a few agendas, on each day."""
    samples: list[tuple[str, dict[str, Any]]] = []
    for day in days:
        since = dt.datetime.combine(day, dt.time(), tzinfo=zone) - dt.timedelta(days=1)
        for supervisor in [None, *contacts.supervisors]:
            # a notice line too, so that the templates' notice branch is rendered
            notices = [adjustment_warning([day.year + 1], Path("config/calendar.toml")) or ""]
            payload = build_digest(inputs, supervisor, contacts, day, since, zone, notices)
            samples.append(("digest", payload))
        agendas = build_agendas(inputs, day)
        samples += [("agenda", agendas[unit]) for unit in sorted(agendas)[:5]]
    return samples


def report_problems(
    renderer: Renderer, samples: list[tuple[str, dict[str, Any]]], settings: MessagesSettings
) -> list[Problem]:
    """Render every part of the digest and agenda templates against sample snapshots."""
    problems: dict[str, str] = {}
    for kind, payload in samples:
        values = report_context(kind=kind, recipient="督查室", payload=payload, settings=settings)
        for part in PARTS:
            try:
                renderer.part(kind, part, values)
            except TemplateProblem as problem:
                problems.setdefault(problem.message, kind)
    return [Problem("error", "templates", message) for message in problems]
