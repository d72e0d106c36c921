"""Working days: Chinese statutory holidays and make-up working days, plus local exceptions.

Each year's days off and make-up working days come from the first source that knows
the year (``calendar_sources``): a notice entered in calendar.toml, chinese-calendar,
the holidays package, and Monday–Friday last. A year whose 调休 is not known from the
State Council's notice is *unconfirmed*; ``unconfirmed_years`` names them so that
``check``, the daemon's start and the supervisors' digest can say so in one line
(``adjustment_warning``). calendar.toml's top-level ``days_off`` and ``working_days``
are local exceptions (a city's own day off) and win over every source.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from reminder.calendar_sources import CalendarYear, Notice, package_versions, year_table
from reminder.errors import ConfigError

ONE_DAY = dt.timedelta(days=1)
LOOKAHEAD_DAYS = 60  # years the next 60 days reach need their 调休 known
_SPAN = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*/\s*(\d{4}-\d{2}-\d{2})\s*$")


def _days(value: object) -> object:
    """Dates as TOML dates or ISO strings, and spans "2027-02-05/2027-02-11", as dates."""
    if not isinstance(value, list):
        return value
    days: list[object] = []
    for item in value:
        span = _SPAN.match(item) if isinstance(item, str) else None
        if span is None:
            days.append(item)
            continue
        first, last = (dt.date.fromisoformat(part) for part in span.groups())
        if last < first:
            raise ValueError(f"span {item!r} ends before it starts")
        if (last - first).days > 31:
            raise ValueError(f"span {item!r} is longer than a month")
        days += [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    return days


Days = Annotated[list[dt.date], BeforeValidator(_days)]


class _NoticeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notice: str = ""  # the notice's title or number, shown as the year's source
    days_off: Days = []
    working_days: Days = []


class _CalendarFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days_off: Days = []
    working_days: Days = []
    years: dict[int, _NoticeEntry] = {}


@dataclass(frozen=True, slots=True)
class CalendarFile:
    """What calendar.toml says: local exceptions and the notices of years."""

    days_off: tuple[dt.date, ...] = ()
    working_days: tuple[dt.date, ...] = ()
    notices: Mapping[int, Notice] = field(default_factory=dict)


class WorkCalendar:
    """Answers "is this a working day?" and walks over working days. No I/O."""

    def __init__(
        self,
        days_off: Iterable[dt.date] = (),
        working_days: Iterable[dt.date] = (),
        notices: Mapping[int, Notice] | None = None,
        *,
        working_days_only: bool = True,
        path: Path = Path("config/calendar.toml"),
    ) -> None:
        self.path = path  # where an administrator adds a year's notice
        self.days_off = frozenset(days_off)
        self.working_days = frozenset(working_days)
        self.notices: Mapping[int, Notice] = dict(notices or {})
        self.working_days_only = working_days_only
        # a notice may name a day of the year before or after (2011-12-31 in 2012's)
        self._notice_days: dict[dt.date, bool] = {}
        for notice in self.notices.values():
            self._notice_days.update(dict.fromkeys(notice.days_off, False))
            self._notice_days.update(dict.fromkeys(notice.working_days, True))
        self._tables: dict[int, CalendarYear] = {}
        self._cache: dict[dt.date, bool] = {}
        self._years: dict[int, list[dt.date]] = {}
        # what callers compute from working days and keep with them (the planner's fixed
        # occasions of a deadline): it lives as long as this calendar
        self.memo: dict[Any, Any] = {}

    @classmethod
    def from_file(cls, path: Path, *, working_days_only: bool = True) -> WorkCalendar:
        found = load_calendar_file(path)
        return cls(
            found.days_off,
            found.working_days,
            found.notices,
            working_days_only=working_days_only,
            path=path,
        )

    def table(self, year: int) -> CalendarYear:
        """The year's days off and make-up working days, and the source that decided them."""
        table = self._tables.get(year)
        if table is None:
            table = self._tables[year] = year_table(year, self.notices.get(year))
        return table

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
        elif day in self._notice_days:
            working = self._notice_days[day]
        else:
            working = self.table(day.year).is_working_day(day)
        self._cache[day] = working
        return working

    def unconfirmed_years(self, years: Iterable[int], today: dt.date | None = None) -> list[int]:
        """Those of ``years`` (and, with ``today``, of the days ahead: ``years_ahead``)
        whose 调休 is not known from the State Council's notice."""
        if not self.working_days_only:
            return []
        asked = set(years) | (years_ahead(today) if today else set())
        return sorted(year for year in asked if not self.table(year).source.official)

    def warning(self, years: Iterable[int], today: dt.date | None = None) -> str | None:
        """One line naming those of ``years`` (and of the days ahead of ``today``) whose
        调休 is unknown, or None."""
        return adjustment_warning(self.unconfirmed_years(years, today), self.path)

    def fingerprint_facts(self) -> dict[str, Any]:
        """What moves working days: a change replans every reminder."""
        return {
            "days_off": sorted(day.isoformat() for day in self.days_off),
            "working_days": sorted(day.isoformat() for day in self.working_days),
            "notices": {
                str(year): [
                    sorted(day.isoformat() for day in notice.days_off),
                    sorted(day.isoformat() for day in notice.working_days),
                ]
                for year, notice in sorted(self.notices.items())
            },
            "packages": dict(package_versions()),
            "working_days_only": self.working_days_only,
        }

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

    def week_start(self, day: dt.date) -> dt.date | None:
        """The first working day of the week (Monday to Sunday) of ``day``; None if the
        whole week is off."""
        monday = day - dt.timedelta(days=day.weekday())
        first = self.on_or_after(monday)
        return first if (first - monday).days < 7 else None

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


def years_ahead(today: dt.date, days: int = LOOKAHEAD_DAYS) -> set[int]:
    """The years from today to ``days`` later."""
    return set(range(today.year, (today + dt.timedelta(days=days)).year + 1))


def adjustment_warning(years: Iterable[int], path: Path) -> str | None:
    """One line for the years whose 调休 is unknown, or None when there are none."""
    shown = "、".join(f"{year}年" for year in sorted(set(years)))
    if not shown:
        return None
    return f"{shown}调休安排尚未收录：请按国务院办公厅通知补充 {path}"


def load_calendar_file(path: Path) -> CalendarFile:
    """calendar.toml, validated; a missing file means no exceptions and no notices."""
    if not path.exists():
        return CalendarFile()
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
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {key}: {message} (got {error.get('input')!r})") from None
    _no_day_both(path, "", parsed.days_off, parsed.working_days)
    notices = {}
    for year, entry in sorted(parsed.years.items()):
        where = f"years.{year}"
        stray = [d for d in (*entry.days_off, *entry.working_days) if abs(d.year - year) > 1]
        if stray:
            raise ConfigError(f"{path}: {where}: {stray[0]} is not in {year} or next to it")
        _no_day_both(path, f"{where}: ", entry.days_off, entry.working_days)
        notices[year] = Notice(
            year, entry.notice, tuple(sorted(entry.days_off)), tuple(sorted(entry.working_days))
        )
    return CalendarFile(tuple(sorted(parsed.days_off)), tuple(sorted(parsed.working_days)), notices)


def _no_day_both(path: Path, where: str, off: list[dt.date], working: list[dt.date]) -> None:
    both = set(off) & set(working)
    if both:
        raise ConfigError(f"{path}: {where}{min(both)} is both a day off and a working day")
