"""The supervisors' daily digest and the units' weekly agenda, as data. Pure.

A digest is a snapshot taken when it is enqueued (08:30): what the templates render
later is exactly what the ledger looked like then. A supervisor with a scope (sections,
units) gets that part only. It holds:

1. the traffic lights (red: overdue; yellow: due within 7 days; green: on track; done),
   by section, and how many tasks fell overdue since the last digest (今日新增逾期);
2. 提级督办: every unit whose part of a task is overdue by the policy's ``escalate_after``
   working days or more, with its contact and phone and, per task, how late and how
   often it was reminded (units leading such tasks first);
3. the overdue tasks: how late (calendar days, working days in brackets: the letters
   count the same way), new today or not, the units still open, the last reminder and
   the last progress note;
4. units ranked by the overdue tasks they lead and, separately, those they cooperate
   on; a group's members (the towns) one by one;
5. what falls due in the next 7 days, what was done since the last digest, units
   nobody can reach, and messages not delivered (counted in full, the reasons in
   Chinese).

全年 duties and tasks without a due date are never red or yellow: their lights follow
the policy's ``overdue.kinds``, as the reminders do.

It is built from ``DigestInputs``: the whole ledger in memory (`simulate`, `check`), or,
for the daemon and `digest --print`, the store's ``DigestReader``: only the tasks the
digest lists, with ``counts`` for the rest (counted in SQL by the same rule; the tests
build every digest of the seed both ways and compare them).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reminder.contacts import Supervisor, invalid_addresses
from reminder.context import ROLE_LABELS
from reminder.ledger.model import Role, Task, names_section

# the records the store reads for a digest, defined there (the store imports nothing
# above it) and exported from here as before
from reminder.records import (
    DigestInputs,
    Escalation,
    Reminded,
    StoredLedger,
    StoredTask,
    StoredUnit,
    escalated_units,
)
from reminder.rules import HORIZON_DAYS, LISTED, Rules
from reminder.settings import OfficeSettings
from reminder.wording import Lateness, deadline_text, delivery_problem, lateness

# what an escalation list (逾期督办清单) takes from its digest
ESCALATION_FIELDS = ("day", "title", "scope", "escalated", "escalate_after", "counts")
LIGHTS = ("red", "yellow", "green", "done")
_CHANNEL_WORDS = {"email": "邮箱", "sms": "手机"}


NOT_REMINDED = Reminded()


def counts_down(stored: StoredTask, ledger: StoredLedger, planning: Rules) -> bool:
    """Whether the task's due date makes it yellow and red (not 全年, not undated)."""
    return planning.counts_down(stored.task, ledger.section(stored.task.section_no))


def light(stored: StoredTask, day: dt.date, ledger: StoredLedger, planning: Rules) -> str:
    """done, red (past its due date), yellow (due within 7 days), green (on track)."""
    if stored.status == "done":
        return "done"
    return _light(stored.task.deadline.due, day, counts_down(stored, ledger, planning))


def _light(due: dt.date | None, day: dt.date, counted: bool) -> str:
    """``light`` of an open task, knowing whether its due date counts (``counts_down``)."""
    if due is None or not counted:
        return "green"
    if due < day:
        return "red"
    if due <= day + dt.timedelta(days=HORIZON_DAYS):
        return "yellow"
    return "green"


def _lead(task: Task) -> str:
    return "、".join(unit.name for unit in task.units if unit.role is Role.LEAD)


def _scope(ledger: StoredLedger, supervisor: Supervisor | None) -> list[StoredTask]:
    """The tasks a supervisor watches: of its sections (all if none), naming one of its
    units (any if none), a group's members included."""
    if supervisor is None or (not supervisor.sections and not supervisor.units):
        return list(ledger.tasks)
    sections = {
        s.no
        for s in ledger.sections
        if not supervisor.sections
        or any(names_section(item, s.no, s.numeral, s.title) for item in supervisor.sections)
    }
    units = set(supervisor.units)
    return [
        t
        for t in ledger.tasks
        if t.task.section_no in sections
        and (not units or any(u.ref.name in units for u in (*t.units, *t.members)))
    ]


