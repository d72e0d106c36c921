"""What the web pages show, read with queries sized to the page (no whole-ledger load).

- ``unit_page``: one unit's parts, most urgent first, with their units, the letters
  that carried them and the notes so far (a lead unit sees its cooperating units').
- ``board``: every task × unit in a supervisor's view, its light (red, yellow, green,
  reported, done) computed in SQL so that counts and filters never load the ledger,
  one page of rows at a time.
- ``task_detail``: one task, its units' states and its history.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Row, case, func, or_, select
from sqlmodel import Session

from reminder.contacts import Supervisor
from reminder.context import ROLE_LABELS
from reminder.ledger.model import names_section
from reminder.rules import Rules
from reminder.store.answers import history
from reminder.store.lights import counts_down, unit_light
from reminder.store.models import (
    AnswerRow,
    EventRow,
    ItemRow,
    OutboxRow,
    SectionRow,
    TaskRow,
    TaskUnitRow,
)
from reminder.wording import deadline_text

LIGHT_LABELS = {
    "red": "逾期",
    "yellow": "临期",
    "green": "正常推进",
    "reported": "已报办结（待审核）",
    "done": "已办结",
}
STATE_RANK = {"red": 0, "yellow": 1, "green": 2, "reported": 3, "done": 4}
PAGE_ROWS = 100
UNITS_LISTED = 300  # more units than this: the board's unit filter is a text field

_T = TaskRow.__table__  # type: ignore[attr-defined]
_U = TaskUnitRow.__table__  # type: ignore[attr-defined]
_E = EventRow.__table__  # type: ignore[attr-defined]
_A = AnswerRow.__table__  # type: ignore[attr-defined]
_I = ItemRow.__table__  # type: ignore[attr-defined]
_O = OutboxRow.__table__  # type: ignore[attr-defined]
_S = SectionRow.__table__  # type: ignore[attr-defined]


def _day(value: dt.date | str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _local(moment: dt.datetime | None, zone: dt.tzinfo) -> str | None:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else None


@dataclass(frozen=True, slots=True)
class Watch:
    """What a supervisor watches (contacts.toml ``sections``, ``units``): None = all."""

    sections: frozenset[int] | None = None
    units: frozenset[str] | None = None

    @classmethod
    def of(cls, session: Session, supervisor: Supervisor | None) -> Watch:
        if supervisor is None:
            return cls()
        sections = None
        if supervisor.sections:
            sections = frozenset(
                int(row.no)
                for row in session.execute(select(_S))
                if any(
                    names_section(item, row.no, row.numeral, row.title)
                    for item in supervisor.sections
                )
            )
        units = frozenset(supervisor.units) if supervisor.units else None
        return cls(sections, units)

    def where(self) -> list[Any]:
        found = []
        if self.sections is not None:
            found.append(_T.c.section_no.in_(sorted(self.sections)))
        if self.units is not None:
            names = sorted(self.units)
            found.append(or_(_U.c.unit.in_(names), _U.c.via.in_(names)))
        return found


@dataclass(slots=True)
class Filters:
    section: int | None = None
    unit: str = ""
    role: str = ""
    state: str = ""
    page: int = 1

    def query(self, **changes: object) -> dict[str, object]:
        found: dict[str, object] = {
            "section": self.section or "",
            "unit": self.unit,
            "role": self.role,
            "state": self.state,
        }
        found.update(changes)
        return {k: v for k, v in found.items() if v not in ("", None)}


@dataclass(slots=True)
class Board:
    today: dt.date
    counts: dict[str, int]
    total: int
    rows: list[dict[str, Any]]
    sections: list[dict[str, Any]]
    units: list[str]
    pages: int
    filters: Filters
    pending: dict[str, int] = field(default_factory=dict)


def _units_of(session: Session, task_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """The ledger's units of some tasks, as listed (name, role)."""
    found: dict[int, list[tuple[str, str]]] = defaultdict(list)
    if not task_ids:
        return found
    for row in session.execute(
        select(_U.c.task_id, _U.c.unit, _U.c.role)
        .where(_U.c.task_id.in_(task_ids), _U.c.via.is_(None))
        .order_by(_U.c.task_id, _U.c.position)
    ):
        found[int(row.task_id)].append((str(row.unit), str(row.role)))
    return found


