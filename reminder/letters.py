"""A unit's 督办通知 as data: its items of one moment on one channel, grouped. Pure.

A letter is a snapshot taken when it is composed (like a digest): what the templates
render later, in whatever process, is what was true then. It says, as a government
office writes:

- whom it is to and from (落款, the office's 联系人 and phone), the ledger it rests on
  (依据), the day it goes out, and whether it adds to a letter already sent that day
  (补充提醒);
- its items grouped by urgency (逾期, 今日到期, 即将到期, 开始实施, 进展报送), each with
  its 编号, section, task, deadline as written and as a date, the unit's role with the
  lead unit and every other unit named, and how many days are left or how late it is
  (calendar days, working days in brackets) and how often it was reminded;
- for an item the unit cooperates on, whom to report to: the lead unit and its
  contact; for the rest, the office;
- on the first letter of a week, the unit's agenda: every open task, its role, its
  state and its next date.

The counts in the subject are the items in the body: both come from ``groups``.

``compose`` turns the items waiting at one moment into letters: one per recipient,
channel and address; the first of a day is letter 1, a later one (a late import, an
override's other send hour) 2, … and says 补充提醒. An agenda alone goes out only in a
week with a date for the unit. The daemon composes from the store
(``reminder.letter_round``), a simulation from memory: the same code decides.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reminder.calendar import WorkCalendar
from reminder.contacts import Contacts, valid_mobiles
from reminder.context import ROLE_LABELS, TaskFacts
from reminder.planner import local_moment
from reminder.policy import Kind
from reminder.recipients import Item, unit_routes
from reminder.rows import Message
from reminder.rules import LISTED, Rules
from reminder.settings import OfficeSettings, Settings
from reminder.wording import deadline_text, lateness

# the groups of a letter, most urgent first: (name, title, the item kinds in it)
GROUPS: tuple[tuple[str, str, tuple[Kind, ...]], ...] = (
    ("overdue", "逾期事项", (Kind.OVERDUE,)),
    ("due_today", "今日到期", (Kind.DUE_TODAY,)),
    ("upcoming", "即将到期", (Kind.UPCOMING,)),
    ("window_start", "开始实施", (Kind.WINDOW_START,)),
    ("progress", "进展报送", (Kind.PROGRESS, Kind.SUMMARY)),
)
COUNT_LABELS = {
    "overdue": "逾期",
    "due_today": "今日到期",
    "upcoming": "即将到期",
    "window_start": "开始实施",
    "progress": "进展报送",
}


@dataclass(frozen=True, slots=True)
class LetterItem:
    """An item as a letter needs it: the row and its task as it is now."""

    key: str
    kind: Kind
    unit: str
    role: str | None
    via: str | None
    payload: Mapping[str, Any]
    task: TaskFacts | None  # None for the agenda


@dataclass(frozen=True, slots=True)
class LetterContext:
    """What every letter of one composition shares."""

    day: dt.date
    title: str  # the ledger's: the 依据
    year: int
    office: OfficeSettings
    contacts: Contacts
    calendar: WorkCalendar
    reminded: Mapping[tuple[int, str], int]  # (task no, unit) → earlier overdue reminders
    # (task no, unit) → why a supervisor returned the unit's completion report (退回)
    returned: Mapping[tuple[int, str], str] = field(default_factory=dict)
    # lean entries by (task no, kind, milestone, role): the same on every channel
    lean: dict[tuple[object, ...], dict[str, Any]] = field(default_factory=dict)


@functools.lru_cache(maxsize=8192)
def _units(
    units: tuple[tuple[str, str], ...], unit: str, via: str | None
) -> dict[str, list[dict[str, Any]]]:
    """The ledger's units of a task by role, the recipient's own entry marked (shared by
    every letter that lists them: read only)."""
    listed: dict[str, list[dict[str, Any]]] = {"lead": [], "cooperating": []}
    for name, role in units:
        mine = "self" if name == unit else "group" if name == via else ""
        listed["lead" if role == "lead" else "cooperating"].append({"name": name, "mine": mine})
    return listed


def _entry(item: LetterItem, context: LetterContext, lean: bool) -> dict[str, Any]:
    """One item as the letter says it; ``lean``: only what decides and counts it (what
    `simulate` writes), not its words."""
    task = item.task
    assert task is not None
    milestone = item.payload.get("milestone")
    role = item.role or "lead"
    if lean:  # shared by the unit's letters on every channel: read only
        same = (task.no, item.kind, milestone, role)
        found = context.lean.get(same)
        if found is None:
            found = context.lean[same] = _dates(item.kind, task.no, milestone, role, context.day)
        return found
    entry = {"key": item.key, **_dates(item.kind, task.no, milestone, role, context.day)}
    due = dt.date.fromisoformat(milestone) if milestone else None
    overdue = due is not None and entry["overdue_days"] is not None
    late = lateness(due, context.day, context.calendar) if due and overdue else None
    entry.update(
        {
            "number": context.office.number(context.year, task.no),
            "section": task.section,
            "text": " ".join(task.text.split()),
            "deadline": deadline_text(task.deadline),
            "role_label": ROLE_LABELS.get(role, role),
            "via": item.via,
            "units": _units(task.units, item.unit, item.via),
            "day_off_due": bool(due and due > context.day and item.kind is Kind.DUE_TODAY),
            "overdue_working_days": late.working_days if late else None,
            "reminded": context.reminded.get((task.no, item.unit), 0) if late else 0,
            "returned": context.returned.get((task.no, item.unit), ""),
            "report_to": None,
        }
    )
    if role != "lead":
        leads = [name for name, unit_role in task.units if unit_role == "lead"]
        if leads:
            entry["report_to"] = {"unit": leads[0], **context.contacts.reach(leads[0])}
    return entry


def _dates(kind: Kind, no: int, milestone: str | None, role: str, day: dt.date) -> dict[str, Any]:
    """What decides and counts an item: its kind, task, role, and its date as of ``day``."""
    due = dt.date.fromisoformat(milestone) if milestone else None
    overdue = kind is Kind.OVERDUE and due is not None and due < day
    return {
        "kind": kind,  # a str: JSON, templates and comparisons see its value
        "no": no,
        "due": milestone if due else None,
        "role": role,
        "days_left": (due - day).days if due and due >= day else None,
        "overdue_days": (day - due).days if overdue and due else None,
    }


def _sort_key(entry: dict[str, Any]) -> tuple[int, str, int]:
    late = entry["overdue_days"] or 0
    return (-late, entry["due"] or "9999-12-31", entry["no"])


def _cap(groups: list[dict[str, Any]]) -> None:
    """At most ``LISTED`` items in a letter, the most urgent first (the groups are in
    order of urgency, their items too): each group keeps its whole ``count`` and says
    how many it does not list (``more``). A unit owing a thousand items on a first start
    gets a letter it can read (and that fits the render budget) instead of none."""
    room = LISTED
    for group in groups:
        entries = group["items"]
        group["count"] = len(entries)
        group["items"] = entries[:room]
        group["more"] = len(entries) - len(group["items"])
        room -= len(group["items"])


def _listed_agenda(agenda: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The week's agenda as a letter lists it (as ``_cap``), its whole count, the cap."""
    listed = list(agenda[:LISTED]) if agenda is not None else None
    return {"agenda": listed, "agenda_count": len(agenda or ()), "listed": LISTED}


