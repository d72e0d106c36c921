"""Channels: one small interface per kind of outbound I/O.

A sender takes prepared messages and reports one ``Result`` per message through a
callback as soon as it knows it, so the delivery engine can record outcomes while the
rest are still in flight. Senders never raise for a single message: a failure is a
result (sent, retry, dead, deferred) with the server's code and text.

Before a sender puts a message on the wire it awaits ``window()``: the delivery engine
holds it while too many outcomes await their commit, so that what a crash can repeat
stays bounded (``reminder.recorder``). The default is always open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from reminder.rows import Claimed, Outgoing, Result, Status

__all__ = ["Claimed", "Outgoing", "Report", "Result", "Sender", "Status", "Window", "always_open"]

Report = Callable[[Result], None]
Window = Callable[[], Awaitable[None]]


async def always_open() -> None:
    """A window that never waits (a test e-mail, a sender tested on its own)."""


class Sender(Protocol):
    """Delivers messages of one channel; ``close`` ends connections it kept open."""

    async def send(
        self, items: Sequence[Outgoing], report: Report, window: Window = always_open
    ) -> None: ...

    async def close(self) -> None: ...
