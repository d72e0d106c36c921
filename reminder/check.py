"""`reminder check`: what in the config and the ledger would stop a reminder going out.

Pure: takes what was loaded, returns ``Problem``s. Errors make the command exit 1:
an unknown unit or an invalid address means someone will not hear of a deadline.
"""

from __future__ import annotations

from collections import defaultdict

from reminder.contacts import Contacts, Problem
from reminder.ledger.model import DeadlineKind, Task, UnitKind
from reminder.store.tasks import StoredLedger


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


def check(contacts: Contacts, ledger: StoredLedger | None) -> list[Problem]:
    problems = list(contacts.problems)
    if ledger is None:
        problems.append(Problem("warning", "store", "no ledger imported yet"))
        return problems
    problems += ledger_problems(ledger)
    problems += unit_problems([stored.task for stored in ledger.tasks], contacts)
    return problems


def _numbers(numbers: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
