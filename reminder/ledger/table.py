"""``RawTable`` → ``Ledger``: title and year, header columns, sections and tasks.

Pure: the same rows give the same ledger whatever format they came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reminder.errors import LedgerError
from reminder.ledger.deadline import DeadlineError, SeasonRule, parse_deadline
from reminder.ledger.formats import TASK_NUMBER, RawRow, RawTable, distinct
from reminder.ledger.model import Deadline, Ledger, Role, Section, Task, UnitRef
from reminder.ledger.units import Directory, merge_roles, parse_units

# header names seen in real ledgers, by the column they stand for
_HEADER_NAMES = {
    "no": ("序号", "编号"),
    "text": ("工作任务", "重点任务", "主要任务", "任务", "工作内容", "任务内容", "工作措施"),
    "units": ("责任单位", "责任部门", "责任主体"),
    "lead": ("牵头单位", "牵头部门"),
    "cooperating": ("配合单位", "配合部门", "协办单位"),
    "deadline": ("完成时限", "完成时间", "时间节点", "时限要求", "时限"),
    "remarks": ("备注",),
}
_SECTION = re.compile(r"^(?P<numeral>[一二三四五六七八九十]+)(?:[、.．\s]+(?P<title>.*))?$", re.S)


@dataclass(frozen=True, slots=True)
class _Columns:
    no: int
    text: int
    deadline: int
    units: int | None
    lead: int | None
    cooperating: int | None
    remarks: int | None


def _column_of(header: list[str], names: tuple[str, ...]) -> int | None:
    for index, cell in enumerate(header):
        compact = re.sub(r"\s+", "", cell)
        if compact in names:
            return index
    return None


def _columns(row: RawRow) -> _Columns | None:
    header = list(row.cells)
    found = {key: _column_of(header, names) for key, names in _HEADER_NAMES.items()}
    no, text, deadline = found["no"], found["text"], found["deadline"]
    if no is None or text is None or deadline is None:
        return None
    if found["units"] is None and found["lead"] is None:
        return None
    return _Columns(
        no=no,
        text=text,
        deadline=deadline,
        units=found["units"],
        lead=found["lead"],
        cooperating=found["cooperating"],
        remarks=found["remarks"],
    )


def _is_header(row: RawRow) -> bool:
    # a header names its number column (序号, 编号): rows without 号 are no header, and
    # most rows of a long ledger are read without comparing every cell to every name
    return any("号" in cell for cell in row.cells) and _columns(row) is not None


def _title(candidates: list[str]) -> str:
    lines = [
        re.sub(r"^附件\s*\d*\s*", "", line).strip()
        for candidate in candidates
        for line in candidate.splitlines()
    ]
    lines = [line for line in lines if line]
    for line in lines:
        if "台账" in line or "任务分解" in line or "清单" in line:
            return line
    return max(lines, key=len, default="")


def _year(title: str, override: int | None, source: str) -> int:
    if override is not None:
        return override
    match = re.search(r"(\d{4})\s*年", title) or re.search(r"(?<!\d)(20\d{2})(?!\d)", title)
    if match is None:
        raise LedgerError(
            f"cannot tell the ledger's year from its title {title!r}; pass --year", source=source
        )
    return int(match.group(1))


def _cell(row: RawRow, index: int | None) -> str:
    if index is None or index >= len(row.cells):
        return ""
    return row.cells[index].strip()


class _Builder:
    def __init__(
        self,
        table: RawTable,
        columns: _Columns,
        year: int,
        directory: Directory,
        season: SeasonRule,
    ) -> None:
        self.table = table
        self.columns = columns
        self.year = year
        self.directory = directory
        self.season = season
        self.sections: list[Section] = []
        self.tasks: list[Task] = []
        self.warnings: list[str] = []
        self.numbers: dict[int, int] = {}  # task number → line, for duplicates
        # cells repeat across a long ledger (the same units, the same 完成时限): read once
        self._deadlines: dict[str, Deadline] = {}
        self._units: dict[tuple[str, Role | None], tuple[UnitRef, ...]] = {}

    def deadline(self, raw: str) -> Deadline:
        found = self._deadlines.get(raw)
        if found is None:
            found = self._deadlines[raw] = parse_deadline(raw, self.year, self.season)
        return found

    def units(self, cell: str, role: Role | None = None) -> tuple[UnitRef, ...]:
        found = self._units.get((cell, role))
        if found is None:
            found = self._units[cell, role] = parse_units(cell, self.directory, role)
        return found

    def error(self, message: str, row: RawRow) -> LedgerError:
        return LedgerError(message, source=self.table.source, line=row.line)

    def section(self, row: RawRow, cells: list[str]) -> bool:
        match = _SECTION.match(cells[0])
        if match is None:
            return False
        title = (match["title"] or "").strip()
        rest = [cell for cell in cells[1:] if cell != cells[0]]
        if not title and rest:
            title = rest[0]
        if not title:
            raise self.error(f"section {match['numeral']} has no title", row)
        title = re.sub(r"\s+", "", title)
        self.sections.append(Section(len(self.sections) + 1, match["numeral"], title))
        return True

    def task(self, row: RawRow, number: int) -> None:
        columns = self.columns
        if number in self.numbers:
            raise self.error(
                f"task number {number} appears twice (first at line {self.numbers[number]})", row
            )
        self.numbers[number] = row.line
        if not self.sections:
            self.sections.append(Section(1, "", "未分节"))
        text = _cell(row, columns.text)
        if not text:
            raise self.error(f"task {number} has no text (工作任务)", row)
        raw_deadline = _cell(row, columns.deadline)
        try:
            deadline = self.deadline(raw_deadline)
        except DeadlineError as exc:
            raise LedgerError(
                f"task {number}: {exc} in 完成时限 {raw_deadline!r}",
                source=self.table.source,
                line=row.line_of(columns.deadline),
            ) from None
        if columns.units is not None and _cell(row, columns.units):
            units = self.units(_cell(row, columns.units))
        else:
            lead = self.units(_cell(row, columns.lead), Role.LEAD)
            cooperating = self.units(_cell(row, columns.cooperating), Role.COOPERATING)
            units = merge_roles(lead, cooperating)
        if not units:
            self.warnings.append(f"line {row.line}: task {number} has no responsible unit")
        if self.tasks and number != self.tasks[-1].no + 1:
            self.warnings.append(f"line {row.line}: task {number} follows task {self.tasks[-1].no}")
        self.tasks.append(
            Task(
                no=number,
                section_no=self.sections[-1].no,
                text=text,
                units=units,
                deadline=deadline,
                remarks=_cell(row, columns.remarks),
                line=row.line,
            )
        )

    def row(self, row: RawRow) -> None:
        cells = distinct([cell.strip() for cell in row.cells])
        if not cells or _is_header(row):  # blank, or the header repeated on a page
            return
        number_cell = _cell(row, self.columns.no)
        number = TASK_NUMBER.match(number_cell)
        if number is not None:
            self.task(row, int(number.group(1)))
        elif not self.section(row, cells):
            raise self.error(
                f"row starts with neither a task number nor a section numeral: {cells[0][:30]!r}",
                row,
            )


def build_ledger(
    table: RawTable,
    directory: Directory,
    season: SeasonRule | None = None,
    year: int | None = None,
) -> Ledger:
    """Interpret the rows of a ledger; ``year`` overrides the one in the title."""
    header_at = next((i for i, row in enumerate(table.rows) if _columns(row)), None)
    if header_at is None:
        raise LedgerError(
            "no header row with 序号, 工作任务, 责任单位 (or 牵头单位) and 完成时限",
            source=table.source,
        )
    columns = _columns(table.rows[header_at])
    assert columns is not None  # found above
    before = [cell for row in table.rows[:header_at] for cell in row.cells if cell.strip()]
    title = _title([*table.preamble, *before])
    builder = _Builder(
        table, columns, _year(title, year, table.source), directory, season or SeasonRule()
    )
    for row in table.rows[header_at + 1 :]:
        builder.row(row)
    if not builder.tasks:
        raise LedgerError("the table has a header but no tasks", source=table.source)
    return Ledger(
        title=title or table.source,
        year=builder.year,
        source=table.source,
        format=table.format,
        sections=tuple(builder.sections),
        tasks=tuple(builder.tasks),
        warnings=tuple(builder.warnings),
    )
