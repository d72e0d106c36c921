"""The store's disk full in the middle of a batch, then space again.

The SQLite store lives on a tmpfs of its own (32 MB, mounted by the test: it needs
root, as CI has); the real daemon sends 600 due letters to an aiosmtpd server; after
the first 150 arrive a file fills the disk to its last byte, and is removed a few
seconds later.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from reminder.channels.mime import message_id
from tests.conftest import SEED, Cli
from tests.daemon_process import Daemon, daemon_env, run_until_exit
from tests.smtp_server import Handler
from tests.test_crash import fill_outbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 600
MARK_EVERY = 20


@pytest.fixture
def small_disk(isolated_env: Path) -> Iterator[Path]:
    """A folder on a 32 MB tmpfs, unmounted afterwards."""
    folder = isolated_env / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the store (root needed): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every byte left on the disk."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def sent_rows(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {key for (key,) in con.execute("SELECT key FROM outbox WHERE status = 'sent'")}


def digest_keys(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {key for (key,) in con.execute("SELECT key FROM outbox WHERE kind = 'digest'")}


def letters(handler: Handler) -> list[str]:
    """The Message-IDs of the letters received (the supervisors' digests left out)."""
    with handler.lock:
        return [
            r.message["Message-ID"]
            for r in handler.received
            if "督办日报" not in r.message["Subject"]
        ]


def statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())


def test_a_full_disk_mid_batch_marks_nothing_unsent_and_the_daemon_recovers(
    cli: Cli,
    small_disk: Path,
    smtp: tuple[Handler, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = small_disk / "ledger.db"
    monkeypatch.setenv("REMINDER_DB", f"sqlite:///{db}")
    assert cli("import", str(SEED)).code == 0
    keys = fill_outbox(db, MESSAGES)
    handler, port = smtp
    handler.behaviour.delay_s = 0.02  # ~100 messages a second over 2 connections
    env = daemon_env(
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(port),
        REMINDER_SMTP__CONNECTIONS="2",
        REMINDER_DELIVERY__MARK_EVERY=str(MARK_EVERY),
        REMINDER_DELIVERY__BATCH="100",
        REMINDER_DELIVERY__RENDER_WORKERS="0",
        REMINDER_DAEMON__TICK_S="1",
    )
    expected = {message_id(key, "duban@example.org"): key for key in keys}
    with Daemon(small_disk.parent, env) as daemon:
        assert handler.wait_for(150, timeout=60), daemon.log_path.read_text()
        filler = fill(small_disk)
        time.sleep(4)  # sends stop once MARK_EVERY outcomes wait for their commit
        arrived = letters(handler)
        stalled = len(handler.received)
        # nothing recorded as sent that the server did not get
        assert sent_rows(db) <= {expected[m] for m in arrived} | digest_keys(db)
        time.sleep(2)
        assert len(handler.received) == stalled, "it went on sending with nothing recorded"
        assert stalled < MESSAGES
        # the claim, an outcome's commit or a tick refused: each says so on one line
        failures = [e for e in daemon.events() if e["level"] == "error"]
        assert failures, daemon.log_path.read_text()
        assert {e["error"] for e in failures} == {f"the store {db}: database or disk is full"}
        assert all("exception" not in e for e in failures)

        filler.unlink()  # space again
        deadline = time.monotonic() + 60
        while set(keys) - sent_rows(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert statuses(db) == {"sent": len(sent_rows(db))}
        assert daemon.running(), "the daemon stopped instead of retrying"
        assert daemon.stop() == 0
    received = Counter(letters(handler))
    assert set(received) == set(expected), "a message was lost"
    # the outcomes that waited for space were kept and recorded: nothing sent twice
    assert max(received.values()) == 1, [m for m, n in received.items() if n > 1]
    assert os.path.getsize(db) > 0


def test_on_a_full_disk_the_daemon_will_not_start_and_says_why_on_one_line(
    cli: Cli, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = small_disk / "ledger.db"
    monkeypatch.setenv("REMINDER_DB", f"sqlite:///{db}")
    assert cli("import", str(SEED)).code == 0
    filler = fill(small_disk)
    started = run_until_exit(small_disk.parent, daemon_env())
    assert started.returncode == 74  # EX_IOERR: systemd restarts it later
    assert started.stderr.splitlines() == [
        f"错误/Error: {db}.lock: cannot take the daemon's lock: No space left on device"
    ]
    filler.unlink()
    assert cli("status").code == 0  # the store is whole
