"""Every planning rule, with fixed `now`s around the 2018 holidays and year ends."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from reminder.calendar import WorkCalendar
from reminder.ledger.deadline import parse_deadline
from reminder.ledger.model import Role, Task, UnitKind, UnitRef
from reminder.planner import Occasion, Plan, Target, due, next_at, occasions
from reminder.policy import Kind, Policy

ZONE = ZoneInfo("Asia/Shanghai")
CAL = WorkCalendar()
D = dt.date
SECTION = (1, "一", "加快调整能源消费结构")


def at(day: str, time: str = "09:00") -> dt.datetime:
    local = dt.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=ZONE)
    return local.astimezone(dt.UTC)


def target(
    raw: str,
    *,
    year: int = 2018,
    no: int = 1,
    done: bool = False,
    planned_until: dt.datetime | None = None,
    last_progress: dt.datetime | None = None,
    section: tuple[int, str, str] = SECTION,
) -> Target:
    unit = UnitRef("环境保护局", Role.LEAD, UnitKind.UNIT, "环境保护局")
    task = Task(no, section[0], "任务", (unit,), parse_deadline(raw, year), "", 1)
    return Target(
        id=no,
        task_id=no,
        task=task,
        section=section,
        year=year,
        unit=unit.name,
        role=unit.role,
        done=done,
        planned_until=planned_until,
        last_progress=last_progress,
    )


def schedule(t: Target, until: str = "2019-12-31", policy: Policy | None = None) -> list[Occasion]:
    found = occasions(t, policy or Policy(), CAL, ZONE, at(until))
    return [o for o in found if o.at <= at(until)]


def days(found: list[Occasion], kind: Kind) -> list[dt.date]:
    return [o.day for o in found if o.kind is kind]


def plan_at(t: Target, when: dt.datetime, policy: Policy | None = None) -> Plan:
    return due([t], lambda _t: policy or Policy(), CAL, ZONE, when)


# --- upcoming and due today ----------------------------------------------------------------


def test_upcoming_7_and_3_days_and_on_the_last_working_day_before_a_day_off() -> None:
    found = schedule(target("6月30日"), until="2018-07-01")
    # 06-23 is a Saturday → Friday 06-22; 06-30 is a Saturday → the 29th is its due day
    assert days(found, Kind.UPCOMING) == [D(2018, 6, 22), D(2018, 6, 27)]
    due = [o for o in found if o.kind is Kind.DUE_TODAY]
    assert [(o.day, o.milestone, o.days_left) for o in due] == [(D(2018, 6, 29), D(2018, 6, 30), 1)]


def test_due_today_on_a_working_day() -> None:
    found = schedule(target("1月31日"), until="2018-02-01")
    assert days(found, Kind.DUE_TODAY) == [D(2018, 1, 31)]
    assert days(found, Kind.UPCOMING) == [D(2018, 1, 24), D(2018, 1, 26)]
    assert all(o.at.astimezone(ZONE).time() == dt.time(9, 0) for o in found)


def test_reminders_before_national_day_move_to_the_working_day_before() -> None:
    # due Monday 10-08: 7 days before is 10-01 (holiday) → Sunday 09-30, a make-up working
    # day; 3 days before is 10-05 (holiday) → 09-30 too
    found = schedule(target("10月8日"), until="2018-10-09")
    assert days(found, Kind.UPCOMING) == [D(2018, 9, 30)]
    assert days(found, Kind.DUE_TODAY) == [D(2018, 10, 8)]


def test_due_on_a_holiday_is_due_on_the_working_day_before() -> None:
    found = schedule(target("10月3日"), until="2018-10-04")
    on_sunday = [o for o in found if o.day == D(2018, 9, 30)]
    # the 3-day reminder would fall on the due day itself: the due-day reminder says it all
    assert [(o.kind, o.milestone, o.days_left) for o in on_sunday] == [
        (Kind.DUE_TODAY, D(2018, 10, 3), 3)
    ]
    assert days(found, Kind.UPCOMING) == [D(2018, 9, 26)]


def test_due_on_new_years_eve_is_due_on_the_29th() -> None:
    found = schedule(target("12月31日"), until="2019-01-03")
    assert days(found, Kind.DUE_TODAY) == [D(2018, 12, 29)]  # the make-up working Saturday
    assert days(found, Kind.OVERDUE) == [D(2019, 1, 2)]


def test_two_milestones_each_get_reminders() -> None:
    found = schedule(target("6月底和7月底"), until="2018-08-01")
    assert days(found, Kind.DUE_TODAY) == [D(2018, 6, 29), D(2018, 7, 31)]
    assert days(found, Kind.OVERDUE) == [D(2018, 8, 1)]  # only after the last


def test_leap_day_due_date() -> None:
    found = schedule(target("2月29日", year=2020), until="2020-03-03")
    # Saturday 02-29: due on Friday 02-28
    assert [(o.kind, o.milestone) for o in found if o.day == D(2020, 2, 28)] == [
        (Kind.DUE_TODAY, D(2020, 2, 29))
    ]
    assert days(found, Kind.OVERDUE) == [D(2020, 3, 2)]


def test_upcoming_without_due_today_keeps_the_day_before() -> None:
    policy = Policy.model_validate({"upcoming": {"days_before": [1], "due_today": False}})
    found = schedule(target("10月3日"), until="2018-10-04", policy=policy)
    assert [(o.kind, o.day) for o in found] == [(Kind.UPCOMING, D(2018, 9, 30))]


# --- overdue and escalation -------------------------------------------------------------------


def test_overdue_on_the_first_working_day_then_weekly_escalating_from_the_5th() -> None:
    found = schedule(target("9月30日"), until="2018-10-25")
    overdue = [o for o in found if o.kind is Kind.OVERDUE]
    # working days overdue, counted from the due date: 10-08 is the 1st, 10-15 the 6th
    assert [(o.day, o.overdue_days, o.escalate) for o in overdue] == [
        (D(2018, 10, 8), 1, False),
        (D(2018, 10, 15), 6, True),
        (D(2018, 10, 22), 11, True),
    ]


def test_weekly_overdue_skips_a_week_of_days_off_and_starts_late_weeks_late() -> None:
    # due Friday 09-28; 09-29 and 09-30 are make-up working days, 10-01 … 10-07 are off
    found = schedule(target("9月28日"), until="2018-10-16")
    assert days(found, Kind.OVERDUE) == [D(2018, 9, 29), D(2018, 10, 8), D(2018, 10, 15)]
    # 12-29 (a make-up Saturday) is the first day overdue; the next week starts on 01-02
    found = schedule(target("12月28日"), until="2019-01-10")
    assert days(found, Kind.OVERDUE) == [D(2018, 12, 29), D(2019, 1, 2), D(2019, 1, 7)]


def test_overdue_every_k_working_days_when_the_policy_says_so() -> None:
    policy = Policy.model_validate({"overdue": {"repeat_every": 3}})
    found = schedule(target("9月30日"), until="2018-10-25", policy=policy)
    overdue = [o for o in found if o.kind is Kind.OVERDUE]
    assert [(o.day, o.overdue_days, o.escalate) for o in overdue] == [
        (D(2018, 10, 8), 1, False),
        (D(2018, 10, 11), 4, False),
        (D(2018, 10, 16), 7, True),
        (D(2018, 10, 19), 10, True),
        (D(2018, 10, 24), 13, True),
    ]
    daily = Policy.model_validate({"overdue": {"repeat_every": 1, "escalate_after": 2}})
    found = schedule(target("9月28日"), until="2018-10-10", policy=daily)
    assert [(o.day, o.escalate) for o in found if o.kind is Kind.OVERDUE] == [
        (D(2018, 9, 29), False),
        (D(2018, 9, 30), True),
        (D(2018, 10, 8), True),
        (D(2018, 10, 9), True),
        (D(2018, 10, 10), True),
    ]


# --- windows, seasons, open-ended tasks ----------------------------------------------------------


def test_window_start_3_days_before_and_on_the_day() -> None:
    found = schedule(target("9月1日—10月31日"), until="2018-11-02")
    # 09-01 is a Saturday: both notices move to working days before
    assert days(found, Kind.WINDOW_START) == [D(2018, 8, 29), D(2018, 8, 31)]
    assert days(found, Kind.DUE_TODAY) == [D(2018, 10, 31)]
    assert days(found, Kind.OVERDUE) == [D(2018, 11, 1)]


def test_heating_season_spans_the_new_year() -> None:
    found = schedule(target("采暖季"), until="2019-03-20")
    assert days(found, Kind.WINDOW_START) == [D(2018, 11, 12), D(2018, 11, 15)]
    assert days(found, Kind.UPCOMING) == [D(2019, 3, 8), D(2019, 3, 12)]
    assert days(found, Kind.DUE_TODAY) == [D(2019, 3, 15)]
    assert days(found, Kind.OVERDUE) == [D(2019, 3, 18)]
    assert days(found, Kind.PROGRESS) == []  # a season is not in the default progress kinds


def test_from_task_gets_start_notice_and_monthly_progress_but_no_overdue() -> None:
    found = schedule(target("7月1日-"), until="2018-12-31")
    assert days(found, Kind.WINDOW_START) == [D(2018, 6, 28), D(2018, 6, 29)]
    # 08-25 is a Saturday, 11-25 a Sunday
    assert days(found, Kind.PROGRESS) == [
        D(2018, 7, 25), D(2018, 8, 24), D(2018, 9, 25), D(2018, 10, 25), D(2018, 11, 23),
        D(2018, 12, 25),
    ]  # fmt: skip
    assert days(found, Kind.SUMMARY) == [D(2018, 12, 10)]  # and the year-end summary
    assert days(found, Kind.OVERDUE) == []


def test_all_year_duty_gets_check_ins_and_a_summary_no_countdown_and_no_overdue() -> None:
    found = schedule(target("全年"), until="2019-01-31")
    progress = days(found, Kind.PROGRESS)
    assert len(progress) == 12
    assert progress[1] == D(2018, 2, 24)  # Sunday 02-25 → the make-up working Saturday
    assert progress[2] == D(2018, 3, 23)  # Sunday 03-25 → Friday
    assert days(found, Kind.SUMMARY) == [D(2018, 12, 10)]
    assert {o.kind for o in found} == {Kind.PROGRESS, Kind.SUMMARY}


def test_all_year_duty_is_counted_down_when_the_policy_says_so() -> None:
    kinds = ["date", "all_year"]
    policy = Policy.model_validate({"upcoming": {"kinds": kinds}, "overdue": {"kinds": kinds}})
    found = schedule(target("全年"), until="2019-01-31", policy=policy)
    assert days(found, Kind.DUE_TODAY) == [D(2018, 12, 29)]
    assert days(found, Kind.OVERDUE)[0] == D(2019, 1, 2)


def test_check_ins_go_on_every_month_whatever_day_the_25th_is() -> None:
    """The planner kept the unshifted 25th: after a month whose 25th was a day off, a
    task with nothing else planned was never read again."""
    t = target("全年", planned_until=at("2018-03-22", "10:00"))
    plan = plan_at(t, at("2018-03-23", "09:00"))  # Friday before Sunday 03-25
    assert [(r.occasion.kind, r.occasion.day) for r in plan.send] == [
        (Kind.PROGRESS, D(2018, 3, 23))
    ]
    assert plan.next_at[1] == at("2018-04-25")


def test_no_year_end_summary_when_the_policy_says_none() -> None:
    policy = Policy.model_validate({"progress": {"summary_on": ""}})
    found = schedule(target("全年"), until="2019-01-31", policy=policy)
    assert len(days(found, Kind.PROGRESS)) == 12
    assert days(found, Kind.SUMMARY) == []


def test_ongoing_task_has_only_progress() -> None:
    found = schedule(target("持续开展"), until="2018-04-30")
    assert {o.kind for o in found} == {Kind.PROGRESS}
    assert days(found, Kind.PROGRESS)[0] == D(2018, 1, 25)


def test_recurring_deadline_makes_its_own_milestones() -> None:
    found = schedule(target("每月10日前"), until="2018-12-31")
    assert D(2018, 1, 10) in days(found, Kind.DUE_TODAY)
    assert D(2018, 3, 9) in days(found, Kind.DUE_TODAY)  # 03-10 is a Saturday
    assert len(days(found, Kind.PROGRESS)) == 11  # none after the last milestone, 12-10
    assert days(found, Kind.SUMMARY) == [D(2018, 12, 10)]  # on it


def test_unknown_deadline_has_no_reminders() -> None:
    assert schedule(target("待定")) == []


def test_progress_note_answers_the_months_check_in() -> None:
    reported = at("2018-05-20")
    found = schedule(target("全年", last_progress=reported), until="2018-07-01")
    assert days(found, Kind.PROGRESS) == [
        D(2018, 1, 25), D(2018, 2, 24), D(2018, 3, 23), D(2018, 4, 25), D(2018, 6, 25),
    ]  # fmt: skip


# --- due(): catch-up, supersession, done, clock jumps ----------------------------------------


def test_three_days_of_downtime_give_one_message_per_task() -> None:
    # planned up to Tuesday 06-26; back on Friday 06-29 at 10:00: upcoming 3 (06-27)
    # and the due day (06-29, as 06-30 is a Saturday) fell due; only the more urgent goes
    t = target("6月30日", planned_until=at("2018-06-26", "10:00"))
    plan = plan_at(t, at("2018-06-29", "10:00"))
    assert [(r.occasion.kind, r.occasion.day) for r in plan.send] == [
        (Kind.DUE_TODAY, D(2018, 6, 29))
    ]
    assert [(r.occasion.kind, r.occasion.day) for r in plan.superseded] == [
        (Kind.UPCOMING, D(2018, 6, 27))
    ]
    overdue_t = target("6月1日", planned_until=at("2018-06-20", "10:00"))
    plan = plan_at(overdue_t, at("2018-06-29", "10:00"))
    assert len(plan.send) == 1
    assert plan.send[0].occasion.kind is Kind.OVERDUE
    assert plan.superseded == []  # same kind: the latest only


def test_most_urgent_wins_and_the_rest_are_superseded() -> None:
    # 每月10日前: down from 05-24 to Monday 06-04; the check-in (Friday 05-25) and the
    # 7-day reminder of 06-10 (Sunday 06-03 → Friday 06-01) fell due
    t = target("每月10日前", planned_until=at("2018-05-24"))
    plan = plan_at(t, at("2018-06-04", "10:00"))
    assert [(r.occasion.kind, r.occasion.day) for r in plan.send] == [
        (Kind.UPCOMING, D(2018, 6, 1))
    ]
    assert [(r.occasion.kind, r.occasion.day) for r in plan.superseded] == [
        (Kind.PROGRESS, D(2018, 5, 25))
    ]


def test_first_start_sends_the_latest_overdue_only() -> None:
    plan = plan_at(target("1月31日"), at("2018-10-08", "09:30"))
    assert len(plan.send) == 1
    reminder = plan.send[0].occasion
    assert reminder.kind is Kind.OVERDUE
    assert reminder.escalate
    assert plan.superseded == []  # the stale upcoming/due-today reminders are not sent late


def test_a_first_start_years_late_sends_this_weeks_overdue_and_this_months_check_in() -> None:
    # a 2018 ledger first planned on Monday 2019-03-04: the weekly overdue of that week
    # (its count of working days late as from 01-31), not one of 2018's
    plan = plan_at(target("1月31日"), at("2019-03-04", "09:30"))
    [overdue] = [r.occasion for r in plan.send]
    assert (overdue.kind, overdue.day) == (Kind.OVERDUE, D(2019, 3, 4))
    assert overdue.overdue_days == CAL.working_days_between(D(2018, 1, 31), D(2019, 3, 4))
    # an ongoing task: February's check-in, not the year-end summary asked in December
    plan = plan_at(target("持续开展"), at("2019-03-04", "09:30"))
    assert [(r.occasion.kind, r.occasion.day) for r in plan.send] == [
        (Kind.PROGRESS, D(2019, 2, 25))
    ]
    assert plan.superseded == []
    # a 全年 task of 2018: its check-ins and summary ended with its year
    assert plan_at(target("全年"), at("2019-03-04", "09:30")).send == []


def test_a_stale_window_notice_is_dropped_a_recent_one_is_sent() -> None:
    assert plan_at(target("1月1日—12月31日"), at("2018-10-08")).send == []
    recent = plan_at(
        target("10月8日—12月31日", planned_until=at("2018-09-29")), at("2018-10-08", "10:00")
    )
    assert [r.occasion.kind for r in recent.send] == [Kind.WINDOW_START]


def test_nothing_for_done_work() -> None:
    plan = plan_at(target("1月31日", done=True), at("2018-10-08"))
    assert plan.send == []
    assert plan.next_at == {1: None}


def test_a_clock_that_went_back_finds_nothing_new() -> None:
    planned = at("2018-10-11", "09:00")
    t = target("9月30日", planned_until=planned)
    plan = plan_at(t, at("2018-10-11", "07:00"))
    assert plan.send == []
    assert plan.next_at[1] == at("2018-10-15")


def test_next_at_is_the_first_occasion_after_what_was_planned() -> None:
    t = target("9月30日", planned_until=at("2018-10-08", "09:00"))
    assert next_at(t, Policy(), CAL, ZONE, t.planned_until) == at("2018-10-15")
    fresh = target("9月30日")
    # 7 days before 09-30 is Sunday 09-23, and 09-24 is Mid-Autumn → Friday 09-21
    assert next_at(fresh, Policy(), CAL, ZONE, None) == at("2018-09-21")


def test_send_time_and_zone_follow_the_policy() -> None:
    policy = Policy.model_validate({"send_at": "08:15"})
    found = schedule(target("1月31日"), until="2018-02-01", policy=policy)
    assert found[0].at == dt.datetime(2018, 1, 24, 0, 15, tzinfo=dt.UTC)


def test_overrides_per_section_and_task() -> None:
    policy = Policy.model_validate(
        {
            "override": [
                {"sections": ["加快调整能源消费结构"], "upcoming": {"days_before": [5]}},
                {"tasks": [2], "upcoming": {"enabled": False}},
            ]
        }
    )
    other_section = (2, "二", "着力优化产业结构")
    in_section = policy.for_task(SECTION, 1)
    assert in_section.upcoming.days_before == [5]
    assert policy.for_task(SECTION, 2).upcoming.enabled is False
    assert policy.for_task(other_section, 3).upcoming.days_before == [7, 3]
    found = schedule(target("6月29日"), until="2018-06-30", policy=in_section)
    assert days(found, Kind.UPCOMING) == [D(2018, 6, 22)]


def test_invalid_override_is_reported_with_its_key() -> None:
    with pytest.raises(ValueError, match="days before must be 1 or more"):
        Policy.model_validate({"override": [{"tasks": [1], "upcoming": {"days_before": [0]}}]})
    with pytest.raises(ValueError, match="needs `sections` or `tasks`"):
        Policy.model_validate({"override": [{"upcoming": {"days_before": [3]}}]})


# --- sending hours --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        (at("2018-10-07", "10:00"), at("2018-10-08")),  # Sunday, last day of 国庆
        (at("2018-10-06", "23:00"), at("2018-10-08")),
        (at("2018-10-08", "07:30"), at("2018-10-08")),  # a working day before the send hour
        (at("2018-09-29", "10:00"), None),  # a make-up working Saturday: sending is open
    ],
)
def test_a_catch_up_outside_sending_hours_waits_for_them(
    now: dt.datetime, opens: dt.datetime | None
) -> None:
    t = target("9月20日", planned_until=at("2018-09-21", "09:00"))  # owed: overdue reminders
    plan = plan_at(t, now)
    if opens is None:
        assert [r.occasion.kind for r in plan.send] == [Kind.OVERDUE]
        assert plan.held == set()
        return
    assert plan.send == []
    assert plan.superseded == []
    assert plan.held == {1}
    assert plan.next_at[1] == opens
    # when sending opens, what was owed goes out (planned_until was left where it was)
    later = plan_at(t, opens)
    # the latest of what was owed: 10-08, the 8th working day overdue (09-29 and 09-30
    # were worked)
    assert [(r.occasion.kind, r.occasion.day, r.occasion.overdue_days) for r in later.send] == [
        (Kind.OVERDUE, D(2018, 10, 8), 8)
    ]
    assert later.held == set()


def test_nothing_owed_on_a_day_off_moves_on_as_usual() -> None:
    t = target("12月20日", planned_until=at("2018-10-05", "12:00"))
    plan = plan_at(t, at("2018-10-07", "10:00"))
    assert plan.held == set()
    assert plan.next_at[1] == at("2018-12-13")  # 7 days before, as if nothing happened


def test_planned_is_replace_of_planned_until() -> None:
    """``Target.planned`` spells out ``dataclasses.replace`` (for speed): every field kept."""
    one = target("9月30日", planned_until=at("2018-01-01"), last_progress=at("2018-03-01"))
    one = dataclasses.replace(one, via="镇人民政府", done=True)
    assert one.planned(at("2018-10-08")) == dataclasses.replace(one, planned_until=at("2018-10-08"))
    assert one.planned(None) == dataclasses.replace(one, planned_until=None)