def _iso(moment: dt.datetime | None, zone: dt.tzinfo) -> str | None:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else None


def _count(lights: Iterable[str]) -> dict[str, int]:
    counts = Counter(lights)
    return {name: counts[name] for name in LIGHTS}


def scope_label(supervisor: Supervisor | None, ledger: StoredLedger) -> str:
    if supervisor is None or (not supervisor.sections and not supervisor.units):
        return "全部任务"
    parts = []
    for item in supervisor.sections:
        section = next(
            (s for s in ledger.sections if names_section(item, s.no, s.numeral, s.title)), None
        )
        parts.append(f"{section.numeral}、{section.title}" if section else str(item))
    if supervisor.units:
        parts.append("、".join(supervisor.units))
    return "；".join(parts)


class _Digest:
    """One supervisor's digest of one day; ``payload`` is the result (steps 1 to 5)."""

    def __init__(
        self,
        inputs: DigestInputs,
        supervisor: Supervisor | None,
        planning: Rules,
        day: dt.date,
        since: dt.datetime,
    ) -> None:
        self.inputs = inputs
        self.ledger = inputs.ledger
        self.supervisor = supervisor
        self.planning = planning
        self.day = day
        self.since = since
        self.zone = planning.zone
        self.tasks = _scope(self.ledger, supervisor)
        self.lights = {t.id: light(t, day, self.ledger, planning) for t in self.tasks}
        watched = set(supervisor.units) if supervisor and supervisor.units else None
        self.watched = watched
        # nobody is escalated to about itself, nor ranked in its own digest
        self.myself = {supervisor.name} if supervisor else set()

    def _open_units(self, stored: StoredTask, late: bool = False) -> list[StoredUnit]:
        """The task's targets whose part is still open, in scope; ``late``: only those
        late today (not reported done and waiting for review, not extended past today)."""
        found = []
        for unit in stored.targets():
            name = unit.ref.name
            if unit.done_at is not None or name in self.myself:
                continue
            if late and (unit.reported_at is not None or (unit.due and unit.due >= self.day)):
                continue
            if self.watched is not None and name not in self.watched:
                continue
            found.append(unit)
        return found

    def section_lights(self) -> dict[int, dict[str, int]]:
        """Tasks in scope by section and light (counted by the store, if it cut the
        ledger down to the listed tasks)."""
        if self.inputs.counts is not None:
            counted = self.inputs.counts.lights
            return {
                no: {name: lights.get(name, 0) for name in LIGHTS} for no, lights in counted.items()
            }
        by_section: dict[int, list[str]] = {}
        for stored in self.tasks:
            by_section.setdefault(stored.task.section_no, []).append(self.lights[stored.id])
        return {no: _count(lights) for no, lights in by_section.items()}

    def sections(self, lights: dict[int, dict[str, int]]) -> list[dict[str, Any]]:
        return [
            {
                "no": section.no,
                "numeral": section.numeral,
                "title": section.title,
                **lights[section.no],
            }
            for section in self.ledger.sections
            if section.no in lights
        ]

    def overdue(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The overdue tasks, and the units to escalate (提级督办)."""
        tasks: list[dict[str, Any]] = []
        escalated: dict[str, list[dict[str, Any]]] = {}
        red = [t for t in self.tasks if self.lights[t.id] == "red"]
        for stored in sorted(red, key=lambda t: (t.task.deadline.due or self.day, t.task.no)):
            due = stored.task.deadline.due
            late = lateness(due, self.day, self.planning.calendar) if due else None
            if due is None or late is None:
                continue
            units = self._open_units(stored, late=True)
            tasks.append(self._overdue_task(stored, units, due, late))
            if self.inputs.counts is None:  # else the store counted them (below)
                for name, row in self._escalations(stored, units, due, late):
                    escalated.setdefault(name, []).append(row)
        if self.inputs.counts is not None:  # the listed tasks are not all the red ones
            return tasks, self._counted_escalations()
        return tasks, self._escalated_units(escalated)

    def _overdue_task(
        self, stored: StoredTask, units: list[StoredUnit], due: dt.date, late: Lateness
    ) -> dict[str, Any]:
        """One row of the overdue list: how late, who is still open, when last reminded."""
        task = stored.task
        since_day = self.since.astimezone(self.zone).date()
        progress = self.inputs.progress.get(stored.id)
        told = self.inputs.reminded
        reminded = max(
            (told.get((stored.id, u.ref.name), NOT_REMINDED).overdue for u in units), default=0
        )
        last = [
            moment
            for u in stored.targets()
            if (moment := told.get((stored.id, u.ref.name), NOT_REMINDED).last) is not None
        ]
        return {
            "no": task.no,
            "text": task.text,
            "deadline": deadline_text(task.deadline.raw),
            "due": due.isoformat(),
            "days": late.days,
            "working_days": late.working_days,
            "new": due >= since_day,
            "lead": _lead(task),
            "open_units": [unit.ref.name for unit in units],
            "reminded": reminded,
            "last_reminder": _iso(max(last, default=None), self.zone),
            "progress": (
                {"unit": progress.unit, "note": progress.note, "at": _iso(progress.at, self.zone)}
                if progress
                else None
            ),
        }

    def _escalations(
        self, stored: StoredTask, units: list[StoredUnit], due: dt.date, late: Lateness
    ) -> list[tuple[str, dict[str, Any]]]:
        """(unit, row) for each open unit of a task late enough to escalate, per its policy."""
        task = stored.task
        overdue = self.planning.policy_of(self.ledger.section(task.section_no), task.no).overdue
        if not overdue.escalate or late.working_days < overdue.escalate_after:
            return []
        told = self.inputs.reminded
        return [
            (
                unit.ref.name,
                _escalation_row(
                    Escalation(
                        unit.ref.name,
                        task.no,
                        task.text,
                        unit.ref.role.value,
                        due,
                        told.get((stored.id, unit.ref.name), NOT_REMINDED).overdue,
                    ),
                    late,
                ),
            )
            for unit in units
        ]

    def _counted_escalations(self) -> list[dict[str, Any]]:
        """The escalated units as the store counted them, with the tasks it listed."""
        assert self.inputs.counts is not None
        rows: dict[str, list[dict[str, Any]]] = {}
        lates: dict[dt.date, Lateness | None] = {}  # a few due dates for 10,000 rows
        for found in self.inputs.counts.escalated:
            if found.due not in lates:
                lates[found.due] = lateness(found.due, self.day, self.planning.calendar)
            late = lates[found.due]
            assert late is not None  # the store listed it as overdue
            rows.setdefault(found.unit, []).append(_escalation_row(found, late))
        return [
            {
                "unit": name,
                **self.planning.contacts.reach(name),
                "lead": lead,
                "count": count,
                "tasks": rows.get(name, []),
            }
            for name, lead, count, _ in escalated_units(self.inputs.counts.tallies)
        ]

    def _escalated_units(self, escalated: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The escalated units, those leading most overdue tasks first."""
        by_unit: list[dict[str, Any]] = [
            {
                "unit": name,
                **self.planning.contacts.reach(name),
                "lead": sum(1 for t in found if t["role"] == Role.LEAD.value),
                "count": len(found),
                "tasks": sorted(found, key=lambda t: (-t["days"], t["no"]))[:LISTED],
            }
            for name, found in escalated.items()
        ]
        by_unit.sort(key=lambda u: (-u["lead"], -u["count"], -u["tasks"][0]["days"], u["unit"]))
        return by_unit

    def ranking(self) -> dict[str, list[dict[str, Any]]]:
        """Units by overdue tasks they lead, and by those they cooperate on."""
        counts: dict[str, dict[str, Counter[str]]] = {"lead": {}, "cooperating": {}}
        if self.inputs.counts is not None:
            for tally in self.inputs.counts.tallies:
                side = "lead" if tally.role == Role.LEAD.value else "cooperating"
                found = counts[side].setdefault(tally.unit, Counter())
                found.update(red=tally.red, yellow=tally.yellow)
            return _ranked(counts)
        for stored in self.tasks:
            shown = self.lights[stored.id]
            if shown not in ("red", "yellow"):
                continue
            for unit in self._open_units(stored, late=shown == "red"):
                side = "lead" if unit.ref.role is Role.LEAD else "cooperating"
                counts[side].setdefault(unit.ref.name, Counter())[shown] += 1
        return _ranked(counts)

    def undelivered(self) -> dict[str, Any]:
        inputs = self.inputs
        shown = [  # the newest (the store reads the newest few)
            u for u in inputs.undelivered if self.watched is None or u.recipient in self.watched
        ]
        return {
            "dead": inputs.undelivered_counts.get("dead", 0),
            "retry": inputs.undelivered_counts.get("retry", 0),
            "items": [
                {
                    "status": u.status,
                    "kind": u.kind,
                    "task": u.task_no,
                    "recipient": u.recipient,
                    "channel": u.channel,
                    "problem": delivery_problem(u.channel, u.error),
                }
                for u in shown
            ],
        }

    def upcoming(self) -> list[dict[str, Any]]:
        """The tasks due within ``HORIZON_DAYS``, the soonest first."""
        return [
            {
                "no": t.task.no,
                "text": t.task.text,
                "deadline": deadline_text(t.task.deadline.raw),
                "due": t.task.deadline.due.isoformat() if t.task.deadline.due else None,
                "days_left": (t.task.deadline.due - self.day).days if t.task.deadline.due else None,
                "lead": _lead(t.task),
            }
            for t in sorted(self.tasks, key=lambda t: (t.task.deadline.due or self.day, t.task.no))
            if self.lights[t.id] == "yellow"
        ]

    def done(self) -> list[dict[str, Any]]:
        """The tasks done since the last digest."""
        return [
            {
                "no": t.task.no,
                "text": t.task.text,
                "lead": _lead(t.task),
                "at": _iso(t.done_at, self.zone),
            }
            for t in self.tasks
            if t.status == "done" and t.done_at is not None and t.done_at > self.since
        ]

    def payload(self, notices: Sequence[str]) -> dict[str, Any]:
        overdue, escalated = self.overdue()
        upcoming, done = self.upcoming(), self.done()
        lights = self.section_lights()
        totals = {name: sum(counts[name] for counts in lights.values()) for name in LIGHTS}
        counted = self.inputs.counts
        if counted is not None:
            names, new_overdue = set(counted.names), counted.new_overdue
        else:
            names = {u.ref.name for t in self.tasks for u in t.targets()}
            new_overdue = sum(1 for t in overdue if t["new"])
        # a group with members is reached through them: has_contact() says so
        contacts = self.planning.contacts
        no_contact = sorted(name for name in names if not contacts.has_contact(name))
        # an address its letters cannot go to (its other channels may still reach it)
        bad_addresses = [
            f"{name}（{_CHANNEL_WORDS[channel]}{to}）"
            for name in sorted(names)
            if (who := contacts.unit(name)) is not None
            for channel in _CHANNEL_WORDS
            for to, _reason in invalid_addresses(who, channel)
        ]
        ranking = self.ranking()
        return {
            "day": self.day.isoformat(),
            "since": _iso(self.since, self.zone),
            "title": self.ledger.title,
            "scope": scope_label(self.supervisor, self.ledger),
            "notices": list(notices),
            "totals": {**totals, "tasks": sum(totals.values()), "new_overdue": new_overdue},
            "sections": self.sections(lights),
            "escalate_after": self.planning.policy.overdue.escalate_after,
            **_listed(
                overdue, escalated, ranking, upcoming, done, counted.listed if counted else {}
            ),
            "no_contact": no_contact,
            "bad_addresses": bad_addresses,
            "undelivered": self.undelivered(),
            "board": None,  # the supervisor's link to the board, set when it is enqueued
        }


def _ranked(counts: dict[str, dict[str, Counter[str]]]) -> dict[str, list[dict[str, Any]]]:
    """Units with overdue tasks, most first, by side (lead, cooperating)."""
    ranked: dict[str, list[dict[str, Any]]] = {}
    for side, per_unit in counts.items():
        ordered = sorted(
            ((name, c) for name, c in per_unit.items() if c["red"]),
            key=lambda item: (-item[1]["red"], -item[1]["yellow"], item[0]),
        )
        ranked[side] = [
            {"name": name, "red": c["red"], "yellow": c["yellow"]} for name, c in ordered
        ]
    return ranked


def _escalation_row(found: Escalation, late: Lateness) -> dict[str, Any]:
    return {
        "no": found.no,
        "text": found.text,
        "role": found.role,
        "role_label": ROLE_LABELS.get(found.role, found.role),
        "due": found.due.isoformat(),
        "days": late.days,
        "working_days": late.working_days,
        "reminded": found.reminded,
    }


def _listed(
    overdue: list[dict[str, Any]],
    escalated: list[dict[str, Any]],
    ranking: dict[str, list[dict[str, Any]]],
    upcoming: list[dict[str, Any]],
    done: list[dict[str, Any]],
    whole: Mapping[str, int],
) -> dict[str, Any]:
    """The lists of a digest, each cut at ``LISTED``, and ``counts``: their whole lengths
    (``whole``: those the store counted, of lists it cut)."""
    lists = {"overdue": overdue, "escalated": escalated, "upcoming": upcoming, "done": done}
    counts = {name: whole.get(name, len(items)) for name, items in lists.items()}
    counts |= {side: len(units) for side, units in ranking.items()}
    return {
        "counts": counts,
        **{name: items[:LISTED] for name, items in lists.items()},
        "ranking": {side: units[:LISTED] for side, units in ranking.items()},
    }


def build_digest(
    inputs: DigestInputs,
    supervisor: Supervisor | None,
    planning: Rules,
    day: dt.date,
    since: dt.datetime,
    notices: Sequence[str] = (),
) -> dict[str, Any]:
    """The digest of ``day`` for one supervisor (None: everything), as JSON-ready data.

    ``notices``: lines every supervisor should read first (the calendar's unknown years).
    """
    return _Digest(inputs, supervisor, planning, day, since).payload(notices)


def build_agendas(
    ledger: StoredLedger,
    day: dt.date,
    planning: Rules,
    office: OfficeSettings,
    *,
    lean: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Every unit's open tasks for the week, with its role, state and next date, by unit
    (a unit with none has no agenda), most urgent first; one pass over the ledger.
    ``lean``: the state and next date only (what decides whether an agenda goes out), in
    the ledger's order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for stored in ledger.tasks:
        if stored.status == "done":
            continue
        deadline = stored.task.deadline
        counted = counts_down(stored, ledger, planning)  # not 全年, ongoing, from …
        dated = deadline.milestones if counted else ()
        dates = [d for d in (deadline.start, *dated) if d is not None and d >= day]
        following = min(dates) if dates else None
        facts = {
            "no": stored.task.no,
            "next": following.isoformat() if following else None,
            "light": _light(deadline.due, day, counted),
            "standing": not counted and following is None,
        }
        if not lean:
            facts |= {
                "number": office.number(ledger.year, stored.task.no),
                "text": " ".join(stored.task.text.split()),
                "deadline": deadline_text(deadline.raw),
                "lead": _lead(stored.task),
            }
        for mine in stored.open_targets:
            if lean:
                rows.setdefault(mine.ref.name, []).append(facts)
                continue
            role = mine.ref.role.value
            rows.setdefault(mine.ref.name, []).append(
                {**facts, "role": role, "role_label": ROLE_LABELS[role]}
            )
    if not lean:
        order = {"red": 0, "yellow": 1, "green": 2}
        for tasks in rows.values():
            tasks.sort(key=lambda r: (order[r["light"]], r["next"] or "9999", r["no"]))
    return rows
