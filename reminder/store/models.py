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
        Index("ix_task_due", "deadline_due", "no"),  # a digest's first overdue tasks
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
    """One unit of one task: as the ledger lists it, or a member of a listed group.

    A *target* of reminders (``is_target``) is a listed unit, a member of a listed group,
    or a group nobody can be found in (so that it is reported, never skipped). Its
    planning state: reminders are planned up to ``planned_until``; the next one is due
    at ``next_at`` (NULL: none), which a tick reads through its index.
    """

    __tablename__ = "task_unit"
    __table_args__ = (
        UniqueConstraint("task_id", "unit", name="uq_task_unit"),
        Index("ix_task_unit_unit", "unit"),  # a unit's page
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(
        sa_column=Column(Integer, ForeignKey("task.id"), nullable=False, index=True)
    )
    unit: str
    role: str  # lead | cooperating
    kind: str  # unit | enterprise | group
    raw: str
    position: int
    via: str | None = None  # the group this member row was expanded from
    is_target: bool = True
    done_at: dt.datetime | None = utc_field(nullable=True)
    done_note: str = ""
    last_progress_at: dt.datetime | None = utc_field(nullable=True)
    # kept by letter composition: the days an overdue reminder went out (催办次数), and the
    # last time the unit was reminded of the task at all
    reminded: int = 0
    last_reminded_at: dt.datetime | None = utc_field(nullable=True)
    planned_until: dt.datetime | None = utc_field(nullable=True)
    next_at: dt.datetime | None = utc_field(nullable=True, index=True)
    # answers through the web: a reported completion waiting for review (no reminders
    # meanwhile), an approved extension (this unit's own due date), the last 退回 reason
    reported_at: dt.datetime | None = utc_field(nullable=True)
    due: dt.date | None = None
    returned_note: str = ""


class UnitTallyRow(SQLModel, table=True):
    """How many target task × unit rows of the active tasks share all that a digest's
    counts depend on: kept by triggers as those rows change (migration 0006), read by
    ``DigestReader.tallies`` in place of the rows. A task without a due date has
    ``NO_DUE``, a unit without its own one ``TASKS_DUE``: no NULL in the key."""

    __tablename__ = "unit_tally"

    section_no: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    deadline_kind: str = Field(primary_key=True)
    deadline_due: dt.date = Field(primary_key=True)
    status: str = Field(primary_key=True)  # the task's: open | done
    unit: str = Field(primary_key=True)
    role: str = Field(primary_key=True)
    unit_done: bool = Field(primary_key=True)
    unit_reported: bool = Field(primary_key=True)
    unit_due: dt.date = Field(primary_key=True)
    n: int  # 0 once its rows are gone: the row stays


NO_DUE = dt.date(9999, 12, 31)  # in unit_tally: the task has no due date
TASKS_DUE = dt.date(1, 1, 1)  # in unit_tally: the unit is due when its task is


class EventRow(SQLModel, table=True):
    """The journal: every action on the ledger, who did it, when and from where.

    ``kind``: import | done | reopen | progress | read (签收) | report (报告办结) |
    extension (申请延期) | approve | return (退回) | extend (延期批准) | refuse | revoke.
    ``actor``: a unit or supervisor (through its link) or the command line's user;
    ``origin``: the web client's address, or "cli".
    """

    __tablename__ = "event"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = utc_field(index=True)
    kind: str
    task_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("task.id"), nullable=True, index=True)
    )
    unit: str | None = None
    note: str = ""
    actor: str = ""
    origin: str = ""
    attachment: str = ""  # sha256 of a file kept under [web] state_dir/attachments
    due: dt.date | None = None  # an extension's date


