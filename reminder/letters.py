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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reminder.calendar import WorkCalendar
from reminder.contacts import Contacts, valid_mobiles
from reminder.messages import ROLE_LABELS, TaskFacts
from reminder.policy import Kind
from reminder.settings import OfficeSettings
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


def _person(contacts: Contacts, name: str) -> dict[str, str]:
    who = contacts.unit(name)
    return {
        "unit": name,
        "contact": who.contact if who else "",
        "phone": who.telephone if who else "",
    }


def _units(task: TaskFacts, unit: str, via: str | None) -> dict[str, list[dict[str, Any]]]:
    """The ledger's units of a task by role, the recipient's own entry marked."""
    listed: dict[str, list[dict[str, Any]]] = {"lead": [], "cooperating": []}
    for name, role in task.units:
        mine = "self" if name == unit else "group" if name == via else ""
        listed["lead" if role == "lead" else "cooperating"].append({"name": name, "mine": mine})
    return listed


def _entry(item: LetterItem, context: LetterContext) -> dict[str, Any]:
    task = item.task
    assert task is not None
    payload = item.payload
    role = item.role or "lead"
    milestone = payload.get("milestone")
    due = dt.date.fromisoformat(milestone) if milestone else None
    entry: dict[str, Any] = {
        "key": item.key,
        "kind": item.kind.value,
        "no": task.no,
        "number": context.office.number(context.year, task.no),
        "section": task.section,
        "text": " ".join(task.text.split()),
        "deadline": deadline_text(task.deadline),
        "due": due.isoformat() if due else None,
        "role": role,
        "role_label": ROLE_LABELS.get(role, role),
        "via": item.via,
        "units": _units(task, item.unit, item.via),
        "days_left": (due - context.day).days if due and due >= context.day else None,
        "day_off_due": bool(due and due > context.day and item.kind is Kind.DUE_TODAY),
        "overdue_days": None,
        "overdue_working_days": None,
        "reminded": 0,
        "report_to": None,
    }
    late = lateness(due, context.day, context.calendar) if due else None
    if late is not None and item.kind is Kind.OVERDUE:
        entry["overdue_days"] = late.days
        entry["overdue_working_days"] = late.working_days
        entry["reminded"] = context.reminded.get((task.no, item.unit), 0)
    if role != "lead":
        leads = [name for name, unit_role in task.units if unit_role == "lead"]
        if leads:
            entry["report_to"] = _person(context.contacts, leads[0])
    return entry


def _sort_key(entry: dict[str, Any]) -> tuple[int, str, int]:
    late = entry["overdue_days"] or 0
    return (-late, entry["due"] or "9999-12-31", entry["no"])


def build_letter(
    context: LetterContext,
    unit: str,
    items: Sequence[LetterItem],
    seq: int,
    agenda: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The payload of one letter (JSON-ready); see the module docstring."""
    groups: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for name, title, kinds in GROUPS:
        entries = sorted(
            (_entry(item, context) for item in items if item.kind in kinds), key=_sort_key
        )
        counts[name] = len(entries)
        if entries:
            groups.append({"name": name, "title": title, "items": entries})
    total = sum(counts.values())
    dated = [
        entry
        for group in groups
        for entry in group["items"]
        if entry["kind"] in ("due_today", "upcoming") and entry["due"]
    ]
    nearest = min(dated, key=lambda e: (e["due"], e["no"])) if dated else None
    who = context.contacts.unit(unit)
    roles = {entry["role"] for group in groups for entry in group["items"]}
    office = context.office
    return {
        "day": context.day.isoformat(),
        "seq": seq,
        "supplement": seq > 1,
        "unit": unit,
        "contact": who.contact if who else "",
        "basis": context.title,
        "office": {
            "name": office.name,
            "short_name": office.short_name,
            "contact": office.contact,
            "phone": office.phone,
            "email": office.email,
            "address": office.address,
        },
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
        "agenda": list(agenda) if agenda is not None else None,
        "mention": {
            "mobile": next(iter(valid_mobiles(who.mobile)), "") if who else "",
            "wecom_userid": who.wecom_userid if who else "",
        },
    }
