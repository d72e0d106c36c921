"""Plain-text helpers with no dependencies: shortening for templates, tables and SMS."""

from __future__ import annotations

import math
import re

SMS_SINGLE = 70  # characters of a one-part SMS
SMS_PART = 67  # characters of each part of a longer one


# C0 and C1 controls, DEL and the Unicode line and paragraph separators: none belongs in
# a name or an address, and a line break in one that reaches a header would end it
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(name: str) -> str:
    """A name as a terminal line may show it: as it is, or escaped (``repr``) when it
    holds a control character (a cell pasted from another document)."""
    return repr(name) if CONTROL.search(name) else name


def shorten(text: object, width: int = 40) -> str:
    """Whitespace collapsed, then cut to ``width`` characters with an ellipsis if cut."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def sms_length(text: str) -> int:
    """The length of ``text`` as SMS gateways count it: UTF-16 code units (UCS-2 SMS), so a
    character outside the Basic Multilingual Plane (an emoji, a CJK Extension B character
    such as 𠀀) counts 2."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _sms_cut(text: str, width: int) -> str:
    """The longest start of ``text`` of at most ``width`` UTF-16 units."""
    if sms_length(text) <= width:
        return text
    used = 0
    for at, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > width:
            return text[:at]
    return text


def _sms_shorten(text: str, width: int) -> str:
    """``shorten`` counted in UTF-16 units: cut with an ellipsis to ``width`` units."""
    flat = " ".join(text.split())
    if sms_length(flat) <= width:
        return flat
    return _sms_cut(flat, width - 1) + "…"


def segments(text: str) -> int:
    """How many SMS parts ``text`` takes (70 UTF-16 units in one, 67 in each of more)."""
    length = sms_length(text)
    return 1 if length <= SMS_SINGLE else math.ceil(length / SMS_PART)


def fit(text: str, max_segments: int, keep: str = "") -> str:
    """The text cut to at most ``max_segments`` SMS parts, with an ellipsis if cut; the
    part from ``keep`` on (a link and what follows it) is never cut: the text before
    it is, or, if that is not enough, the whole text. Lengths in UTF-16 units."""
    width = SMS_SINGLE if max_segments == 1 else SMS_PART * max_segments
    flat = " ".join(text.split())
    at = flat.find(keep) if keep else -1
    if sms_length(flat) <= width or at < 0:
        return _sms_shorten(flat, width)
    tail = flat[at:]
    if sms_length(tail) + 2 > width:
        return _sms_shorten(flat, width)
    return _sms_shorten(flat[:at], width - sms_length(tail)) + tail
