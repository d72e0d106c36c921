"""The digest read from the store (``DigestReader``: counts in SQL, only the listed tasks
loaded) is the digest built from the whole ledger in memory, for every scope, through
the year, with units done, reported, extended and reminded, under policy overrides, and
with the lists cut."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from reminder import digest as digest_module
from reminder.contacts import Supervisor
from reminder.digest import build_digest
from reminder.policy import Policy
from reminder.rules import Rules
from reminder.settings import load_config
from reminder.store import digest_reader
from reminder.store.db import open_store
from reminder.store.digest_reader import DigestReader
from reminder.store.overview import digest_inputs
from tests.conftest import Cli, seed_inputs
from tests.known_ledger import ZONE

DAYS = [dt.date(2018, 1, 2) + dt.timedelta(days=23 * n) for n in range(17)]
SCOPES = [
    None,
    Supervisor(name="全市督查"),
    Supervisor(name="能源督查", sections=["加快调整能源消费结构"]),
    Supervisor(name="交通督查", sections=[3], units=["交通运输局", "公安局"]),
    Supervisor(name="乡镇督查", units=["克井镇", "五龙口镇", "环境保护局"]),
    # a unit that supervises: never escalated to, nor ranked, in its own digest
    Supervisor(name="环境保护局", sections=[2, 4]),
]
POLICIES = {
    "shipped": None,
    "overrides": {
        "overdue": {"escalate_after": 3},
        "override": [
            {"sections": [2], "overdue": {"escalate_after": 12}},
            {"tasks": [5, 40], "overdue": {"escalate": False}},
            {"tasks": [83], "overdue": {"kinds": ["window"]}},
        ],
    },
}
# units done, reported done (waiting for review), extended, reminded; a progress note
STATES = [
    "UPDATE task_unit SET done_at = '2018-03-01 02:00:00' WHERE id % 7 = 0",
    "UPDATE task_unit SET reported_at = '2018-04-02 02:00:00' WHERE id % 11 = 0",
    "UPDATE task_unit SET due = '2018-09-12' WHERE id % 13 = 0",
    "UPDATE task_unit SET reminded = id % 4, last_reminded_at = '2018-05-02 01:00:00'"
    " WHERE id % 3 = 0",
    "INSERT INTO event (kind, task_id, unit, note, at, actor, origin, attachment)"
    " SELECT 'progress', id, '环境保护局', '已完成70%', '2018-06-01 02:00:00', 'cli', 'cli', ''"
    " FROM task WHERE no % 9 = 0",
]


def _prepared(cli: Cli, policy: str) -> Rules:
    _, planning = seed_inputs(cli)
    for no in ("3", "41", "84"):
        assert cli("done", no).code == 0
    changes = POLICIES[policy]
    if changes is not None:
        planning = dataclasses.replace(planning, policy=Policy.model_validate(changes))
    store = open_store(load_config().settings.db)
    try:
        with store.write() as session:
            for statement in STATES:
                session.connection().execute(text(statement))
    finally:
        store.dispose()
    return planning


def _both(
    planning: Rules, day: dt.date, since: dt.datetime
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each scope's digest built both ways: (from the whole ledger, from the reader)."""
    store = open_store(load_config().settings.db)
    try:
        with store.read() as session:
            whole = digest_inputs(session)
            reader = DigestReader.open(session, planning, day)
            assert whole is not None and reader is not None
            return [
                (
                    build_digest(whole, scope, planning, day, since),
                    build_digest(reader.inputs(scope, since), scope, planning, day, since),
                )
                for scope in SCOPES
            ]
    finally:
        store.dispose()


CASES = [
    pytest.param("sqlite", "shipped", 100, id="sqlite-shipped-whole"),
    pytest.param("sqlite", "shipped", 2, id="sqlite-shipped-cut"),
    pytest.param("sqlite", "overrides", 2, id="sqlite-overrides-cut"),
    pytest.param(
        "postgres", "overrides", 2, id="postgres-overrides-cut", marks=pytest.mark.postgres
    ),
]


@pytest.mark.parametrize(("db", "policy", "listed"), CASES)
def test_the_digest_read_from_the_store_is_the_one_built_in_memory(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    db: str,
    policy: str,
    listed: int,
) -> None:
    if db == "postgres":
        monkeypatch.setenv("REMINDER_DB", request.getfixturevalue("pg_url"))
    planning = _prepared(cli, policy)
    monkeypatch.setattr(digest_module, "LISTED", listed)
    monkeypatch.setattr(digest_reader, "LISTED", listed)
    if listed == 2:  # the escalated units' tasks read a few at a time, skipping ahead
        monkeypatch.setattr(digest_reader, "_BATCH", 3)
        monkeypatch.setattr(digest_reader, "_MAX_BATCH", 7)
    seen: list[dict[str, Any]] = []
    for day in DAYS:
        since = dt.datetime.combine(day, dt.time(8, 30), tzinfo=ZONE) - dt.timedelta(days=4)
        for expected, read in _both(planning, day, since):
            assert read == expected, (day, read["scope"])
            seen.append(read)
    # not a trivial agreement: the digests escalate, rank, list progress and cut lists
    assert any(len(d["escalated"]) > 1 and d["escalated"][0]["tasks"] for d in seen)
    assert any(d["ranking"]["lead"] and d["ranking"]["cooperating"] for d in seen)
    assert any(t["progress"] and t["reminded"] for d in seen for t in d["overdue"])
    assert any(d["totals"]["new_overdue"] for d in seen)
    assert any(d["upcoming"] for d in seen) and any(d["done"] for d in seen)
    cut = [d for d in seen if d["counts"]["overdue"] > len(d["overdue"])]
    assert bool(cut) == (listed == 2)


def test_a_store_without_a_ledger_has_no_digest(cli: Cli) -> None:
    store = open_store(load_config().settings.db)
    _, planning = seed_inputs(cli)
    try:
        with store.write() as session:
            session.connection().execute(text("DELETE FROM import_run"))
            assert DigestReader.open(session, planning, DAYS[0]) is None
            session.rollback()
    finally:
        store.dispose()
