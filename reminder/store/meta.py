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
    put_meta(session, LAST_TICK, json.dumps(record))


def put_meta(session: Session, key: str, value: str) -> None:
    """Set ``key`` to ``value`` in one statement (INSERT … ON CONFLICT DO UPDATE): daemons
    writing it side by side on PostgreSQL never collide on the key, as a read then an
    insert did (the second failed with a unique violation, on a new store's first
    ticks). A row of it the session holds is expired: read again when next used."""
    table = MetaRow.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    statement: Any
    if connection.dialect.name == "postgresql":
        # imported here: the package loads every PostgreSQL driver's module
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        statement = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

        statement = sqlite_insert(table)
    statement = statement.values(key=key, value=value)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.key], set_={"value": statement.excluded.value}
        )
    )
    held = session.identity_map.get(session.identity_key(MetaRow, key))
    if held is not None:
        session.expire(held)


def last_tick(session: Session) -> dict[str, Any] | None:
    """The last tick recorded, or None if nothing ever ticked on this store."""
    row = session.get(MetaRow, LAST_TICK)
    found: dict[str, Any] | None = json.loads(row.value) if row else None
    return found
