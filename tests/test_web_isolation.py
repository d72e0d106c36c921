"""The web never holds up the daemon: separate processes on one store, the web flooded
with reads and writes while the daemon sends a busy Monday, then killed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import SEED, Cli
from tests.web_server import CSRF, bind

REMINDER = str(Path(sys.executable).with_name("reminder"))


def letters_on(db: Path, day: str) -> int:
    with sqlite3.connect(db) as con:
        (count,) = con.execute(
            "SELECT count(*) FROM outbox WHERE kind = 'letter' AND status = 'sent' AND key LIKE ?",
            (f"%:{day}:%",),
        ).fetchone()
    return int(count)


def run_once(moment: str) -> subprocess.CompletedProcess[str]:
    """The daemon's work of one moment, in a process of its own."""
    return subprocess.run(
        [REMINDER, "run", "--once", "--at", moment],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_flooded_or_killed_web_leaves_reminders_going_out(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = bind(monkeypatch)
    port.socket.close()  # the web process binds it
    assert cli("import", str(SEED)).code == 0
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    db = isolated_env / "ledger.db"
    with sqlite3.connect(db) as con:
        links = [
            json.loads(payload)["link"]
            for (payload,) in con.execute(
                "SELECT payload FROM outbox WHERE kind = 'letter' AND channel = 'email'"
            )
        ]
    expected = {
        i["letter"] for i in json.loads(cli("plan", "--at", "2018-10-15 09:30", "--json").out)
    }
    web = subprocess.Popen(
        [REMINDER, "web"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    answered: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{port.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the web did not start"
            time.sleep(0.1)

        def flood(link: str) -> None:
            path = "/" + link.split("/", 3)[3]
            with httpx.Client(base_url=port.url, timeout=30) as client:
                while not stop.is_set():
                    page = client.get(path)
                    answered.append(page.status_code)
                    found = CSRF.search(page.text)
                    number = page.text.split('id="task-', 1)[1].split('"', 1)[0]
                    if found:
                        posted = client.post(
                            f"{path}/task/{number}/progress",
                            data={"csrf": found.group(1), "note": "压力测试"},
                        )
                        answered.append(posted.status_code)

        with ThreadPoolExecutor(8) as pool:
            for link in links[:8]:
                pool.submit(flood, link)
            time.sleep(1)
            busy = run_once("2018-10-15 09:30")
            stop.set()
        assert busy.returncode == 0, busy.stderr
        assert letters_on(db, "2018-10-15") == len(expected) > 50, "a letter did not go out"
        assert answered.count(200) > 10, "the web was not flooded"
        assert 500 not in answered
    finally:
        stop.set()
        web.send_signal(signal.SIGKILL)
        web.wait(10)
    # the web gone by kill -9: the daemon goes on
    expected = {
        i["letter"] for i in json.loads(cli("plan", "--at", "2018-10-22 09:30", "--json").out)
    }
    after = run_once("2018-10-22 09:30")
    assert after.returncode == 0, after.stderr
    assert letters_on(db, "2018-10-22") == len(expected) > 50
