"""What a large import does besides writing: on SQLite, ``unit_tally`` counted again in
one pass; on PostgreSQL, the planner's statistics of the tables it wrote.

``unit_tally`` is kept by triggers (migration 0006). On SQLite a statement run once per row
(an import's executemany) costs about three times as much while any trigger is on its
table, even one that does nothing: a 10⁶-row import took twice as long. So a large
import drops the triggers, writes, counts the whole table again and creates them again
from the SQL they were created with: all in the import's transaction, so nobody sees
the table without them, and a kill leaves the old ledger with its old counts.
PostgreSQL counts a COPY at once: its triggers stay. But its planner knows nothing of
a million new rows until they are analyzed, which autovacuum may do a minute later or,
where it is off, never: a digest's query on task_unit took 33 s instead of milliseconds.
So the import analyzes the tables it wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection, delete, func, insert, select, text

from reminder.store.models import NO_DUE, TASKS_DUE, TaskRow, TaskUnitRow, UnitTallyRow

# an import that writes this many task × unit rows counts the tally again at its end
# (SQLite) or analyzes the tables (PostgreSQL)
BULK_ROWS = 20_000

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
_TALLY = UnitTallyRow.__table__  # type: ignore[attr-defined]
_TRIGGERS = text(
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'unit_tally%'"
)


@contextlib.contextmanager
def bulk(connection: Connection, rows: int) -> Iterator[None]:
    """Writes of about ``rows`` task × unit rows: ``BULK_ROWS`` and more, the tally is
    counted again after them (SQLite) or the tables analyzed (PostgreSQL)."""
    if rows < BULK_ROWS:
        yield
        return
    if connection.dialect.name == "postgresql":
        yield
        connection.exec_driver_sql("ANALYZE task, task_unit, unit_tally")
        return
    triggers = connection.execute(_TRIGGERS).all()
    for name, _ in triggers:
        connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
    yield
    connection.execute(delete(_TALLY))
    key = (
        _T.c.section_no,
        _T.c.deadline_kind,
        func.coalesce(_T.c.deadline_due, NO_DUE),
        _T.c.status,
        _U.c.unit,
        _U.c.role,
        _U.c.done_at.is_not(None),
        _U.c.reported_at.is_not(None),
        func.coalesce(_U.c.due, TASKS_DUE),
    )
    counted = (
        select(*key, func.count())
        .select_from(_U.join(_T, _T.c.id == _U.c.task_id))
        .where(_U.c.is_target.is_(True), _T.c.removed_at.is_(None))
        .group_by(*key)
    )
    connection.execute(insert(_TALLY).from_select([c.name for c in _TALLY.c], counted))
    for _, sql in triggers:
        connection.exec_driver_sql(sql)
