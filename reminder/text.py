"""Plain-text helpers with no dependencies: shortening for templates, tables and SMS."""

from __future__ import annotations

import math

SMS_SINGLE = 70  # characters of a one-part SMS
SMS_PART = 67  # characters of each part of a longer one


def shorten(text: object, width: int = 40) -> str:
    """Whitespace collapsed, then cut to ``width`` characters with an ellipsis if cut."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def segments(text: str) -> int:
    """How many SMS parts ``text`` takes."""
    return 1 if len(text) <= SMS_SINGLE else math.ceil(len(text) / SMS_PART)


def fit(text: str, max_segments: int, keep: str = "") -> str:
    """The text cut to at most ``max_segments`` SMS parts, with an ellipsis if cut; the
    part from ``keep`` on (a link and what follows it) is never cut: the text before
    it is, or, if that is not enough, the whole text."""
    width = SMS_SINGLE if max_segments == 1 else SMS_PART * max_segments
    flat = " ".join(text.split())
    at = flat.find(keep) if keep else -1
    if len(flat) <= width or at < 0:
        return shorten(flat, width)
    tail = flat[at:]
    if len(tail) + 2 > width:
        return shorten(flat, width)
    return shorten(flat[:at], width - len(tail)) + tail
