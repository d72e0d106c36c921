"""The wall clock: read by the commands and the daemon's loop only.

Everything below them takes ``now`` as an argument (or, where it has to read the time
again while it works, such as a delivery run that records outcomes as they come, a
``WallClock`` it was given: tests pass a fixed one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

WallClock = Callable[[], dt.datetime]


def now() -> dt.datetime:
    """The current moment, aware, in UTC."""
    return dt.datetime.now(dt.UTC)
