"""The tables of ledger.db (SQLModel). Schema changes go through Alembic migrations."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from reminder.store.types import UTCDateTime


def utc_field(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class ImportRun(SQLModel, table=True):
    """One `reminder import`: the ledger's title and year are those of the latest run."""

    __tablename__ = "import_run"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = utc_field()
    source: str
    format: str
    sha256: str
    title: str
    year: int
    tasks: int
    added: int
    removed: int
    changed: int


class SectionRow(SQLModel, table=True):
    __tablename__ = "section"

    no: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    numeral: str
    title: str


class TaskRow(SQLModel, table=True):
    """A task of the ledger. Removed tasks stay (``removed_at``) so history keeps its rows."""

    __tablename__ = "task"
    __table_args__ = (
        Index(
            "ix_task_no_active",
            "no",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    no: int
    section_no: int
    text: str
    deadline_raw: str
    deadline_kind: str
    deadline_start: dt.date | None = None
    deadline_due: dt.date | None = None
    milestones: list[str] = Field(default_factory=list, sa_type=JSON)
    recurrence: str | None = None
    action: str | None = None
    remarks: str = ""
    source_line: int = 0
    status: str = "open"  # open | done
    done_at: dt.datetime | None = utc_field(nullable=True)
    created_at: dt.datetime = utc_field()
    updated_at: dt.datetime = utc_field()
    removed_at: dt.datetime | None = utc_field(nullable=True)


class TaskUnitRow(SQLModel, table=True):
    """One responsible unit of one task, with its own completion."""

    __tablename__ = "task_unit"
    __table_args__ = (UniqueConstraint("task_id", "unit", name="uq_task_unit"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(
        sa_column=Column(Integer, ForeignKey("task.id"), nullable=False, index=True)
    )
    unit: str
    role: str  # lead | cooperating
    kind: str  # unit | enterprise | group
    raw: str
    position: int
    done_at: dt.datetime | None = utc_field(nullable=True)
    done_note: str = ""


class EventRow(SQLModel, table=True):
    """The journal: imports, completions, reopenings, progress notes; who and when."""

    __tablename__ = "event"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = utc_field(index=True)
    kind: str  # import | done | reopen | progress
    task_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("task.id"), nullable=True, index=True)
    )
    unit: str | None = None
    note: str = ""
    actor: str = ""
