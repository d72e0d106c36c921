"""Answers: 签收, 报送进展, 报告办结, 申请延期, and the supervisors' decisions.

A unit answers through its link (or an administrator for it, on the command line); a
supervisor decides through the board or `reminder review`. Each action is one
transaction and one journal entry (``event``: who, when, from where), and moves the
unit's part as the planner reads it:

- 报告办结 under ``[policy] completion = "review"`` holds the part (``reported_at``): no
  reminders while it waits. Approved, the part is done; returned (退回), the reminders
  resume and the next letter says why. Under ``"trust"`` the report closes it at once.
- 申请延期 waits for a supervisor; approved (with the date asked or another), the unit's
  own due date moves (``task_unit.due``) and the planner replans from it.
- 报送进展 is a note: it answers this month's check-in, as `reminder progress` does.

A unit acts only on its own parts: a task it is not a target of is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from reminder.errors import InputError
from reminder.rules import Rules
from reminder.store.completion import journal, ledger_context, mark_done, record_progress
from reminder.store.models import (
    AnswerRow,
    EventRow,
    ItemRow,
    LinkRow,
    OutboxRow,
    TaskRow,
    TaskUnitRow,
)
from reminder.store.targets import reschedule, update_task_status
from reminder.store.tasks import deadline_of, units_by_task

COMPLETION = "completion"
EXTENSION = "extension"
NOTE_MAX = 2000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts and from where: a unit or supervisor (its link), or the command line."""

    name: str
    origin: str  # the client's address, or "cli"


@dataclass(frozen=True, slots=True)
class Attachment:
    sha256: str
    name: str
    content_type: str


def _note(text: str, required: str | None = None) -> str:
    note = " ".join(text.split()) if "\n" not in text else text.strip()
    if required and not note:
        raise InputError(required)
    if len(note) > NOTE_MAX:
        raise InputError(f"说明不能超过{NOTE_MAX}字")
    return note


def part(session: Session, number: int, unit: str) -> tuple[TaskRow, TaskUnitRow]:
    """The active task ``number`` and ``unit``'s own part of it (a target row), or
    InputError: a unit acts only on its own tasks."""
    statement = select_rows(TaskRow).where(
        col(TaskRow.no) == number, col(TaskRow.removed_at).is_(None)
    )
    task = session.exec(statement).first()
    if task is None or task.id is None:
        raise InputError(f"第{number}项任务不存在")
    row = session.exec(
        select_rows(TaskUnitRow).where(
            col(TaskUnitRow.task_id) == task.id,
            col(TaskUnitRow.unit) == unit,
            col(TaskUnitRow.is_target).is_(True),
        )
    ).first()
    if row is None:
        raise InputError(f"第{number}项任务不是{unit}的任务")
    return task, row


def _journal(
    session: Session,
    kind: str,
    task: TaskRow | None,
    unit: str | None,
    note: str,
    actor: Actor,
    now: dt.datetime,
    attachment: str = "",
    due: dt.date | None = None,
) -> None:
    journal(session, kind, task, unit, note, actor.name, actor.origin, now, attachment, due)


def _replan(session: Session, planning: Rules, task: TaskRow, now: dt.datetime) -> None:
    assert task.id is not None
    context = ledger_context(session)
    rows = units_by_task(session, [task.id])[task.id]
    update_task_status(session, planning, context, task, rows, now)
    reschedule(session, planning, context, task, rows)


def recent_actions(session: Session, actor: str, since: dt.datetime) -> int:
    """What ``actor`` wrote into the journal since ``since``, from any process (the web's
    limit on posts holds across several web processes on one store)."""
    statement = (
        select(func.count())
        .select_from(EventRow)
        .where(col(EventRow.at) > since, col(EventRow.actor) == actor, col(EventRow.kind) != "read")
    )
    return int(session.execute(statement).scalar_one())


def read_link(session: Session, link: LinkRow, actor: Actor, now: dt.datetime) -> bool:
    """签收: the first opening of a link is journalled (with the letter it came in), once
    even if two web processes see it opened at the same moment."""
    table = LinkRow.__table__  # type: ignore[attr-defined]
    opened = session.connection().execute(
        update(table)
        .where(table.c.id == link.id, table.c.opened_at.is_(None))
        .values(opened_at=now)
    )
    if not opened.rowcount:
        return False
    _journal(session, "read", None, link.name, link.letter_key or "", actor, now)
    return True


def report_progress(
    session: Session,
    planning: Rules,
    number: int,
    unit: str,
    note: str,
    actor: Actor,
    now: dt.datetime,
) -> None:
    """报送进展."""
    part(session, number, unit)
    text = _note(note, "请填写进展情况")
    record_progress(session, planning, number, unit, text, actor.name, now, actor.origin)


