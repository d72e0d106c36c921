"""What the daemon and `reminder run --once` leave in ``meta`` for `reminder status`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

from reminder.store.models import MetaRow

LAST_TICK = "last_tick"
# an idle daemon writes its last tick this often, not at every tick (a tick that changed
# something is written at once): `reminder status` allows for it before it says "stale"
LAST_TICK_EVERY = dt.timedelta(minutes=5)


def tick_record(
    now: dt.datetime,
    due: int,
    enqueued: int,
    delivered: Mapping[str, int],
    queue: Mapping[str, int],
) -> dict[str, Any]:
    """A tick as `status` shows it: its moment, what it planned and sent, the queue after."""
    return {
        "at": now.isoformat(),
        "due": due,
        "enqueued": enqueued,
        "delivered": dict(delivered),
        "queue": dict(queue),
    }


def worth_saving(record: Mapping[str, Any], saved: Mapping[str, Any] | None) -> bool:
    """Whether a tick must be written: it says something the last one written does not,
    or that one is ``LAST_TICK_EVERY`` old (an idle tick writes nothing to the store)."""
    if not saved:
        return True
    age = dt.datetime.fromisoformat(record["at"]) - dt.datetime.fromisoformat(saved["at"])
    same = all(record[key] == saved.get(key) for key in record if key != "at")
    return not same or not dt.timedelta(0) <= age < LAST_TICK_EVERY


def save_last_tick(session: Session, record: Mapping[str, Any]) -> None:
    """Write a tick record (``tick_record``) for `reminder status`."""
    row = session.get(MetaRow, LAST_TICK) or MetaRow(key=LAST_TICK, value="")
    row.value = json.dumps(record)
    session.add(row)


def last_tick(session: Session) -> dict[str, Any] | None:
    """The last tick recorded, or None if nothing ever ticked on this store."""
    row = session.get(MetaRow, LAST_TICK)
    found: dict[str, Any] | None = json.loads(row.value) if row else None
    return found