def build_letter(
    context: LetterContext,
    unit: str,
    items: Sequence[LetterItem],
    seq: int,
    agenda: Sequence[Mapping[str, Any]] | None = None,
    *,
    lean: bool = False,
) -> dict[str, Any]:
    """The payload of one letter (JSON-ready); see the module docstring. ``lean``: the
    groups and their items' dates only, without the words (what `simulate` counts)."""
    groups: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for name, title, kinds in GROUPS:
        entries = sorted(
            (_entry(item, context, lean) for item in items if item.kind in kinds), key=_sort_key
        )
        counts[name] = len(entries)
        if entries:
            groups.append({"name": name, "title": title, "items": entries})
    total = sum(counts.values())
    if lean:
        found = {"day": context.day.isoformat(), "seq": seq, "unit": unit, "groups": groups}
        return found | {"total": total, "agenda": list(agenda) if agenda is not None else None}
    dated = [
        entry
        for group in groups
        for entry in group["items"]
        if entry["kind"] in ("due_today", "upcoming") and entry["due"]
    ]
    nearest = min(dated, key=lambda e: (e["due"], e["no"])) if dated else None
    who = context.contacts.unit(unit)
    roles = {entry["role"] for group in groups for entry in group["items"]}
    _cap(groups)  # after the nearest deadline and the roles: they are of every item
    return {
        "day": context.day.isoformat(),
        "seq": seq,
        "supplement": seq > 1,
        "unit": unit,
        "contact": who.contact if who else "",
        "basis": context.title,
        "office": _office(context.office),
        "groups": groups,
        "counts": counts,
        "total": total,
        "summary": "、".join(f"{COUNT_LABELS[k]}{n}项" for k, n in counts.items() if n),
        "nearest": (
            {"no": nearest["no"], "due": nearest["due"], "kind": nearest["kind"]}
            if nearest
            else None
        ),
        "has_lead": "lead" in roles,
        "has_cooperating": bool(roles - {"lead"}),
        **_listed_agenda(agenda),
        "link": None,  # the unit's page, set when the letter is enqueued ([web] base_url)
        "mention": {
            "mobile": next(iter(valid_mobiles(who.mobile)), "") if who else "",
            "wecom_userid": who.wecom_userid if who else "",
        },
    }


def _office(office: OfficeSettings) -> dict[str, str]:
    """The sending office as a letter signs it (名称, 联系人, 电话)."""
    return {
        "name": office.name,
        "short_name": office.short_name,
        "contact": office.contact,
        "phone": office.phone,
        "email": office.email,
        "address": office.address,
    }


