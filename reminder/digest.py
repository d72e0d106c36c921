"""The supervisors' daily digest and the units' weekly agenda, as data. Pure.

A digest is a snapshot taken when it is enqueued (08:30): what the templates render
later is exactly what the ledger looked like then. It holds the traffic-light board
(red: overdue; yellow: due within 7 days; green: on track; done) by section and by unit
with a ranking of units by overdue count, the overdue list (days overdue, lead unit,
last reminder, last progress note), what falls due in the next 7 days, what was done
since the last digest, units nobody can reach, and messages that are dead or still
retrying. A supervisor with a scope (sections, units) gets that part only.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reminder.contacts import Contacts, Supervisor
from reminder.ledger.model import Role, Task, names_section
from reminder.messages import ROLE_LABELS
from reminder.store.tasks import StoredLedger, StoredTask

HORIZON_DAYS = 7
LIGHTS = ("red", "yellow", "green", "done")


@dataclass(frozen=True, slots=True)
class Progress:
    unit: str
    note: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Undelivered:
    status: str  # dead | retry
    kind: str
    task_no: int | None
    recipient: str
    channel: str
    error: str


@dataclass(frozen=True, slots=True)
class DigestInputs:
    """What the store knows that a digest or agenda needs."""

    ledger: StoredLedger
    last_sent: dict[int, dt.datetime] = field(default_factory=dict)  # task id → last reminder
    progress: dict[int, Progress] = field(default_factory=dict)  # task id → last progress note
    undelivered: tuple[Undelivered, ...] = ()


def light(stored: StoredTask, day: dt.date) -> str:
    """done, red (past its due date), yellow (due within 7 days), green (on track)."""
    if stored.status == "done":
        return "done"
    due = stored.task.deadline.due
    if due is None:
        return "green"
    if due < day:
        return "red"
    if due <= day + dt.timedelta(days=HORIZON_DAYS):
        return "yellow"
    return "green"


def _lead(task: Task) -> str:
    return "、".join(unit.name for unit in task.units if unit.role is Role.LEAD)


def _in_scope(stored: StoredTask, ledger: StoredLedger, supervisor: Supervisor | None) -> bool:
    if supervisor is None:
        return True
    section = next((s for s in ledger.sections if s.no == stored.task.section_no), None)
    key = (
        (section.no, section.numeral, section.title)
        if section
        else (stored.task.section_no, "", "")
    )
    names = [u.ref.name for u in stored.units] + [m.ref.name for m in stored.members]
    return any(supervisor.watches(key, name) for name in names)


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


def build_digest(
    inputs: DigestInputs,
    supervisor: Supervisor | None,
    contacts: Contacts,
    day: dt.date,
    since: dt.datetime,
    zone: dt.tzinfo,
    notices: Sequence[str] = (),
) -> dict[str, Any]:
    """The digest of ``day`` for one supervisor (None: everything), as JSON-ready data.

    ``notices``: lines every supervisor should read first (the calendar's unknown years).
    """
    ledger = inputs.ledger
    tasks = [t for t in ledger.tasks if _in_scope(t, ledger, supervisor)]
    lights = {t.id: light(t, day) for t in tasks}
    watched_units = set(supervisor.units) if supervisor and supervisor.units else None

    sections = []
    for section in ledger.sections:
        in_section = [lights[t.id] for t in tasks if t.task.section_no == section.no]
        if in_section:
            sections.append(
                {
                    "no": section.no,
                    "numeral": section.numeral,
                    "title": section.title,
                    **_count(in_section),
                }
            )

    per_unit: dict[str, Counter[str]] = {}
    for stored in tasks:
        for unit in stored.units:
            name = unit.ref.name
            if watched_units is not None and name not in watched_units:
                continue
            per_unit.setdefault(name, Counter())[lights[stored.id]] += 1
    ranked = sorted(
        per_unit.items(), key=lambda item: (-item[1]["red"], -item[1]["yellow"], item[0])
    )
    units = [{"name": name, **{k: counts[k] for k in LIGHTS}} for name, counts in ranked]

    overdue = []
    for stored in sorted(tasks, key=lambda t: (t.task.deadline.due or day, t.task.no)):
        if lights[stored.id] != "red":
            continue
        due = stored.task.deadline.due
        assert due is not None
        progress = inputs.progress.get(stored.id)
        overdue.append(
            {
                "no": stored.task.no,
                "text": stored.task.text,
                "deadline": stored.task.deadline.raw,
                "due": due.isoformat(),
                "days": (day - due).days,
                "lead": _lead(stored.task),
                "last_reminder": _iso(inputs.last_sent.get(stored.id), zone),
                "progress": (
                    {"unit": progress.unit, "note": progress.note, "at": _iso(progress.at, zone)}
                    if progress
                    else None
                ),
            }
        )
    upcoming = [
        {
            "no": t.task.no,
            "text": t.task.text,
            "deadline": t.task.deadline.raw,
            "due": t.task.deadline.due.isoformat() if t.task.deadline.due else None,
            "days_left": (t.task.deadline.due - day).days if t.task.deadline.due else None,
            "lead": _lead(t.task),
        }
        for t in sorted(tasks, key=lambda t: (t.task.deadline.due or day, t.task.no))
        if lights[t.id] == "yellow"
    ]
    done = [
        {"no": t.task.no, "text": t.task.text, "lead": _lead(t.task), "at": _iso(t.done_at, zone)}
        for t in tasks
        if t.status == "done" and t.done_at is not None and t.done_at > since
    ]
    names = {u.ref.name for t in tasks for u in (*t.units, *t.members)}
    # a group with members is reached through them: has_contact() says so
    no_contact = sorted(name for name in names if not contacts.has_contact(name))
    undelivered = [
        u for u in inputs.undelivered if watched_units is None or u.recipient in watched_units
    ]
    return {
        "day": day.isoformat(),
        "since": _iso(since, zone),
        "title": ledger.title,
        "scope": scope_label(supervisor, ledger),
        "notices": list(notices),
        "totals": {**_count(lights.values()), "tasks": len(tasks)},
        "sections": sections,
        "units": units,
        "overdue": overdue,
        "upcoming": upcoming,
        "done": done,
        "no_contact": no_contact,
        "undelivered": {
            "dead": sum(1 for u in undelivered if u.status == "dead"),
            "retry": sum(1 for u in undelivered if u.status == "retry"),
            "items": [
                {
                    "status": u.status,
                    "kind": u.kind,
                    "task": u.task_no,
                    "recipient": u.recipient,
                    "channel": u.channel,
                    "error": u.error,
                }
                for u in undelivered[:20]
            ],
        },
    }


def build_agendas(inputs: DigestInputs, day: dt.date) -> dict[str, dict[str, Any]]:
    """Every unit's open tasks for the week, with its role and next date, by unit (a unit
    with none has no agenda); one pass over the ledger."""
    rows: dict[str, list[dict[str, str | int | None]]] = {}
    for stored in inputs.ledger.tasks:
        if stored.status == "done":
            continue
        deadline = stored.task.deadline
        dates = [d for d in (deadline.start, *deadline.milestones) if d is not None and d >= day]
        following = min(dates) if dates else None
        shown = light(stored, day)
        listed: set[str] = set()
        for mine in stored.targets():
            name = mine.ref.name
            if mine.done_at is not None or name in listed:
                continue
            listed.add(name)
            rows.setdefault(name, []).append(
                {
                    "no": stored.task.no,
                    "text": stored.task.text,
                    "role": mine.ref.role.value,
                    "role_label": ROLE_LABELS[mine.ref.role.value],
                    "deadline": deadline.raw,
                    "next": following.isoformat() if following else None,
                    "light": shown,
                    "lead": _lead(stored.task),
                }
            )
    order = {"red": 0, "yellow": 1, "green": 2}
    agendas: dict[str, dict[str, Any]] = {}
    for unit, tasks in rows.items():
        tasks.sort(
            key=lambda r: (order[str(r["light"])], str(r["next"] or "9999"), int(r["no"] or 0))
        )
        agendas[unit] = {
            "day": day.isoformat(),
            "unit": unit,
            "title": inputs.ledger.title,
            "tasks": tasks,
            "counts": _count(str(r["light"]) for r in tasks),
        }
    return agendas
