"""Every deadline form of the seed and of real ledgers elsewhere."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reminder.ledger.deadline import DeadlineError, SeasonRule, normalise, parse_deadline
from reminder.ledger.model import DeadlineKind as K

D = dt.date


@pytest.mark.parametrize(
    ("raw", "kind", "start", "milestones"),
    [
        # the seed's forms
        ("1月31日", K.DATE, None, [D(2018, 1, 31)]),
        ("12月31日", K.DATE, None, [D(2018, 12, 31)]),
        ("全年", K.ALL_YEAR, D(2018, 1, 1), [D(2018, 12, 31)]),
        ("9月1日—10月31日", K.WINDOW, D(2018, 9, 1), [D(2018, 10, 31)]),
        ("4月1日—\n12月31日", K.WINDOW, D(2018, 4, 1), [D(2018, 12, 31)]),
        ("1月1日—12月31日", K.WINDOW, D(2018, 1, 1), [D(2018, 12, 31)]),
        ("7月1日-", K.FROM, D(2018, 7, 1), []),
        ("11月1日-", K.FROM, D(2018, 11, 1), []),
        ("采暖季", K.SEASON, D(2018, 11, 15), [D(2019, 3, 15)]),
        # forms of other ledgers
        ("10月底前", K.DATE, None, [D(2018, 10, 31)]),
        ("2月底", K.DATE, None, [D(2018, 2, 28)]),
        ("年底前", K.DATE, None, [D(2018, 12, 31)]),
        ("2019年底前", K.DATE, None, [D(2019, 12, 31)]),
        ("上半年", K.WINDOW, D(2018, 1, 1), [D(2018, 6, 30)]),
        ("下半年", K.WINDOW, D(2018, 7, 1), [D(2018, 12, 31)]),
        ("三季度", K.WINDOW, D(2018, 7, 1), [D(2018, 9, 30)]),
        ("一季度末", K.DATE, None, [D(2018, 3, 31)]),
        ("5月-8月", K.WINDOW, D(2018, 5, 1), [D(2018, 8, 31)]),
        ("5-8月", K.WINDOW, D(2018, 5, 1), [D(2018, 8, 31)]),
        ("6月5日一6月30日", K.WINDOW, D(2018, 6, 5), [D(2018, 6, 30)]),
        ("6月5日至6月30日", K.WINDOW, D(2018, 6, 5), [D(2018, 6, 30)]),
        ("9月1日-30日", K.WINDOW, D(2018, 9, 1), [D(2018, 9, 30)]),
        ("11月15日-3月15日", K.WINDOW, D(2018, 11, 15), [D(2019, 3, 15)]),
        ("2019年1月1日至3月15日", K.WINDOW, D(2019, 1, 1), [D(2019, 3, 15)]),
        ("2018年12月1日-次年2月28日", K.WINDOW, D(2018, 12, 1), [D(2019, 2, 28)]),
        ("持续开展", K.ONGOING, None, []),
        ("长期坚持", K.ONGOING, None, []),
        ("2021年5月1日起", K.FROM, D(2021, 5, 1), []),
        ("自7月1日起", K.FROM, D(2018, 7, 1), []),
        ("10月1日起执行", K.FROM, D(2018, 10, 1), []),
        ("6月底和7月底", K.DATE, None, [D(2018, 6, 30), D(2018, 7, 31)]),
        ("3月31日、9月30日", K.DATE, None, [D(2018, 3, 31), D(2018, 9, 30)]),
        ("9月投入使用", K.DATE, None, [D(2018, 9, 30)]),
        ("6月30日前完成验收", K.DATE, None, [D(2018, 6, 30)]),
        ("9月", K.DATE, None, [D(2018, 9, 30)]),
        ("9月前", K.DATE, None, [D(2018, 8, 31)]),
        ("十二月底前", K.DATE, None, [D(2018, 12, 31)]),
        ("十月三十一日", K.DATE, None, [D(2018, 10, 31)]),
        ("６月３０日", K.DATE, None, [D(2018, 6, 30)]),
        ("2018-09-30", K.DATE, None, [D(2018, 9, 30)]),
        ("2018/9/30", K.DATE, None, [D(2018, 9, 30)]),
        ("3月上旬", K.DATE, None, [D(2018, 3, 10)]),
        ("3月中旬", K.DATE, None, [D(2018, 3, 20)]),
        ("3月下旬", K.DATE, None, [D(2018, 3, 31)]),
        ("次年3月15日", K.DATE, None, [D(2019, 3, 15)]),
        ("年内", K.DATE, None, [D(2018, 12, 31)]),
        ("2019年全年", K.ALL_YEAR, D(2019, 1, 1), [D(2019, 12, 31)]),
        ("2018-2019年采暖季", K.SEASON, D(2018, 11, 15), [D(2019, 3, 15)]),
    ],
)
def test_reads_deadline_forms(
    raw: str, kind: K, start: dt.date | None, milestones: list[dt.date]
) -> None:
    deadline = parse_deadline(raw, 2018)
    assert deadline.raw == raw.strip()
    assert deadline.kind is kind
    assert deadline.start == start
    assert list(deadline.milestones) == milestones
    assert deadline.due == (milestones[-1] if milestones else None)


def test_action_named_in_the_cell_is_kept() -> None:
    assert parse_deadline("9月投入使用", 2018).action == "投入使用"
    assert parse_deadline("6月30日前完成验收", 2018).action == "完成验收"
    assert parse_deadline("6月30日", 2018).action is None


def test_monthly_recurrence_gives_a_milestone_each_month() -> None:
    deadline = parse_deadline("每月10日前", 2018)
    assert deadline.kind is K.RECURRING
    assert deadline.recurrence == "monthly:10"
    assert deadline.milestones == tuple(D(2018, m, 10) for m in range(1, 13))


def test_monthly_recurrence_on_the_31st_uses_each_months_last_day() -> None:
    deadline = parse_deadline("每月31日前", 2020)
    assert deadline.milestones[1] == D(2020, 2, 29)
    assert deadline.milestones[3] == D(2020, 4, 30)


def test_quarterly_and_weekly_recurrences() -> None:
    quarterly = parse_deadline("每季度末", 2018)
    assert quarterly.recurrence == "quarterly:end"
    assert quarterly.milestones == (D(2018, 3, 31), D(2018, 6, 30), D(2018, 9, 30), D(2018, 12, 31))
    weekly = parse_deadline("每周五", 2018)
    assert weekly.recurrence == "weekly:5"
    assert all(day.weekday() == 4 and day.year == 2018 for day in weekly.milestones)
    assert len(weekly.milestones) == 52


def test_recurrence_keeps_what_else_the_cell_says() -> None:
    deadline = parse_deadline("每月10日前报送进展", 2018)
    assert deadline.recurrence == "monthly:10"
    assert deadline.action == "报送进展"


def test_season_follows_the_configured_rule() -> None:
    deadline = parse_deadline("采暖季", 2018, SeasonRule(start=(11, 1), end=(3, 31)))
    assert (deadline.start, deadline.due) == (D(2018, 11, 1), D(2019, 3, 31))


def test_leap_day_is_a_date_in_a_leap_year_only() -> None:
    assert parse_deadline("2月29日", 2020).due == D(2020, 2, 29)
    assert parse_deadline("2月底", 2020).due == D(2020, 2, 29)
    with pytest.raises(DeadlineError, match="2018 has no 2月29日"):
        parse_deadline("2月29日", 2018)


@pytest.mark.parametrize(
    "raw", ["13月45日", "2月30日", "0月5日", "4月31日", "每月32日前", "6月32日"]
)
def test_impossible_dates_raise(raw: str) -> None:
    with pytest.raises(DeadlineError, match="impossible"):
        parse_deadline(raw, 2018)


@pytest.mark.parametrize("raw", ["", "待定", "根据省里要求", "按进度推进"])
def test_unreadable_cells_are_kept_raw(raw: str) -> None:
    deadline = parse_deadline(raw, 2018)
    assert deadline.kind is K.UNKNOWN
    assert deadline.raw == raw
    assert deadline.milestones == ()


def test_normalise_turns_every_dash_into_one() -> None:
    assert normalise("9月1日 — 10月31日") == "9月1日-10月31日"
    assert normalise("9月1日～10月31日") == "9月1日-10月31日"
    assert normalise("6月5日一6月30日") == "6月5日-6月30日"


days_2018 = st.dates(min_value=D(2018, 1, 1), max_value=D(2018, 12, 31))


@given(days_2018)
def test_any_day_of_the_year_reads_back(day: dt.date) -> None:
    deadline = parse_deadline(f"{day.month}月{day.day}日", 2018)
    assert (deadline.kind, deadline.milestones) == (K.DATE, (day,))


@given(days_2018, days_2018, st.sampled_from(["—", "-", "一", "至", "～", "－"]))
def test_any_range_reads_as_a_window(first: dt.date, second: dt.date, dash: str) -> None:
    start, end = sorted((first, second))
    deadline = parse_deadline(f"{start.month}月{start.day}日{dash}{end.month}月{end.day}日", 2018)
    assert deadline.kind is K.WINDOW
    assert (deadline.start, deadline.due) == (start, end)


@given(st.integers(min_value=1, max_value=12), st.integers(min_value=1990, max_value=2100))
def test_month_end_is_the_last_day(month: int, year: int) -> None:
    deadline = parse_deadline(f"{month}月底前", year)
    assert deadline.due == D(year, month, calendar.monthrange(year, month)[1])


@given(st.text(max_size=20))
def test_any_text_either_parses_or_raises_deadline_error(text: str) -> None:
    try:
        deadline = parse_deadline(text, 2018)
    except DeadlineError:
        return
    assert deadline.raw == text.strip()
    assert list(deadline.milestones) == sorted(deadline.milestones)
