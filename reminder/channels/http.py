"""What HTTP gateways answer, as delivery outcomes: shared by SMS and robots.

No clock is read here: the senders pass theirs in (``now``), so that tests and a
virtual clock give the same answers (Retry-After as an HTTP date).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from reminder.errors import DeliveryError

# the senders' default wall clock: the one place in the channels where it is read
system_now: Callable[[], dt.datetime] = functools.partial(dt.datetime.now, dt.UTC)


def retry_after(response: httpx.Response, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None if absent or bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def check_status(response: httpx.Response, now: dt.datetime) -> None:
    """4xx is permanent (but 408 and 429 are not), 5xx transient; Retry-After honoured."""
    code = response.status_code
    if code < 400:
        return
    text = response.text[:200].replace("\n", " ")
    transient = code >= 500 or code in (408, 429)
    raise DeliveryError(
        f"HTTP {code}: {text}",
        permanent=not transient,
        code=code,
        retry_after_s=retry_after(response, now),
    )


def transport_error(exc: httpx.HTTPError) -> DeliveryError:
    """Timeouts, refused and dropped connections: try again later."""
    return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)


async def post(
    client: httpx.AsyncClient, url: str, now: Callable[[], dt.datetime], **request: Any
) -> httpx.Response:
    """POST; an answer that is not a success, or no answer, raises ``DeliveryError``.
    ``now`` is read when the answer is in (a Retry-After date counts from then)."""
    try:
        response = await client.post(url, **request)
    except httpx.HTTPError as exc:
        raise transport_error(exc) from None
    check_status(response, now())
    return response
