"""Working days around the 2018 holidays, year ends, uncovered years, local overrides."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reminder.calendar import CalendarFile, WorkCalendar, load_calendar_file
from reminder.calendar_sources import Source, _from_holidays, named
from reminder.errors import ConfigError
from reminder.settings import Settings
from tests.conftest import CONFIG

D = dt.date


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar()


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (D(2018, 9, 21), True),  # Friday before Mid-Autumn
        (D(2018, 9, 24), False),  # Mid-Autumn (Monday)
        (D(2018, 9, 29), True),  # make-up working Saturday
        (D(2018, 9, 30), True),  # make-up working Sunday
        (D(2018, 10, 1), False),  # National Day …
        (D(2018, 10, 7), False),  # … to the 7th
        (D(2018, 10, 8), True),
        (D(2018, 2, 24), True),  # Spring Festival make-up Saturday
        (D(2018, 12, 29), True),  # New Year make-up Saturday
        (D(2018, 12, 31), False),
        (D(2019, 1, 1), False),
        (D(2019, 1, 2), True),
    ],
)
def test_statutory_holidays_and_make_up_days(
    cal: WorkCalendar, day: dt.date, working: bool
) -> None:
    assert cal.is_working_day(day) is working


def test_walking_over_national_day(cal: WorkCalendar) -> None:
    assert cal.after(D(2018, 9, 30)) == D(2018, 10, 8)
    assert cal.on_or_before(D(2018, 10, 5)) == D(2018, 9, 30)
    assert cal.on_or_after(D(2018, 10, 5)) == D(2018, 10, 8)
    assert cal.add_working_days(D(2018, 9, 28), 3) == D(2018, 10, 8)
    assert cal.working_days_between(D(2018, 9, 28), D(2018, 10, 8)) == 3


def test_walking_over_the_year_end(cal: WorkCalendar) -> None:
    assert cal.after(D(2018, 12, 29)) == D(2019, 1, 2)
    assert cal.add_working_days(D(2018, 12, 28), 2) == D(2019, 1, 2)
    assert cal.working_days_between(D(2018, 12, 28), D(2019, 1, 2)) == 2
    assert cal.on_or_before(D(2019, 1, 1)) == D(2018, 12, 29)


def test_a_year_no_package_has_the_notice_of_gets_the_computed_holidays() -> None:
    cal = WorkCalendar()
    for day in (D(2027, 2, 8), D(2027, 2, 10), D(2027, 10, 4), D(2027, 10, 5), D(2027, 5, 4)):
        assert not cal.is_working_day(day), day  # 春节, 国庆, 劳动节 (weekend days moved on)
    assert cal.is_working_day(D(2027, 2, 11))
    assert cal.table(2027).source is Source.COMPUTED
    assert cal.table(2027).days_off[D(2027, 2, 8)] == "春节"
    assert cal.unconfirmed_years([2026, 2027]) == [2027]
    assert cal.after(D(2027, 2, 4)) == D(2027, 2, 11)


def test_where_no_source_knows_the_year_monday_to_friday() -> None:
    cal = WorkCalendar()
    assert cal.table(2101).source is Source.WEEKDAYS
    assert cal.is_working_day(D(2101, 1, 3))  # a Monday
    assert not cal.is_working_day(D(2101, 1, 1))  # a Saturday
    assert cal.unconfirmed_years([2101]) == [2101]


@pytest.mark.parametrize("year", range(2008, 2027))
def test_the_holidays_package_agrees_with_chinese_calendar_where_both_have_the_notice(
    year: int,
) -> None:
    """Why a year whose notice the holidays package carries counts as official."""
    table = _from_holidays(year)
    assert table is not None
    assert table.source is Source.HOLIDAYS
    reference = WorkCalendar()
    assert reference.table(year).source is Source.CHINESE_CALENDAR
    day = D(year, 1, 1)
    while day.year == year:
        assert table.is_working_day(day) == reference.is_working_day(day), day
        day += dt.timedelta(days=1)


NOTICE_2027 = """
[years.2027]
notice = "国务院办公厅关于2027年部分节假日安排的通知"
days_off = ["2027-02-05/2027-02-11", 2027-10-01, "2027-10-02/2027-10-07"]
working_days = ["2027-02-20", 2027-10-09]
"""


def test_a_notice_in_calendar_toml_decides_its_year(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(NOTICE_2027, encoding="utf-8")
    cal = WorkCalendar.from_file(path)
    assert cal.is_working_day(D(2027, 2, 20))  # a Saturday worked
    assert cal.is_working_day(D(2027, 10, 9))
    assert not cal.is_working_day(D(2027, 2, 11))  # a Thursday off
    assert not cal.is_working_day(D(2027, 10, 7))
    assert cal.is_working_day(D(2027, 4, 5))  # not in this notice: worked
    table = cal.table(2027)
    assert table.source is Source.NOTICE
    assert table.detail == "国务院办公厅关于2027年部分节假日安排的通知"
    # named after the holidays package where people read it (`reminder calendar`)
    assert named(table).days_off[D(2027, 2, 8)] == "春节"
    assert cal.unconfirmed_years([2027]) == []
    assert cal.warning([2027]) is None
    assert cal.warning([2027, 2028]) == f"2028年调休安排尚未收录：请按国务院办公厅通知补充 {path}"


def test_a_notice_may_name_a_day_of_the_year_before(tmp_path: Path) -> None:
    """2012's notice made Saturday 2011-12-31 a working day."""
    path = tmp_path / "calendar.toml"
    path.write_text('[years.2031]\nworking_days = ["2030-12-28"]\n', encoding="utf-8")
    cal = WorkCalendar.from_file(path)
    assert cal.is_working_day(D(2030, 12, 28))
    assert cal.table(2030).source is Source.COMPUTED  # the year itself keeps its source


