"""The reminder policy: who hears what, when. Pydantic models under ``[policy]``.

Defaults suit a Chinese city office, whose units get everything of a day in one letter:
reminders at 09:00 on working days; 7 and 3 days before each due milestone and on the
day (or on the last working day before it, when it falls on a day off); 3 days before
and on the start of a window; overdue on the first working day after, then in the
unit's weekly letter (the first working day of each week), escalated to the
supervisors' digest from the 5th working day overdue; a monthly progress check-in on
the 25th (the working day before, if that is a day off) and a year-end summary request
on 12-10 for all-year, open-ended, ongoing and recurring tasks. 全年 duties are not
counted down to 12-31 and never overdue (``kinds`` says which deadlines are).

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
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from reminder.ledger.model import DeadlineKind, names_section


def _month_day(value: object) -> object:
    """'11-15' → (11, 15); checked against a leap year so 02-29 is allowed; '' → None."""
    if value == "":
        return None
    if isinstance(value, str):
        month, sep, day = value.partition("-")
        if not sep or not month.isdigit() or not day.isdigit():
            raise ValueError("must look like MM-DD, e.g. 11-15")
        try:
            dt.date(2000, int(month), int(day))
        except ValueError:
            raise ValueError(f"{value} is not a day of the year") from None
        return (int(month), int(day))
    return value


# NoDecode: a complex type would otherwise be read from the environment as JSON
MonthDay = Annotated[tuple[int, int], NoDecode, BeforeValidator(_month_day)]
OptionalMonthDay = Annotated[tuple[int, int] | None, NoDecode, BeforeValidator(_month_day)]


class Kind(StrEnum):
    """What an item of a letter is about, or what a message is."""

    # items: what one unit is told about one task (the audit trail), per channel
    UPCOMING = "upcoming"
    DUE_TODAY = "due_today"  # on the due day, or the last working day before it
    WINDOW_START = "window_start"
    OVERDUE = "overdue"
    PROGRESS = "progress"  # the monthly check-in
    SUMMARY = "summary"  # the year-end summary request (年度总结)
    AGENDA = "agenda"  # the week's agenda, carried by the unit's first letter of the week
    # messages: what goes out
    LETTER = "letter"  # a unit's 督办通知: its items of one moment on one channel
    DIGEST = "digest"  # a supervisor's daily digest
    ESCALATION = "escalation"  # a supervisor's daily 逾期督办清单, for those who ask for it


Channel = Literal["email", "sms", "robot"]

DEFAULT_CHANNELS: dict[Kind, list[Channel]] = {
    Kind.UPCOMING: ["email"],
    Kind.DUE_TODAY: ["email", "sms"],
    Kind.WINDOW_START: ["email"],
    Kind.OVERDUE: ["email", "sms", "robot"],
    Kind.PROGRESS: ["email"],
    Kind.SUMMARY: ["email"],
    Kind.AGENDA: ["email"],
    Kind.DIGEST: ["email"],
    Kind.ESCALATION: [],  # escalations are in the digest; a supervisor may ask for a list
}
# deadlines that are counted down and can be overdue: not 全年 (a standing duty) and not
# those without a due date (from, ongoing, unknown)
DUE_KINDS = [DeadlineKind.DATE, DeadlineKind.WINDOW, DeadlineKind.SEASON, DeadlineKind.RECURRING]


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
    days_before: DaysBefore = Field(default=[7, 3])
    due_today: bool = True  # on the day, or the last working day before a day off
    kinds: list[DeadlineKind] = Field(default_factory=lambda: list(DUE_KINDS))


class WindowStartPolicy(_Part):
    enabled: bool = True
    days_before: DaysBefore = Field(default=[3])
    on_start: bool = True
    kinds: list[DeadlineKind] = Field(
        default=[DeadlineKind.WINDOW, DeadlineKind.SEASON, DeadlineKind.FROM]
    )


class OverduePolicy(_Part):
    enabled: bool = True
    # after the first working day overdue: "week" (in the unit's letter of the first
    # working day of each week) or a number of working days between reminders
    repeat_every: Literal["week"] | Annotated[int, Field(ge=1)] = "week"
    escalate: bool = True
    escalate_after: int = Field(default=5, ge=1)  # working days overdue: 提级督办 in the digest
    kinds: list[DeadlineKind] = Field(default_factory=lambda: list(DUE_KINDS))


class ProgressPolicy(_Part):
    enabled: bool = True
    day_of_month: int = Field(default=25, ge=1, le=28)  # the working day before, if a day off
    # the year-end summary request (年度总结), besides that month's check-in; "" for none
    summary_on: OptionalMonthDay = (12, 10)
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
    # a unit's 报告办结 through the web: reviewed by a supervisor first, or trusted at once
    completion: Literal["review", "trust"] = "review"
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
        matching = [o for o in self.override if o.selects_section(*section)]
        matching += [o for o in self.override if task_no in o.tasks]
        resolved = self
        if matching:  # most tasks have none: no dump to merge into
            merged = self._base_dump()
            for override in matching:
                merged = _merge(merged, override.changes())
            resolved = Policy.model_validate(merged)
        self._resolved[key] = resolved
        return resolved
