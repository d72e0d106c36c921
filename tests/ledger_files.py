"""Build .docx, .xlsx and .csv ledgers from the seed's rows, the way offices keep them."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import docx
import openpyxl

from reminder.ledger.formats import RawRow, read_table

HEADER = ("序号", "工作任务", "责任单位", "完成时限", "备注")
SPLIT_HEADER = ("序号", "工作任务", "牵头单位", "配合单位", "完成时限", "备注")


def seed_rows(seed: Path) -> tuple[str, list[tuple[str, ...]]]:
    """The seed's title and its rows (header first), as the text reader sees them."""
    table = read_table(seed.read_bytes(), str(seed))
    title = next(line for line in table.preamble if "台账" in line)
    return title, [row.cells for row in table.rows]


def split_roles(rows: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The same rows with 牵头单位 and 配合单位 columns instead of 责任单位."""
    out: list[tuple[str, ...]] = [SPLIT_HEADER]
    for cells in rows[1:]:
        if len(cells) < len(HEADER):
            out.append(cells)
            continue
        no, text, units, deadline, remarks = cells
        # the lead is the first name: it ends at the first 、 ， or 及(相关…)
        first, *rest = re.split(r"[、，,]|及(?=相关)", units.replace("\n", ""), maxsplit=1)
        out.append((no, text, first, "".join(rest), deadline, remarks))
    return out


def write_docx(path: Path, title: str, rows: Sequence[tuple[str, ...]]) -> Path:
    document = docx.Document()
    document.add_paragraph("附件1")
    document.add_paragraph(title)
    width = len(rows[0])
    table = document.add_table(rows=0, cols=width)
    for cells in rows:
        row = table.add_row()
        if len(cells) < width:  # a section row: the title merged across the columns
            row.cells[0].text = cells[0]
            merged = row.cells[1].merge(row.cells[width - 1])
            merged.text = cells[1] if len(cells) > 1 else ""
            continue
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.save(str(path))
    return path


def write_xlsx(path: Path, title: str, rows: Sequence[tuple[str, ...]]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    width = len(rows[0])
    sheet.append([title])
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=width)
    for cells in rows:
        if len(cells) < width:
            sheet.append(list(cells))
            sheet.merge_cells(
                start_row=sheet.max_row, start_column=2, end_row=sheet.max_row, end_column=width
            )
            continue
        number = int(cells[0]) if cells[0].isdigit() else cells[0]
        sheet.append([number, *cells[1:]])
    workbook.save(str(path))
    return path


def csv_text(title: str, rows: Sequence[tuple[str, ...]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow([title])
    for cells in rows:
        writer.writerow(cells)
    return buffer.getvalue()


def write_csv(
    path: Path, title: str, rows: Sequence[tuple[str, ...]], encoding: str = "utf-8"
) -> Path:
    path.write_bytes(csv_text(title, rows).encode(encoding))
    return path


def write_text(path: Path, title: str, rows: Sequence[tuple[str, ...]]) -> Path:
    """The seed's plain-text layout: one cell per tab-led line, a blank line per row."""
    lines = [title]
    for cells in rows:
        lines += ["\t" + cell for cell in cells]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def raw_rows(rows: Sequence[RawRow]) -> list[tuple[str, ...]]:
    return [row.cells for row in rows]


SEED_PATH = Path(__file__).resolve().parent.parent / "data" / "jiyuan-2018-ledger.txt"


def other_ledger(folder: Path) -> Path:
    """Another ledger under the seed's title: its header, one section, two new tasks."""
    lines = SEED_PATH.read_text(encoding="utf-8").splitlines(keepends=True)
    head = "".join(lines[:11])  # the title, the header and section 一
    tasks = "".join(
        f"\t{no}\n\t{text}\n\t环境保护局\n\t6月30日\n\t\n\n"
        for no, text in ((1, "开展秸秆禁烧巡查。"), (2, "建立重污染天气应急减排清单。"))
    )
    path = folder / "other.txt"
    path.write_text(head + "\n" + tasks, encoding="utf-8")
    return path
