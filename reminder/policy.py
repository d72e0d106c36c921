"""The reminder policy: who hears what, when. Pydantic models under ``[policy]``.

Defaults suit a Chinese city office: reminders at 09:00 on working days; 14, 7, 3 and 1
days before each due milestone and on the day; 3 days before and on the start of a
window; overdue on the first working day after, then every 3 working days, copied to
the supervisors from the 5th working day overdue; a monthly progress check-in on the
25th for all-year, open-ended, ongoing and recurring tasks.

``[[policy.override]]`` entries change any of this for some sections or tasks; a task
override wins over a section override, which wins over the defaults.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from reminder.ledger.model import DeadlineKind, names_section


class Kind(StrEnum):
    """What a message is about; also the name of its template."""

    UPCOMING = "upcoming"
    DUE_TODAY = "due_today"
    WINDOW_START = "window_start"
    OVERDUE = "overdue"
    ESCALATION = "escalation"  # the supervisors' copy of an escalated overdue reminder
    PROGRESS = "progress"
    DIGEST = "digest"
    AGENDA = "agenda"


Channel = Literal["email", "sms", "robot"]

DEFAULT_CHANNELS: dict[Kind, list[Channel]] = {
    Kind.UPCOMING: ["email"],
    Kind.DUE_TODAY: ["email", "sms"],
    Kind.WINDOW_START: ["email"],
    Kind.OVERDUE: ["email", "sms", "robot"],
    Kind.ESCALATION: ["email"],
    Kind.PROGRESS: ["email"],
    Kind.DIGEST: ["email"],
    Kind.AGENDA: ["email"],
}


def _days_before(value: list[int]) -> list[int]:
    if any(day < 1 for day in value):
        raise ValueError("days before must be 1 or more")
    return sorted(set(value), reverse=True)


# days before a milestone, each 1 or more; kept distinct, furthest first
DaysBefore = Annotated[list[int], AfterValidator(_days_before)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpcomingPolicy(_Part):
    enabled: bool = True
    days_before: DaysBefore = Field(default=[14, 7, 3, 1])
    due_today: bool = True


class WindowStartPolicy(_Part):
    enabled: bool = True
    days_before: DaysBefore = Field(default=[3])
    on_start: bool = True
    kinds: list[DeadlineKind] = Field(
        default=[DeadlineKind.WINDOW, DeadlineKind.SEASON, DeadlineKind.FROM]
    )


class OverduePolicy(_Part):
    enabled: bool = True
    repeat_every: int = Field(default=3, ge=1)  # working days between overdue reminders
    escalate: bool = True
    escalate_after: int = Field(default=5, ge=1)  # working days overdue before supervisors hear


class ProgressPolicy(_Part):
    enabled: bool = True
    day_of_month: int = Field(default=25, ge=1, le=28)
    kinds: list[DeadlineKind] = Field(
        default=[
            DeadlineKind.ALL_YEAR,
            DeadlineKind.FROM,
            DeadlineKind.ONGOING,
            DeadlineKind.RECURRING,
        ]
    )


class PolicyOverride(_Part):
    """Changes for some sections (number, numeral or title) or task numbers."""

    sections: list[int | str] = []
    tasks: list[int] = []
    done_when: Literal["lead", "all"] | None = None
    upcoming: dict[str, Any] | None = None
    window_start: dict[str, Any] | None = None
    overdue: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _selects_something(self) -> PolicyOverride:
        if not self.sections and not self.tasks:
            raise ValueError("an override needs `sections` or `tasks`")
        return self

    def changes(self) -> dict[str, Any]:
        fields = ("done_when", "upcoming", "window_start", "overdue", "progress")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}

    def selects_section(self, no: int, numeral: str, title: str) -> bool:
        return any(names_section(item, no, numeral, title) for item in self.sections)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Policy(_Part):
    send_at: dt.time = dt.time(9, 0)
    working_days_only: bool = True
    done_when: Literal["lead", "all"] = "lead"
    upcoming: UpcomingPolicy = UpcomingPolicy()
    window_start: WindowStartPolicy = WindowStartPolicy()
    overdue: OverduePolicy = OverduePolicy()
    progress: ProgressPolicy = ProgressPolicy()
    channels: dict[Kind, list[Channel]] = Field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    override: list[PolicyOverride] = []

    _resolved: dict[tuple[int, int], Policy] = PrivateAttr(default_factory=dict)

    @field_validator("channels")
    @classmethod
    def _complete_channels(cls, value: dict[Kind, list[Channel]]) -> dict[Kind, list[Channel]]:
        return {**DEFAULT_CHANNELS, **value}

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Policy:
        for override in self.override:
            # fails with the override's own key path if a changed value is invalid
            Policy.model_validate(_merge(self._base_dump(), override.changes()))
        return self

    def _base_dump(self) -> dict[str, Any]:
        return self.model_dump(exclude={"override"})

    def for_task(self, section: tuple[int, str, str], task_no: int) -> Policy:
        """The policy for one task: overrides of its section, then of the task itself."""
        key = (section[0], task_no)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        merged = self._base_dump()
        matching = [o for o in self.override if o.selects_section(*section)]
        matching += [o for o in self.override if task_no in o.tasks]
        for override in matching:
            merged = _merge(merged, override.changes())
        resolved = Policy.model_validate(merged) if matching else self
        self._resolved[key] = resolved
        return resolved
