"""What the store hands back, as plain data: the ledger as stored (its tasks, each
unit's part and state) and what a digest reads besides (reminders told, progress,
undelivered messages). Pure: the store layer builds these, the pure modules read them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reminder.ledger.model import Section, Task, UnitRef


@dataclass(frozen=True, slots=True)
class StoredUnit:
    ref: UnitRef
    done_at: dt.datetime | None
    done_note: str
    via: str | None = None  # the group a member was expanded from
    reported_at: dt.datetime | None = None  # reported done, waiting for review
    due: dt.date | None = None  # its own due date, after an approved extension

    def state(self, task_status: str) -> str:
        """open | reported | done: this unit's part."""
        if task_status == "done" or self.done_at is not None:
            return "done"
        return "reported" if self.reported_at is not None else "open"


@dataclass(frozen=True)
class StoredTask:
    id: int
    task: Task
    status: str  # open | done
    done_at: dt.datetime | None
    units: tuple[StoredUnit, ...]  # as the ledger lists them
    members: tuple[StoredUnit, ...] = ()  # the members of listed groups (contacts.toml)

    @functools.cached_property
    def _targets(self) -> tuple[StoredUnit, ...]:
        expanded = {member.via for member in self.members}
        listed = tuple(unit for unit in self.units if unit.ref.name not in expanded)
        return listed + self.members

    def targets(self) -> tuple[StoredUnit, ...]:
        """Who is reminded: listed units that are no expanded group, and group members."""
        return self._targets

    @functools.cached_property
    def open_targets(self) -> tuple[StoredUnit, ...]:
        """``targets`` whose part is not done, each unit once (its first listing)."""
        found: dict[str, StoredUnit] = {}
        for unit in self._targets:
            if unit.done_at is None:
                found.setdefault(unit.ref.name, unit)
        return tuple(found.values())


@dataclass(frozen=True, slots=True)
class StoredLedger:
    title: str
    year: int
    source: str
    imported_at: dt.datetime
    sections: tuple[Section, ...]
    tasks: tuple[StoredTask, ...]

    def section_title(self, no: int) -> str:
        return self.section(no)[2]

    def section(self, no: int) -> tuple[int, str, str]:
        """(no, numeral, title) of a section; (no, "", "") if the ledger has none."""
        for section in self.sections:
            if section.no == no:
                return (section.no, section.numeral, section.title)
        return (no, "", "")


@dataclass(frozen=True, slots=True)
class Progress:
    unit: str
    note: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Undelivered:
    status: str  # dead | retry
    kind: str
    task_no: int | None
    recipient: str
    channel: str
    error: str


@dataclass(frozen=True, slots=True)
class Reminded:
    """What letters told one unit of one task: how often overdue (催办次数), and when last."""

    overdue: int = 0
    last: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class UnitTally:
    """One unit's part, in one role, in the tasks of a digest, as the store counts it."""

    unit: str
    role: str  # lead | cooperating
    red: int  # red tasks where its part is late
    yellow: int  # yellow tasks where its part is open
    escalated: int  # of the red, those late enough to escalate (by their policy)
    first_due: dt.date | None = None  # the earliest due date of those


@dataclass(frozen=True, slots=True)
class Escalation:
    """One task of an escalated unit, as a digest lists it."""

    unit: str
    no: int
    text: str
    role: str
    due: dt.date
    reminded: int  # 催办次数


def escalated_units(tallies: Iterable[UnitTally]) -> list[tuple[str, int, int, dt.date]]:
    """(unit, lead, count, first due) of the units with escalated tasks, in the digest's
    order: those leading most such tasks first, then most tasks, the longest overdue."""
    units: dict[str, tuple[int, int, dt.date]] = {}
    for tally in tallies:
        if not tally.escalated or tally.first_due is None:
            continue
        lead, count, first = units.get(tally.unit, (0, 0, tally.first_due))
        lead += tally.escalated if tally.role == "lead" else 0
        units[tally.unit] = (lead, count + tally.escalated, min(first, tally.first_due))
    ordered = sorted(
        units.items(), key=lambda item: (-item[1][0], -item[1][1], item[1][2], item[0])
    )
    return [(unit, lead, count, first) for unit, (lead, count, first) in ordered]


@dataclass(frozen=True, slots=True)
class DigestCounts:
    """What the store counts for one supervisor's digest when the ledger it reads holds
    only the tasks the digest lists (a ledger of any size)."""

    lights: Mapping[int, Mapping[str, int]]  # section no → light → tasks in scope
    new_overdue: int  # overdue tasks due since the last digest
    listed: Mapping[str, int]  # overdue, upcoming, done: the whole lengths of the lists
    tallies: tuple[UnitTally, ...]  # the units it watches, itself left out
    escalated: tuple[Escalation, ...]  # the first tasks of the first escalated units
    names: tuple[str, ...]  # every unit reminded of a task in scope


@dataclass(frozen=True, slots=True)
class DigestInputs:
    """What the store knows that a digest or agenda needs."""

    ledger: StoredLedger
    reminded: Mapping[tuple[int, str], Reminded] = field(default_factory=dict)  # (task id, unit)
    progress: dict[int, Progress] = field(default_factory=dict)  # task id → last progress note
    undelivered: tuple[Undelivered, ...] = ()  # the newest, for the list
    undelivered_counts: Mapping[str, int] = field(default_factory=dict)  # status → all of them
    # set when ``ledger`` holds only the tasks one supervisor's digest lists (the store's
    # ``DigestReader``): what it counts of the others
    counts: DigestCounts | None = None
