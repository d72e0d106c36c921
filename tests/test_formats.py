"""The seed read from each format gives the same 99 tasks in 8 sections."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from reminder.contacts import Contacts
from reminder.errors import LedgerError
from reminder.ledger import read_ledger
from reminder.ledger.formats import detect_format, read_table
from reminder.ledger.model import DeadlineKind, Ledger, Role
from tests.conftest import SEED
from tests.ledger_files import (
    seed_rows,
    split_roles,
    write_csv,
    write_docx,
    write_text,
    write_xlsx,
)


def comparable(ledger: Ledger) -> dict[str, Any]:
    """Everything a ledger says, without where it came from."""
    return {
        "title": ledger.title,
        "year": ledger.year,
        "sections": [(s.no, s.numeral, s.title) for s in ledger.sections],
        "tasks": [
            (
                t.no,
                t.section_no,
                t.text,
                [(u.name, u.role, u.kind) for u in t.units],
                (t.deadline.kind, t.deadline.start, t.deadline.milestones, t.deadline.raw),
                t.remarks,
            )
            for t in ledger.tasks
        ],
    }


def test_seed_reads_into_99_tasks_in_8_sections(seed_ledger: Ledger) -> None:
    assert seed_ledger.title == "济源市2018年大气污染防治攻坚战任务分解台账"
    assert seed_ledger.year == 2018
    assert seed_ledger.format == "txt"
    assert len(seed_ledger.tasks) == 99
    assert [t.no for t in seed_ledger.tasks] == list(range(1, 100))
    assert [s.title for s in seed_ledger.sections] == [
        "加快调整能源消费结构",
        "着力优化产业结构",
        "逐步改善交通运输结构",
        "加快推动工业企业绿色发展",
        "强化扬尘污染综合整治",
        "强化重点时段污染管控",
        "强化重点区域污染管控",
        "完善法律政策体系",
    ]
    assert seed_ledger.warnings == ()


def test_seed_layout_details(seed_ledger: Ledger) -> None:
    tasks = {t.no: t for t in seed_ledger.tasks}
    # page numbers glued to row numbers (7— 47 —) are gone, the row is whole
    assert tasks[7].text.startswith("开辟供暖设施审批绿色通道")
    assert tasks[7].line == 50  # the line of `\t7— 47 —`
    # sections hold the right tasks
    assert [t.no for t in seed_ledger.tasks if t.section_no == 2] == [25, 26]
    assert tasks[83].section_no == 6
    # a blank line inside a row (task 53) does not break it
    assert tasks[53].deadline.due == dt.date(2018, 6, 30)
    assert tasks[54].text.startswith("全面推广使用配备溶剂回收制冷系统")
    # the bookmark artefact is not part of the title
    assert "bookmark" not in seed_ledger.title
    kinds = {
        kind: sum(1 for t in seed_ledger.tasks if t.deadline.kind is kind) for kind in DeadlineKind
    }
    assert kinds[DeadlineKind.DATE] == 47
    assert kinds[DeadlineKind.ALL_YEAR] == 36
    assert kinds[DeadlineKind.WINDOW] == 10
    assert kinds[DeadlineKind.SEASON] == 4
    assert kinds[DeadlineKind.FROM] == 2
    assert kinds[DeadlineKind.UNKNOWN] == 0


@pytest.mark.parametrize("fmt", ["docx", "xlsx", "csv-utf8", "csv-bom", "csv-gb18030", "txt"])
def test_every_format_reads_the_same_ledger(
    fmt: str, tmp_path: Path, contacts: Contacts, seed_ledger: Ledger
) -> None:
    title, rows = seed_rows(SEED)
    writers = {
        "docx": lambda: write_docx(tmp_path / "ledger.docx", title, rows),
        "xlsx": lambda: write_xlsx(tmp_path / "ledger.xlsx", title, rows),
        "csv-utf8": lambda: write_csv(tmp_path / "ledger.csv", title, rows),
        "csv-bom": lambda: write_csv(tmp_path / "ledger.csv", title, rows, "utf-8-sig"),
        "csv-gb18030": lambda: write_csv(tmp_path / "ledger.csv", title, rows, "gb18030"),
        "txt": lambda: write_text(tmp_path / "ledger.txt", title, rows),
    }
    ledger = read_ledger(writers[fmt](), contacts.directory)
    assert ledger.format == fmt.split("-", maxsplit=1)[0]
    assert comparable(ledger) == comparable(seed_ledger)


@pytest.mark.parametrize("fmt", ["docx", "xlsx", "csv"])
def test_lead_and_cooperating_columns(
    fmt: str, tmp_path: Path, contacts: Contacts, seed_ledger: Ledger
) -> None:
    title, rows = seed_rows(SEED)
    split = split_roles(rows)
    path = {
        "docx": lambda: write_docx(tmp_path / "split.docx", title, split),
        "xlsx": lambda: write_xlsx(tmp_path / "split.xlsx", title, split),
        "csv": lambda: write_csv(tmp_path / "split.csv", title, split),
    }[fmt]()
    ledger = read_ledger(path, contacts.directory)
    assert len(ledger.tasks) == 99
    for got, want in zip(ledger.tasks, seed_ledger.tasks, strict=True):
        assert [(u.name, u.role) for u in got.units] == [(u.name, u.role) for u in want.units]
        assert got.deadline == want.deadline


def test_xlsx_with_real_date_cells(tmp_path: Path, contacts: Contacts) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["某市2019年重点任务台账"])
    sheet.append(["序号", "工作任务", "责任单位", "完成时限", "备注"])
    sheet.append(["一", "第一部分"])
    sheet.append([1, "任务一", "环境保护局", dt.datetime(2019, 3, 31), None])
    sheet.append([2.0, "任务二", "公安局", "全年", None])
    workbook.save(tmp_path / "dates.xlsx")
    ledger = read_ledger(tmp_path / "dates.xlsx", contacts.directory)
    assert ledger.year == 2019
    assert [t.no for t in ledger.tasks] == [1, 2]
    assert ledger.tasks[0].deadline.due == dt.date(2019, 3, 31)
    assert ledger.tasks[1].deadline.kind is DeadlineKind.ALL_YEAR


def test_year_override_moves_every_date(tmp_path: Path, contacts: Contacts) -> None:
    ledger = read_ledger(SEED, contacts.directory, year=2020)
    assert ledger.year == 2020
    assert ledger.tasks[0].deadline.due == dt.date(2020, 1, 31)


def test_docx_repeated_header_and_several_tables(tmp_path: Path, contacts: Contacts) -> None:
    title, rows = seed_rows(SEED)
    header, body = rows[0], rows[1:]
    # Word repeats the header on each page; a long table may also be split in two
    path = write_docx(tmp_path / "pages.docx", title, [header, *body[:40], header, *body[40:]])
    ledger = read_ledger(path, contacts.directory)
    assert len(ledger.tasks) == 99


def test_tab_separated_rows_on_one_line(tmp_path: Path, contacts: Contacts) -> None:
    path = tmp_path / "one-line.txt"
    path.write_text(
        "某市2018年任务台账\n\t序号\t工作任务\t责任单位\t完成时限\t备注\n"
        "\t一\t第一部分\n\t1\t任务一\t环境保护局\t6月30日\t\n\t2\t任务二\t公安局\t全年\t\n",
        encoding="utf-8",
    )
    ledger = read_ledger(path, contacts.directory)
    assert [(t.no, t.deadline.kind) for t in ledger.tasks] == [
        (1, DeadlineKind.DATE),
        (2, DeadlineKind.ALL_YEAR),
    ]


def test_row_without_its_empty_last_cell(tmp_path: Path, contacts: Contacts) -> None:
    path = tmp_path / "short.txt"
    path.write_text(
        "某市2018年任务台账\n\t序号\n\t工作任务\n\t责任单位\n\t完成时限\n\t备注\n"
        "\t1\n\t任务一\n\t环境保护局\n\t6月30日\n"  # no 备注 cell
        "\t2\n\t任务二\n\t公安局\n\t全年\n\t\n",
        encoding="utf-8",
    )
    ledger = read_ledger(path, contacts.directory)
    assert [t.no for t in ledger.tasks] == [1, 2]
    assert ledger.tasks[1].units[0].name == "公安局"


def test_detection_by_content_beats_a_wrong_extension(tmp_path: Path) -> None:
    title, rows = seed_rows(SEED)
    docx_named_txt = write_docx(tmp_path / "ledger.txt", title, rows[:5])
    assert detect_format(str(docx_named_txt), docx_named_txt.read_bytes()) == "docx"
    assert read_table(SEED.read_bytes(), "ledger.dat").format == "txt"
    csv_file = write_csv(tmp_path / "ledger.data", title, rows)
    assert read_table(csv_file.read_bytes(), str(csv_file)).format == "csv"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("old.doc", b"\xd0\xcf\x11\xe0binary", "old binary .doc format; save the ledger as .docx"),
        ("old.xls", b"\xd0\xcf\x11\xe0binary", "old binary .xls format"),
        ("fake.docx", b"not a zip", "not a .docx file (no ZIP signature)"),
        ("fake.xlsx", b"PK\x03\x04garbage", "damaged ZIP container"),
        ("binary.txt", b"\x00\x01\x02\x03" * 50, "binary content (NUL byte at offset 0)"),
        ("empty.txt", b"   \n", "the file is empty"),
        ("latin.txt", b"\x81\x30\xff\xfe\xfd", "neither UTF-8 nor GB18030 text"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    with pytest.raises(LedgerError) as caught:
        read_table(content, str(path))
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_roles_from_the_seed(seed_ledger: Ledger) -> None:
    for task in seed_ledger.tasks:
        assert task.units[0].role is Role.LEAD
        assert all(u.role is Role.COOPERATING for u in task.units[1:])
