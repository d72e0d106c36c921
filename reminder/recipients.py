"""Who hears what: reminders → items (one per unit and channel), messages. Pure.

A unit's reminder becomes one *item* per channel the unit's contacts.toml entry names
for that kind, else those of ``[policy.channels]``. If none of them reaches the unit,
any channel that does is used; if nothing reaches it, one unreachable item records the
fact so that `check`, `status` and the supervisors' digest show it. Items of one unit,
channel and moment go out together as one letter (``reminder.letter_round``).

An item's key is unique: kind, task, unit, channel and address, the planner's day.
Planning it twice is a no-op, which is what makes every reminder planned exactly once.
Robot webhook URLs carry a secret: a robot item names whose robot it is, and the URL is
looked up only when the letter is sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from reminder.contacts import (
    Contacts,
    Supervisor,
    UnitContact,
    invalid_addresses,
    valid_emails,
    valid_mobiles,
)
from reminder.planner import Reminder
from reminder.policy import Channel, Kind, Policy

NO_CONTACT = "none"
_FALLBACK: tuple[Channel, ...] = ("email", "sms", "robot")


@dataclass(frozen=True, slots=True)
class Item:
    """What one unit is told about one task on one channel (a row of ``item``)."""

    key: str
    kind: Kind
    channel: str  # email | sms | wecom | dingtalk | none
    to: str  # e-mail address, mobile number, or the name whose robot it is
    recipient_name: str
    day: dt.date  # the local day the planner chose
    scheduled_for: dt.datetime
    unit: str
    task_id: int | None = None
    task_no: int | None = None
    role: str | None = None
    via: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # pending | superseded | unreachable
    superseded_by: str | None = None


def _addresses(who: UnitContact | Supervisor, channel: Channel) -> list[tuple[str, str]]:
    if channel == "email":
        return [("email", address) for address in valid_emails(who.email)]
    if channel == "sms":
        return [("sms", number) for number in valid_mobiles(who.mobile)]
    return [(who.robot_kind, who.name)] if who.webhook else []


def _channels(who: UnitContact | Supervisor | None, kind: Kind, policy: Policy) -> list[Channel]:
    """The channels of a kind: the entry's own in contacts.toml, else ``[policy.channels]``."""
    if who is not None and kind in who.channels:
        return who.channels[kind]
    return policy.channels[kind]


def routes(
    who: UnitContact | Supervisor | None, kind: Kind, policy: Policy
) -> list[tuple[str, str]] | None:
    """(channel, address) pairs for one kind of message; None if that kind is switched off.

    An empty channel list (``channels = { progress = [] }`` in contacts.toml, or under
    ``[policy.channels]``) switches a kind off. Otherwise, if none of the channels reaches
    them, the first channel that does is used.
    """
    channels = _channels(who, kind, policy)
    if not channels:
        return None
    if who is None:
        return []
    found = [route for channel in channels for route in _addresses(who, channel)]
    if not found:
        for channel in _FALLBACK:
            found = _addresses(who, channel)
            if found:
                break
    return found


def unit_routes(
    contacts: Contacts, unit: str, kind: Kind, policy: Policy
) -> list[tuple[str, str]] | None:
    """``routes`` of a unit by name, worked out once per unit, kind and channel list."""
    key = ("routes", unit, kind, tuple(policy.channels[kind]))
    if key in contacts.memo:
        found: list[tuple[str, str]] | None = contacts.memo[key]
        return found
    found = contacts.memo[key] = routes(contacts.unit(unit), kind, policy)
    return found


def unusable(
    contacts: Contacts, unit: str, kind: Kind, policy: Policy
) -> list[tuple[str, str, str]]:
    """The addresses of a unit that the channels of ``kind`` would use but cannot (an
    invalid e-mail address or mobile number): (channel, address, reason), worked out
    once per unit, kind and channel list."""
    key = ("unusable", unit, kind, tuple(policy.channels[kind]))
    if key in contacts.memo:
        known: list[tuple[str, str, str]] = contacts.memo[key]
        return known
    who = contacts.unit(unit)
    found: list[tuple[str, str, str]] = []
    if who is not None:
        found = [
            (channel, to, reason)
            for channel in _channels(who, kind, policy)
            for to, reason in invalid_addresses(who, channel)
        ]
    contacts.memo[key] = found
    return found


def message_key(
    kind: Kind, task_id: int | None, unit: str, channel: str, to: str, day: dt.date
) -> str:
    return f"{kind}:{task_id}:{unit}:{channel}:{to}:{day}"  # a StrEnum formats as its value


def address(reminder: Reminder, contacts: Contacts, policy: Policy) -> list[Item]:
    """The items of one reminder that is due: one per route of the unit."""
    target, occasion = reminder.target, reminder.occasion
    payload: dict[str, Any] = {
        "milestone": occasion.milestone.isoformat() if occasion.milestone else None,
        "days_left": occasion.days_left,
        "overdue_days": occasion.overdue_days,  # working days overdue on the planner's day
        "escalated": occasion.escalate,
    }
    kind, day, unit, task_id = occasion.kind, occasion.day, target.unit, target.task_id
    role = target.role.value

    def item(channel: str, to: str, status: str = "pending", problem: str = "") -> Item:
        return Item(
            key=message_key(kind, task_id, unit, channel, to, day),
            kind=kind,
            channel=channel,
            to=to,
            recipient_name=unit,
            day=day,
            scheduled_for=occasion.at,
            unit=unit,
            task_id=task_id,
            task_no=target.task.no,
            role=role,
            via=target.via,
            payload={**payload, "problem": problem} if problem else payload,
            status=status,
        )

    found = unit_routes(contacts, unit, kind, policy)
    items = [item(channel, to) for channel, to in found or []]
    if found == []:  # switched on, but nothing reaches the unit
        items.append(item(NO_CONTACT, "", "unreachable"))
    if found is not None:  # an address the kind's channels name but cannot use: on record
        items += [
            item(channel, to, "unreachable", f"invalid {channel} address: {reason}")
            for channel, to, reason in unusable(contacts, unit, kind, policy)
        ]
    return items


def superseded(reminder: Reminder, by: Reminder, contacts: Contacts, policy: Policy) -> list[Item]:
    """Records of a reminder that did not go out because ``by`` was more urgent."""
    chosen = address(by, contacts, policy)
    chosen_key = chosen[0].key if chosen else None
    return [
        replace(item, status="superseded", superseded_by=chosen_key)
        for item in address(reminder, contacts, policy)
    ]
