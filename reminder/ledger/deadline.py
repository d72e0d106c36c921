"""Reading the 完成时限 cell: raw text → ``Deadline`` (kind, start, milestones, recurrence).

Pure and I/O-free. The algorithm:

1. Normalise: full-width digits and punctuation to ASCII, Chinese numerals before 月/日
   to digits, every dash-like sign (—, –, ～, 至, 到, and 一 between two dates) to ``-``,
   ISO dates (``2018-09-30``, ``2018/9/30``) to ``2018年9月30日``, ``5-8月`` to ``5月-8月``.
2. Try the whole-cell forms: recurrences (每月10日前, 每季度末, 每周五), all-year
   (全年), heating season (采暖季), ongoing (持续开展, 长期坚持).
3. Otherwise cut the cell into date tokens (``[YYYY年|次年]M月[D日|底|上旬|…]``, 年底,
   上半年, 三季度 …) and replace each by ``D``; drop filler words (前, 之前, 完成, 期间 …).
   The skeleton that is left decides the kind: ``D`` date, ``D和D`` several milestones,
   ``D-D`` window, ``D-`` / ``D起`` from, ``D<text>`` a date that also names an action.
4. Anything else is kept raw with kind ``unknown``; an impossible date raises.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

from reminder.ledger.model import Deadline, DeadlineKind


class DeadlineError(ValueError):
    """A cell that names an impossible date (13月45日, 2月30日)."""


@dataclass(frozen=True, slots=True)
class SeasonRule:
    """The 采暖季: a start and an end (month, day); the end falls in the next year."""

    start: tuple[int, int] = (11, 15)
    end: tuple[int, int] = (3, 15)


# --- step 1: normalisation ------------------------------------------------------------

_FULLWIDTH = str.maketrans(
    "０１２３４５６７８９／．－～，；：（）　",
    "0123456789/.-~,;:() ",
)
_DASHES = re.compile(r"\s*(?:—+|–|―|‐|‑|‒|~|～|至|到|-)\s*")
_CN_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_CN_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_NUMBER = re.compile(r"(?<![一二三四五六七八九十])([一二三四五六七八九十]{1,3})(?=月|日|号)")
_ISO_DATE = re.compile(r"(\d{4})\s*[-/.]\s*(\d{1,2})\s*[-/.]\s*(\d{1,2})(?:日)?")
_MONTH_RANGE = re.compile(r"(?<![\d年])(\d{1,2})-(\d{1,2})月")
# 一 used as a dash between two dates: 6月5日一6月30日
_YI_DASH = re.compile(r"(?<=[日底末旬月])一(?=\d|次年|明年|翌年)")


def _cn_to_int(text: str) -> int | None:
    """一 → 1, 十 → 10, 十二 → 12, 二十 → 20, 三十一 → 31; None for what is not a number."""
    if "十" not in text:
        return _CN_DIGITS.get(text) if len(text) == 1 else None
    tens_text, _, units_text = text.partition("十")
    tens = 1 if tens_text == "" else _CN_DIGITS.get(tens_text)
    units = 0 if units_text == "" else _CN_DIGITS.get(units_text)
    if tens is None or units is None or len(units_text) > 1 or len(tens_text) > 1:
        return None
    return tens * 10 + units


def _replace_cn_number(match: re.Match[str]) -> str:
    value = _cn_to_int(match.group(1))
    return match.group(1) if value is None else str(value)


def normalise(raw: str) -> str:
    """Canonical spelling of a deadline cell; see step 1 of the module docstring."""
    text = raw.translate(_FULLWIDTH).replace("号", "日")
    text = re.sub(r"\s+", "", text)
    text = _YI_DASH.sub("-", text)
    text = _CN_NUMBER.sub(_replace_cn_number, text)
    text = _ISO_DATE.sub(lambda m: f"{m[1]}年{int(m[2])}月{int(m[3])}日", text)
    text = _DASHES.sub("-", text)
    text = re.sub(r"(\d{4})年(底|末|中)", r"\1年年\2", text)  # 2019年底 → 2019年 + 年底
    return _MONTH_RANGE.sub(r"\1月-\2月", text)


# --- step 2: whole-cell forms ----------------------------------------------------------

_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
_WEEKDAYS |= {str(n): n - 1 for n in range(1, 8)}
_RECURRING = [
    (re.compile(r"^每月(\d{1,2})日(?:前|之前|以前)?"), "monthly"),
    (re.compile(r"^每月(?:底|末|月底|月末)(?:前|之前)?"), "monthly-end"),
    (re.compile(r"^每(?:个)?季度(?:末|底)?(?:前|之前)?"), "quarterly-end"),
    (re.compile(r"^每半年(?:末|底)?(?:前|之前)?"), "half-yearly-end"),
    (re.compile(r"^每周([一二三四五六日天1-7])?(?:前|之前)?"), "weekly"),
]
_ALL_YEAR = re.compile(r"^(?:(\d{4})年)?(?:全年|全年度|全年内|整年|年度内)(?:持续|开展|推进)?$")
_SEASON = re.compile(
    r"^(?:(\d{4})(?:-\d{4})?年(?:度)?)?(?:采暖季|供暖季|取暖季|采暖期|供暖期)(?:期间)?$"
)
_ONGOING = re.compile(
    r"^(?:持续开展|长期坚持|长期开展|持续推进|持续|长期|常态化|常年|长效|即日起|立即)"
    r"(?:开展|推进|坚持|实施|落实)?$"
)


def _recurring(text: str, year: int) -> Deadline | None:
    for pattern, name in _RECURRING:
        match = pattern.match(text)
        if match is None:
            continue
        rest = text[match.end() :] or None
        if name == "monthly":
            day = int(match.group(1))
            if not 1 <= day <= 31:
                raise DeadlineError(f"impossible date: no month has a day {day}")
            days = [min(day, calendar.monthrange(year, m)[1]) for m in range(1, 13)]
            milestones = tuple(dt.date(year, m, d) for m, d in zip(range(1, 13), days, strict=True))
            recurrence = f"monthly:{day}"
        elif name == "monthly-end":
            milestones = tuple(_month_end(year, m) for m in range(1, 13))
            recurrence = "monthly:end"
        elif name == "quarterly-end":
            milestones = tuple(_month_end(year, m) for m in (3, 6, 9, 12))
            recurrence = "quarterly:end"
        elif name == "half-yearly-end":
            milestones = (dt.date(year, 6, 30), dt.date(year, 12, 31))
            recurrence = "half-yearly:end"
        else:
            weekday = _WEEKDAYS[match.group(1)] if match.group(1) else 4  # Friday by default
            first = dt.date(year, 1, 1) + dt.timedelta(
                days=(weekday - dt.date(year, 1, 1).weekday()) % 7
            )
            milestones = tuple(
                first + dt.timedelta(weeks=w)
                for w in range(53)
                if (first + dt.timedelta(weeks=w)).year == year
            )
            recurrence = f"weekly:{weekday + 1}"
        return Deadline(
            raw="",
            kind=DeadlineKind.RECURRING,
            milestones=milestones,
            recurrence=recurrence,
            action=_action(rest),
        )
    return None


def _season(year: int, rule: SeasonRule) -> tuple[dt.date, dt.date]:
    start = _checked_date(year, *rule.start)
    end_year = year + 1 if rule.end <= rule.start else year
    return start, _checked_date(end_year, *rule.end)


# --- step 3: date tokens and the skeleton ----------------------------------------------

_YEAR = r"(?:(?P<year>\d{4})年|(?P<next>次年|明年|翌年))?"
_DATE_TOKEN = re.compile(
    _YEAR + r"(?:"
    r"(?P<month>\d{1,2})月(?:份)?(?:(?P<day>\d{1,2})日|(?P<part>底|末|上旬|中旬|下旬|初|中))?"
    r"|(?P<yearpart>年底|年末|年中|上半年|下半年|"
    r"(?:第)?(?P<quarter>[一二三四1-4])季度(?P<qend>末|底)?)"
    r")"
)
# a bare day after a dash inherits the month before it: 9月1日-30日
_DAY_ONLY = re.compile(r"-(?P<day>\d{1,2})日")
_FILLER = re.compile(r"之前|以前|截止|截至|为止|以内|期间|左右|前|止|内|完成|[。.,，;；:：]")
_CONJ = "和及与、,;/"


@dataclass(frozen=True, slots=True)
class _Span:
    """What one date token denotes: its first and last day, and whether it is a period."""

    first: dt.date
    last: dt.date
    period: bool  # 9月, 上半年, 三季度: a stretch of time rather than a day


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _checked_date(year: int, month: int, day: int) -> dt.date:
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise DeadlineError(f"impossible date: {year} has no {month}月{day}日") from None


def _span(match: re.Match[str], year: int) -> _Span:
    """The days a token denotes; ``year`` is the ledger's, or the one a token before named."""
    if match["yearpart"]:
        part = match["yearpart"]
        if part in ("年底", "年末"):
            day = dt.date(year, 12, 31)
            return _Span(day, day, period=False)
        if part == "年中":
            day = dt.date(year, 6, 30)
            return _Span(day, day, period=False)
        if part == "上半年":
            return _Span(dt.date(year, 1, 1), dt.date(year, 6, 30), period=True)
        if part == "下半年":
            return _Span(dt.date(year, 7, 1), dt.date(year, 12, 31), period=True)
        quarter = match["quarter"]
        q = int(quarter) if quarter.isdigit() else _CN_DIGITS[quarter]
        first, last = dt.date(year, 3 * q - 2, 1), _month_end(year, 3 * q)
        if match["qend"]:
            return _Span(last, last, period=False)
        return _Span(first, last, period=True)
    month = int(match["month"])
    if not 1 <= month <= 12:
        raise DeadlineError(f"impossible date: there is no month {month}")
    if match["day"]:
        day = _checked_date(year, month, int(match["day"]))
        return _Span(day, day, period=False)
    part = match["part"]
    if part in ("底", "末", "下旬"):
        day = _month_end(year, month)
        return _Span(day, day, period=False)
    if part in ("上旬", "初"):
        day = dt.date(year, month, 10)
        return _Span(day, day, period=False)
    if part in ("中旬", "中"):
        day = dt.date(year, month, 20)
        return _Span(day, day, period=False)
    return _Span(dt.date(year, month, 1), _month_end(year, month), period=True)


