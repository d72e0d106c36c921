"""How letters, digests and status say dates, deadlines and lateness. Pure.

Lateness is counted one way everywhere: calendar days after the due date, with the
working days in brackets where they help (已逾期8天（6个工作日）). A deadline is shown
as the ledger wrote it, tidied: whitespace and line breaks gone, a range with 至
(4月1日至12月31日, 5月至8月), an open end with 起 (11月1日起).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass

from reminder.calendar import WorkCalendar

_DASH = "—–\\-－~～一"
_RANGE = re.compile(rf"(\d+(?:年\d+)?月(?:\d+日|底|初)?)[{_DASH}]+(?=\d)")
_OPEN = re.compile(rf"(\d+(?:年\d+)?月(?:\d+日)?)[{_DASH}]+$")
WEEKDAYS = "一二三四五六日"
NUMERALS = "零一二三四五六七八九十"


@functools.lru_cache(maxsize=4096)
def deadline_text(raw: str) -> str:
    """11月1日- → 11月1日起; 4月1日—⏎12月31日 → 4月1日至12月31日; 全年 → 全年."""
    text = "".join(raw.split())
    text = _RANGE.sub(r"\1至", text)
    return _OPEN.sub(r"\1起", text)


def cn_date(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def cn_weekday(day: dt.date) -> str:
    return f"星期{WEEKDAYS[day.weekday()]}"


def cn_numeral(number: int) -> str:
    """1 → 一, 10 → 十, 12 → 十二, 21 → 二十一 (up to 99)."""
    if number <= 10:
        return NUMERALS[number]
    tens, ones = divmod(number, 10)
    head = "十" if tens == 1 else NUMERALS[tens] + "十"
    return head + (NUMERALS[ones] if ones else "")


@dataclass(frozen=True, slots=True)
class Lateness:
    days: int  # calendar days after the due date
    working_days: int  # working days after it, the due date excluded


def lateness(due: dt.date, day: dt.date, calendar: WorkCalendar) -> Lateness | None:
    """How late ``day`` is for ``due``; None if it is not late."""
    if day <= due:
        return None
    return Lateness((day - due).days, calendar.working_days_between(due, day))


_CHANNELS = {
    "email": "邮件服务器",
    "sms": "短信网关",
    "wecom": "企业微信机器人",
    "dingtalk": "钉钉机器人",
}
# (what the English detail contains, what a supervisor reads), first match wins
_PROBLEMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("no contact",), "无联系方式，请在 contacts.toml 中补充"),
    (("no webhook",), "未配置群机器人地址"),
    (("is not set",), "未配置机器人签名密钥"),
    (("template",), "消息模板有误，请检查模板"),
    (("no longer in the ledger",), "任务已从台账中删除"),
    (("cannot write",), "写入发件目录失败"),
    (("smtputf8",), "邮件服务器不支持中文地址"),
    (("timed out", "timeout", "readtimeout"), "连接{channel}超时"),
    (
        ("connecterror", "connection attempts failed", "connection refused", "disconnected"),
        "连接{channel}失败",
    ),
    (("certificate", "ssl", "tls"), "与{channel}的加密连接失败"),
    (("authentication", "535", "auth"), "{channel}登录失败，请检查账号和密码"),
    (("recipient", "550", "553", "551", "554"), "收件地址被拒收，请核对地址"),
    (("rate limit", "45009", "130101"), "{channel}限流，稍后重发"),
    (("http 4", "http 5", " 4", " 5"), "{channel}拒绝了请求"),
)


def delivery_problem(channel: str, detail: str) -> str:
    """Why a message was not delivered, in words a supervisor reads (the English detail
    stays in the log and in `reminder outbox`)."""
    where = _CHANNELS.get(channel, "发送通道")
    text = detail.lower()
    prefix = ""
    if text.startswith("gave up after"):
        attempts = text.removeprefix("gave up after").split("attempts", 1)[0].strip()
        prefix = f"重试{attempts}次仍未送达："
    for needles, reason in _PROBLEMS:
        if any(needle in text for needle in needles):
            return prefix + reason.format(channel=where)
    return prefix + f"{where}发送失败"
