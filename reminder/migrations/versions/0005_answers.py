"""Answers: units report through their links, supervisors decide.

A unit's part gets its answer state (a completion waiting for review, its own due date
after an extension, the last 退回 reason); the journal says from where and carries an
attachment or a date; ``answer`` is the review queue and ``link`` the personal links.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import reminder.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _utc(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, reminder.store.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.add_column(_utc("reported_at", True))
        batch_op.add_column(sa.Column("due", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column("returned_note", sa.String(), nullable=False, server_default="")
        )
        batch_op.create_index("ix_task_unit_unit", ["unit"])
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("attachment", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("due", sa.Date(), nullable=True))
    op.create_table(
        "answer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("due", sa.Date(), nullable=True),
        sa.Column("attachment", sa.String(), nullable=False),
        sa.Column("attachment_name", sa.String(), nullable=False),
        sa.Column("attachment_type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        _utc("at", False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("origin", sa.String(), nullable=False),
        _utc("decided_at", True),
        sa.Column("decided_by", sa.String(), nullable=False),
        sa.Column("decision_note", sa.String(), nullable=False),
        sa.Column("decided_due", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.create_index("ix_answer_status", ["status", "at"])
        batch_op.create_index("ix_answer_task_unit", ["task_id", "unit"])
    op.create_table(
        "link",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("letter_key", sa.String(), nullable=True),
        _utc("created_at", False),
        _utc("opened_at", True),
        _utc("revoked_at", True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("link", schema=None) as batch_op:
        batch_op.create_index("ix_link_scope_name", ["scope", "name"])
        batch_op.create_index("ix_link_letter_key", ["letter_key"])


def downgrade() -> None:
    op.drop_table("link")
    op.drop_table("answer")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("due")
        batch_op.drop_column("attachment")
        batch_op.drop_column("origin")
    with op.batch_alter_table("task_unit", schema=None) as batch_op:
        batch_op.drop_index("ix_task_unit_unit")
        batch_op.drop_column("returned_note")
        batch_op.drop_column("due")
        batch_op.drop_column("reported_at")
