"""What the store hands back, as plain data: the ledger as stored (its tasks, each
unit's part and state) and what a digest reads besides (reminders told, progress,
undelivered messages). Pure: the store layer builds these, the pure modules read them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
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
class DigestInputs:
    """What the store knows that a digest or agenda needs."""

    ledger: StoredLedger
    reminded: Mapping[tuple[int, str], Reminded] = field(default_factory=dict)  # (task id, unit)
    progress: dict[int, Progress] = field(default_factory=dict)  # task id → last progress note
    undelivered: tuple[Undelivered, ...] = ()  # the newest, for the list
    undelivered_counts: Mapping[str, int] = field(default_factory=dict)  # status → all of them
