"""`reminder calendar --year Y`: a year's days off and make-up working days, and their source.

Written in the notice's own terms (春节：2月5日至2月11日，共7天；2月14日（星期日）上班)
so that an administrator can hold it against the State Council's notice line by line.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import click

from reminder.app import App, now, pass_app
from reminder.calendar import WorkCalendar
from reminder.calendar_sources import CalendarYear, Source, named
from reminder.wording import cn_date, cn_weekday

_SOURCES = {
    Source.NOTICE: "calendar.toml 收录的国务院办公厅通知",
    Source.CHINESE_CALENDAR: "chinese-calendar（国务院办公厅通知）",
    Source.HOLIDAYS: "holidays（国务院办公厅通知）",
    Source.COMPUTED: "holidays 按法定节假日规则推算（调休安排尚未收录）",
    Source.WEEKDAYS: "无节假日数据，按周一至周五工作",
}


def spans(days: Mapping[dt.date, str]) -> list[tuple[str, dt.date, dt.date]]:
    """Consecutive days with the same name (or none) as (name, first, last)."""
    found: list[tuple[str, dt.date, dt.date]] = []
    for day in sorted(days):
        name = days[day]
        if found:
            last_name, first, last = found[-1]
            next_day = day - last == dt.timedelta(days=1)
            if next_day and (not name or not last_name or name == last_name):
                found[-1] = (last_name or name, first, day)
                continue
        found.append((name, day, day))
    return found


def _day(day: dt.date) -> str:
    return f"{cn_date(day)}（{cn_weekday(day)}）"


def _span(name: str, first: dt.date, last: dt.date) -> str:
    label = f"{name}：" if name else ""
    if first == last:
        return f"{label}{_day(first)}"
    return f"{label}{_day(first)}至{_day(last)}，共{(last - first).days + 1}天"


def calendar_lines(calendar: WorkCalendar, table: CalendarYear, warning: str | None) -> list[str]:
    year = table.year
    local_off = sorted(d for d in calendar.days_off if d.year == year)
    local_working = sorted(d for d in calendar.working_days if d.year == year)
    working = calendar.working_days_between(dt.date(year - 1, 12, 31), dt.date(year, 12, 31))
    lines = [
        f"{year}年工作日历（共{working}个工作日）",
        f"来源：{_SOURCES[table.source]} — {table.detail}",
        f"放假（{len(table.days_off)}天）：",
    ]
    lines += [f"  {_span(*span)}" for span in spans(table.days_off)] or ["  无"]
    lines.append(f"调休上班（{len(table.working_days)}天）：")
    lines += [
        f"  {_day(day)}上班" + (f"（{name}调休）" if name else "")
        for day, name in table.working_days.items()
    ] or ["  无"]
    if local_off or local_working:
        lines.append("本地例外（calendar.toml）：")
        lines += [f"  {_day(day)}放假" for day in local_off]
        lines += [f"  {_day(day)}上班" for day in local_working]
    if not calendar.working_days_only:
        lines.append("注意：[policy] working_days_only = false，提醒每天都会发出。")
    if warning:
        lines.append(f"警告：{warning}")
    return lines


def calendar_json(calendar: WorkCalendar, table: CalendarYear) -> dict[str, Any]:
    year = table.year
    return {
        "year": year,
        "source": table.source.value,
        "official": table.source.official,
        "detail": table.detail,
        "days_off": [{"day": d.isoformat(), "name": n} for d, n in table.days_off.items()],
        "working_days": [d.isoformat() for d in table.working_days],
        "local_days_off": sorted(d.isoformat() for d in calendar.days_off if d.year == year),
        "local_working_days": sorted(
            d.isoformat() for d in calendar.working_days if d.year == year
        ),
    }


@click.command("calendar")
@click.option(
    "--year",
    type=click.IntRange(1950, 2100),
    help="The year (default: this year).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def calendar_command(app: App, year: int | None, as_json: bool) -> None:
    """A year's days off and make-up working days, and where they come from."""
    calendar = app.config.calendar()
    year = year or now().astimezone(app.config.settings.zone).year
    table = named(calendar.table(year))
    if as_json:
        click.echo(json.dumps(calendar_json(calendar, table), ensure_ascii=False, indent=2))
        return
    for line in calendar_lines(calendar, table, calendar.warning([year])):
        click.echo(line)


COMMANDS = [calendar_command]
