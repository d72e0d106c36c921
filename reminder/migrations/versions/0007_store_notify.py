"""PostgreSQL: a write to the store tells the daemon (NOTIFY), as a SQLite file's change does.

Between sessions the daemon is a small supervisor that starts a session when something
may be due: on SQLite it sees a write as the store's files changing. On PostgreSQL each
table gets a statement trigger that notifies the channel ``reminder_store`` with the
table's schema (``reminder.supervisor`` LISTENs, and heeds its own schema only). A
notification is delivered when the transaction commits, and PostgreSQL folds the same
one sent several times in a transaction into one. The daemon's own sessions connect as
``application_name = 'reminder-session'`` and notify nobody: their writes are the work
the supervisor started them for. ``unit_tally`` is written only by the triggers of
``task`` and ``task_unit``, which notify already.

SQLite: nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 07:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHANNEL = "reminder_store"
SESSION_NAME = "reminder-session"  # reminder.supervisor sets it (PGAPPNAME) for its sessions
TABLES = (
    "import_run",
    "section",
    "task",
    "task_unit",
    "event",
    "answer",
    "link",
    "meta",
    "item",
    "outbox",
    "attempt",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION reminder_store_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF current_setting('application_name') <> '{SESSION_NAME}' THEN "
        f"PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA); END IF; RETURN NULL; END $$"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER reminder_store_changed AFTER INSERT OR UPDATE OR DELETE OR "
            f"TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION reminder_store_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER reminder_store_changed ON {table}")
    op.execute("DROP FUNCTION reminder_store_changed()")
