"""Who a reminder goes to: reminders → one ``Message`` per recipient and channel. Pure.

A unit's reminder goes through the channels its contacts.toml entry names for that kind
of message, else those of ``[policy.channels]``. If none of them reaches the unit, any
channel that does is used; if nothing reaches it, one undeliverable message records the
fact (status dead, "no contact") so that `status` and the supervisors' digest show it.
An escalated overdue reminder is also copied to every supervisor watching the unit.

A message's key is unique: kind, task, unit, channel and recipient, scheduled day.
Enqueueing it twice is a no-op, which is what makes delivery exactly-once-enqueued.
Robot webhook URLs carry a secret: a robot message names whose robot it is, and the
URL is looked up only when it is sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from reminder.contacts import Contacts, Supervisor, UnitContact, valid_emails, valid_mobiles
from reminder.planner import Reminder
from reminder.policy import Channel, Kind, Policy

NO_CONTACT = "none"
_FALLBACK: tuple[Channel, ...] = ("email", "sms", "robot")


@dataclass(frozen=True, slots=True)
class Message:
    key: str
    kind: Kind
    channel: str  # email | sms | wecom | dingtalk | none
    to: str  # e-mail address, mobile number, or the name whose robot it is
    recipient_name: str
    scheduled_for: dt.datetime
    task_id: int | None = None
    task_no: int | None = None
    unit: str | None = None
    role: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # pending | superseded | dead
    error: str = ""
    superseded_by: str | None = None


def _addresses(who: UnitContact | Supervisor, channel: Channel) -> list[tuple[str, str]]:
    if channel == "email":
        return [("email", address) for address in valid_emails(who.email)]
    if channel == "sms":
        return [("sms", number) for number in valid_mobiles(who.mobile)]
    return [(who.robot_kind, who.name)] if who.webhook else []


def routes(
    who: UnitContact | Supervisor | None, kind: Kind, policy: Policy
) -> list[tuple[str, str]] | None:
    """(channel, address) pairs for one kind of message; None if that kind is switched off.

    An empty channel list (``channels = { progress = [] }`` in contacts.toml, or under
    ``[policy.channels]``) switches a kind off. Otherwise, if none of the channels reaches
    them, the first channel that does is used.
    """
    if who is not None and kind in who.channels:
        channels = who.channels[kind]
    else:
        channels = policy.channels[kind]
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


def message_key(
    kind: Kind, task_id: int | None, unit: str, channel: str, to: str, day: dt.date
) -> str:
    return f"{kind.value}:{task_id}:{unit}:{channel}:{to}:{day.isoformat()}"


def address(reminder: Reminder, contacts: Contacts, policy: Policy) -> list[Message]:
    """The messages of one reminder that is due: the unit's, and escalation copies."""
    target, occasion = reminder.target, reminder.occasion
    unit = contacts.unit(target.unit)
    payload: dict[str, Any] = {
        "day": occasion.day.isoformat(),
        "milestone": occasion.milestone.isoformat() if occasion.milestone else None,
        "days_left": occasion.days_left,
        "overdue_days": occasion.overdue_days,
        "escalated": occasion.escalate,
        "via": target.via,
    }
    common: dict[str, Any] = {
        "scheduled_for": occasion.at,
        "task_id": target.task_id,
        "task_no": target.task.no,
        "unit": target.unit,
        "role": target.role.value,
        "payload": payload,
    }
    unit_routes = routes(unit, occasion.kind, policy)
    messages = [
        Message(
            key=message_key(occasion.kind, target.task_id, target.unit, channel, to, occasion.day),
            kind=occasion.kind,
            channel=channel,
            to=to,
            recipient_name=target.unit,
            **common,
        )
        for channel, to in unit_routes or []
    ]
    if unit_routes == []:  # switched on, but nothing reaches the unit
        messages.append(
            Message(
                key=message_key(
                    occasion.kind, target.task_id, target.unit, NO_CONTACT, "", occasion.day
                ),
                kind=occasion.kind,
                channel=NO_CONTACT,
                to="",
                recipient_name=target.unit,
                status="dead",
                error=f"no contact for {target.unit} in contacts.toml",
                **common,
            )
        )
    if occasion.escalate:
        for supervisor in contacts.supervisors:
            if not supervisor.watches(target.section, target.unit):
                continue
            for channel, to in routes(supervisor, Kind.ESCALATION, policy) or []:
                key = message_key(
                    Kind.ESCALATION, target.task_id, target.unit, channel, to, occasion.day
                )
                messages.append(
                    Message(
                        key=key,
                        kind=Kind.ESCALATION,
                        channel=channel,
                        to=to,
                        recipient_name=supervisor.name,
                        **common,
                    )
                )
    return messages


def superseded(
    reminder: Reminder, by: Reminder, contacts: Contacts, policy: Policy
) -> list[Message]:
    """Records of a reminder that did not go out because ``by`` was more urgent."""
    chosen = address(by, contacts, policy)
    chosen_key = chosen[0].key if chosen else None
    return [
        replace(message, status="superseded", error="", superseded_by=chosen_key)
        for message in address(reminder, contacts, policy)
        if message.kind is not Kind.ESCALATION
    ]
