"""The units' tally: what a digest counts, kept by the database as rows change.

A digest counts, for every unit, its red, yellow and escalated parts: at 10⁶ task × unit
rows one pass over them took seconds. ``unit_tally`` holds how many target rows of the
active tasks share everything those counts depend on (the task's section, deadline kind,
due date and status; the unit's name, role, done, reported and own due date): a few
thousand rows where the ledger has a million, and the same counts for any day. Triggers
keep it as task_unit and task rows are written, by any writer: the import, `done`, the
answers web, a hand-written UPDATE. No date is NULL in it (a NULL would not meet its
twin in the primary key): a task without a due date has 9999-12-31 (never red, never
yellow), a unit without its own one 0001-01-01 (late as its task).

The tasks get an index on their due dates: a digest lists the first overdue ones.

SQLite runs its triggers per row: a large import drops them, writes, counts the table
again and creates them again, all in its transaction (``reminder.store.bulk``). On
PostgreSQL the import's COPY fires one statement trigger with the new rows as a
table; updates fire a row trigger only when a counted column changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY = (
    "section_no, deadline_kind, deadline_due, status, unit, role, unit_done, unit_reported,"
    " unit_due"
)
_KEYS = [name.strip() for name in KEY.split(",")]
_ORDINALS = ", ".join(str(k + 1) for k in range(len(_KEYS)))  # GROUP BY the key's columns
_TASK_COUNTED = ("section_no", "deadline_kind", "deadline_due", "status", "removed_at")
_UNIT_COUNTED = ("task_id", "unit", "role", "is_target", "done_at", "reported_at", "due")


def _values(task: str, unit: str, *, sqlite: bool) -> str:
    """The key of a task × unit row, its task columns from ``task``, its own from ``unit``."""
    none_due, own_due = (
        ("'9999-12-31'", "'0001-01-01'") if sqlite else ("DATE '9999-12-31'", "DATE '0001-01-01'")
    )
    return (
        f"{task}.section_no, {task}.deadline_kind, COALESCE({task}.deadline_due, {none_due}),"
        f" {task}.status, {unit}.unit, {unit}.role, {unit}.done_at IS NOT NULL,"
        f" {unit}.reported_at IS NOT NULL, COALESCE({unit}.due, {own_due})"
    )


def _upsert(select: str) -> str:
    return (
        f"INSERT INTO unit_tally ({KEY}, n) {select} "
        f"ON CONFLICT ({KEY}) DO UPDATE SET n = unit_tally.n + excluded.n"
    )


def _changed(columns: tuple[str, ...], *, sqlite: bool) -> str:
    differs = "IS NOT" if sqlite else "IS DISTINCT FROM"
    return " OR ".join(f"OLD.{name} {differs} NEW.{name}" for name in columns)


def _rows(table: str, sign: str, *, sqlite: bool) -> str:
    """Count the target rows of ``table`` (task_unit, or a statement's transition table)."""
    return _upsert(
        f"SELECT {_values('t', 'u', sqlite=sqlite)}, {sign}count(*) "
        f"FROM {table} u JOIN task t ON t.id = u.task_id "
        f"WHERE u.is_target AND t.removed_at IS NULL GROUP BY {_ORDINALS}"
    )


def _unit(row: str, sign: str, *, sqlite: bool) -> str:
    """Count one task_unit row (a trigger's OLD or NEW)."""
    return _upsert(
        f"SELECT {_values('t', row, sqlite=sqlite)}, {sign}1 FROM task t "
        f"WHERE t.id = {row}.task_id AND t.removed_at IS NULL AND {row}.is_target"
    )


def _task(row: str, sign: str, *, sqlite: bool) -> str:
    """Count the target rows of one task (a trigger's OLD or NEW)."""
    return _upsert(
        f"SELECT {_values(row, 'u', sqlite=sqlite)}, {sign}count(*) FROM task_unit u "
        f"WHERE u.task_id = {row}.id AND u.is_target AND {row}.removed_at IS NULL "
        f"GROUP BY {_ORDINALS}"
    )


def _sqlite() -> list[str]:
    def unit(row: str, sign: str) -> str:
        return _unit(row, sign, sqlite=True)

    def task(row: str, sign: str) -> str:
        return _task(row, sign, sqlite=True)

    def changed(columns: tuple[str, ...]) -> str:
        return _changed(columns, sqlite=True)

    return [
        f"CREATE TRIGGER unit_tally_insert AFTER INSERT ON task_unit BEGIN {unit('NEW', '')}; END",
        f"CREATE TRIGGER unit_tally_delete AFTER DELETE ON task_unit BEGIN {unit('OLD', '-')}; END",
        f"CREATE TRIGGER unit_tally_update AFTER UPDATE OF {', '.join(_UNIT_COUNTED)} "
        f"ON task_unit WHEN {changed(_UNIT_COUNTED)} "
        f"BEGIN {unit('OLD', '-')}; {unit('NEW', '')}; END",
        f"CREATE TRIGGER unit_tally_task AFTER UPDATE OF {', '.join(_TASK_COUNTED)} "
        f"ON task WHEN {changed(_TASK_COUNTED)} "
        f"BEGIN {task('OLD', '-')}; {task('NEW', '')}; END",
    ]


def _postgresql() -> list[str]:
    def function(name: str, body: str) -> str:
        return (
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body}; RETURN NULL; END $$"
        )

    def unit(row: str, sign: str) -> str:
        return _unit(row, sign, sqlite=False)

    def task(row: str, sign: str) -> str:
        return _task(row, sign, sqlite=False)

    return [
        function("unit_tally_inserted", _rows("new_rows", "", sqlite=False)),
        function("unit_tally_deleted", _rows("old_rows", "-", sqlite=False)),
        function("unit_tally_updated", f"{unit('OLD', '-')}; {unit('NEW', '')}"),
        function("unit_tally_task", f"{task('OLD', '-')}; {task('NEW', '')}"),
        "CREATE TRIGGER unit_tally_insert AFTER INSERT ON task_unit "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION unit_tally_inserted()",
        "CREATE TRIGGER unit_tally_delete AFTER DELETE ON task_unit "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION unit_tally_deleted()",
        f"CREATE TRIGGER unit_tally_update AFTER UPDATE OF {', '.join(_UNIT_COUNTED)} "
        f"ON task_unit FOR EACH ROW WHEN ({_changed(_UNIT_COUNTED, sqlite=False)}) "
        "EXECUTE FUNCTION unit_tally_updated()",
        f"CREATE TRIGGER unit_tally_task AFTER UPDATE OF {', '.join(_TASK_COUNTED)} "
        f"ON task FOR EACH ROW WHEN ({_changed(_TASK_COUNTED, sqlite=False)}) "
        "EXECUTE FUNCTION unit_tally_task()",
    ]


def upgrade() -> None:
    op.create_table(
        "unit_tally",
        sa.Column("section_no", sa.Integer(), nullable=False),
        sa.Column("deadline_kind", sa.String(), nullable=False),
        sa.Column("deadline_due", sa.Date(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("unit_done", sa.Boolean(), nullable=False),
        sa.Column("unit_reported", sa.Boolean(), nullable=False),
        sa.Column("unit_due", sa.Date(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEYS),
    )
    op.create_index("ix_task_due", "task", ["deadline_due", "no"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(_rows("task_unit", "", sqlite=sqlite))  # the rows already there
    for statement in _sqlite() if sqlite else _postgresql():
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, table in (
        ("unit_tally_insert", "task_unit"),
        ("unit_tally_delete", "task_unit"),
        ("unit_tally_update", "task_unit"),
        ("unit_tally_task", "task"),
    ):
        op.execute(f"DROP TRIGGER {name}" if sqlite else f"DROP TRIGGER {name} ON {table}")
    if not sqlite:
        for name in ("inserted", "deleted", "updated", "task"):
            op.execute(f"DROP FUNCTION unit_tally_{name}()")
    op.drop_table("unit_tally")
    op.drop_index("ix_task_due", table_name="task")