def _open(task: TaskRow, row: TaskUnitRow, why: str) -> None:
    if row.done_at is not None or task.status == "done":
        raise InputError(f"第{task.no}项任务你单位部分已办结{why}")


def _ask(
    session: Session,
    kind: str,
    task: TaskRow,
    unit: str,
    note: str,
    actor: Actor,
    now: dt.datetime,
    due: dt.date | None = None,
    attachment: Attachment | None = None,
) -> None:
    """A new answer for a supervisor; it withdraws the unit's pending one of that kind."""
    assert task.id is not None
    for row in session.exec(
        select_rows(AnswerRow).where(
            col(AnswerRow.task_id) == task.id,
            col(AnswerRow.unit) == unit,
            col(AnswerRow.kind) == kind,
            col(AnswerRow.status) == "pending",
        )
    ):
        row.status, row.decided_at, row.decided_by = "withdrawn", now, "superseded by a newer one"
        session.add(row)
    session.add(
        AnswerRow(
            kind=kind,
            task_id=task.id,
            unit=unit,
            note=note,
            due=due,
            attachment=attachment.sha256 if attachment else "",
            attachment_name=attachment.name if attachment else "",
            attachment_type=attachment.content_type if attachment else "",
            at=now,
            actor=actor.name,
            origin=actor.origin,
        )
    )


def report_done(
    session: Session,
    planning: Rules,
    number: int,
    unit: str,
    note: str,
    attachment: Attachment | None,
    actor: Actor,
    now: dt.datetime,
) -> str:
    """报告办结; returns the part's state afterwards (reported, or done when trusted)."""
    task, row = part(session, number, unit)
    _open(task, row, "")
    text = _note(note, "请填写办结情况")
    _journal(
        session, "report", task, unit, text, actor, now, attachment.sha256 if attachment else ""
    )
    if planning.policy.completion == "trust":
        mark_done(session, planning, number, unit, text, actor.name, now, actor.origin)
        return "done"
    _ask(session, COMPLETION, task, unit, text, actor, now, attachment=attachment)
    row.reported_at, row.returned_note = now, ""
    session.add(row)
    session.flush()
    _replan(session, planning, task, now)
    return "reported"


def own_due(task: TaskRow, row: TaskUnitRow) -> dt.date | None:
    """The unit's due date: an approved extension's, else the task's."""
    return row.due or deadline_of(task).due


def request_extension(
    session: Session,
    planning: Rules,
    number: int,
    unit: str,
    due: dt.date,
    reason: str,
    actor: Actor,
    now: dt.datetime,
) -> None:
    """申请延期 to ``due``."""
    task, row = part(session, number, unit)
    _open(task, row, "，无需延期")
    current = own_due(task, row)
    if current is None:
        raise InputError(f"第{number}项任务没有截止日期，无需申请延期")
    if due <= current:
        raise InputError(f"延期后的日期须晚于现时限{current.isoformat()}")
    if due > current + dt.timedelta(days=366):
        raise InputError("延期不能超过一年")
    text = _note(reason, "请填写延期理由")
    _ask(session, EXTENSION, task, unit, text, actor, now, due=due)
    _journal(session, "extension", task, unit, text, actor, now, due=due)


def pending(session: Session, kind: str | None = None) -> list[tuple[AnswerRow, int]]:
    """What waits for a supervisor, oldest first, with its task's number now (of tasks
    still in the ledger)."""
    statement = (
        select_rows(AnswerRow, TaskRow.no)
        .join(TaskRow, col(TaskRow.id) == col(AnswerRow.task_id))
        .where(col(AnswerRow.status) == "pending", col(TaskRow.removed_at).is_(None))
    )
    if kind is not None:
        statement = statement.where(col(AnswerRow.kind) == kind)
    return [
        (answer, int(no))
        for answer, no in session.exec(statement.order_by(col(AnswerRow.at), col(AnswerRow.id)))
    ]


