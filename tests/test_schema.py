"""The store's schema: `reminder db upgrade` creates and upgrades it under a lock; every
other command checks it and changes nothing.

Real `reminder` processes started at once (as hosts whose units' ExecStartPre run
together), on a real SQLite file and on a fresh schema of the machine's PostgreSQL.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SEED, Cli, downgrade, revision_at
from tests.daemon_process import SCRIPT, Daemon, NotifySocket, daemon_env
from tests.smtp_server import Handler

pytestmark = pytest.mark.timeout(180)
HEAD = "0007"
HINT = "run `reminder db upgrade`"


def test_read_only_commands_never_create_or_upgrade_the_store(cli: Cli, isolated_env: Path) -> None:
    db = isolated_env / "ledger.db"
    for command in (["status"], ["tasks"], ["plan"], ["digest", "--print"], ["outbox"]):
        result = cli(*command)
        assert result.code == 78, (command, result)
        assert f"no store here yet: {HINT}" in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert not db.exists()  # not even an empty file

    assert cli("import", str(SEED)).code == 0  # a new store: created at the head
    url = f"sqlite:///{db}"
    assert revision_at(url) == HEAD
    downgrade(url, "0005")
    for command in (["status"], ["tasks"], ["done", "7"], ["web"], ["import", str(SEED)]):
        result = cli(*command)
        assert result.code == 78, (command, result)
        assert f"at revision 0005, this version uses {HEAD}: {HINT}" in result.err
    assert revision_at(url) == "0005"

    result = cli("db", "upgrade")
    assert result.code == 0
    assert result.out.strip().endswith(f"schema upgraded from revision 0005 to {HEAD}")
    assert cli("status").code == 0
    result = cli("db", "upgrade")
    assert result.out.strip().endswith(f"schema already at revision {HEAD}")


def upgrade_at_once(cwd: Path, env: dict[str, str], hosts: int) -> list[str]:
    """``hosts`` processes of `reminder db upgrade`, started together: what each said."""
    processes = [
        subprocess.Popen(
            [str(SCRIPT), "db", "upgrade"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(hosts)
    ]
    lines = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        lines.append(out.strip().rsplit(": ", 1)[1])
    return sorted(lines)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_three_hosts_upgrading_an_empty_store_at_once_create_it_once(
    backend: str, isolated_env: Path, request: pytest.FixtureRequest
) -> None:
    """Each host's `reminder db upgrade` succeeds; one creates the schema, the others find
    it made (on PostgreSQL without the lock two of six trials failed: duplicate key)."""
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    env = daemon_env(REMINDER_DB=url)
    for trial in range(3):
        if trial:
            downgrade(url, "base")  # empty again: every table dropped
        lines = upgrade_at_once(isolated_env, env, 3)
        assert lines == [f"schema already at revision {HEAD}"] * 2 + [
            f"schema created at revision {HEAD}"
        ], lines
        assert revision_at(url) == HEAD


def test_three_hosts_start_at_once_on_an_empty_postgresql_database(
    isolated_env: Path, pg_url: str, smtp: tuple[Handler, int]
) -> None:
    """As three hosts' units start together: ExecStartPre (`reminder db upgrade`) on each,
    then each daemon; all three are ready, each on its own notify socket."""
    _handler, port = smtp
    env = daemon_env(
        REMINDER_DB=pg_url,
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_SMTP__PORT=str(port),
        REMINDER_DAEMON__TICK_S="1",
    )
    assert (upgrade_at_once(isolated_env, env, 3)).count(f"schema created at revision {HEAD}")
    sockets = [NotifySocket(isolated_env / f"notify-{i}.sock") for i in range(3)]
    daemons = [
        Daemon(isolated_env, env | {"NOTIFY_SOCKET": str(s.path)}, name=f"host-{i}")
        for i, s in enumerate(sockets)
    ]
    try:
        for daemon in daemons:
            daemon.start()
        for daemon, sock in zip(daemons, sockets, strict=True):
            assert sock.wait_for("READY=1"), daemon.log_path.read_text()
            assert daemon.wait_event("session_started"), daemon.log_path.read_text()
        deadline = time.monotonic() + 30
        while any(d.wait_event("tick", timeout=0.1) is False for d in daemons):
            assert time.monotonic() < deadline
        for daemon in daemons:
            assert daemon.stop() == 0
            log = daemon.log_path.read_text()
            assert "Traceback" not in log, log[log.index("Traceback") - 3000 :]
    finally:
        for daemon in daemons:
            if daemon.running():
                daemon.kill()
        for sock in sockets:
            sock.close()
