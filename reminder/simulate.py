"""`reminder simulate`: the whole policy over a period, on a virtual clock, in memory.

The daemon's own decisions, without its store: the planner (``planner.decide``, from
each target's occasions over the whole period, computed once), the week's agendas and
the letter composer (``letters.compose``), the digests (``reports.report_messages``).
Only the bookkeeping the store does for the daemon (which items wait, which targets are
due, 催办次数) is kept in memory here; a test holds the two to the same letters day by
day. Letters and digests are decided in full but say only what `simulate` writes
(their items and dates), not their words.

1. Read the ledger as the store has it, planned with the current config (in a
   transaction that is rolled back: the store is only read).
2. Start as if the daemon had run up to the first day: every target planned up to local
   midnight of ``start``, so day one shows that day's reminders and not a catch-up.
3. On every working day, as the daemon: the supervisors' digests at the digest hour, then
   the tick at the send hour (every reminder is scheduled then): plan what is due, the
   week's agenda on its first working day, compose what waits into letters.
4. Summarise what people would receive: messages per recipient and channel, the busiest
   recipient-day, per kind and month; and write every message to ``letters.jsonl`` (one
   line each, with the items it carries).
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from reminder.context import TaskFacts
from reminder.digest import build_agendas
from reminder.digest_round import notices, report_messages
from reminder.errors import InputError
from reminder.letters import LetterContext, Waiting, agenda_items, agenda_week, compose, told
from reminder.loop import paused_collector
from reminder.planner import (
    Occasion,
    Plan,
    Target,
    decide,
    local_midnight,
    local_moment,
    occasions,
)
from reminder.policy import Kind
from reminder.recipients import Item
from reminder.records import DigestInputs, Reminded
from reminder.rows import Message
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.models import TaskUnitRow
from reminder.store.overview import digest_inputs
from reminder.store.targets import LedgerContext, ensure_planned, target_of
from reminder.store.tasks import ledger_facts, ledger_years
from reminder.tick import planned_from

LETTERS = "letters.jsonl"
MAX_DAYS = 1096  # 3 years: a ledger's year and the next two, in well under a minute
# a message's kind as letters.jsonl names it, where that differs from the outbox's
_KINDS = {Kind.ESCALATION: "escalation_list"}


@dataclass(slots=True)
class Simulation:
    start: dt.date
    end: dt.date
    seconds: float = 0.0
    days: int = 0
    working_days: int = 0
    messages: int = 0
    items: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_month: Counter[str] = field(default_factory=Counter)
    by_recipient: Counter[tuple[str, str]] = field(default_factory=Counter)  # (name, channel)
    by_recipient_day: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    by_day: Counter[str] = field(default_factory=Counter)
    off_days: int = 0  # messages on days off: none, by design
    written: Path | None = None

    def lines(self, top: int = 10) -> list[str]:
        busiest = self.by_day.most_common(1)
        per_recipient: Counter[str] = Counter()
        for (name, _channel), count in self.by_recipient.items():
            per_recipient[name] += count
        lines = [
            f"Simulated {self.start} → {self.end} ({self.days} days, "
            f"{self.working_days} working days) in {self.seconds:.1f} s",
            f"  messages: {self.messages} carrying {self.items} items; "
            f"on days off: {self.off_days}",
            "  per kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())),
            "  per month: " + ", ".join(f"{m} {n}" for m, n in sorted(self.by_month.items())),
            f"  recipients reached: {len(per_recipient)}; messages per recipient (top {top}):",
        ]
        for name, count in per_recipient.most_common(top):
            channels = ", ".join(
                f"{channel} {n}"
                for (who, channel), n in sorted(self.by_recipient.items())
                if who == name
            )
            lines.append(f"    {name}: {count} ({channels})")
        if self.by_recipient_day:
            (name, channel, day), count = self.by_recipient_day.most_common(1)[0]
            lines.append(
                f"  most to one recipient on one channel in a day: {count} "
                f"({name}, {channel}, {day})"
            )
        lines.append(
            "  busiest day: "
            + (f"{busiest[0][0]} ({busiest[0][1]} messages)" if busiest else "none")
        )
        if self.written:
            lines.append(f"  written to {self.written}")
        return lines

    def count(self, message: Message, day: str, items: int, working: bool) -> None:
        """One message sent on ``day`` (ISO), carrying ``items``."""
        self.messages += 1
        self.items += items
        self.by_kind[message.kind.value] += 1
        self.by_month[day[:7]] += 1
        self.by_recipient[(message.recipient_name, message.channel)] += 1
        self.by_recipient_day[(message.recipient_name, message.channel, day)] += 1
        self.by_day[day] += 1
        self.off_days += not working


@dataclass(slots=True)
class _Ledger:
    """Step 1: what the simulation starts from (the ledger: ``inputs.ledger``)."""

    inputs: DigestInputs
    targets: dict[int, Target]
    facts: dict[int, TaskFacts]
    years: set[int]


def _load(store: Store, planning: Rules) -> _Ledger | None:
    with store.write() as session:
        ensure_planned(session, planning)  # rolled back below: the store is only read
        context = LedgerContext.load(session)
        inputs = digest_inputs(session)
        if context is None or inputs is None:
            session.rollback()
            return None
        units = TaskUnitRow.__table__  # type: ignore[attr-defined]
        rows = list(
            session.connection().execute(
                select(units).where(units.c.is_target.is_(True)).order_by(units.c.id)
            )
        )
        years = ledger_years(session)
        session.rollback()
    # the ledger as the digest reads it: its active tasks, their units in order
    ledger = inputs.ledger
    tasks = {stored.id: stored for stored in ledger.tasks}
    targets = {
        row.id: target_of(row, tasks[row.task_id], tasks[row.task_id].task, context)
        for row in rows
        if row.task_id in tasks
    }
    facts = ledger_facts(ledger)
    # nobody was reminded before the simulated period
    return _Ledger(replace(inputs, reminded={}), targets, facts, years)


def check_period(start: dt.date, end: dt.date) -> None:
    """A period `simulate` covers: ``start`` to ``end``, at most ``MAX_DAYS`` days."""
    if end < start:
        raise InputError(f"--to {end} is before --from {start}")
    days = (end - start).days + 1
    if days > MAX_DAYS:
        raise InputError(
            f"--from {start} --to {end}: {days} days; a simulation covers at most "
            f"{MAX_DAYS} days (3 years): simulate a longer period in parts"
        )


def simulate(
    source: Store,
    planning: Rules,
    settings: Settings,
    start: dt.date,
    end: dt.date,
    out: Path | None,
    progress: Callable[[int], None] | None = None,
) -> Simulation:
    """Steps 1-4; ``progress`` is told the number of days simulated so far, after each day."""
    check_period(start, end)
    started = time.perf_counter()
    report = Simulation(start=start, end=end)
    loaded = _load(source, planning)
    if loaded is None:
        raise InputError("no ledger imported yet; run `reminder import FILE` first")
    with paused_collector():
        sent = _Year(loaded, planning, settings, start, end).run(end, report, progress)
        _write(sent, report, planning, out)
    report.seconds = time.perf_counter() - started
    return report


class _Year:
    """Steps 2 and 3: the daemon's days, the store's bookkeeping in memory."""

    def __init__(
        self,
        ledger: _Ledger,
        planning: Rules,
        settings: Settings,
        start: dt.date,
        end: dt.date,
    ) -> None:
        self.ledger = ledger
        self.planning = planning
        self.settings = settings
        self.start = start
        zone = planning.zone
        begin = local_midnight(start, zone)
        self.targets = {key: target.planned(begin) for key, target in ledger.targets.items()}
        # a target's occasions over the whole period, computed once: nobody reports anything
        # done in a simulation, so they do not change; the planner decides from them at
        # each tick as from those it computes for the daemon
        until = local_midnight(end + dt.timedelta(days=1), zone)
        self.occasions: dict[int, tuple[list[Occasion], list[dt.datetime]]] = {}
        self.next_at: dict[int, dt.datetime | None] = {}
        # the units of one task share its occasions: they depend on the task, the
        # policy and the target's done and last progress, not on the unit (read only)
        shared: dict[tuple[object, ...], tuple[list[Occasion], list[dt.datetime]]] = {}
        for key, target in self.targets.items():
            policy = planning.policy_for(target)
            same = (target.task_id, id(policy), target.done, target.last_progress)
            if same not in shared:
                found = occasions(target, policy, planning.calendar, zone, until)
                shared[same] = (found, [o.at for o in found])
            self.occasions[key] = shared[same]
            moments = shared[same][1]
            first = bisect.bisect_right(moments, begin)
            self.next_at[key] = moments[first] if first < len(moments) else None
        self.queue: list[tuple[dt.datetime, int]] = [
            (at, key) for key, at in self.next_at.items() if at is not None
        ]
        heapq.heapify(self.queue)
        self.waiting: list[Waiting] = []
        self.reminded: dict[tuple[int, str], Reminded] = {}
        self.last_digest: dict[str, dt.datetime] = {}
        self.agenda_weeks: set[dt.date] = set()
        self.ids = 0
        open_units = {t.unit for t in self.targets.values() if not t.done}
        self.open_units = sorted(open_units)

    def run(
        self, end: dt.date, report: Simulation, progress: Callable[[int], None] | None = None
    ) -> list[Message]:
        zone = self.planning.zone
        calendar = self.planning.calendar
        sent: list[Message] = []
        day = self.start
        while day <= end:
            report.days += 1
            if calendar.is_working_day(day):
                report.working_days += 1
                sent += self.digests(local_moment(day, self.settings.digest.at, zone))
                sent += self.tick(local_moment(day, self.planning.policy.send_at, zone))
            day += dt.timedelta(days=1)
            if progress is not None:
                progress(report.days)
        return sent

    def digests(self, digest_at: dt.datetime) -> list[Message]:
        day = digest_at.astimezone(self.planning.zone).date()
        inputs = replace(self.ledger.inputs, reminded=self.reminded)
        found = notices(self.planning.calendar, self.ledger.years, day)
        messages = report_messages(
            lambda *_: inputs, self.planning, digest_at, self.last_digest.get, found, lean=True
        )
        for message in messages:
            if message.kind is Kind.DIGEST:
                self.last_digest[message.recipient_name] = digest_at
        return messages

    def _wait(self, items: list[Item]) -> None:
        for item in items:
            if item.status != "pending":
                continue
            self.ids += 1
            self.waiting.append(
                Waiting(
                    self.ids,
                    item.key,
                    item.kind,
                    item.task_id,
                    item.unit,
                    item.role,
                    item.via,
                    item.channel,
                    item.to,
                    item.recipient_name,
                    item.payload,
                )
            )

    def _due(self, now: dt.datetime) -> list[int]:
        """The targets whose next occasion has come, by id (the store's ``next_at`` index)."""
        found: set[int] = set()
        while self.queue and self.queue[0][0] <= now:
            at, key = heapq.heappop(self.queue)
            if self.next_at[key] == at:  # else moved on since it was queued
                found.add(key)
        return sorted(found)

    def tick(self, now: dt.datetime) -> list[Message]:
        planning = self.planning
        due = [self.targets[key] for key in self._due(now)]
        if due:
            plan = Plan()
            for target in due:
                found, moments = self.occasions[target.id]
                policy = planning.policy_for(target)
                decide(target, found, moments, policy, planning.calendar, planning.zone, now, plan)
            planned = planned_from(plan, due, planning, now)
            self._wait(planned.items)
            for target in due:
                self.targets[target.id] = target.planned(planned.planned_until[target.id])
                following = self.next_at[target.id] = planned.next_at[target.id]
                if following is not None:
                    heapq.heappush(self.queue, (following, target.id))
        first = agenda_week(planning, self.settings, now)
        if first is not None and first not in self.agenda_weeks:
            self.agenda_weeks.add(first)
            self._wait(agenda_items(self.open_units, planning, first))
        if not self.waiting:
            return []
        return self.compose(now)

    def compose(self, now: dt.datetime) -> list[Message]:
        planning = self.planning
        day = now.astimezone(planning.zone).date()
        ledger = self.ledger
        agendas: dict[str, list[dict[str, Any]]] = {}
        if any(i.kind is Kind.AGENDA for i in self.waiting):
            agendas = build_agendas(
                ledger.inputs.ledger, day, planning, self.settings.office, lean=True
            )
        context = LetterContext(
            day=day,
            title=ledger.inputs.ledger.title,
            year=ledger.inputs.ledger.year,
            office=self.settings.office,
            contacts=planning.contacts,
            calendar=planning.calendar,
            reminded={},  # 催办次数 are said in letters, not counted in a simulation
        )
        # one composition a day: every letter is the first of its day
        result = compose(self.waiting, ledger.facts, agendas, context, {}, now, lean=True)
        gone = {i.id for letter in result.letters for i in letter.items}
        gone |= {i.id for i in result.dropped}
        self.waiting = [i for i in self.waiting if i.id not in gone]
        for pair, overdue in told(result.letters).items():
            before = self.reminded.get(pair, Reminded())
            self.reminded[pair] = Reminded(before.overdue + overdue, now)
        return [letter.message for letter in result.letters]


def _write(sent: list[Message], report: Simulation, planning: Rules, out: Path | None) -> None:
    """Step 4."""
    handle = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report.written = out / LETTERS
        handle = report.written.open("w", encoding="utf-8")
    encode = json.JSONEncoder(ensure_ascii=False).encode
    moments: dict[dt.datetime, tuple[str, str, bool]] = {}
    try:
        for message in sent:
            moment = moments.get(message.scheduled_for)
            if moment is None:  # a day's messages share a few moments
                local = message.scheduled_for.astimezone(planning.zone)
                working = planning.calendar.is_working_day(local.date())
                moment = (local.isoformat(), local.date().isoformat(), working)
                moments[message.scheduled_for] = moment
            sent_at, day, working = moment
            items = _items(message.payload)
            report.count(message, day, len(items), working)
            if handle is not None:
                handle.write(encode(_message_json(message, sent_at, items)) + "\n")
    finally:
        if handle is not None:
            handle.close()


def _items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """What a letter carries, as the unit reads it (lateness as of the letter's day)."""
    items = [
        {
            "task": entry["no"],
            "kind": entry["kind"],
            "role": entry["role"],
            "milestone": entry["due"],
            "days_left": entry["days_left"],
            "overdue_days": entry["overdue_days"],
        }
        for group in payload.get("groups", [])
        for entry in group["items"]
    ]
    if payload.get("agenda") is not None:
        items.append(
            {
                "task": None,
                "kind": "agenda",
                "role": None,
                "milestone": None,
                "days_left": None,
                "overdue_days": None,
            }
        )
    return items


def _message_json(message: Message, sent_at: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One line of letters.jsonl (the contract of `reminder simulate --out`)."""
    return {
        "key": message.key,
        "kind": _KINDS.get(message.kind, message.kind.value),
        "recipient": message.recipient_name,
        "unit": message.unit,
        "channel": message.channel,
        "to": message.to,
        "sent_at": sent_at,
        "items": items,
    }