def _tokens(text: str, year: int) -> tuple[str, list[_Span]]:
    """Replace each date token by ``D``; return the skeleton and the spans in order."""
    spans: list[_Span] = []
    pieces: list[str] = []
    pos = 0
    text = text.replace("D", "d")  # keep the placeholder unambiguous
    for match in _DATE_TOKEN.finditer(text):
        # a year named once holds for the dates after it: 2019年1月1日至3月15日
        if match["year"]:
            year = int(match["year"])
        elif match["next"]:
            year += 1
        pieces.append(text[pos : match.start()])
        pieces.append("D")
        spans.append(_span(match, year))
        pos = match.end()
    pieces.append(text[pos:])
    skeleton = "".join(pieces)
    # 9月1日-30日: a bare day after a dash belongs to the month of the date before it
    day_only = _DAY_ONLY.search(skeleton)
    if spans and day_only is not None and skeleton[: day_only.start()].endswith("D"):
        before = spans[-1]
        day = _checked_date(before.last.year, before.last.month, int(day_only["day"]))
        spans.append(_Span(day, day, period=False))
        skeleton = skeleton[: day_only.start()] + "-D" + skeleton[day_only.end() :]
    return skeleton, spans


def _action(text: str | None) -> str | None:
    """What a cell names besides its date: 9月投入使用 → 投入使用, 6月底前完成验收 → 完成验收."""
    if not text:
        return None
    text = re.sub(r"^(?:之前|以前|前)", "", text).strip("-。.,，;；:： ")
    return text or None


