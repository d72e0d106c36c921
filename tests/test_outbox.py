"""The outbox: claims with leases, backoff, and claims that never overlap on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from reminder.channels import Outgoing, Report, Result, Window, always_open
from reminder.contacts import load_contacts
from reminder.delivery import Delivery
from reminder.outbox import anything_to_claim, backoff_s, claim, mark, renew
from reminder.render import Renderer
from reminder.settings import DeliverySettings, Settings
from reminder.store.db import Store, open_store
from tests.conftest import CONFIG, SEED, Cli
from tests.test_crash import fill_outbox


def claimed_ids(
    store: Store, *, now: dt.datetime | None = None, limit: int = 1000, lease_s: float = 60
) -> list[int]:
    now = now or dt.datetime.now(dt.UTC)
    with store.write() as session:
        rows = claim(
            session, due_by=now, now=now, lease_s=lease_s, limit=limit, lock=not store.is_sqlite
        )
    return [row.id for row in rows]


def test_backoff_doubles_up_to_the_cap() -> None:
    settings = DeliverySettings(backoff_s=60, backoff_cap_s=600)
    assert [backoff_s(n, settings) for n in range(1, 7)] == [60, 120, 240, 480, 600, 600]


def test_a_claim_holds_until_its_lease_runs_out(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill_outbox(db, 10)
    store = open_store(f"sqlite:///{db}")
    first = claimed_ids(store, lease_s=60)
    assert len(first) == 10
    assert claimed_ids(store) == []  # taken, the lease holds
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    assert sorted(claimed_ids(store, now=later)) == sorted(first)  # a dead sender's lease ran out
    with sqlite3.connect(db) as con:
        assert {row[0] for row in con.execute("SELECT status FROM outbox")} == {"sending"}
    store.dispose()


def test_a_run_for_a_moment_ahead_retries_only_what_was_due_when_it_began(
    cli: Cli, isolated_env: Path
) -> None:
    """A retry whose backoff ends between the run's start and the moment it is for
    waits for a later run: a message is never tried twice in one run."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill_outbox(db, 4)
    now = dt.datetime.now(dt.UTC)
    soon = (now + dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(db) as con:  # two failed a moment ago, with a 5-minute backoff
        con.execute(
            "UPDATE outbox SET status = 'retry', next_attempt_at = ? WHERE id IN "
            "(SELECT id FROM outbox ORDER BY id LIMIT 2)",
            (soon,),
        )
    store = open_store(f"sqlite:///{db}")
    ahead = now + dt.timedelta(hours=1)
    with store.write() as session:
        rows = claim(session, due_by=ahead, now=now, lease_s=60, limit=10, lock=False, retry_by=now)
    assert len(rows) == 2
    with sqlite3.connect(db) as con:
        left = con.execute("SELECT count(*) FROM outbox WHERE status = 'retry'").fetchone()[0]
    assert left == 2
    store.dispose()


# one row in each state, its next attempt (or lease end) so many minutes from now
STATES = {
    "pending due": ("pending", -1),
    "pending later": ("pending", 30),
    "retry due": ("retry", -1),
    "retry later": ("retry", 30),
    "sending, its lease over": ("sending", -1),
    "sending, leased": ("sending", 30),
    "sent": ("sent", -60),
    "dead": ("dead", -60),
}


@pytest.mark.parametrize("state", STATES, ids=list(STATES))
@pytest.mark.parametrize("ahead", [0, 60], ids=["now", "an hour ahead"])
def test_anything_to_claim_says_whether_a_claim_would_take_a_row(
    cli: Cli, isolated_env: Path, state: str, ahead: int
) -> None:
    """`run --once` starts no delivery when nothing is claimable: the question must
    answer as the claim itself does, state by state (and for a moment ahead)."""
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill_outbox(db, 1)
    status, minutes = STATES[state]
    now = dt.datetime.now(dt.UTC)
    at = (now + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE outbox SET status = ?, next_attempt_at = ?", (status, at))
    store = open_store(f"sqlite:///{db}")
    due_by = now + dt.timedelta(minutes=ahead)
    with store.read() as session:
        answer = anything_to_claim(session, due_by=due_by, now=now)
    with store.write() as session:
        taken = claim(session, due_by=due_by, now=now, lease_s=60, limit=10, lock=False)
    store.dispose()
    assert answer is bool(taken)
    expected = minutes < 0 and status in ("pending", "retry", "sending")
    expected = expected or (ahead > minutes > 0 and status in ("pending", "retry"))
    assert answer is expected


def test_a_renewed_lease_holds_and_a_lost_one_is_left_alone(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill_outbox(db, 4)
    store = open_store(f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC)

    def seconds(n: float) -> dt.datetime:
        return now + dt.timedelta(seconds=n)

    mine = claimed_ids(store, now=now, limit=2, lease_s=60)  # held until now + 60
    with store.write() as session:
        assert renew(session, mine, seconds(60), seconds(110)) == 2
    # past the first lease, inside the renewed one: another sender gets only the rest
    others = claimed_ids(store, now=seconds(90), limit=10, lease_s=60)  # until now + 150
    assert len(others) == 2 and not set(others) & set(mine)
    # those run out and another sender takes them: their old holder cannot renew them
    taken = claimed_ids(store, now=seconds(151), limit=10, lease_s=60)
    assert set(others) <= set(taken)
    with store.write() as session:
        assert renew(session, others, seconds(150), seconds(200)) == 0
    store.dispose()


def test_outcomes_recorded(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    db = isolated_env / "ledger.db"
    fill_outbox(db, 4)
    store = open_store(f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC)
    with store.write() as session:
        rows = claim(session, due_by=now, now=now, lease_s=60, limit=10, lock=False)
    a, b, c, d = (row.id for row in rows)
    settings = DeliverySettings(max_attempts=2)
    results = [
        Result(a, "sent", 250, "250 Ok: queued as 1A2B"),
        Result(b, "retry", 450, "450 busy", 300.0),
        Result(c, "dead", 550, "550 no such user"),
        Result(d, "deferred", None, "robot rate limit", 42.0),
    ]
    with store.write() as session:
        mark(session, results, {row.id: row.attempts for row in rows}, now, settings)
    with sqlite3.connect(db) as con:
        state = {
            row[0]: row[1:]
            for row in con.execute(
                "SELECT id, status, attempts, last_result, next_attempt_at, sent_at FROM outbox"
            )
        }
        attempts = con.execute(
            "SELECT outbox_id, outcome, code, detail FROM attempt ORDER BY outbox_id"
        ).fetchall()
    assert state[a][:3] == ("sent", 1, "250 Ok: queued as 1A2B")
    assert state[a][4] is not None
    assert state[b][:3] == ("retry", 1, "450 450 busy")
    retry_at = dt.datetime.fromisoformat(state[b][3]).replace(tzinfo=dt.UTC)
    assert retry_at == now + dt.timedelta(seconds=300)  # Retry-After beats the backoff
    assert state[c][:2] == ("dead", 1)
    assert state[d][:2] == ("retry", 0)  # a deferral is not an attempt
    assert attempts == [
        (b, "retry", 450, "450 busy"),
        (c, "dead", 550, "550 no such user"),
        (d, "deferred", None, "robot rate limit"),
    ]
    store.dispose()


def test_claims_never_overlap_on_postgresql(
    cli: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMINDER_DB", pg_url)
    assert cli("import", str(SEED)).code == 0
    fill_outbox(pg_url, 300)
    store = open_store(pg_url)
    now = dt.datetime.now(dt.UTC)
    # two senders claim at the same time, each in its own open transaction
    with store.write() as first, store.write() as second:
        one = claim(first, due_by=now, now=now, lease_s=60, limit=200, lock=True)
        two = claim(second, due_by=now, now=now, lease_s=60, limit=200, lock=True)
        assert len(one) == 200
        assert len(two) == 100
        assert not {r.id for r in one} & {r.id for r in two}
    assert claimed_ids(store) == []
    store.dispose()


def test_the_render_pool_path(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big batch is rendered in a worker process; the result is the same as inline."""
    monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "1")
    monkeypatch.setenv("REMINDER_DELIVERY__OUTBOX_DIR", str(isolated_env / "pool"))
    assert cli("import", str(SEED)).code == 0
    fill_outbox(isolated_env / "ledger.db", 1200)
    result = cli("run", "--once")
    assert result.code == 0, result.err
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        statuses = dict(con.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
    files = list((isolated_env / "pool").glob("*/*"))
    assert statuses == {"sent": len(files)}
    assert len(files) == 1200


def die_in_worker(*_args: object) -> None:
    """Stands in for ``render_chunk``: the worker process dies, as when OOM-killed."""
    os._exit(3)


def test_a_render_worker_that_dies_costs_no_message(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk the dead worker held is rendered in the main process, and so is the
    rest of the run: everything is sent, once, and the failure is logged."""
    monkeypatch.setenv("REMINDER_DELIVERY__RENDER_WORKERS", "1")
    monkeypatch.setenv("REMINDER_DELIVERY__OUTBOX_DIR", str(isolated_env / "pool"))
    monkeypatch.setattr("reminder.render_pool.render_chunk", die_in_worker)
    assert cli("import", str(SEED)).code == 0
    fill_outbox(isolated_env / "ledger.db", 1200)
    result = cli("run", "--once")
    assert result.code == 0, result.err
    assert "render_workers_failed" in result.err
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        statuses = dict(con.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
    files = list((isolated_env / "pool").glob("*/*"))
    assert statuses == {"sent": len(files)}
    assert len(files) == 1200


class BrokenSender:
    """A sender with a bug: it reports the first message of each call, then raises."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(
        self, items: Sequence[Outgoing], report: Report, window: Window = always_open
    ) -> None:
        self.calls += 1
        report(Result.sent(items[0], 250, "ok"))
        raise RuntimeError("a bug in a sender")

    async def close(self) -> None:
        return None


def test_a_sender_that_raises_leaves_nothing_held(cli: Cli, isolated_env: Path) -> None:
    """Every message of the failed call gets an outcome (retry), none is held until the
    run ends, and what was reported before the failure stays sent."""
    assert cli("import", str(SEED)).code == 0
    keys = fill_outbox(isolated_env / "ledger.db", 450)
    store = open_store(f"sqlite:///{isolated_env / 'ledger.db'}")
    settings = Settings(delivery={"render_workers": 0, "batch": 200})
    sender = BrokenSender()
    delivery = Delivery(
        store, settings, load_contacts(CONFIG / "contacts.toml"), Renderer(), {"email": sender}
    )
    report = asyncio.run(asyncio.wait_for(delivery.run(), timeout=30))
    store.dispose()
    chunks = sender.calls
    assert chunks == 3  # 450 messages in chunks of 200
    assert report.outcomes == {"sent": chunks, "retry": len(keys) - chunks}
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        statuses = dict(con.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
        errors = {
            row[0] for row in con.execute("SELECT last_error FROM outbox WHERE status = 'retry'")
        }
    assert statuses == {"sent": chunks, "retry": len(keys) - chunks}
    assert errors == {"delivery failed: RuntimeError: a bug in a sender"}
