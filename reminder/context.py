"""What a template sees: the context of one message, and what a letter says of a task.

Every message is rendered from the snapshot taken when it was enqueued (its payload:
see ``reminder.letters`` and ``reminder.digest``), plus ``kind``, ``recipient``, ``day``
(a date) and ``office`` (``[office]`` of reminder.toml). Filters: ``cn_date``
(2018年10月8日), ``weekday`` (星期一), ``md_date`` (10月8日), ``cn_numeral`` (3 → 三),
``shorten(n)``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from reminder.ledger.model import Role

# defined in the ledger's model (the store builds it) and exported from here as before
from reminder.ledger.model import TaskFacts as TaskFacts  # noqa: PLC0414
from reminder.settings import OfficeSettings

ROLE_LABELS = {Role.LEAD.value: "牵头", Role.COOPERATING.value: "配合"}


def _date(value: object) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else None


def report_context(
    *, kind: str, recipient: str, payload: dict[str, Any], settings: OfficeSettings
) -> dict[str, Any]:
    """The context of a letter, a digest or an escalation list: the snapshot taken when
    it was enqueued, and the office that sends it (the snapshot's, if it has one)."""
    return {
        "office": settings.model_dump(),
        **payload,
        "kind": kind,
        "recipient": recipient,
        "day": _date(payload.get("day")),
    }
