"""The durable queue of messages: enqueue exactly once.

A message's key is unique in the table, and enqueueing is an insert that ignores a
conflict (``ON CONFLICT (key) DO NOTHING`` on both SQLite and PostgreSQL), so a tick
that runs twice, a second daemon, or a clock that jumps cannot add a message twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from reminder.recipients import Message
from reminder.store.models import OutboxRow


def _row(message: Message, now: dt.datetime) -> dict[str, Any]:
    return {
        "key": message.key,
        "kind": message.kind.value,
        "task_id": message.task_id,
        "task_no": message.task_no,
        "unit": message.unit,
        "role": message.role,
        "channel": message.channel,
        "recipient": message.to,
        "recipient_name": message.recipient_name,
        "scheduled_for": message.scheduled_for,
        "status": message.status,
        "payload": message.payload,
        "created_at": now,
        "next_attempt_at": message.scheduled_for,
        "attempts": 0,
        "last_error": message.error,
        "superseded_by": message.superseded_by,
    }


def enqueue(session: Session, messages: Sequence[Message], now: dt.datetime) -> list[str]:
    """Insert the messages whose key is new; returns the keys that were new."""
    if not messages:
        return []
    connection = session.connection()
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    table = OutboxRow.__table__  # type: ignore[attr-defined]
    statement = insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)
    unique = {message.key: message for message in messages}  # the first of a key wins
    result = connection.execute(statement, [_row(message, now) for message in unique.values()])
    return [row.key for row in result]