def _from_skeleton(skeleton: str, spans: list[_Span]) -> Deadline | None:
    bare = re.sub(r"^(?:自|从|于)", "", skeleton)
    if bare in ("D-", "D起", "D开始", "D以后", "D之后", "D后", "D始", "D起实施", "D起执行"):
        return Deadline(raw="", kind=DeadlineKind.FROM, start=spans[0].first)
    core = _FILLER.sub("", bare)
    if core == "D":
        span = spans[0]
        if span.period and bare.endswith("前") and span.first.month == span.last.month:
            # 9月前: before September begins, read strictly so the reminder is never late
            return Deadline(
                raw="", kind=DeadlineKind.DATE, milestones=(span.first - dt.timedelta(days=1),)
            )
        if span.period and "前" not in bare:
            if span.first.month == span.last.month:  # 9月: by the end of September
                return Deadline(raw="", kind=DeadlineKind.DATE, milestones=(span.last,))
            return Deadline(
                raw="", kind=DeadlineKind.WINDOW, start=span.first, milestones=(span.last,)
            )
        return Deadline(raw="", kind=DeadlineKind.DATE, milestones=(span.last,))
    if core == "D-D":
        start, due = spans[0].first, spans[1].last
        if due < start and spans[1].last.year == spans[0].first.year:
            # 11月15日-3月15日: the end of a range that wraps over new year is next year's
            due = due.replace(year=due.year + 1)
        if due < start:
            raise DeadlineError("impossible window: it ends before it starts")
        return Deadline(raw="", kind=DeadlineKind.WINDOW, start=start, milestones=(due,))
    if len(spans) > 1 and re.fullmatch(rf"D(?:[{_CONJ}]D)+", core):
        milestones = tuple(sorted({span.last for span in spans}))
        return Deadline(raw="", kind=DeadlineKind.DATE, milestones=milestones)
    if len(spans) == 1 and core.startswith("D") and not core.startswith("D-"):
        action = _action(bare[bare.index("D") + 1 :])
        if action and re.search(r"[\u4e00-\u9fff]", action):
            return Deadline(
                raw="", kind=DeadlineKind.DATE, milestones=(spans[0].last,), action=action
            )
    return None


