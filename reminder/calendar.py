"""Working days: Chinese statutory holidays and make-up working days, plus local overrides.

chinese-calendar knows the State Council's holiday arrangements year by year (in 2018
the Saturday 09-29 and Sunday 09-30 were working days and 10-01…10-07 were not) and
raises for a year it does not cover. For such a year this calendar falls back to
Monday–Friday and reports the year once through ``on_uncovered`` (the daemon logs a
warning), so a reminder is never lost to a missing table. ``calendar.toml`` in the
config folder adds local days off and working days, which win over both.
"""

from __future__ import annotations

import bisect
import datetime as dt
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

import chinese_calendar
from pydantic import BaseModel, ConfigDict, ValidationError

from reminder.errors import ConfigError

ONE_DAY = dt.timedelta(days=1)


class _CalendarFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days_off: list[dt.date] = []
    working_days: list[dt.date] = []


class WorkCalendar:
    """Answers "is this a working day?" and walks over working days. No I/O."""

    def __init__(
        self,
        days_off: Iterable[dt.date] = (),
        working_days: Iterable[dt.date] = (),
        on_uncovered: Callable[[int], None] | None = None,
        *,
        working_days_only: bool = True,
    ) -> None:
        self.days_off = frozenset(days_off)
        self.working_days = frozenset(working_days)
        self.working_days_only = working_days_only
        self._on_uncovered = on_uncovered
        self._cache: dict[dt.date, bool] = {}
        self._years: dict[int, list[dt.date]] = {}
        self.uncovered_years: set[int] = set()

    def is_working_day(self, day: dt.date) -> bool:
        if not self.working_days_only:
            return True
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        if day in self.working_days:
            working = True
        elif day in self.days_off:
            working = False
        else:
            try:
                working = bool(chinese_calendar.is_workday(day))
            except NotImplementedError:
                working = day.weekday() < 5
                if day.year not in self.uncovered_years:
                    self.uncovered_years.add(day.year)
                    if self._on_uncovered is not None:
                        self._on_uncovered(day.year)
        self._cache[day] = working
        return working

    def on_or_before(self, day: dt.date) -> dt.date:
        """The day itself if it is a working day, else the working day before it."""
        while not self.is_working_day(day):
            day -= ONE_DAY
        return day

    def on_or_after(self, day: dt.date) -> dt.date:
        while not self.is_working_day(day):
            day += ONE_DAY
        return day

    def _year(self, year: int) -> list[dt.date]:
        """The working days of a year, in order (computed once)."""
        days = self._years.get(year)
        if days is None:
            day, days = dt.date(year, 1, 1), []
            while day.year == year:
                if self.is_working_day(day):
                    days.append(day)
                day += ONE_DAY
            self._years[year] = days
        return days

    def after(self, day: dt.date) -> dt.date:
        """The first working day strictly after ``day``."""
        return self.add_working_days(day, 1)

    def add_working_days(self, day: dt.date, count: int) -> dt.date:
        """The ``count``-th working day after ``day`` (count ≥ 1)."""
        year = day.year
        index = bisect.bisect_right(self._year(year), day) + count - 1
        while index >= len(self._year(year)):
            index -= len(self._year(year))
            year += 1
        return self._year(year)[index]

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days in (start, end]."""
        if end <= start:
            return 0
        count = 0
        for year in range(start.year, end.year + 1):
            days = self._year(year)
            low = bisect.bisect_right(days, start) if year == start.year else 0
            high = bisect.bisect_right(days, end) if year == end.year else len(days)
            count += high - low
        return count


def load_calendar_overrides(path: Path) -> tuple[list[dt.date], list[dt.date]]:
    """(days off, working days) from calendar.toml; a missing file means none."""
    if not path.exists():
        return [], []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        parsed = _CalendarFile.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{path}: {key}: {error['msg']} (got {error.get('input')!r})") from None
    both = set(parsed.days_off) & set(parsed.working_days)
    if both:
        raise ConfigError(f"{path}: {min(both)} is both a day off and a working day")
    return parsed.days_off, parsed.working_days
