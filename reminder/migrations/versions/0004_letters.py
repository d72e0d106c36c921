"""Items and letters: what each unit is told (item) goes out in one letter a day.

The outbox held one message per task × unit × channel. Those rows become items: sent
ones as ``sent`` (they went out on their own), waiting ones as ``pending`` (the next
tick puts them in letters), superseded and unreachable ones as they were. Escalation
copies still waiting are dropped (escalations are in the digest now); the outbox keeps
what was sent, and separate agendas still waiting are superseded by the letters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:02:11.000000
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from alembic import op

import reminder.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ITEM_KINDS = ("upcoming", "due_today", "window_start", "overdue", "progress")
WAITING = ("pending", "retry", "sending")


def upgrade() -> None:
    op.create_table(
        "item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("task_no", sa.Integer(), nullable=True),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=True),
        sa.Column("via", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("recipient_name", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("scheduled_for", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("superseded_by", sa.String(), nullable=True),
        sa.Column("letter_id", sa.Integer(), nullable=True),
        sa.Column("created_at", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["letter_id"], ["outbox.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.create_index("ix_item_status_scheduled", ["status", "scheduled_for"])
        batch_op.create_index(batch_op.f("ix_item_letter_id"), ["letter_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_task_id"), ["task_id"], unique=False)

    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reminded", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column(
                "last_reminded_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True
            )
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_recipient_kind", ["recipient_name", "kind", "scheduled_for"]
        )
        batch_op.create_index("ix_outbox_kind_scheduled", ["kind", "scheduled_for"])
    _move_items(op.get_bind())
    # what the items say of each task × unit: overdue reminders and the last reminder
    sent = (
        "item.task_id = task_unit.task_id AND item.unit = task_unit.unit AND item.status = 'sent'"
    )
    op.execute(
        "UPDATE task_unit SET "
        f"reminded = (SELECT count(DISTINCT item.day) FROM item WHERE {sent} "
        "AND item.kind = 'overdue'), "
        f"last_reminded_at = (SELECT max(item.scheduled_for) FROM item WHERE {sent})"
    )


def _status(row: sa.Row[Any]) -> str:
    if row.status in WAITING:
        return "pending"
    if row.status == "dead" and row.channel == "none":
        return "unreachable"
    if row.status == "superseded":
        return "superseded"
    return "sent"


def _move_items(connection: sa.Connection) -> None:
    """Per-task outbox rows → items, in Python: the day comes from the payload (the local
    day), which no SQL expression reads alike on SQLite and PostgreSQL."""
    utc = reminder.store.types.UTCDateTime(timezone=True)
    outbox = sa.table(
        "outbox",
        *(sa.column(name) for name in ("id", "key", "kind", "task_id", "task_no", "unit")),
        *(sa.column(name) for name in ("role", "channel", "recipient", "recipient_name")),
        *(sa.column(name) for name in ("status", "superseded_by", "lease_until")),
        sa.column("payload", sa.JSON()),
        sa.column("scheduled_for", utc),
        sa.column("created_at", utc),
    )
    item = sa.table(
        "item",
        *(sa.column(name) for name in ("key", "kind", "task_id", "task_no", "unit", "role")),
        *(sa.column(name) for name in ("via", "channel", "recipient", "recipient_name")),
        *(sa.column(name) for name in ("status", "superseded_by", "letter_id")),
        sa.column("day", sa.Date()),
        sa.column("payload", sa.JSON()),
        sa.column("scheduled_for", utc),
        sa.column("created_at", utc),
    )
    rows = connection.execute(sa.select(outbox).where(outbox.c.kind.in_(ITEM_KINDS))).all()
    if rows:
        connection.execute(
            sa.insert(item),
            [
                {
                    "key": row.key,
                    "kind": row.kind,
                    "task_id": row.task_id,
                    "task_no": row.task_no,
                    "unit": row.unit or row.recipient_name,
                    "role": row.role,
                    "via": (row.payload or {}).get("via"),
                    "channel": row.channel,
                    "recipient": row.recipient,
                    "recipient_name": row.recipient_name,
                    "day": dt.date.fromisoformat((row.payload or {}).get("day") or "1970-01-01"),
                    "scheduled_for": row.scheduled_for,
                    "status": _status(row),
                    "payload": row.payload or {},
                    "superseded_by": row.superseded_by,
                    "letter_id": None,
                    "created_at": row.created_at,
                }
                for row in rows
            ],
        )
    moved = sa.or_(
        outbox.c.kind.in_(ITEM_KINDS),
        sa.and_(outbox.c.kind == "escalation", outbox.c.status.in_(WAITING)),
    )
    ids = sa.select(outbox.c.id).where(moved).scalar_subquery()
    attempt = sa.table("attempt", sa.column("outbox_id"))
    connection.execute(sa.delete(attempt).where(attempt.c.outbox_id.in_(ids)))
    connection.execute(sa.delete(outbox).where(moved))
    connection.execute(
        sa.update(outbox)
        .where(outbox.c.kind == "agenda", outbox.c.status.in_(WAITING))
        .values(status="superseded", superseded_by="letters", lease_until=None)
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_kind_scheduled")
        batch_op.drop_index("ix_outbox_recipient_kind")
    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.drop_column("last_reminded_at")
        batch_op.drop_column("reminded")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_item_task_id"))
        batch_op.drop_index(batch_op.f("ix_item_letter_id"))
        batch_op.drop_index("ix_item_status_scheduled")
    op.drop_table("item")
