"""What the daemon and `reminder run --once` leave in ``meta`` for `reminder status`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

from reminder.store.models import MetaRow

LAST_TICK = "last_tick"


def save_last_tick(
    session: Session,
    now: dt.datetime,
    due: int,
    enqueued: int,
    delivered: Mapping[str, int],
    queue: Mapping[str, int],
) -> dict[str, Any]:
    """Record a tick (its moment, what it planned and sent, the queue after); returns it."""
    record = {
        "at": now.isoformat(),
        "due": due,
        "enqueued": enqueued,
        "delivered": dict(delivered),
        "queue": dict(queue),
    }
    row = session.get(MetaRow, LAST_TICK) or MetaRow(key=LAST_TICK, value="")
    row.value = json.dumps(record)
    session.add(row)
    return record


def last_tick(session: Session) -> dict[str, Any] | None:
    """The last tick recorded, or None if nothing ever ticked on this store."""
    row = session.get(MetaRow, LAST_TICK)
    found: dict[str, Any] | None = json.loads(row.value) if row else None
    return found
