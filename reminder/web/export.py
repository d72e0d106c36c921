"""The board as a workbook (the 通报 table): units ranked, then every task × unit by state.

Sheet 通报: each unit's overdue parts it leads and cooperates on, due within 7 days,
reported and waiting for review, done; ranked as the digest ranks (lead overdue first).
Sheet 任务: every task × unit with its section, deadline, own due date, state and 催办次数.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from collections.abc import Sequence
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet.worksheet import Worksheet
from sqlmodel import Session

from reminder.context import ROLE_LABELS
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.tasks import latest_import
from reminder.web.data import LIGHT_LABELS, all_rows
from reminder.wording import deadline_text


def workbook(session: Session, planning: Rules, settings: Settings, today: dt.date) -> bytes:
    rows = all_rows(session, planning, today)
    run = latest_import(session)
    year = run.year if run else today.year
    book = Workbook()
    ranking = book.active
    assert ranking is not None
    ranking.title = "通报"
    ranking.append([f"{settings.office.name} 督办通报（{today.isoformat()}）"])
    _fill_ranking(ranking, rows)
    tasks = book.create_sheet("任务")
    _fill_tasks(tasks, rows, settings, year)
    for sheet in (ranking, tasks):
        for cell in sheet[1 if sheet is tasks else 2]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "A2" if sheet is tasks else "A3"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


RANKING_HEADER = [
    "排名",
    "单位",
    "牵头逾期",
    "配合逾期",
    "7日内到期",
    "待审核",
    "已办结",
    "正常推进",
]
TASKS_HEADER = [
    "编号",
    "部分",
    "任务",
    "完成时限",
    "单位",
    "所属",
    "职责",
    "本单位时限",
    "状态",
    "催办次数",
]


def _fill_ranking(sheet: Worksheet, rows: Sequence[Sequence[Any]]) -> None:
    """The units ranked: most overdue tasks they lead, then cooperate on, then due soon."""
    per_unit: dict[str, Counter[str]] = {}
    for _no, _section, _text, _raw, unit, _via, role, _due, light, _reminded in rows:
        counts = per_unit.setdefault(str(unit), Counter())
        counts[f"{light}:{role}" if light == "red" else str(light)] += 1
    sheet.append(RANKING_HEADER)
    ordered = sorted(
        per_unit.items(),
        key=lambda item: (
            -item[1]["red:lead"],
            -item[1]["red:cooperating"],
            -item[1]["yellow"],
            item[0],
        ),
    )
    for rank, (unit, c) in enumerate(ordered, start=1):
        sheet.append(
            [
                rank,
                unit,
                c["red:lead"],
                c["red:cooperating"],
                c["yellow"],
                c["reported"],
                c["done"],
                c["green"],
            ]
        )


def _fill_tasks(
    sheet: Worksheet, rows: Sequence[Sequence[Any]], settings: Settings, year: int
) -> None:
    """Every task × unit with its state, in the ledger's order."""
    sheet.append(TASKS_HEADER)
    for no, section, text, raw, unit, via, role, due, light, reminded in rows:
        sheet.append(
            [
                settings.office.number(year, int(no)),
                int(section),
                " ".join(str(text).split()),
                deadline_text(str(raw)),
                str(unit),
                via or "",
                ROLE_LABELS.get(str(role), str(role)),
                str(due) if due else "",
                LIGHT_LABELS[str(light)],
                int(reminded or 0),
            ]
        )