class AnswerRow(SQLModel, table=True):
    """What a unit asks a supervisor to decide: a completion (报告办结) or an extension
    (申请延期). ``status``: pending → approved | returned (completion) | refused
    (extension); a newer answer of the same kind withdraws a pending one."""

    __tablename__ = "answer"
    __table_args__ = (
        Index("ix_answer_status", "status", "at"),
        Index("ix_answer_task_unit", "task_id", "unit"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # completion | extension
    task_id: int = Field(sa_column=Column(Integer, ForeignKey("task.id"), nullable=False))
    unit: str
    note: str = ""
    due: dt.date | None = None  # the date asked for
    attachment: str = ""  # sha256
    attachment_name: str = ""
    attachment_type: str = ""
    status: str = "pending"
    at: dt.datetime = utc_field()
    actor: str = ""
    origin: str = ""
    decided_at: dt.datetime | None = utc_field(nullable=True)
    decided_by: str = ""
    decision_note: str = ""
    decided_due: dt.date | None = None


class LinkRow(SQLModel, table=True):
    """A personal link: to a unit's page (in its letter) or a supervisor's board (in the
    digest). The URL carries the id, signed with its issue time; the row says whose it
    is, which letter it came in (签收), and whether it was revoked."""

    __tablename__ = "link"
    __table_args__ = (
        Index("ix_link_scope_name", "scope", "name"),
        Index("ix_link_letter_key", "letter_key"),  # a letter's reading, in a task's history
    )

    id: str = Field(primary_key=True)
    scope: str  # unit | supervisor
    name: str
    letter_key: str | None = None
    created_at: dt.datetime = utc_field()
    opened_at: dt.datetime | None = utc_field(nullable=True)
    revoked_at: dt.datetime | None = utc_field(nullable=True)


class MetaRow(SQLModel, table=True):
    """Small facts about the store, e.g. the fingerprint of the config it was planned with."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str


class ItemRow(SQLModel, table=True):
    """What one unit is told about one task at one moment on one channel: the audit trail.

    The planner decides items (``key``: kind, task, unit, channel, address, day; unique:
    planning is insert-or-ignore). A pending item goes into exactly one letter
    (``letter_id``, in the transaction that enqueues the letter), or is superseded by a
    more urgent one, or is unreachable (nobody to send it to). ``sent``: an item that
    went out as a message of its own, before letters.
    """

    __tablename__ = "item"
    __table_args__ = (Index("ix_item_status_scheduled", "status", "scheduled_for"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    kind: str
    task_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("task.id"), nullable=True, index=True)
    )
    task_no: int | None = None
    unit: str
    role: str | None = None
    via: str | None = None  # the group the unit was listed through
    channel: str  # email | sms | wecom | dingtalk | none
    recipient: str  # the address; "" when there is none
    recipient_name: str
    day: dt.date  # the local day the planner chose for it
    scheduled_for: dt.datetime = utc_field()
    status: str = "pending"  # pending | lettered | superseded | unreachable | sent
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    superseded_by: str | None = None
    letter_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("outbox.id"), nullable=True, index=True),
    )
    created_at: dt.datetime = utc_field()


class OutboxRow(SQLModel, table=True):
    """One message to one recipient: a letter, a digest, an escalation list. ``key`` is
    unique: enqueueing is insert-or-ignore.

    States: pending → sending (claimed, ``lease_until``) → sent; or retry (again at
    ``next_attempt_at``) and dead (permanent error, retries exhausted, no contact);
    superseded (a more urgent reminder of the same task × unit went out instead).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_next", "status", "next_attempt_at"),
        # a recipient's last digest; today's letters (their sequence numbers)
        Index("ix_outbox_recipient_kind", "recipient_name", "kind", "scheduled_for"),
        Index("ix_outbox_kind_scheduled", "kind", "scheduled_for"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    kind: str
    task_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("task.id"), nullable=True, index=True)
    )
    task_no: int | None = None
    unit: str | None = None
    role: str | None = None
    channel: str  # email | sms | robot | none
    recipient: str  # the address: e-mail, mobile number, webhook URL; "" when there is none
    recipient_name: str  # the unit or supervisor it goes to
    scheduled_for: dt.datetime = utc_field()
    status: str = "pending"
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: dt.datetime = utc_field()
    next_attempt_at: dt.datetime = utc_field()
    attempts: int = 0
    lease_until: dt.datetime | None = utc_field(nullable=True)
    sent_at: dt.datetime | None = utc_field(nullable=True)
    last_error: str = ""
    last_result: str = ""  # the last answer of the server or gateway, e.g. "250 2.0.0 Ok"
    superseded_by: str | None = None


class AttemptRow(SQLModel, table=True):
    """A delivery attempt that did not succeed (retry, deferred, dead), kept for `outbox`.

    A successful attempt is recorded on the outbox row itself (``sent_at``,
    ``attempts``, ``last_result``): it is the common case and the last one.
    """

    __tablename__ = "attempt"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(
        sa_column=Column(Integer, ForeignKey("outbox.id"), nullable=False, index=True)
    )
    at: dt.datetime = utc_field(index=True)
    outcome: str  # sent | retry | dead | deferred
    code: int | None = None
    detail: str = ""