def board(
    session: Session,
    planning: Rules,
    today: dt.date,
    filters: Filters,
    zone: dt.tzinfo,
    scope: Watch | None = None,
) -> Board:
    counted = counts_down(session, planning)
    light = unit_light(counted, today).label("light")
    where = _board_where(filters, scope)
    joined = _U.join(_T, _T.c.id == _U.c.task_id)
    counts = dict.fromkeys(STATE_RANK, 0) | {
        str(name): int(count)
        for name, count in session.execute(
            select(light, func.count()).select_from(joined).where(*where).group_by(light)
        )
    }
    shown = [*where]
    if filters.state in STATE_RANK:
        shown.append(unit_light(counted, today) == filters.state)
    total = sum(counts.values()) if filters.state not in STATE_RANK else counts[filters.state]
    rank = case(*((light == name, rank) for name, rank in STATE_RANK.items()), else_=9)
    due = func.coalesce(_U.c.due, _T.c.deadline_due).label("own_due")
    pages = max(1, -(-total // PAGE_ROWS))
    page = min(max(1, filters.page), pages)
    rows = list(
        session.execute(
            select(
                _U.c.id,
                _U.c.unit,
                _U.c.role,
                _U.c.via,
                _U.c.due,
                _U.c.reported_at,
                _U.c.returned_note,
                _U.c.last_reminded_at,
                _U.c.reminded,
                _T.c.id.label("task_id"),
                _T.c.no,
                _T.c.section_no,
                _T.c.text,
                _T.c.deadline_raw,
                due,
                light,
            )
            .select_from(joined)
            .where(*shown)
            .order_by(rank, due, _T.c.no, _U.c.position)
            .limit(PAGE_ROWS)
            .offset((page - 1) * PAGE_ROWS)
        )
    )
    listed = _units_of(session, sorted({int(r.task_id) for r in rows}))
    out = [_board_row(row, listed[int(row.task_id)], today, zone) for row in rows]
    sections, units = _choices(session, scope)
    pending = Counter(answer["kind"] for answer in pending_answers(session, zone, scope))
    chosen = Filters(filters.section, filters.unit, filters.role, filters.state, page)
    return Board(today, counts, total, out, sections, units, pages, chosen, dict(pending))


def _board_where(filters: Filters, scope: Watch | None) -> list[ColumnElement[bool]]:
    """The rows of the board: the supervisor's scope, then the filters chosen."""
    where = [_T.c.removed_at.is_(None), _U.c.is_target.is_(True), *(scope or Watch()).where()]
    if filters.section:
        where.append(_T.c.section_no == filters.section)
    if filters.unit:
        where.append(or_(_U.c.unit == filters.unit, _U.c.via == filters.unit))
    if filters.role in ("lead", "cooperating"):
        where.append(_U.c.role == filters.role)
    return where


def _board_row(
    row: Row[Any], listed: list[tuple[str, str]], today: dt.date, zone: dt.tzinfo
) -> dict[str, Any]:
    """One task × unit as the board lists it."""
    own = _day(row.own_due)
    leads = [name for name, role in listed if role == "lead"]
    return {
        "no": int(row.no),
        "section": int(row.section_no),
        "text": " ".join(str(row.text).split()),
        "deadline": deadline_text(str(row.deadline_raw)),
        "unit": str(row.unit),
        "via": row.via,
        "role": str(row.role),
        "role_label": ROLE_LABELS.get(str(row.role), str(row.role)),
        "lead": "、".join(leads),
        "due": own.isoformat() if own else None,
        "extended": row.due is not None,
        "light": str(row.light),
        "light_label": LIGHT_LABELS[str(row.light)],
        "days": (today - own).days if own and row.light == "red" else None,
        "reminded": int(row.reminded or 0),
        "last_reminded": _local(row.last_reminded_at, zone),
    }


def _choices(session: Session, scope: Watch | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The sections and units a supervisor can filter the board by."""
    sections = [
        {"no": int(r.no), "label": f"{r.numeral}、{r.title}"}
        for r in session.execute(select(_S).order_by(_S.c.no))
        if scope is None or scope.sections is None or int(r.no) in scope.sections
    ]
    # the units to filter by: through the index on task_unit.unit (a unit of removed
    # tasks only may be listed, and shows nothing)
    names = select(_U.c.unit).where(_U.c.is_target.is_(True)).distinct().order_by(_U.c.unit)
    if scope is not None and scope.units is not None:
        names = names.where(
            or_(_U.c.unit.in_(sorted(scope.units)), _U.c.via.in_(sorted(scope.units)))
        )
    units = [str(name) for name in session.execute(names.limit(UNITS_LISTED + 1)).scalars()]
    return sections, units


def all_rows(session: Session, planning: Rules, today: dt.date) -> list[tuple[Any, ...]]:
    """Every task × unit of the ledger with its light, for the export: (no, section,
    text, deadline, unit, via, role, own due, light, 催办次数), by task and position."""
    light = unit_light(counts_down(session, planning), today)
    return [
        tuple(row)
        for row in session.execute(
            select(
                _T.c.no,
                _T.c.section_no,
                _T.c.text,
                _T.c.deadline_raw,
                _U.c.unit,
                _U.c.via,
                _U.c.role,
                func.coalesce(_U.c.due, _T.c.deadline_due),
                light,
                _U.c.reminded,
            )
            .select_from(_U.join(_T, _T.c.id == _U.c.task_id))
            .where(_T.c.removed_at.is_(None), _U.c.is_target.is_(True))
            .order_by(_T.c.no, _U.c.position)
        )
    ]


def _notes(
    session: Session, task_ids: list[int], zone: dt.tzinfo
) -> dict[int, list[dict[str, Any]]]:
    """What units and supervisors said about some tasks (not reads, not imports)."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not task_ids:
        return found
    for row in session.execute(
        select(_E)
        .where(
            _E.c.task_id.in_(task_ids),
            _E.c.kind.in_(
                ("progress", "report", "extension", "approve", "return", "extend", "refuse", "done")
            ),
        )
        .order_by(_E.c.at, _E.c.id)
    ):
        found[int(row.task_id)].append(
            {
                "at": _local(row.at, zone),
                "kind": str(row.kind),
                "unit": row.unit,
                "by": row.actor,
                "note": row.note,
                "attachment": row.attachment or None,
                "due": _day(row.due).isoformat() if row.due else None,  # type: ignore[union-attr]
            }
        )
    return found


def unit_page(
    session: Session, planning: Rules, unit: str, today: dt.date, zone: dt.tzinfo
) -> list[dict[str, Any]]:
    """A unit's parts, most urgent first (open, then reported, then done)."""
    light = unit_light(counts_down(session, planning), today).label("light")
    rows = list(
        session.execute(
            select(
                light,
                _U.c.id,
                _U.c.role,
                _U.c.via,
                _U.c.due,
                _U.c.done_at,
                _U.c.reported_at,
                _U.c.returned_note,
                _U.c.reminded,
                _U.c.last_reminded_at,
                _T.c.id.label("task_id"),
                _T.c.no,
                _T.c.text,
                _T.c.status,
                _T.c.deadline_raw,
                _T.c.deadline_due,
                _T.c.deadline_kind,
                _S.c.numeral,
                _S.c.title,
            )
            .select_from(
                _U.join(_T, _T.c.id == _U.c.task_id).outerjoin(_S, _S.c.no == _T.c.section_no)
            )
            .where(_U.c.unit == unit, _U.c.is_target.is_(True), _T.c.removed_at.is_(None))
        )
    )
    task_ids = [int(r.task_id) for r in rows]
    listed = _units_of(session, task_ids)
    notes = _notes(session, task_ids, zone)
    letters = _letters_of(session, unit, task_ids, zone)
    waiting = {
        (int(r.task_id), str(r.kind)): r
        for r in session.execute(select(_A).where(_A.c.unit == unit, _A.c.status == "pending"))
    }
    found = [
        _unit_part(
            row, unit, today, listed, notes, letters, waiting.get((int(row.task_id), "extension"))
        )
        for row in rows
    ]
    found.sort(
        key=lambda t: (STATE_RANK[t["state"]], -(t["overdue_days"] or 0), t["due"] or "9", t["no"])
    )
    return found


def _letters_of(
    session: Session, unit: str, task_ids: list[int], zone: dt.tzinfo
) -> dict[int, list[dict[str, Any]]]:
    """The letters that told a unit of some tasks: kind, channel and when, oldest first."""
    letters: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not task_ids:
        return letters
    for row in session.execute(
        select(_I.c.task_id, _I.c.kind, _O.c.channel, _O.c.scheduled_for, _O.c.sent_at)
        .join(_O, _O.c.id == _I.c.letter_id)
        .where(_I.c.unit == unit, _I.c.task_id.in_(task_ids))
        .order_by(_O.c.scheduled_for)
    ):
        letters[int(row.task_id)].append(
            {
                "kind": str(row.kind),
                "channel": str(row.channel),
                "at": _local(row.sent_at or row.scheduled_for, zone),
            }
        )
    return letters


def _unit_part(
    row: Row[Any],
    unit: str,
    today: dt.date,
    listed: dict[int, list[tuple[str, str]]],
    notes: dict[int, list[dict[str, Any]]],
    letters: dict[int, list[dict[str, Any]]],
    extension: Row[Any] | None,
) -> dict[str, Any]:
    """One task × unit as the unit's page shows it."""
    task_id = int(row.task_id)
    own = _day(row.due) or _day(row.deadline_due)
    state = str(row.light)
    units = listed[task_id]
    return {
        "no": int(row.no),
        "section": f"{row.numeral}、{row.title}" if row.numeral else "",
        "text": " ".join(str(row.text).split()),
        "deadline": deadline_text(str(row.deadline_raw)),
        "role": str(row.role),
        "role_label": ROLE_LABELS.get(str(row.role), str(row.role)),
        "via": row.via,
        "due": own.isoformat() if own else None,
        "extended": row.due is not None,
        "extendable": own is not None and state not in ("done",),
        "days_left": (own - today).days if own and state in ("yellow", "green") else None,
        "overdue_days": (today - own).days if own and state == "red" else None,
        "state": state,
        "state_label": LIGHT_LABELS[state],
        "returned": str(row.returned_note or ""),
        "lead": [n for n, r in units if r == "lead"],
        "others": [n for n, r in units if r != "lead" and n != unit],
        "letters": letters[task_id],
        "reminded": int(row.reminded or 0),
        "notes": [n for n in notes[task_id] if n["unit"] == unit or row.role == "lead"],
        "extension_pending": (
            {"due": _day(extension.due).isoformat(), "note": extension.note}  # type: ignore[union-attr]
            if extension is not None and extension.due
            else None
        ),
    }


def task_detail(
    session: Session, planning: Rules, number: int, today: dt.date, zone: dt.tzinfo
) -> dict[str, Any] | None:
    """One task for the board: its units' states and its history (oldest first)."""
    task = session.execute(select(_T).where(_T.c.no == number, _T.c.removed_at.is_(None))).first()
    if task is None:
        return None
    light = unit_light(counts_down(session, planning), today).label("light")
    units = []
    for row in session.execute(
        select(_U, light)
        .select_from(_U.join(_T, _T.c.id == _U.c.task_id))
        .where(_U.c.task_id == task.id, _U.c.is_target.is_(True))
        .order_by(_U.c.position)
    ):
        own = _day(row.due) or _day(task.deadline_due)
        state = str(row.light)
        units.append(
            {
                "unit": str(row.unit),
                "via": row.via,
                "role_label": ROLE_LABELS.get(str(row.role), str(row.role)),
                "due": own.isoformat() if own else None,
                "extended": row.due is not None,
                "state": state,
                "state_label": LIGHT_LABELS[state],
                "reminded": int(row.reminded or 0),
            }
        )
    entries = []
    for entry in history(session, number):
        at = entry["at"]
        read = entry.get("read_at")
        entries.append(
            {
                **entry,
                "at": _local(at, zone) if isinstance(at, dt.datetime) else at,
                "read_at": _local(read, zone) if isinstance(read, dt.datetime) else None,
            }
        )
    return {
        "no": int(task.no),
        "text": " ".join(str(task.text).split()),
        "deadline": deadline_text(str(task.deadline_raw)),
        "status": str(task.status),
        "units": units,
        "history": entries,
    }


def pending_answers(
    session: Session, zone: dt.tzinfo, scope: Watch | None = None
) -> list[dict[str, Any]]:
    """The review queues: completions and extensions waiting, oldest first (of a
    supervisor's scope)."""
    found = []
    statement = (
        select(_A, _T.c.no, _T.c.text, _T.c.deadline_raw)
        .join(_T, _T.c.id == _A.c.task_id)
        .where(_A.c.status == "pending", _T.c.removed_at.is_(None))
        .order_by(_A.c.at, _A.c.id)
    )
    if scope is not None and scope.sections is not None:
        statement = statement.where(_T.c.section_no.in_(sorted(scope.sections)))
    if scope is not None and scope.units is not None:
        via = select(_U.c.unit).where(_U.c.task_id == _A.c.task_id, _U.c.via.in_(scope.units))
        statement = statement.where(or_(_A.c.unit.in_(scope.units), _A.c.unit.in_(via)))
    for row in session.execute(statement):
        due = _day(row.due)
        found.append(
            {
                "id": int(row.id),
                "kind": str(row.kind),
                "no": int(row.no),
                "unit": str(row.unit),
                "text": " ".join(str(row.text).split()),
                "deadline": deadline_text(str(row.deadline_raw)),
                "note": str(row.note),
                "due": due.isoformat() if due else None,
                "attachment": row.attachment or None,
                "attachment_name": row.attachment_name,
                "at": _local(row.at, zone),
            }
        )
    return found
