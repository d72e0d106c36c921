"""Properties of the planner over a simulated year of ticks at random moments."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reminder.calendar import WorkCalendar
from reminder.ledger.deadline import parse_deadline
from reminder.ledger.model import Role, Task, UnitKind, UnitRef
from reminder.planner import Target, due
from reminder.policy import Policy

ZONE = ZoneInfo("Asia/Shanghai")
YEAR_START = dt.datetime(2018, 1, 1, tzinfo=ZONE).astimezone(dt.UTC)
CALENDARS = {True: WorkCalendar(), False: WorkCalendar(working_days_only=False)}

days_2018 = st.dates(dt.date(2018, 1, 1), dt.date(2018, 12, 31))


@st.composite
def deadlines(draw: st.DrawFn) -> str:
    first, second = sorted((draw(days_2018), draw(days_2018)))
    return draw(
        st.sampled_from(
            [
                f"{first.month}月{first.day}日",
                f"{first.month}月{first.day}日—{second.month}月{second.day}日",
                f"{first.month}月{first.day}日-",
                f"{first.month}月底和{second.month}月底",
                "全年",
                "采暖季",
                f"每月{min(first.day, 28)}日前",
                "每季度末",
                "持续开展",
            ]
        )
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    return Policy.model_validate(
        {
            "send_at": f"{draw(st.integers(6, 11)):02d}:{draw(st.sampled_from([0, 30])):02d}",
            "working_days_only": draw(st.booleans()),
            "upcoming": {
                "days_before": draw(st.lists(st.integers(1, 20), min_size=1, max_size=4)),
                "due_today": draw(st.booleans()),
            },
            "window_start": {"days_before": draw(st.lists(st.integers(1, 7), max_size=2))},
            "overdue": {
                "repeat_every": draw(st.one_of(st.just("week"), st.integers(1, 6))),
                "escalate_after": draw(st.integers(1, 9)),
            },
            "progress": {
                "day_of_month": draw(st.integers(1, 28)),
                "summary_on": draw(st.sampled_from(["", "12-10", "11-30"])),
            },
        }
    )


# moments of the year; a tick list may repeat a moment and may go back in time
moments = st.lists(
    st.integers(0, 365 * 24 * 60).map(lambda minutes: YEAR_START + dt.timedelta(minutes=minutes)),
    min_size=1,
    max_size=60,
)


def make_target(raw: str, done: bool, planned_until: dt.datetime | None) -> Target:
    unit = UnitRef("环境保护局", Role.LEAD, UnitKind.UNIT, "环境保护局")
    task = Task(1, 1, "任务", (unit,), parse_deadline(raw, 2018), "", 1)
    return Target(
        id=1,
        task_id=1,
        task=task,
        section=(1, "一", "一"),
        year=2018,
        unit=unit.name,
        role=unit.role,
        done=done,
        planned_until=planned_until,
    )


@settings(max_examples=150, deadline=None)
@given(
    deadlines(),
    policies(),
    moments,
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 59)),
)
def test_a_year_of_ticks(
    raw: str, policy: Policy, ticks: list[dt.datetime], in_order: bool, done_after: int | None
) -> None:
    if in_order:
        ticks = sorted(ticks)
    calendar = CALENDARS[policy.working_days_only]
    planned_until: dt.datetime | None = None
    sent_keys: set[tuple[str, dt.date]] = set()
    superseded_keys: set[tuple[str, dt.date]] = set()
    for index, now in enumerate(ticks):
        done = done_after is not None and index >= done_after
        target = make_target(raw, done, planned_until)
        plan = due([target], lambda _t: policy, calendar, ZONE, now)
        # supersession leaves at most one reminder per task × unit × tick, and exactly
        # one whenever something was superseded
        assert len(plan.send) <= 1
        if plan.superseded:
            assert len(plan.send) == 1
        local = now.astimezone(ZONE)
        sending = calendar.is_working_day(local.date()) and local.time() >= policy.send_at
        assert sending or not plan.send, "a reminder outside sending hours"
        assert sending or plan.superseded == []
        for reminder in plan.send:
            occasion = reminder.occasion
            assert not done, "a reminder for done work"
            assert calendar.is_working_day(occasion.day), "a reminder on a day off"
            assert occasion.at <= now
            assert planned_until is None or occasion.at > planned_until
            key = (occasion.kind.value, occasion.day)
            assert key not in sent_keys, "a key sent twice"
            assert key not in superseded_keys, "a superseded reminder sent later"
            sent_keys.add(key)
        for reminder in plan.superseded:
            superseded_keys.add((reminder.occasion.kind.value, reminder.occasion.day))
        following = plan.next_at[1]
        assert following is None or following > now
        if 1 in plan.held:  # nothing planned: what is owed waits for sending hours
            assert following is not None
            continue
        planned_until = now if planned_until is None else max(planned_until, now)
