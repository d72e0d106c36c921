"""Years beyond chinese-calendar: the computed holidays, a notice in calendar.toml, and the
one-line warning in `check`, the daemon's start and the digest until the notice is there."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from structlog.testing import capture_logs

from reminder.daemon import Daemon, Runtime
from reminder.settings import load_config
from reminder.store.db import open_store
from tests.conftest import SEED, Cli
from tests.test_bad_input import config_copy

ZONE = ZoneInfo("Asia/Shanghai")
WARNING = "2027年、2028年调休安排尚未收录：请按国务院办公厅通知补充 "
NOTICES = """
[years.2027]
notice = "国务院办公厅关于2027年部分节假日安排的通知"
days_off = ["2027-02-05/2027-02-11", "2027-10-01/2027-10-07"]
working_days = ["2027-02-20"]

[years.2028]
days_off = ["2028-01-01"]
"""


def plan(cli: Cli, when: str) -> list[dict[str, Any]]:
    result = cli("plan", "--at", when, "--json")
    assert result.code == 0, result.err
    found: list[dict[str, Any]] = json.loads(result.out)
    return found


@pytest.fixture
def seed_2027(cli: Cli) -> None:
    assert cli("import", str(SEED), "--year", "2027").code == 0


def with_notices(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = config_copy(isolated_env)
    path = folder / "calendar.toml"
    path.write_text(path.read_text(encoding="utf-8") + NOTICES, encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    return path


@pytest.mark.usefixtures("seed_2027")
def test_nothing_is_planned_on_the_computed_holidays(cli: Cli) -> None:
    assert plan(cli, "2027-02-08 09:30") == []  # 春节
    assert plan(cli, "2027-10-04 09:30") == []  # 国庆
    before = plan(cli, "2027-02-04 09:30")  # the last working day before 春节
    assert before
    assert max(m["scheduled_for"][:10] for m in before) <= "2027-02-04"
    after = plan(cli, "2027-02-11 09:30")  # what was owed goes out on the first working day
    assert after
    assert plan(cli, "2027-02-11 08:30") == []  # … from the send hour


@pytest.mark.usefixtures("seed_2027")
def test_a_notice_makes_a_saturday_a_working_day_and_the_plan_follows(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plan(cli, "2027-02-20 09:30") == []  # a Saturday
    assert plan(cli, "2027-02-11 09:30")  # computed: the day after the holiday
    with_notices(isolated_env, monkeypatch)
    worked = plan(cli, "2027-02-20 09:30")
    assert worked
    assert plan(cli, "2027-02-11 09:30") == []  # the notice gives the Thursday off too


@pytest.mark.usefixtures("seed_2027")
def test_check_warns_in_one_line_until_the_notices_are_there(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with time_machine.travel(dt.datetime(2027, 3, 1, 10, tzinfo=ZONE), tick=False):
        result = cli("check")
        assert result.code == 0  # a warning, not an error
        lines = [line for line in result.out.splitlines() if "调休" in line]
        assert len(lines) == 1
        assert WARNING in lines[0]
        assert lines[0].startswith("warning calendar: ")
        assert result.out.splitlines()[-1] == "0 errors, 1 warnings"
        path = with_notices(isolated_env, monkeypatch)
        result = cli("check")
        assert result.code == 0
        assert "调休" not in result.out, result.out
        assert result.out.strip() == "0 errors, 0 warnings"
        path.write_text(path.read_text(encoding="utf-8").replace("[years.2028]", "[years.2029]"))
        assert "warning calendar: 2028年调休安排尚未收录" in cli("check").out


def test_check_looks_60_days_ahead(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0  # 2018 and 2019: chinese-calendar knows them
    with time_machine.travel(dt.datetime(2026, 10, 1, 10, tzinfo=ZONE), tick=False):
        assert "调休" not in cli("check").out
    with time_machine.travel(dt.datetime(2026, 11, 2, 10, tzinfo=ZONE), tick=False):
        assert "warning calendar: 2027年调休安排尚未收录" in cli("check").out


def test_the_calendar_command_lists_the_days_and_their_source(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("calendar", "--year", "2027")
    assert result.code == 0
    out = result.out
    assert "来源：holidays 按法定节假日规则推算（调休安排尚未收录）" in out
    assert "春节：2027年2月6日（星期六）至2027年2月8日（星期一），共3天" in out
    assert "国庆节：2027年10月1日（星期五）至2027年10月3日（星期日），共3天" in out
    assert "调休上班（0天）：\n  无" in out
    assert "警告：2027年调休安排尚未收录" in out
    known = cli("calendar", "--year", "2018").out
    assert "来源：chinese-calendar（国务院办公厅通知）" in known
    assert "国庆节：2018年10月1日（星期一）至2018年10月7日（星期日），共7天" in known
    assert "2018年9月29日（星期六）上班（国庆节调休）" in known
    assert "警告" not in known
    with_notices(isolated_env, monkeypatch)
    noticed = cli("calendar", "--year", "2027", "--json")
    data = json.loads(noticed.out)
    assert data["source"] == "notice"
    assert data["official"] is True
    assert data["detail"] == "国务院办公厅关于2027年部分节假日安排的通知"
    assert data["working_days"] == ["2027-02-20"]
    assert {"day": "2027-02-08", "name": "春节"} in data["days_off"]
    assert cli("calendar", "--year", "1900").code == 2


@pytest.mark.usefixtures("seed_2027")
def test_the_digest_carries_the_warning(cli: Cli) -> None:
    result = cli("digest", "--print", "--at", "2027-03-01 09:00")
    assert result.code == 0
    assert f"【提示】{WARNING}" in result.out


@pytest.mark.usefixtures("seed_2027")
async def test_the_daemon_warns_at_start(isolated_env: Path) -> None:
    moment = dt.datetime(2027, 3, 1, 9, tzinfo=ZONE)
    store = open_store(load_config().settings.db)
    try:
        daemon = Daemon(store, Runtime.load(store, lambda: moment), lambda: moment)
        with capture_logs() as logs:
            daemon.check_calendar(moment)
        await daemon.runtime.close()
    finally:
        store.dispose()
    [event] = [e for e in logs if e["event"] == "calendar_unconfirmed"]
    assert event["log_level"] == "warning"
    assert event["years"] == [2027, 2028]
    assert WARNING in event["hint"]
