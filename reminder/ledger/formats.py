"""Ledger files → ``RawTable``: the rows of cells as written, whatever the format.

One function per format, and ``read_table`` to detect the format by extension and
content. Everything here takes the file's bytes and its name (for the extension and
for messages): reading the file is the caller's. Nothing here interprets cells beyond
what the layout needs (where a row starts and ends); ``table.py`` turns rows into tasks.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from reminder.errors import LedgerError

# Word's page footer glued to a cell: `7— 47 —`, `附件1— 46 —`; Word's `[bookmark: _GoBack]`
_PAGE_NUMBER = re.compile(r"\s*[—–-]\s*\d{1,4}\s*[—–-]\s*$")
_BOOKMARK = re.compile(r"\[bookmark:[^\]]*\]")
_SECTION_START = re.compile(r"^[一二三四五六七八九十]+(?:[、.．\s]|$)")
# a task number: up to 6 digits (a province's ledger runs past 9,999 tasks); a page
# number glued to it (`7— 47 —`) is cut off by _PAGE_NUMBER before it is read
TASK_NUMBER = re.compile(r"^(\d{1,6})[.、]?$")
_OLD_FORMATS = {".doc": ".docx", ".xls": ".xlsx", ".wps": ".docx", ".et": ".xlsx"}


@dataclass(frozen=True, slots=True)
class RawRow:
    cells: tuple[str, ...]
    line: int  # 1-based line (text, csv) or row (docx, xlsx) where the row starts
    cell_lines: tuple[int, ...] = ()  # where each cell starts, when it differs (text)

    def line_of(self, index: int) -> int:
        return self.cell_lines[index] if index < len(self.cell_lines) else self.line


@dataclass(frozen=True, slots=True)
class RawTable:
    source: str
    format: str  # txt, docx, xlsx, csv
    preamble: tuple[str, ...]  # text before the table: the title and its labels
    rows: tuple[RawRow, ...]


def clean_cell(text: str) -> str:
    """A cell without Word artefacts: bookmarks, page numbers, blank lines."""
    text = _BOOKMARK.sub("", text)
    lines = (_PAGE_NUMBER.sub("", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def is_row_start(text: str) -> bool:
    """A cell that starts a row: a task number (12) or a section numeral (一, 二、…)."""
    return bool(TASK_NUMBER.match(text) or _SECTION_START.match(text))


# --- plain text: the seed's layout -----------------------------------------------------


@dataclass(slots=True)
class _Cell:
    text: str
    line: int


def _decode(data: bytes, source: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise LedgerError(
            f"binary content (NUL byte at offset {nul}), not a text ledger", source=source
        )
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise LedgerError("neither UTF-8 nor GB18030 text", source=source)


def _text_cells(text: str) -> tuple[list[str], list[_Cell]]:
    """Lines starting with a tab start cells (one per tab); other lines continue a cell."""
    preamble: list[str] = []
    cells: list[_Cell] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("\t"):
            cells += [_Cell(part, number) for part in line[1:].split("\t")]
        elif not line.strip():
            continue
        elif cells:
            cells[-1].text += "\n" + line
        else:
            preamble.append(line)
    for cell in cells:
        cell.text = clean_cell(cell.text)
    return [clean_cell(line) for line in preamble], cells


def read_text(data: bytes, source: str) -> RawTable:
    """The flattened Word table: header cells, then section rows and task rows.

    Every cell starts on a new line with a tab and may continue over the next lines.
    The header's width (序号 … 备注) says how many cells a task row has; a section row
    has a numeral and a title. A row that is short of its last, empty cell (备注) is
    recognised by the next task number standing where that cell should be.
    """
    preamble, cells = _text_cells(_decode(data, source))
    start = next((i for i, cell in enumerate(cells) if cell.text == "序号"), None)
    if start is None:
        raise LedgerError("no header row (序号 工作任务 责任单位 完成时限) found", source=source)
    end = next((i for i in range(start + 1, len(cells)) if is_row_start(cells[i].text)), len(cells))
    header = cells[start:end]
    width = len(header)
    preamble += [cell.text for cell in cells[:start]]
    rows = [RawRow(tuple(cell.text for cell in header), header[0].line)]
    i = end
    while i < len(cells):
        cell = cells[i]
        section = _SECTION_START.match(cell.text)
        if section and not TASK_NUMBER.match(cell.text):
            glued_title = cell.text[section.end() :].strip()
            if glued_title or i + 1 >= len(cells) or is_row_start(cells[i + 1].text):
                rows.append(RawRow((cell.text,), cell.line))
                i += 1
            else:
                rows.append(
                    RawRow(
                        (cell.text, cells[i + 1].text), cell.line, (cell.line, cells[i + 1].line)
                    )
                )
                i += 2
            continue
        if not TASK_NUMBER.match(cell.text):
            raise LedgerError(
                f"expected a task number or a section numeral, found {cell.text[:30]!r}",
                source=source,
                line=cell.line,
            )
        row = cells[i : i + width]
        if len(row) < width - 1:
            raise LedgerError(
                f"task {cell.text}: {len(row)} of {width} cells; the file looks truncated",
                source=source,
                line=cell.line,
            )
        last = row[-1] if len(row) == width else None
        if last is not None and TASK_NUMBER.match(last.text):
            after = cells[i + width] if i + width < len(cells) else None
            if after is not None and not is_row_start(after.text):
                row = row[:-1]  # the empty 备注 cell is missing; `last` starts the next row
        rows.append(RawRow(tuple(c.text for c in row), cell.line, tuple(c.line for c in row)))
        i += len(row)
    return RawTable(source, "txt", tuple(preamble), tuple(rows))


# --- .docx ----------------------------------------------------------------------------


def read_docx(data: bytes, source: str) -> RawTable:
    """Every table of the document in order; merged cells count once."""
    import docx  # noqa: PLC0415 - python-docx is slow to import and needed only here
    from docx.opc.exceptions import PackageNotFoundError  # noqa: PLC0415

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LedgerError(f"not a readable Word document: {exc}", source=source) from None
    preamble = [clean_cell(p.text) for p in document.paragraphs if p.text.strip()]
    rows: list[RawRow] = []
    number = 0
    for table in document.tables:
        for row in table.rows:
            number += 1
            seen: set[int] = set()
            texts: list[str] = []
            for cell in row.cells:
                if id(cell._tc) in seen:  # a cell merged across columns repeats
                    continue
                seen.add(id(cell._tc))
                texts.append(clean_cell(cell.text))
            rows.append(RawRow(tuple(texts), number))
    if not rows:
        raise LedgerError("the Word document has no table", source=source)
    return RawTable(source, "docx", tuple(preamble), tuple(rows))


# --- .xlsx ----------------------------------------------------------------------------


def _spreadsheet_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return f"{value.year}年{value.month}月{value.day}日"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return clean_cell(str(value))


def read_xlsx(data: bytes, source: str) -> RawTable:
    """The first sheet; a title row above the header, section rows, task rows."""
    import openpyxl  # noqa: PLC0415 - slow to import and needed only here
    from openpyxl.utils.exceptions import InvalidFileException  # noqa: PLC0415

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise LedgerError(f"not a readable Excel workbook: {exc}", source=source) from None
    try:
        sheet = workbook.worksheets[0]
        rows = [
            RawRow(tuple(_spreadsheet_text(value) for value in values), number)
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()
    return RawTable(source, "xlsx", (), tuple(rows))


# --- .csv -----------------------------------------------------------------------------


def read_csv(data: bytes, source: str) -> RawTable:
    """UTF-8 (with or without BOM) or GB18030; comma- or tab-separated."""
    text = _decode(data, source)
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[RawRow] = []
    try:
        line = 1
        for values in reader:
            rows.append(RawRow(tuple(clean_cell(v) for v in values), line))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise LedgerError(f"malformed CSV: {exc}", source=source, line=reader.line_num) from None
    return RawTable(source, "csv", (), tuple(rows))


# --- detection ------------------------------------------------------------------------


def _zip_kind(data: bytes, source: str) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile as exc:
        raise LedgerError(f"damaged ZIP container: {exc}", source=source) from None
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    raise LedgerError("a ZIP file that is neither .docx nor .xlsx", source=source)


def detect_format(source: str, data: bytes) -> str:
    """txt, docx, xlsx or csv, from the extension of ``source`` checked against ``data``."""
    suffix = PurePath(source).suffix.lower()
    if suffix in _OLD_FORMATS:
        raise LedgerError(
            f"old binary {suffix} format; save the ledger as {_OLD_FORMATS[suffix]}", source=source
        )
    is_zip = data.startswith(b"PK\x03\x04")
    if suffix in (".docx", ".xlsx", ".xlsm"):
        if not is_zip:
            raise LedgerError(f"not a {suffix} file (no ZIP signature)", source=source)
        return _zip_kind(data, source)
    if is_zip:
        return _zip_kind(data, source)
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".txt", ".text"):
        return "txt"
    text = data[:4096].decode("utf-8", errors="ignore")
    return "txt" if re.search(r"(?m)^\t", text) else "csv"


def read_table(data: bytes, source: str) -> RawTable:
    """The rows of a ledger file's content; ``source`` names it (extension, messages)."""
    if not data.strip():
        raise LedgerError("the file is empty", source=source)
    kind = detect_format(source, data)
    if kind == "docx":
        return read_docx(data, source)
    if kind == "xlsx":
        return read_xlsx(data, source)
    if kind == "csv":
        return read_csv(data, source)
    return read_text(data, source)


def non_empty(cells: Iterable[str]) -> list[str]:
    return [cell for cell in cells if cell.strip()]


def distinct(cells: Sequence[str]) -> list[str]:
    """Non-empty cells with neighbours that repeat (merged cells) counted once."""
    out: list[str] = []
    for cell in cells:
        if cell and (not out or out[-1] != cell):
            out.append(cell)
    return out