def decide(
    session: Session,
    planning: Rules,
    answer_id: int,
    approve: bool,
    note: str,
    actor: Actor,
    now: dt.datetime,
    due: dt.date | None = None,
) -> AnswerRow:
    """A supervisor's decision on a pending answer: approve (an extension to the date
    asked, or ``due``), or return a completion / refuse an extension (with a reason)."""
    answer = session.get(AnswerRow, answer_id)
    if answer is None:
        raise InputError(f"answer {answer_id}: no such answer")
    if answer.status != "pending":
        raise InputError(f"answer {answer_id}: already {answer.status}")
    # the task by its row: a re-import may have renumbered it since the answer
    asked = session.get(TaskRow, answer.task_id)
    if asked is None or asked.removed_at is not None:
        raise InputError(f"answer {answer_id}: its task is no longer in the ledger")
    task, row = part(session, asked.no, answer.unit)
    text = _note(note, None if approve else "退回或不予延期须写明理由")
    answer.decided_at, answer.decided_by, answer.decision_note = now, actor.name, text
    if answer.kind == COMPLETION:
        if approve:
            _approve_completion(session, planning, answer, task, row, text, actor, now)
            return answer
        answer.status = "returned"
        row.reported_at, row.returned_note = None, text
        _journal(session, "return", task, answer.unit, text, actor, now)
    elif approve:
        _extend(session, answer, task, row, due or answer.due, text, actor, now)
    else:
        answer.status = "refused"
        _journal(session, "refuse", task, answer.unit, text, actor, now)
    session.add(row)
    session.add(answer)
    session.flush()
    _replan(session, planning, task, now)
    return answer


def _approve_completion(
    session: Session,
    planning: Rules,
    answer: AnswerRow,
    task: TaskRow,
    row: TaskUnitRow,
    text: str,
    actor: Actor,
    now: dt.datetime,
) -> None:
    """审核销号: the reported completion accepted, the part done."""
    answer.status = "approved"
    row.reported_at, row.returned_note = None, ""
    session.add(row)
    session.add(answer)
    session.flush()
    _journal(session, "approve", task, answer.unit, text, actor, now)
    mark_done(session, planning, task.no, answer.unit, answer.note, actor.name, now, actor.origin)


def _extend(
    session: Session,
    answer: AnswerRow,
    task: TaskRow,
    row: TaskUnitRow,
    new_due: dt.date | None,
    text: str,
    actor: Actor,
    now: dt.datetime,
) -> None:
    """延期审批: the unit's own due date moved, never earlier than it is."""
    current = own_due(task, row)
    if new_due is None or (current is not None and new_due <= current):
        raise InputError(f"延期后的日期须晚于现时限{current}")
    answer.status, answer.decided_due = "approved", new_due
    row.due = new_due
    _journal(session, "extend", task, answer.unit, text, actor, now, due=new_due)


def history(session: Session, number: int) -> list[dict[str, object]]:
    """A task's journal, oldest first: ``[{"at", "by", "unit", "action", "note", …}]``,
    with the letters that carried it and when their links were first opened."""
    tasks = session.exec(select_rows(TaskRow).where(col(TaskRow.no) == number)).all()
    if not tasks:
        raise InputError(f"task {number}: no such task in the ledger")
    ids = [t.id for t in tasks if t.id is not None]
    entries: list[dict[str, object]] = [
        {
            "at": event.at,
            "by": event.actor,
            "unit": event.unit,
            "action": event.kind,
            "note": event.note,
            "origin": event.origin,
            "attachment": event.attachment or None,
            "due": event.due.isoformat() if event.due else None,
        }
        for event in session.exec(
            select_rows(EventRow)
            .where(col(EventRow.task_id).in_(ids))
            .order_by(col(EventRow.at), col(EventRow.id))
        )
    ]
    entries.extend(_letters_of(session, ids))
    entries.sort(key=lambda e: (str(e["at"]), str(e["action"])))
    return entries


def _letters_of(session: Session, ids: list[int]) -> list[dict[str, object]]:
    """The letters that carried some task rows, as journal entries, with when their
    links were first opened (签收)."""
    item = ItemRow.__table__  # type: ignore[attr-defined]
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    link = LinkRow.__table__  # type: ignore[attr-defined]
    letter = [
        outbox.c.key,
        outbox.c.recipient_name,
        outbox.c.channel,
        outbox.c.status,
        outbox.c.scheduled_for,
        outbox.c.sent_at,
    ]
    letters = (
        select(*letter, func.min(item.c.kind), func.min(link.c.opened_at))
        .join(item, item.c.letter_id == outbox.c.id)
        .outerjoin(link, link.c.letter_key == outbox.c.key)
        .where(item.c.task_id.in_(ids))
        .group_by(*letter)
    )
    found: list[dict[str, object]] = []
    for row in session.connection().execute(letters):
        key, name, channel, status, scheduled, sent, kind, opened = tuple(row)
        found.append(
            {
                "at": sent or scheduled,
                "by": "督办提醒系统",
                "unit": name,
                "action": "letter",
                "note": f"{channel} {kind} ({status})",
                "origin": "",
                "attachment": None,
                "due": None,
                "letter": key,
                "channel": channel,
                "kind": kind,
                "status": status,
                "read_at": opened,
            }
        )
    return found
