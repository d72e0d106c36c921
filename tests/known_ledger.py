"""A small ledger whose traffic lights are known on the day the tests run.

Deadlines are written as full dates relative to today (Asia/Shanghai), so that on any
day task 1 is 10 days overdue (red), task 2 due in 3 days (yellow), task 3 due in 60
days (green), task 4 done, and task 5 due in 5 days for an enterprise nobody can reach.
The config folder makes today a working day and puts every send time at midnight, so
that a daemon started now owes today's digest, this week's agenda and today's reminders.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.conftest import CONFIG, Cli
from tests.ledger_files import HEADER, write_text

ZONE = ZoneInfo("Asia/Shanghai")
OVERDUE_DAYS = 10
UNREACHABLE = "某某新材料有限公司"

CONTACTS = """
[[unit]]
name = "环境保护局"
aliases = ["环保局"]
contact = "环保局联络员"
email = "hbj@test.example.org"

[[unit]]
name = "发展和改革委员会"
email = "fgw@test.example.org"

[[unit]]
name = "住房和城乡建设局"
email = "zjj@test.example.org"

[[unit]]
name = "质量技术监督局"
email = "zjjd@test.example.org"

[[unit]]
name = "交通运输局"
email = "jtj@test.example.org"

[[supervisor]]
name = "督查室"
email = "dcs@test.example.org"

[[supervisor]]
name = "第二督导组"
email = "ez@test.example.org"
sections = [2]
"""


def local_today() -> dt.date:
    return dt.datetime.now(ZONE).date()


def cn(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def write_known_ledger(folder: Path, today: dt.date | None = None) -> Path:
    today = today or local_today()
    rows: list[tuple[str, ...]] = [
        HEADER,
        ("一", "燃煤与扬尘"),
        (
            "1",
            "完成燃煤锅炉拆改任务",
            "环境保护局、发展和改革委员会",
            cn(today - dt.timedelta(days=OVERDUE_DAYS)),
            "",
        ),
        ("2", "开展扬尘专项检查", "住房和城乡建设局", cn(today + dt.timedelta(days=3)), ""),
        ("二", "油品与监测"),
        ("3", "完成油品质量抽检", "质量技术监督局", cn(today + dt.timedelta(days=60)), ""),
        ("4", "建成交通监测站点", "交通运输局", cn(today + dt.timedelta(days=20)), ""),
        ("5", "清理违规堆场", UNREACHABLE, cn(today + dt.timedelta(days=5)), ""),
    ]
    title = f"济源市{today.year}年督办测试任务分解台账"
    return write_text(folder / "known-ledger.txt", title, rows)


def known_config(folder: Path, today: dt.date | None = None) -> Path:
    """A config folder: the bundled reminder.toml, these contacts, today a working day."""
    today = today or local_today()
    config = folder / "config"
    config.mkdir()
    shutil.copy(CONFIG / "reminder.toml", config / "reminder.toml")
    (config / "contacts.toml").write_text(CONTACTS, encoding="utf-8")
    (config / "calendar.toml").write_text(
        f'days_off = []\nworking_days = ["{today.isoformat()}"]\n', encoding="utf-8"
    )
    return config


# every send time at midnight: whatever the hour the tests run, it has passed
MIDNIGHT = {
    "REMINDER_POLICY__SEND_AT": "00:00",
    "REMINDER_DIGEST__AT": "00:00:00",
}


def import_known(cli: Cli, folder: Path) -> None:
    """Import the ledger, mark task 4 done and note progress on task 1."""
    result = cli("import", str(write_known_ledger(folder)))
    assert result.code == 0, result.err
    result = cli("done", "4", "--note", "站点已建成")
    assert result.code == 0, result.err
    result = cli("progress", "1", "--unit", "环境保护局", "--note", "已拆改80%")
    assert result.code == 0, result.err
