"""What a ledger is once read: plain, immutable data, independent of its file format."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum


class DeadlineKind(StrEnum):
    DATE = "date"  # one or more due milestones: 1月31日, 6月底和7月底, 年底前
    WINDOW = "window"  # start and due: 9月1日—10月31日, 5月-8月, 上半年
    FROM = "from"  # start, open-ended: 7月1日-, 2021年5月1日起
    SEASON = "season"  # 采暖季: start and due from the policy (11-15 → 03-15 next year)
    ALL_YEAR = "all_year"  # 全年: 01-01 → 12-31
    RECURRING = "recurring"  # 每月10日前, 每季度末: milestones from a recurrence
    ONGOING = "ongoing"  # 持续开展, 长期坚持: no due date, progress check-ins only
    UNKNOWN = "unknown"  # kept raw, reported by `reminder check`, never dropped


class Role(StrEnum):
    LEAD = "lead"  # 牵头
    COOPERATING = "cooperating"  # 配合


class UnitKind(StrEnum):
    UNIT = "unit"  # a bureau, town, sub-district or office with its own contact
    ENTERPRISE = "enterprise"  # 豫光金铅, 方升化学等企业, 济源供电公司
    GROUP = "group"  # 各产业集聚（开发）区管委会, 镇人民政府, 相关…, 有关企业


@dataclass(frozen=True, slots=True)
class Deadline:
    raw: str
    kind: DeadlineKind
    start: dt.date | None = None
    milestones: tuple[dt.date, ...] = ()
    recurrence: str | None = None  # "monthly:10", "quarterly:end", … (see deadline.py)
    action: str | None = None  # what the cell also names: 9月投入使用 → "投入使用"

    @property
    def due(self) -> dt.date | None:
        """The final milestone: what "the deadline" means in tables and JSON."""
        return self.milestones[-1] if self.milestones else None

    def extended(self, due: dt.date) -> Deadline:
        """This deadline with its final milestone moved to ``due`` (an approved 延期);
        earlier milestones before the new date stay."""
        kept = tuple(day for day in self.milestones[:-1] if day < due)
        return Deadline(self.raw, self.kind, self.start, (*kept, due), self.recurrence, self.action)


@dataclass(frozen=True, slots=True)
class UnitRef:
    name: str  # canonical name (after aliases)
    role: Role
    kind: UnitKind
    raw: str  # as written in the ledger, for messages and `check`


@dataclass(frozen=True, slots=True)
class Section:
    no: int  # 1-based order
    numeral: str  # 一, 二, …
    title: str


def names_section(item: str | int, no: int, numeral: str, title: str) -> bool:
    """Whether a section named in the configuration (by its number, as a number or as
    text, its numeral or its title) is this one."""
    return item in (no, str(no), numeral, title)


@dataclass(frozen=True, slots=True)
class Task:
    no: int
    section_no: int
    text: str
    units: tuple[UnitRef, ...]
    deadline: Deadline
    remarks: str
    line: int  # where the row starts in the source (line, or row for spreadsheets)

    @property
    def lead_units(self) -> tuple[UnitRef, ...]:
        return tuple(u for u in self.units if u.role is Role.LEAD)


@dataclass(frozen=True, slots=True)
class Ledger:
    title: str
    year: int
    source: str
    format: str  # txt, docx, xlsx, csv
    sections: tuple[Section, ...]
    tasks: tuple[Task, ...]
    warnings: tuple[str, ...] = field(default=())

    def section(self, no: int) -> Section:
        for section in self.sections:
            if section.no == no:
                return section
        raise KeyError(no)


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What messages say about a task (the store reads it, the templates show it)."""

    no: int
    text: str
    section: str
    deadline: str
    due: dt.date | None
    start: dt.date | None
    action: str | None
    kind: str
    units: tuple[tuple[str, str], ...]  # (name, role) as the ledger lists them
