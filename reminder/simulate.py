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

import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import col
from sqlmodel import select as select_rows

from reminder.calendar import years_ahead
from reminder.digest import DigestInputs, Reminded, build_agendas
from reminder.errors import InputError
from reminder.letters import LetterContext, Waiting, agenda_items, agenda_week, compose
from reminder.messages import TaskFacts
from reminder.planner import (
    Occasion,
    Plan,
    Target,
    decide,
    local_midnight,
    local_moment,
    occasions,
)
from reminder.planning import Planning
from reminder.policy import Kind
from reminder.recipients import Item, Message
from reminder.reports import report_messages
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.models import TaskRow, TaskUnitRow
from reminder.store.reports import digest_inputs
from reminder.store.targets import LedgerContext, ensure_planned, target_of
from reminder.store.tasks import StoredLedger, ledger_years, task_facts, task_of, units_by_task
from reminder.tick import planned_from

LETTERS = "letters.jsonl"


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

    def count(self, message: Message, local: dt.datetime, items: int, working: bool) -> None:
        day = f"{local:%Y-%m-%d}"
        self.messages += 1
        self.items += items
        self.by_kind[message.kind.value] += 1
        self.by_month[f"{local:%Y-%m}"] += 1
        self.by_recipient[(message.recipient_name, message.channel)] += 1
        self.by_recipient_day[(message.recipient_name, message.channel, day)] += 1
        self.by_day[day] += 1
        self.off_days += not working


@dataclass(slots=True)
class _Ledger:
    """Step 1: what the simulation starts from."""

    stored: StoredLedger
    inputs: DigestInputs
    targets: dict[int, Target]
    facts: dict[int, TaskFacts]
    years: set[int]


def _load(store: Store, planning: Planning) -> _Ledger | None:
    with store.write() as session:
        ensure_planned(session, planning)  # rolled back below: the store is only read
        context = LedgerContext.load(session)
        inputs = digest_inputs(session)
        if context is None or inputs is None:
            session.rollback()
            return None
        units = TaskUnitRow.__table__  # type: ignore[attr-defined]
        tasks = TaskRow.__table__  # type: ignore[attr-defined]
        rows = list(
            session.connection().execute(
                select(units)
                .join(tasks, tasks.c.id == units.c.task_id)
                .where(units.c.is_target.is_(True), tasks.c.removed_at.is_(None))
                .order_by(units.c.id)
            )
        )
        task_ids = sorted({row.task_id for row in rows})
        task_rows = {
            row.id: row
            for row in session.exec(select_rows(TaskRow).where(col(TaskRow.id).in_(task_ids)))
        }
        listed = units_by_task(session, task_ids, listed_only=True)
        tasks_of = {key: task_of(task_rows[key], listed[key]) for key in task_ids}
        targets = {
            row.id: target_of(row, task_rows[row.task_id], tasks_of[row.task_id], context)
            for row in rows
        }
        facts = task_facts(session, task_ids)
        years = ledger_years(session)
        session.rollback()
    # nobody was reminded before the simulated period
    return _Ledger(inputs.ledger, replace(inputs, reminded={}), targets, facts, years)


def simulate(
    source: Store,
    planning: Planning,
    settings: Settings,
    start: dt.date,
    end: dt.date,
    out: Path | None,
) -> Simulation:
    started = time.perf_counter()
    report = Simulation(start=start, end=end)
    loaded = _load(source, planning)
    if loaded is None:
        raise InputError("no ledger imported yet; run `reminder import FILE` first")
    sent = _Year(loaded, planning, settings, start, end).run(end, report)
    _write(sent, report, planning, out)
    report.seconds = time.perf_counter() - started
    return report


class _Year:
    """Steps 2 and 3: the daemon's days, the store's bookkeeping in memory."""

    def __init__(
        self,
        ledger: _Ledger,
        planning: Planning,
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
        self.targets = {
            key: replace(target, planned_until=begin) for key, target in ledger.targets.items()
        }
        # a target's occasions over the whole period, computed once: nobody reports anything
        # done in a simulation, so they do not change; the planner decides from them at
        # each tick as from those it computes for the daemon
        until = local_midnight(end + dt.timedelta(days=1), zone)
        self.occasions: dict[int, tuple[list[Occasion], list[dt.datetime]]] = {}
        self.next_at: dict[int, dt.datetime | None] = {}
        for key, target in self.targets.items():
            policy = planning.policy_for(target)
            found = occasions(target, policy, planning.calendar, zone, until)
            self.occasions[key] = (found, [o.at for o in found])
            self.next_at[key] = next((o.at for o in found if o.at > begin), None)
        self.waiting: list[Waiting] = []
        self.reminded: dict[tuple[int, str], Reminded] = {}
        self.last_digest: dict[str, dt.datetime] = {}
        self.agenda_weeks: set[dt.date] = set()
        self.ids = 0
        open_units = {t.unit for t in self.targets.values() if not t.done}
        self.open_units = sorted(open_units)

    def run(self, end: dt.date, report: Simulation) -> list[Message]:
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
        return sent

    def digests(self, digest_at: dt.datetime) -> list[Message]:
        day = digest_at.astimezone(self.planning.zone).date()
        inputs = replace(self.ledger.inputs, reminded=self.reminded)
        warning = self.planning.calendar.warning(self.ledger.years | years_ahead(day))
        notices = [warning] if warning else []
        messages = report_messages(
            inputs, self.planning, digest_at, self.last_digest.get, notices, lean=True
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

    def tick(self, now: dt.datetime) -> list[Message]:
        planning = self.planning
        due = [self.targets[key] for key, at in self.next_at.items() if at and at <= now]
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
                self.next_at[target.id] = planned.next_at[target.id]
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
            found = build_agendas(ledger.inputs, day, planning, self.settings.office, lean=True)
            agendas = {unit: agenda["tasks"] for unit, agenda in found.items()}
        context = LetterContext(
            day=day,
            title=ledger.stored.title,
            year=ledger.stored.year,
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
        for pair, overdue in result.told.items():
            before = self.reminded.get(pair, Reminded())
            self.reminded[pair] = Reminded(before.overdue + overdue, now)
        return [letter.message for letter in result.letters]


def _write(sent: list[Message], report: Simulation, planning: Planning, out: Path | None) -> None:
    """Step 4."""
    handle = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report.written = out / LETTERS
        handle = report.written.open("w", encoding="utf-8")
    try:
        for message in sent:
            local = message.scheduled_for.astimezone(planning.zone)
            items = _items(message.payload)
            report.count(message, local, len(items), planning.calendar.is_working_day(local.date()))
            if handle is not None:
                line = _message_json(message, local, items)
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
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


def _message_json(
    message: Message, local: dt.datetime, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """One line of letters.jsonl (the contract of `reminder simulate --out`)."""
    return {
        "key": message.key,
        "kind": message.kind.value,
        "recipient": message.recipient_name,
        "unit": message.unit,
        "channel": message.channel,
        "to": message.to,
        "sent_at": local.isoformat(),
        "items": items,
    }
