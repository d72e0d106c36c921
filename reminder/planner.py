"""The planner: pure. (targets, policy, calendar, now) → the reminders due at ``now``.

A *target* is one task × one responsible unit (a group is expanded to its members)
with its planning state: whether it is done, and ``planned_until``, the moment up to
which its reminders have already been planned. An *occasion* is one moment a policy
rule wants the unit to hear of the task (``upcoming`` 7 days before 06-30, ``overdue``
on the 4th working day after it, …), always at the send hour of a working day.

``due`` takes the clock as an argument and never reads it, never does I/O:

1. For each target that is not done, list its occasions in (planned_until, now].
2. Of each kind keep only the latest: a newer overdue reminder replaces an older one.
3. The most urgent of what is left is sent (overdue > due today > upcoming > window
   start > progress; among overdue, the longest overdue); the others are superseded.
   A catch-up never reminds of a date already past: an upcoming or due-today reminder
   whose date has gone is left to the overdue one, a window-start notice more than a
   week late is dropped.
4. The target's next occasion after ``now`` is returned too: the store keeps it as the
   target's ``next_at`` (indexed), so a tick reads only the targets that are due.
5. Nothing goes out on a day off or before the send hour: a target owed something then
   (a catch-up: the daemon started on a Sunday, or at 07:00) is held, its
   ``planned_until`` left where it was and its ``next_at`` set to the moment sending
   opens again (the next working day at the send hour).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from reminder.calendar import WorkCalendar
from reminder.ledger.model import DeadlineKind, Role, Task
from reminder.policy import Kind, Policy

# a window-start notice more than this late is dropped rather than sent in a catch-up
WINDOW_START_GRACE = dt.timedelta(days=7)
_RANK = {
    Kind.PROGRESS: 1,
    Kind.SUMMARY: 2,
    Kind.WINDOW_START: 3,
    Kind.UPCOMING: 4,
    Kind.DUE_TODAY: 5,
    Kind.OVERDUE: 6,
}


@dataclass(frozen=True, slots=True)
class Target:
    """One task × unit, as the planner needs it."""

    id: int
    task_id: int
    task: Task
    section: tuple[int, str, str]  # (no, numeral, title) of the task's section
    year: int  # the ledger's year: where ongoing tasks start their check-ins
    unit: str
    role: Role
    via: str | None = None  # the group the unit was listed through
    done: bool = False
    planned_until: dt.datetime | None = None
    last_progress: dt.datetime | None = None

    def planned(self, until: dt.datetime | None) -> Target:
        """This target, planned up to ``until`` (``dataclasses.replace``, ten times faster)."""
        return Target(
            self.id,
            self.task_id,
            self.task,
            self.section,
            self.year,
            self.unit,
            self.role,
            self.via,
            self.done,
            until,
            self.last_progress,
        )


@dataclass(frozen=True, slots=True)
class Occasion:
    kind: Kind
    day: dt.date  # the local day it goes out
    at: dt.datetime  # aware, UTC: that day at the send hour
    milestone: dt.date | None = None  # the due (or start) date it is about
    days_left: int | None = None  # calendar days from `day` to the milestone; < 0 overdue
    overdue_days: int = 0  # working days overdue, for overdue reminders
    escalate: bool = False

    def expired(self, today: dt.date) -> bool:
        """A reminder about a date already past is not sent late: the overdue one is."""
        if self.milestone is None:
            return False
        if self.kind in (Kind.UPCOMING, Kind.DUE_TODAY):
            return self.milestone < today
        if self.kind is Kind.WINDOW_START:
            return self.milestone + WINDOW_START_GRACE < today
        return False

    @property
    def urgency(self) -> tuple[int, int, dt.date]:
        detail = self.overdue_days if self.kind is Kind.OVERDUE else -(self.days_left or 0)
        return (_RANK[self.kind], detail, self.day)


@dataclass(frozen=True, slots=True)
class Reminder:
    target: Target
    occasion: Occasion


@dataclass(slots=True)
class Plan:
    send: list[Reminder] = field(default_factory=list)
    superseded: list[Reminder] = field(default_factory=list)
    next_at: dict[int, dt.datetime | None] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)  # targets not planned: sending is closed


def sending_opens(
    now: dt.datetime, send_at: dt.time, calendar: WorkCalendar, zone: ZoneInfo
) -> dt.datetime | None:
    """None while reminders may go out (a working day, from the send hour); else when
    they may again."""
    local = local_time(now, zone)
    today = local.date()
    if calendar.is_working_day(today):
        if local.time() >= send_at:
            return None
        return local_moment(today, send_at, zone)
    return local_moment(calendar.on_or_after(today), send_at, zone)


@dataclass(frozen=True, slots=True)
class SendHour:
    """Turns a local day into the aware UTC moment reminders go out."""

    zone: ZoneInfo
    send_at: dt.time

    def moment(self, day: dt.date) -> dt.datetime:
        return local_moment(day, self.send_at, self.zone)

    def local_day(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(self.zone).date()


class _Occasions:
    """Occasions of one target under one policy; see the module docstring."""

    def __init__(self, target: Target, policy: Policy, calendar: WorkCalendar, zone: ZoneInfo):
        self.target = target
        self.policy = policy
        self.calendar = calendar
        self.clock = SendHour(zone, policy.send_at)

    def occasion(
        self,
        kind: Kind,
        day: dt.date,
        milestone: dt.date | None = None,
        overdue_days: int = 0,
        escalate: bool = False,
    ) -> Occasion:
        days_left = (milestone - day).days if milestone else None
        return Occasion(
            kind, day, self.clock.moment(day), milestone, days_left, overdue_days, escalate
        )

    def shift_back(self, day: dt.date) -> dt.date:
        return self.calendar.on_or_before(day)

    def finite(self) -> tuple[Occasion, ...]:
        """Upcoming, due today and window start: a fixed number per milestone, the same
        each time a target is planned (computed once per deadline and rules)."""
        upcoming, start = self.policy.upcoming, self.policy.window_start
        key = (
            self.target.task.deadline,
            upcoming.enabled,
            tuple(upcoming.days_before),
            upcoming.due_today,
            tuple(upcoming.kinds),
            start.enabled,
            tuple(start.days_before),
            start.on_start,
            tuple(start.kinds),
            self.clock,
        )
        memo = self.calendar.memo
        found = memo.get(key)
        if found is None:
            best: dict[tuple[Kind, dt.date], Occasion] = {}
            for occasion in self._finite():
                same = (occasion.kind, occasion.day)
                if same not in best or occasion.urgency > best[same].urgency:
                    best[same] = occasion
            found = memo[key] = tuple(sorted(best.values(), key=_moment))
        return found

    def _finite(self) -> Iterator[Occasion]:
        """See ``finite``.

        A milestone on a day off is due on the last working day before it (kind
        ``due_today``, its ``milestone`` telling the day off); an upcoming reminder that
        would fall on that day too is left out.
        """
        deadline = self.target.task.deadline
        upcoming = self.policy.upcoming
        if upcoming.enabled and deadline.kind in upcoming.kinds:
            for milestone in deadline.milestones:
                due_day = self.shift_back(milestone)
                for before in upcoming.days_before:
                    day = self.shift_back(milestone - dt.timedelta(days=before))
                    if day < due_day or (day < milestone and not upcoming.due_today):
                        yield self.occasion(Kind.UPCOMING, day, milestone)
                if upcoming.due_today:
                    yield self.occasion(Kind.DUE_TODAY, due_day, milestone)
        start = self.policy.window_start
        if start.enabled and deadline.start and deadline.kind in start.kinds:
            befores = [*start.days_before, *([0] if start.on_start else [])]
            for before in befores:
                day = self.shift_back(deadline.start - dt.timedelta(days=before))
                yield self.occasion(Kind.WINDOW_START, day, deadline.start)

    def overdue(self, until: dt.date, since: dt.date | None) -> Iterator[Occasion]:
        """The first working day after the final milestone, then weekly (the first working
        day of each week) or every K working days.

        Starts near ``since`` (what was planned already needs no listing again).
        """
        due = self.target.task.deadline.due
        overdue = self.policy.overdue
        if (
            due is None
            or not overdue.enabled
            or self.target.task.deadline.kind not in overdue.kinds
        ):
            return
        first = self.calendar.after(due)
        days = (
            self._weekly(first, since)
            if overdue.repeat_every == "week"
            else self._every(due, overdue.repeat_every, since)
        )
        for day in days:
            late = self.calendar.working_days_between(due, day)
            escalate = overdue.escalate and late >= overdue.escalate_after
            yield self.occasion(Kind.OVERDUE, day, due, late, escalate)
            if day > until:  # one past `until`: the target's next_at
                return

    def _weekly(self, first: dt.date, since: dt.date | None) -> Iterator[dt.date]:
        """``first``, then the first working day of each following week."""
        yield first
        monday = first - dt.timedelta(days=first.weekday()) + dt.timedelta(days=7)
        if since is not None and since - dt.timedelta(days=7) > monday:
            monday = since - dt.timedelta(days=since.weekday() + 7)  # the week before since
        while True:
            day = self.calendar.week_start(monday)
            if day is not None:  # a week of days off has no letter
                yield day
            monday += dt.timedelta(days=7)

    def _every(self, due: dt.date, every: int, since: dt.date | None) -> Iterator[dt.date]:
        """The first working day after ``due``, then every ``every`` working days."""
        skip = 0  # how many repeats lie wholly before `since`
        if since is not None and since > due:
            skip = max(0, (self.calendar.working_days_between(due, since) - 1) // every - 1)
        day = self.calendar.add_working_days(due, 1 + skip * every)
        while True:
            yield day
            day = self.calendar.add_working_days(day, every)

    def progress(self, until: dt.date, since: dt.date | None) -> Iterator[Occasion]:
        """A monthly check-in, skipped in a month the unit already reported progress, and
        the year-end summary request in its month."""
        rule = self.policy.progress
        deadline = self.target.task.deadline
        if not rule.enabled or deadline.kind not in rule.kinds:
            return
        first = deadline.start or dt.date(self.target.year, 1, 1)
        if deadline.kind is DeadlineKind.RECURRING:
            first = dt.date(self.target.year, 1, 1)
        last = deadline.due if deadline.kind is not DeadlineKind.FROM else None
        reported = self.target.last_progress
        reported_month = (
            (self.clock.local_day(reported).year, self.clock.local_day(reported).month)
            if reported
            else None
        )
        year, month = first.year, first.month
        if since is not None and (since.year, since.month) > (year, month):
            year, month = (
                (since.year - 1, 12) if since.month == 1 else (since.year, since.month - 1)
            )
        summary = rule.summary_on
        while True:
            asks = [(Kind.PROGRESS, dt.date(year, month, rule.day_of_month))]
            if summary is not None and month == summary[0]:
                asks.append((Kind.SUMMARY, dt.date(year, month, summary[1])))
            for kind, asked in sorted(asks, key=lambda ask: ask[1]):
                if last is not None and asked > last:
                    return
                if asked < first or (kind is Kind.PROGRESS and (year, month) == reported_month):
                    continue
                day = self.shift_back(asked)
                yield self.occasion(kind, day, asked)
                # the day it goes out, not the day asked (the 25th may be a Sunday)
                if day > until:  # one past `until`: the target's next_at
                    return
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def all(self, until: dt.datetime, since: dt.datetime | None = None) -> list[Occasion]:
        """Every occasion up to ``until`` and the first after it, one per (kind, day), by time.

        Finite rules (upcoming, due today, window start) give all their occasions; the
        open-ended series (overdue, progress) stop at the first occasion after ``until``.
        Only the finite ones can fall on the same day in the same kind (two milestones);
        ``finite`` keeps the most urgent of those.
        """
        if self.target.done:
            return []
        limit = self.clock.local_day(until)
        start = self.clock.local_day(since) if since else None
        found = [*self.finite(), *self.overdue(limit, start), *self.progress(limit, start)]
        found.sort(key=_moment)  # what goes out at one moment is sorted out by due()
        return found


_moment = operator.attrgetter("at")
PolicyFor = Callable[[Target], Policy]


def occasions(
    target: Target,
    policy: Policy,
    calendar: WorkCalendar,
    zone: ZoneInfo,
    until: dt.datetime,
    since: dt.datetime | None = None,
) -> list[Occasion]:
    """The occasions of a target up to ``until`` and the first after it.

    With ``since``, the open-ended series may leave out what lies well before it.
    """
    return _Occasions(target, policy, calendar, zone).all(until, since)


def due(
    targets: Iterable[Target],
    policy_for: PolicyFor,
    calendar: WorkCalendar,
    zone: ZoneInfo,
    now: dt.datetime,
) -> Plan:
    """What goes out at ``now``; see the module docstring for the steps."""
    plan = Plan()
    for target in targets:
        policy = policy_for(target)
        after = target.planned_until
        # a clock that went back finds nothing due before what was already planned
        horizon_from = max(now, after) if after is not None else now
        # a first planning (nothing planned yet) sends the latest of each kind only:
        # the open-ended series start near now, not at the deadline (a 2018 ledger in
        # 2026 would list 400 weekly overdue reminders of each target to pick one)
        since = after if after is not None else now
        found = occasions(target, policy, calendar, zone, horizon_from, since)
        decide(target, found, [o.at for o in found], policy, calendar, zone, now, plan)
    return plan


def decide(
    target: Target,
    found: Sequence[Occasion],
    moments: Sequence[dt.datetime],
    policy: Policy,
    calendar: WorkCalendar,
    zone: ZoneInfo,
    now: dt.datetime,
    plan: Plan,
) -> None:
    """Steps 2, 3 and 5 for one target, into ``plan``: ``found`` holds its occasions up to
    ``now`` and the first after it (any more, as long as they are sorted by time, and
    ``moments`` are their times: a simulation keeps a target's whole period)."""
    after = target.planned_until
    horizon_from = max(now, after) if after is not None else now
    low = bisect.bisect_right(moments, after) if after is not None else 0
    high = bisect.bisect_right(moments, now)
    today = local_time(now, zone).date()
    latest: dict[Kind, Occasion] = {}
    for occasion in found[low:high]:  # owed: in (planned_until, now]
        if occasion.expired(today):
            continue
        if occasion.kind not in latest or occasion.at >= latest[occasion.kind].at:
            latest[occasion.kind] = occasion
    opens = sending_opens(now, policy.send_at, calendar, zone) if latest else None
    if opens is not None:  # step 5
        plan.held.add(target.id)
        plan.next_at[target.id] = opens
        return
    if latest:
        chosen = max(latest.values(), key=lambda o: o.urgency)
        plan.send.append(Reminder(target, chosen))
        plan.superseded += [Reminder(target, o) for o in latest.values() if o is not chosen]
    following = bisect.bisect_right(moments, horizon_from)
    plan.next_at[target.id] = found[following].at if following < len(found) else None


def next_at(
    target: Target,
    policy: Policy,
    calendar: WorkCalendar,
    zone: ZoneInfo,
    after: dt.datetime | None,
) -> dt.datetime | None:
    """The first occasion after ``after`` (the very first if None): the store's ``next_at``."""
    start_of_year = local_midnight(dt.date(target.year, 1, 1), zone)
    found = occasions(target, policy, calendar, zone, after or start_of_year, after)
    return next((o.at for o in found if after is None or o.at > after), None)


@functools.lru_cache(maxsize=8192)
def local_moment(day: dt.date, at: dt.time, zone: dt.tzinfo) -> dt.datetime:
    """A local day and time of day, as the aware UTC moment the store keeps."""
    return dt.datetime.combine(day, at, tzinfo=zone).astimezone(dt.UTC)


@functools.lru_cache(maxsize=64)
def local_time(moment: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """An aware moment in local time (the planner asks it of one tick for every target)."""
    return moment.astimezone(zone)


def local_midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return local_moment(day, dt.time(0), zone)