def parse_deadline(raw: str, year: int, season: SeasonRule | None = None) -> Deadline:
    """Read one 完成时限 cell; raise ``DeadlineError`` only for an impossible date."""
    season = season or SeasonRule()
    raw = raw.strip()
    text = normalise(raw)
    if not text:
        return Deadline(raw=raw, kind=DeadlineKind.UNKNOWN)
    found = _whole_cell(text, year, season) or _dated(text, year)
    if found is None:
        return Deadline(raw=raw, kind=DeadlineKind.UNKNOWN)
    return Deadline(
        raw=raw,
        kind=found.kind,
        start=found.start,
        milestones=found.milestones,
        recurrence=found.recurrence,
        action=found.action,
    )


def _whole_cell(text: str, year: int, season: SeasonRule) -> Deadline | None:
    recurring = _recurring(text, year)
    if recurring is not None:
        return recurring
    if match := _ALL_YEAR.match(text):
        y = int(match.group(1)) if match.group(1) else year
        first, last = dt.date(y, 1, 1), dt.date(y, 12, 31)
        return Deadline(raw="", kind=DeadlineKind.ALL_YEAR, start=first, milestones=(last,))
    if match := _SEASON.match(text):
        start, end = _season(int(match.group(1)) if match.group(1) else year, season)
        return Deadline(raw="", kind=DeadlineKind.SEASON, start=start, milestones=(end,))
    if re.fullmatch(r"(?:采暖季|供暖季|取暖季)(?:开始)?前", text):
        start, _ = _season(year, season)
        return Deadline(raw="", kind=DeadlineKind.DATE, milestones=(start,))
    if _ONGOING.match(text):
        return Deadline(raw="", kind=DeadlineKind.ONGOING)
    if text in ("年内", "年内完成", "本年度内", "当年"):
        return Deadline(raw="", kind=DeadlineKind.DATE, milestones=(dt.date(year, 12, 31),))
    return None


def _dated(text: str, year: int) -> Deadline | None:
    skeleton, spans = _tokens(text, year)
    if not spans:
        return None
    return _from_skeleton(skeleton, spans)
