"""Where a year's days off and make-up working days come from, in order of trust.

1. ``calendar.toml`` ``[years.Y]``: the State Council's notice for Y (国务院办公厅关于Y年部分
   节假日安排的通知) as the administrator entered it. It wins because it is the newest.
2. chinese-calendar: the notices year by year (1.11 covers 2004–2026); it raises
   ``NotImplementedError`` for any other year.
3. holidays (``holidays.China``) for a year whose notice it carries: its make-up
   working days (``weekend_workdays``) are then present for that year. It agrees with
   chinese-calendar on every day of 2008–2026 (tested).
4. holidays for a year whose notice it does not carry yet: the statutory holidays are
   computed by rule (lunar dates, a weekend holiday moved to the next weekday), but the
   调休 (which weekdays are bridged, which weekend days are worked) is a guess. Such a
   year is *unconfirmed*: ``check``, the daemon and the digest say so.
5. Monday to Friday, for a year none of the above covers (also unconfirmed).

Pure: no I/O, the packages' tables are read on first use of a year.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType

# chinese-calendar's Holiday members, in the notices' words
_CHINESE_NAMES = {
    "new_years_day": "元旦",
    "spring_festival": "春节",
    "tomb_sweeping_day": "清明节",
    "labour_day": "劳动节",
    "dragon_boat_festival": "端午节",
    "national_day": "国庆节",
    "mid_autumn_festival": "中秋节",
    "anti_fascist_70th_day": "抗战胜利70周年纪念日",
}


class Source(StrEnum):
    NOTICE = "notice"  # calendar.toml [years.Y]
    CHINESE_CALENDAR = "chinese-calendar"
    HOLIDAYS = "holidays"  # holidays.China with the year's notice
    COMPUTED = "computed"  # holidays.China by rule, 调休 unknown
    WEEKDAYS = "weekdays"  # Monday to Friday

    @property
    def official(self) -> bool:
        """The year's 调休 comes from the State Council's notice."""
        return self in (Source.NOTICE, Source.CHINESE_CALENDAR, Source.HOLIDAYS)


@dataclass(frozen=True, slots=True)
class Notice:
    """A year's arrangement as calendar.toml gives it (the notice, written as days)."""

    year: int
    title: str = ""
    days_off: tuple[dt.date, ...] = ()
    working_days: tuple[dt.date, ...] = ()


@dataclass(frozen=True, slots=True)
class CalendarYear:
    """One year's days off (named where the source names them) and make-up working days."""

    year: int
    source: Source
    detail: str  # what decided it, for people: "chinese-calendar 1.11.0", the notice's title
    days_off: Mapping[dt.date, str] = field(default_factory=dict)  # day → holiday name or ""
    working_days: Mapping[dt.date, str] = field(default_factory=dict)  # make-up working days

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.working_days:
            return True
        if day in self.days_off:
            return False
        return day.weekday() < 5


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


@cache
def package_versions() -> tuple[tuple[str, str], ...]:
    """The calendar packages installed: an upgrade may change a year's days."""
    return tuple((name, _package_version(name)) for name in ("chinese-calendar", "holidays"))


def _detail(package: str) -> str:
    return f"{package} {dict(package_versions())[package]}"


def _frozen(days: Mapping[dt.date, str]) -> Mapping[dt.date, str]:
    return MappingProxyType(dict(sorted(days.items())))


@cache
def _china(year: int) -> tuple[Mapping[dt.date, str], frozenset[dt.date]]:
    """holidays.China for a year: its statutory holidays by name (in Chinese) and its
    make-up working days; nothing if the package is missing (loaded on first use)."""
    try:
        from holidays.countries.china import China  # noqa: PLC0415
    except ImportError:
        return MappingProxyType({}), frozenset()
    found = China(years=year, language="zh_CN")  # type: ignore[no-untyped-call]
    names = _frozen({day: str(name) for day, name in found.items() if day.year == year})
    # weekend_workdays accumulates every year's make-up days seen by the object
    return names, frozenset(day for day in found.weekend_workdays if day.year == year)


def holiday_names(year: int) -> Mapping[dt.date, str]:
    """The statutory holidays of a year by name (holidays.China, in Chinese)."""
    return _china(year)[0]


def _from_chinese_calendar(year: int) -> CalendarYear | None:
    import chinese_calendar  # noqa: PLC0415 (loaded with the first year asked)

    try:
        chinese_calendar.is_workday(dt.date(year, 1, 1))
    except NotImplementedError:
        return None
    from chinese_calendar.constants import Holiday  # noqa: PLC0415

    # its tables hold English names ("Spring Festival"); Holiday knows them in Chinese
    chinese = {
        holiday.value: getattr(holiday, "chinese", "") or _CHINESE_NAMES.get(holiday.name, "")
        for holiday in Holiday
    }

    def named(days: Mapping[dt.date, str]) -> Mapping[dt.date, str]:
        return _frozen(
            {day: chinese.get(name, name) for day, name in days.items() if day.year == year}
        )

    return CalendarYear(
        year,
        Source.CHINESE_CALENDAR,
        _detail("chinese-calendar"),
        named(chinese_calendar.holidays),
        named(chinese_calendar.workdays),
    )


def _from_holidays(year: int) -> CalendarYear | None:
    days_off, working = _china(year)
    if not days_off:  # its rules stop somewhere (2100 in 0.109): no better than weekdays
        return None
    source = Source.HOLIDAYS if working else Source.COMPUTED
    return CalendarYear(
        year, source, _detail("holidays"), days_off, _frozen(dict.fromkeys(working, ""))
    )


def _from_notice(notice: Notice) -> CalendarYear:
    """A notice's days, unnamed: ``named`` gives them their holidays' names (the package
    that knows them is loaded only for people who read them, not to plan)."""
    return CalendarYear(
        notice.year,
        Source.NOTICE,
        notice.title or f"calendar.toml [years.{notice.year}]",
        _frozen(dict.fromkeys(notice.days_off, "")),
        _frozen(dict.fromkeys(notice.working_days, "")),
    )


def named(table: CalendarYear) -> CalendarYear:
    """A year's table with the days off of a notice named after their holidays."""
    if table.source is not Source.NOTICE:
        return table
    names = holiday_names(table.year)
    days_off = _frozen({day: names.get(day, "") for day in table.days_off})
    return replace(table, days_off=days_off)


def year_table(year: int, notice: Notice | None = None) -> CalendarYear:
    """Steps 1 to 5 of the module docstring: the first source that knows the year."""
    if notice is not None:
        return _from_notice(notice)
    found = _from_chinese_calendar(year) or _from_holidays(year)
    if found is not None:
        return found
    return CalendarYear(year, Source.WEEKDAYS, "Monday to Friday")
