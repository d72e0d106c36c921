"""Channels: one small interface per kind of outbound I/O.

A sender takes prepared messages and reports one ``Result`` per message through a
callback as soon as it knows it, so the delivery engine can record outcomes while the
rest are still in flight. Senders never raise for a single message: a failure is a
result (sent, retry, dead, deferred) with the server's code and text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from reminder.rows import Claimed, Outgoing, Result, Status

__all__ = ["Claimed", "Outgoing", "Report", "Result", "Sender", "Status"]

Report = Callable[[Result], None]


class Sender(Protocol):
    """Delivers messages of one channel; ``close`` ends connections it kept open."""

    async def send(self, items: Sequence[Outgoing], report: Report) -> None: ...

    async def close(self) -> None: ...
