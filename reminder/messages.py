"""What a template sees: the context of one message. Pure.

The variables every unit template may use:

- ``recipient`` (unit or supervisor), ``contact`` (the person), ``unit``, ``role``
  (``lead`` or ``cooperating``) and ``role_label`` (牵头 or 配合), ``kind``;
- ``task``: ``no``, ``text``, ``section``, ``deadline`` (as written), ``due`` and ``start``
  (dates), ``action``, ``kind``;
- ``lead_units`` and ``other_units`` (names), ``day`` (the local day it goes out),
  ``milestone`` (the date it is about), ``days_left``, ``overdue_days`` (working days),
  ``escalated``;
- ``sender`` and ``report_hint`` from ``[messages]``.

Filters: ``cn_date`` (2018年10月8日), ``weekday`` (星期一), ``shorten(n)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from reminder.contacts import Contacts
from reminder.ledger.model import Role
from reminder.settings import MessagesSettings

ROLE_LABELS = {Role.LEAD.value: "牵头", Role.COOPERATING.value: "配合"}


@dataclass(frozen=True, slots=True)
class TaskFacts:
    no: int
    text: str
    section: str
    deadline: str
    due: dt.date | None
    start: dt.date | None
    action: str | None
    kind: str
    units: tuple[tuple[str, str], ...]  # (name, role) as the ledger lists them

    def as_context(self) -> dict[str, Any]:
        return {
            "no": self.no,
            "text": self.text,
            "section": self.section,
            "deadline": " ".join(self.deadline.split()),
            "due": self.due,
            "start": self.start,
            "action": self.action,
            "kind": self.kind,
        }


def _date(value: object) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else None


def context(
    *,
    kind: str,
    unit: str,
    role: str,
    recipient: str,
    task: TaskFacts,
    payload: dict[str, Any],
    contacts: Contacts,
    settings: MessagesSettings,
) -> dict[str, Any]:
    """The template context of one unit message (see the module docstring)."""
    who = contacts.reachable(recipient)
    lead_units = [name for name, unit_role in task.units if unit_role == Role.LEAD.value]
    return {
        "kind": kind,
        "recipient": recipient,
        "contact": who.contact if who is not None else "",
        "unit": unit,
        "role": role,
        "role_label": ROLE_LABELS.get(role, role),
        "task": task.as_context(),
        "lead_units": lead_units,
        "other_units": [name for name, _ in task.units if name != unit],
        "day": _date(payload.get("day")),
        "milestone": _date(payload.get("milestone")),
        "days_left": payload.get("days_left"),
        "overdue_days": payload.get("overdue_days", 0),
        "escalated": bool(payload.get("escalated")),
        "sender": settings.sender,
        "report_hint": settings.report_hint,
    }


def report_context(
    *, kind: str, recipient: str, payload: dict[str, Any], settings: MessagesSettings
) -> dict[str, Any]:
    """The context of a digest or an agenda: the snapshot taken when it was enqueued."""
    return {
        **payload,
        "kind": kind,
        "recipient": recipient,
        "day": _date(payload.get("day")),
        "sender": settings.sender,
        "report_hint": settings.report_hint,
    }
