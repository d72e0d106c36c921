"""Working days around the 2018 holidays, year ends, uncovered years, local overrides."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reminder.calendar import WorkCalendar, load_calendar_overrides
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


def test_year_the_package_does_not_cover_falls_back_to_weekdays() -> None:
    seen: list[int] = []
    cal = WorkCalendar(on_uncovered=seen.append)
    assert cal.is_working_day(D(2031, 1, 1))  # a Wednesday: no holiday table, so working
    assert not cal.is_working_day(D(2031, 1, 4))  # Saturday
    assert cal.after(D(2031, 1, 3)) == D(2031, 1, 6)
    assert seen == [2031]  # reported once, however often it is asked


def test_local_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text('days_off = ["2018-06-15"]\nworking_days = ["2018-06-17"]\n')
    days_off, working_days = load_calendar_overrides(path)
    cal = WorkCalendar(days_off, working_days)
    assert not cal.is_working_day(D(2018, 6, 15))
    assert cal.is_working_day(D(2018, 6, 17))
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
    ],
)
def test_bad_calendar_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_calendar_overrides(path)
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
    assert load_calendar_overrides(CONFIG / "calendar.toml") == ([], [])
