"""Planning state on task_unit, the outbox, meta.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 09:14:01.080959
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import reminder.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("task_no", sa.Integer(), nullable=True),
        sa.Column("unit", sa.String(), nullable=True),
        sa.Column("role", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("recipient_name", sa.String(), nullable=False),
        sa.Column("scheduled_for", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "next_attempt_at", reminder.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", reminder.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(), nullable=False),
        sa.Column("superseded_by", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_status_next", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_task_id"), ["task_id"], unique=False)

    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("via", sa.String(), nullable=True))
        batch_op.add_column(
            sa.Column("is_target", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column(
                "last_progress_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "planned_until", reminder.store.types.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("next_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_task_unit_next_at"), ["next_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_unit_next_at"))
        batch_op.drop_column("next_at")
        batch_op.drop_column("planned_until")
        batch_op.drop_column("last_progress_at")
        batch_op.drop_column("is_target")
        batch_op.drop_column("via")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_task_id"))
        batch_op.drop_index("ix_outbox_status_next")

    op.drop_table("outbox")
    op.drop_table("meta")