def test_the_shipped_example_notice_is_the_2026_calendar(tmp_path: Path) -> None:
    """The commented example in config/calendar.toml, uncommented, is chinese-calendar's
    2026 to the day: the format says what the notice says."""
    text = (CONFIG / "calendar.toml").read_text(encoding="utf-8")
    example = text[text.index("# [years.2026]") :].splitlines()
    path = tmp_path / "calendar.toml"
    path.write_text("\n".join(line.removeprefix("#") for line in example), encoding="utf-8")
    found = WorkCalendar.from_file(path)
    reference = WorkCalendar()
    assert found.table(2026).source is Source.NOTICE
    day = D(2026, 1, 1)
    while day.year == 2026:
        assert found.is_working_day(day) == reference.is_working_day(day), day
        day += dt.timedelta(days=1)


def test_local_exceptions_win(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(
        'days_off = ["2018-06-15"]\nworking_days = ["2018-06-17"]\n'
        '[years.2018]\nworking_days = ["2018-06-16"]\ndays_off = ["2018-06-17"]\n'
    )
    cal = WorkCalendar.from_file(path)
    assert not cal.is_working_day(D(2018, 6, 15))
    assert cal.is_working_day(D(2018, 6, 17))  # the local exception beats the notice
    assert cal.is_working_day(D(2018, 6, 16))
    assert cal.on_or_before(D(2018, 6, 15)) == D(2018, 6, 14)


def test_every_day_when_working_days_do_not_matter() -> None:
    cal = WorkCalendar(working_days_only=False)
    assert cal.is_working_day(D(2018, 10, 1))
    assert cal.after(D(2018, 9, 30)) == D(2018, 10, 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("days_off = [", "invalid TOML"),
        ('days_off = ["2018-13-01"]', "days_off.0"),
        ('holidays = ["2018-01-01"]', "holidays"),
        (
            'days_off = ["2018-06-15"]\nworking_days = ["2018-06-15"]',
            "both a day off and a working day",
        ),
        ('[years.2027]\ndays_off = ["2027-02-11/2027-02-05"]', "ends before it starts"),
        ('[years.2027]\ndays_off = ["2027-01-01/2027-03-01"]', "longer than a month"),
        ('[years.2027]\nworking_days = ["2025-12-28"]', "2025-12-28 is not in 2027"),
        ('[years.2027]\nholidays = ["2027-01-01"]', "years.2027.holidays"),
        ("[years.twenty]\ndays_off = []", "years.twenty"),
        (
            '[years.2027]\ndays_off = ["2027-02-05/2027-02-11"]\nworking_days = ["2027-02-07"]',
            "years.2027: 2027-02-07 is both",
        ),
    ],
)
def test_bad_calendar_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_calendar_file(path)
    assert str(path) in str(caught.value)


@given(st.dates(D(2017, 1, 1), D(2026, 12, 31)), st.integers(1, 40))
def test_add_working_days_counts_working_days(day: dt.date, count: int) -> None:
    cal = WorkCalendar()
    later = cal.add_working_days(day, count)
    assert cal.is_working_day(later)
    assert cal.working_days_between(day, later) == count
    assert cal.working_days_between(day, later - dt.timedelta(days=1)) == count - 1


def test_the_shipped_config_says_what_the_defaults_are() -> None:
    """config/reminder.toml documents the defaults; it must not drift from them."""
    shipped = tomllib.loads((CONFIG / "reminder.toml").read_text(encoding="utf-8"))
    assert Settings(**shipped) == Settings()
    assert load_calendar_file(CONFIG / "calendar.toml") == CalendarFile()
