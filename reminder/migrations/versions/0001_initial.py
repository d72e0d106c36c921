"""Initial schema: ledger, tasks, units, journal.

Revision ID: 0001
Revises:
Create Date: 2026-11-29 08:57:13.516288
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import reminder.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "import_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "section",
        sa.Column("no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("numeral", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("no"),
    )
    op.create_table(
        "task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("no", sa.Integer(), nullable=False),
        sa.Column("section_no", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("deadline_raw", sa.String(), nullable=False),
        sa.Column("deadline_kind", sa.String(), nullable=False),
        sa.Column("deadline_start", sa.Date(), nullable=True),
        sa.Column("deadline_due", sa.Date(), nullable=True),
        sa.Column("milestones", sa.JSON(), nullable=False),
        sa.Column("recurrence", sa.String(), nullable=True),
        sa.Column("action", sa.String(), nullable=True),
        sa.Column("remarks", sa.String(), nullable=False),
        sa.Column("source_line", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("done_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("removed_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_no_active",
            ["no"],
            unique=True,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )

    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", reminder.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("unit", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_task_id"), ["task_id"], unique=False)

    op.create_table(
        "task_unit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("raw", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("done_at", reminder.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("done_note", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "unit", name="uq_task_unit"),
    )
    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_unit_task_id"), ["task_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_unit_task_id"))

    op.drop_table("task_unit")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_task_id"))
        batch_op.drop_index(batch_op.f("ix_event_at"))

    op.drop_table("event")
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_task_no_active",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )

    op.drop_table("task")
    op.drop_table("section")
    op.drop_table("import_run")
