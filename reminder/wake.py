"""When a tick could next find work: what lets the daemon sleep between sessions.

The daemon's work runs in a session process that exits once nothing is due
(``reminder.session``); the supervisor that stays (``reminder.supervisor``) starts the
next one when ``next_wake`` has come or the store's files changed. ``next_wake`` is the
earliest of:

1. a target's ``next_at`` (of a task still in the ledger): the planner's next occasion;
2. a pending item's ``scheduled_for``, or, for an item held while sending is closed
   (it is still pending after the tick), the next send hour;
3. an outbox row's ``next_attempt_at`` (pending, retry; a ``sending`` row's lease end);
4. the next send hour of the policy and its overrides (the week's agenda, letters held
   over a day off; a session on a day off finds nothing and costs a second of CPU);
5. the next digest;
6. when the idle tick record is due again (``LAST_TICK_EVERY``): `status` relies on it,
   and it bounds how late anything this list missed can be.

Anything else that changes what is due is a write to the store (an import, `done`,
`retry`, an answer on the web), which the supervisor sees in the SQLite files' state
(``reminder.supervisor.store_files``). (On PostgreSQL the daemon is one process.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from reminder.digest_round import next_digest
from reminder.planner import local_moment
from reminder.policy import Policy
from reminder.rules import Rules
from reminder.settings import Settings
from reminder.store.db import Store
from reminder.store.meta import LAST_TICK_EVERY
from reminder.store.models import ItemRow, OutboxRow, TaskRow, TaskUnitRow


def next_wake(
    store: Store,
    planning: Rules,
    settings: Settings,
    now: dt.datetime,
    saved_tick: Mapping[str, Any],
) -> dt.datetime:
    """The earliest moment a tick could find work (the module docstring's list); a
    moment at or before ``now`` means now."""
    units = TaskUnitRow.__table__  # type: ignore[attr-defined]
    tasks = TaskRow.__table__  # type: ignore[attr-defined]
    items = ItemRow.__table__  # type: ignore[attr-defined]
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    hour = next_send_hour(planning.policy, settings, now)
    found: list[dt.datetime | None] = [hour, next_digest(settings, planning, now)]
    with store.read() as session:
        found.append(
            session.execute(
                select(func.min(units.c.next_at))
                .join(tasks, tasks.c.id == units.c.task_id)
                .where(tasks.c.removed_at.is_(None))
            ).scalar()
        )
        pending = session.execute(
            select(func.min(items.c.scheduled_for)).where(items.c.status == "pending")
        ).scalar()
        found.append(hour if pending is not None and pending <= now else pending)
        found.append(
            session.execute(
                select(func.min(outbox.c.next_attempt_at)).where(
                    outbox.c.status.in_(("pending", "retry", "sending"))
                )
            ).scalar()
        )
    if saved_tick:
        found.append(dt.datetime.fromisoformat(saved_tick["at"]) + LAST_TICK_EVERY)
    return min(_aware(moment) for moment in found if moment is not None)


def next_send_hour(policy: Policy, settings: Settings, now: dt.datetime) -> dt.datetime:
    """The next moment after ``now`` at one of the send hours (the policy's and its
    overrides'), any day."""
    hours = {policy.send_at}
    for override in policy.override:
        changed = override.changes().get("send_at")
        if changed is not None:
            hours.add(Policy.model_validate({"send_at": changed}).send_at)
    today = now.astimezone(settings.zone).date()
    moments = [
        local_moment(day, hour, settings.zone)
        for day in (today, today + dt.timedelta(days=1))
        for hour in hours
    ]
    return min(moment for moment in moments if moment > now)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
