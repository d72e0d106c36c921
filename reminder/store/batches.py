"""An import a batch of tasks at a time, with the rows it writes as one pass would.

A ledger of a million task × unit rows held as rows in memory (the stored ones read
for the diff, the planned ones, their parameters) took more than a gigabyte: the import
works through the tasks in batches of about ``BATCH_ROWS`` units instead, and each
batch's rows are freed once written.

New task_unit rows must still get the ids that one pass writing everything at once
gives them (``UnitChanges.write``): the listed units of every task first, then the
deleted listed rows, then the group members of every task by task number, then the
members no longer wanted (SQLite reuses the highest id once it is deleted; the unique
key (task, unit) forbids a member whose name a deleted listed row still holds). So
``UnitWriter`` writes each batch's listed units and updates as the batch ends (batches
follow the order of the listed units), keeps the ids to delete, and keeps the new member
rows as plain tuples, keyed by task number, until ``finish`` writes them in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Connection

from reminder.store.targets import (
    PlannedUnit,
    UnitChanges,
    delete_units,
    insert_units,
    new_values,
)

BATCH_ROWS = 50_000  # listed units of one batch (group members come on top)
MOST_TASKS = 5_000  # tasks of one batch (ids in one IN list)

Item = TypeVar("Item")


def batches(items: Sequence[Item], rows: Callable[[Item], int]) -> Iterator[Sequence[Item]]:
    """``items`` in order, in slices of about ``BATCH_ROWS`` rows (``rows`` of each item,
    at least one item a slice) and at most ``MOST_TASKS`` items."""
    start, count = 0, 0
    for index, item in enumerate(items):
        count += max(1, rows(item))
        if count >= BATCH_ROWS or index + 1 - start >= MOST_TASKS:
            yield items[start : index + 1]
            start, count = index + 1, 0
    if start < len(items):
        yield items[start:]


# a new member row, kept until ``finish``: the values ``new_values`` gives, in this order
_KEPT = ("task_id", "unit", "role", "kind", "raw", "position", "via", "is_target", "next_at")
_FIXED = {"done_note": "", "reminded": 0, "returned_note": ""}


class UnitWriter:
    """task_unit changes of an import, written batch by batch (see the module doc)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.listed_deletes: list[int] = []
        self.member_deletes: list[int] = []
        self.members: list[tuple[Any, ...]] = []  # (task number, *_KEPT)

    def write(self, changes: UnitChanges, numbers: dict[int, int]) -> None:
        """One batch's changes; ``numbers``: the number of each of its tasks, by id."""
        insert_units(self.connection, map(new_values, changes.listed_inserts))
        changes.write_updates(self.connection)
        self.listed_deletes += changes.listed_deletes
        self.member_deletes += changes.member_deletes
        self.members += [_kept(numbers[row.task_id], row) for row in changes.member_inserts]

    def finish(self) -> None:
        delete_units(self.connection, self.listed_deletes)
        self.members.sort(key=itemgetter(0))  # stable: a task's members stay in order
        insert_units(self.connection, _member_values(self.members))
        self.members = []
        delete_units(self.connection, self.member_deletes)


def _kept(number: int, row: PlannedUnit) -> tuple[Any, ...]:
    return (
        number,
        row.task_id,
        row.unit,
        row.role,
        row.kind,
        row.raw,
        row.position,
        row.via,
        row.is_target,
        row.next_at,
    )


def _member_values(members: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    for member in members:
        yield dict(zip(_KEPT, member[1:], strict=True)) | _FIXED
