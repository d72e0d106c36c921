"""The HTML people read on a phone: a digest and a town's letter at 390 and 800 px, laid
out by headless Chromium, with no sideways scroll and no text squeezed into a column."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from reminder.context import report_context
from reminder.digest import build_digest
from reminder.render import Renderer
from reminder.settings import OfficeSettings
from tests.browser import lay_out
from tests.conftest import SEED, Cli, seed_inputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
ZONE = ZoneInfo("Asia/Shanghai")
WIDTHS = (390, 800)


def html_of(kind: str, recipient: str, payload: dict[str, Any]) -> str:
    values = report_context(
        kind=kind, recipient=recipient, payload=payload, settings=OfficeSettings()
    )
    return Renderer().part(kind, "html", {**values, "channel": "email"})


def assert_readable(page: str) -> None:
    for width in WIDTHS:
        layout = lay_out(page, width)
        assert layout.width == width
        assert layout.scroll <= width, f"a sideways scroll at {width} px"
        assert layout.problems == [], f"at {width} px: {layout.problems[:5]}"


def test_a_table_of_seven_columns_is_what_the_check_catches() -> None:
    """The digest's old overdue table, as a phone showed it: the check must see it."""
    cell = "<td>完成燃煤锅炉拆改任务</td>" * 7
    page = f"<!DOCTYPE html><html><body><table><tr>{cell}</tr></table></body></html>"
    narrow = lay_out(page, 390)
    assert narrow.problems, "a 7-column table of Chinese text passed at 390 px"
    assert lay_out(page, 1600).problems == []


def test_the_digest_of_a_busy_day_reads_on_a_phone(cli: Cli) -> None:
    inputs, planning = seed_inputs(cli)
    contacts = planning.contacts
    day = dt.date(2018, 12, 10)  # dozens of tasks overdue, towns escalated one by one
    since = dt.datetime(2018, 12, 7, 8, 30, tzinfo=ZONE)
    for supervisor in (None, *contacts.supervisors):
        payload = build_digest(inputs, supervisor, planning, day, since, ["2019年调休安排尚未收录"])
        assert payload["overdue"]
        assert_readable(html_of("digest", "督查室", payload))


def test_a_towns_monday_letter_reads_on_a_phone(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    assert cli("run", "--once", "--at", "2018-12-10 09:30").code == 0
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        [(payload,)] = con.execute(
            "SELECT payload FROM outbox WHERE recipient_name = '克井镇人民政府' AND channel = 'email'"
        ).fetchall()
    letter = json.loads(payload)
    assert letter["total"] > 10 and letter["agenda"] is not None
    assert_readable(html_of("letter", "克井镇人民政府", letter))