@dataclass(frozen=True, slots=True)
class Waiting:
    """An item waiting for its letter: a row of ``item``, or one of a simulation."""

    id: int
    key: str
    kind: Kind
    task_id: int | None
    unit: str
    role: str | None
    via: str | None
    channel: str
    to: str
    recipient_name: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Letter:
    message: Message
    items: tuple[Waiting, ...]


@dataclass(slots=True)
class Composition:
    letters: list[Letter]
    dropped: list[Waiting]  # agendas alone in a week with nothing for the unit


def letter_key(unit: str, channel: str, to: str, day: dt.date, seq: int) -> str:
    return f"letter:{unit}:{channel}:{to}:{day.isoformat()}:{seq}"


def eventful(agenda: Sequence[Mapping[str, Any]] | None, day: dt.date) -> bool:
    """Whether a week's agenda has something to act on: a task overdue or due within 7
    days, or a date (a start, a milestone) this week."""
    week_end = (day + dt.timedelta(days=6)).isoformat()
    return any(
        row["light"] in ("red", "yellow") or (row["next"] and row["next"] <= week_end)
        for row in agenda or []
    )


def compose(
    waiting: Sequence[Waiting],
    facts: Mapping[int, TaskFacts],
    agendas: Mapping[str, Sequence[Mapping[str, Any]]],
    context: LetterContext,
    sequences: Mapping[tuple[str, str, str], int],
    now: dt.datetime,
    *,
    lean: bool = False,
) -> Composition:
    """The letters of the items waiting at ``now`` (see the module docstring); ``lean``
    letters are decided alike but say only their items' dates (what `simulate` counts).

    ``agendas``: each unit's open tasks (for the week's agenda items); ``sequences``: the
    letters already composed today per (recipient, channel, address). An item whose task
    is gone from ``facts`` waits (it is planned again or dropped with its task).
    """
    by_letter: dict[tuple[str, str, str], list[Waiting]] = {}
    for item in waiting:
        if item.kind is Kind.AGENDA or item.task_id in facts:
            by_letter.setdefault((item.recipient_name, item.channel, item.to), []).append(item)
    result = Composition([], [])
    for (name, channel, to), group in by_letter.items():
        tasks = [
            LetterItem(i.key, i.kind, i.unit, i.role, i.via, i.payload, facts[i.task_id])
            for i in group
            if i.kind is not Kind.AGENDA and i.task_id is not None
        ]
        agenda = None
        if any(i.kind is Kind.AGENDA for i in group):
            # the unit's other open tasks: those in the letter are in it already
            listed = {item.task.no for item in tasks if item.task is not None}
            agenda = [a for a in agendas.get(name, ()) if a["no"] not in listed]
        if not tasks and not eventful(agenda, context.day):
            result.dropped.extend(group)
            continue
        seq = sequences.get((name, channel, to), 0) + 1
        message = Message(
            key=letter_key(name, channel, to, context.day, seq),
            kind=Kind.LETTER,
            channel=channel,
            to=to,
            recipient_name=name,
            scheduled_for=now,
            unit=name,
            payload=build_letter(context, name, tasks, seq, agenda, lean=lean),
        )
        result.letters.append(Letter(message, tuple(group)))
    return result


def told(letters: Sequence[Letter]) -> dict[tuple[int, str], int]:
    """(task id, unit) → 1 if the letters remind the unit of the task overdue, else 0."""
    found: dict[tuple[int, str], int] = {}
    for letter in letters:
        for item in letter.items:
            if item.task_id is not None:
                pair = (item.task_id, item.unit)
                found[pair] = found.get(pair, 0) or int(item.kind is Kind.OVERDUE)
    return found


def agenda_week(planning: Rules, settings: Settings, now: dt.datetime) -> dt.date | None:
    """The first working day of this week, once its send hour has come (a daemon that was
    down then catches up later in the week); None if agendas are off or it has not come."""
    if not settings.digest.agenda:
        return None
    zone, send_at = planning.zone, planning.policy.send_at
    today = now.astimezone(zone).date()
    first = planning.calendar.week_start(today)
    if first is None or today < first or now < local_moment(first, send_at, zone):
        return None
    return first


def agenda_items(units: Iterable[str], planning: Rules, first: dt.date) -> list[Item]:
    """The agenda items of a week whose first working day is ``first``: one per route of
    each unit with open tasks. Pure."""
    moment = local_moment(first, planning.policy.send_at, planning.zone)
    return [
        Item(
            key=f"agenda:-:{unit}:{channel}:{to}:{first.isoformat()}",
            kind=Kind.AGENDA,
            channel=channel,
            to=to,
            recipient_name=unit,
            day=first,
            scheduled_for=moment,
            unit=unit,
        )
        for unit in units
        for channel, to in unit_routes(planning.contacts, unit, Kind.AGENDA, planning.policy) or []
    ]
