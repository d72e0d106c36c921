"""What the outbox takes and hands out: a message to enqueue, a claimed row, the message
prepared from it, and the outcome of sending it.

Plain tuples (cheap to pickle to and from render workers) at the bottom of the
imports, so that the outbox (the store layer) needs nothing from the channels above it;
``reminder.channels`` re-exports them for the senders.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from reminder.errors import DeliveryError

if TYPE_CHECKING:  # the policy (pydantic) is not needed by render workers
    from reminder.policy import Kind

Status = Literal["sent", "retry", "dead", "deferred"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the outbox: a letter, a digest, an escalation list."""

    key: str
    kind: Kind
    channel: str
    to: str
    recipient_name: str
    scheduled_for: dt.datetime
    unit: str | None = None  # a letter's unit; None for a supervisor's digest or list
    payload: dict[str, Any] = field(default_factory=dict)


class Claimed(NamedTuple):
    """An outbox row taken for sending, with a lease.

    Defined here, not in ``reminder.outbox``, so that render workers need no database
    library."""

    id: int
    key: str
    kind: str
    channel: str
    recipient: str
    recipient_name: str
    scheduled_for: dt.datetime
    payload: dict[str, Any]
    attempts: int


class Outgoing(NamedTuple):
    """A message ready to go: addressed, rendered, built (a tuple: cheap to pickle)."""

    id: int
    key: str
    kind: str
    channel: str  # email | sms | wecom | dingtalk
    to: str  # address, mobile number, or whose robot
    recipient_name: str
    subject: str = ""
    body: str = ""  # SMS text, or robot markdown
    data: bytes = b""  # the e-mail as it goes on the wire (from build_email: no fix needed)
    scheduled_day: str = ""
    mention: str = ""  # a mobile number a DingTalk robot post @s


class Result(NamedTuple):
    id: int
    status: Status
    code: int | None = None
    detail: str = ""
    retry_after_s: float | None = None

    @classmethod
    def sent(cls, item: Outgoing, code: int | None = None, detail: str = "") -> Result:
        return cls(item.id, "sent", code, detail)

    @classmethod
    def failed(cls, item: Outgoing, error: DeliveryError) -> Result:
        status: Status = "dead" if error.permanent else "retry"
        return cls(item.id, status, error.code, error.message, error.retry_after_s)


@dataclass(slots=True)
class DeliveryReport:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cut: int = 0  # left without an outcome at the deadline: their leases run out

    def line(self) -> str:
        parts = ", ".join(f"{status} {n}" for status, n in sorted(self.outcomes.items()))
        line = f"delivered {self.claimed} messages in {self.seconds:.1f} s ({parts or 'none'})"
        if self.cut:
            line += f"; deadline reached, {self.cut} left to a later run"
        return line
