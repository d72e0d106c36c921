"""Several daemons on one PostgreSQL database: throughput, and failover after kill -9.

    .venv/bin/python -m bench.fleet [-n 5000] [--daemons 3] [--kill-at 0.3]

Needs smtp-sink (Debian package postfix, see BENCH.md) and the machine's PostgreSQL
(127.0.0.1:5432, user postgres, database ``test``: a fresh schema each round, dropped
after). Each round imports the seed, fills the outbox with ``-n`` due letters (as
bench.delivery does; every task then marked done, so the daemons' own ticks add
nothing), and starts `reminder run` processes with the shipped settings (lease 20 s)
but a tick of 1 s, sending into one smtp-sink that writes each message to a file:

1. one daemon: seconds from its start until nothing is owed, and e-mails per second;
2. ``--daemons`` daemons started together: the same;
3. ``--daemons`` daemons, and once the sink has counted ``--kill-at`` of the messages,
   SIGKILL to one daemon's whole process group (as systemd kills a unit): the rows in
   ``sending`` at that moment whose lease then never moves are the dead daemon's; the
   seconds from the kill until the last of them is sent (by the others), until nothing
   is owed, and the duplicates (Message-IDs the sink got twice; each such copy carries
   its twin's Message-ID, which is derived from the message's key).

The daemons' start-up (~2 s: a supervisor, then a session) is inside the times of 1 and 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg

from bench.delivery import fill_outbox, free_port

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REMINDER = Path(sys.executable).with_name("reminder")
ROOT = Path(__file__).resolve().parent.parent
FROM = "duban@example.org"  # the shipped [smtp] from_address: in each Message-ID
OWED = "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'retry')"


class Round:
    """A schema with the seed and ``n`` due letters, a dumping smtp-sink, the daemons."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder = folder
        self.schema = f"bench_fleet_{os.urandom(5).hex()}"
        self.admin = psycopg.connect(ADMIN, autocommit=True)
        self.admin.execute(f'CREATE SCHEMA "{self.schema}"')
        self.admin.execute(f"SET search_path = {self.schema}")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{self.schema}"
        fill_outbox(self.url, n, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        self.admin.execute("UPDATE task SET status = 'done'")
        self.dump = folder / self.schema
        self.dump.mkdir()
        self.port = free_port()
        self.sink = subprocess.Popen(
            [
                "smtp-sink",
                "-u",
                "nobody",
                "-d",
                f"{self.dump}/%M.",
                f"127.0.0.1:{self.port}",
                "512",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.chmod(self.dump, 0o777)  # smtp-sink writes as nobody
        self.daemons: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
        env |= {
            "REMINDER_CONFIG": str(ROOT / "config"),
            "REMINDER_DB": self.url,
            "REMINDER_SMTP__HOST": "127.0.0.1",
            "REMINDER_SMTP__PORT": str(self.port),
            "REMINDER_SMTP__TLS": "none",
            "REMINDER_DAEMON__TICK_S": "1",
            "REMINDER_LOG_LEVEL": "warning",
        }
        for i in range(count):
            log = (self.folder / f"{self.schema}-{i}.log").open("wb")
            self.daemons.append(
                subprocess.Popen(
                    [str(REMINDER), "run"],
                    cwd=self.folder,
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )

    def owed(self) -> int:
        found = self.admin.execute(OWED).fetchone()
        return int(found[0]) if found else 0

    def sent_to_sink(self) -> int:
        return sum(1 for _ in self.dump.iterdir())

    def ids(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for path in self.dump.iterdir():
            head = path.read_bytes()[:4096].decode(errors="replace")
            match = re.search(r"^Message-ID:\s*(\S+)", head, re.MULTILINE | re.IGNORECASE)
            if match:
                found[match.group(1)] += 1
        return found

    def letter_ids(self) -> set[str]:
        """The Message-IDs of the letters queued (derived from their keys)."""
        from reminder.channels.mime import message_id  # noqa: PLC0415

        rows = self.admin.execute("SELECT key FROM outbox WHERE key LIKE 'letter:%'")
        return {message_id(key, FROM) for (key,) in rows.fetchall()}

    def close(self) -> None:
        for process in self.daemons:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
        self.sink.send_signal(signal.SIGTERM)
        self.sink.wait(timeout=10)
        self.admin.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        self.admin.close()


def until_sent(round_: Round, timeout: float = 900) -> float:
    started = time.monotonic()
    while round_.owed():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not sent within {timeout} s")
        time.sleep(0.2)
    return time.monotonic()


def throughput(folder: Path, n: int, daemons: int) -> None:
    round_ = Round(folder, n)
    try:
        started = time.monotonic()
        round_.start(daemons)
        seconds = until_sent(round_) - started
        print(
            f"{daemons} daemon(s): {n} e-mails in {seconds:.1f} s from start,"
            f" {n / seconds:.0f}/s; at the sink {round_.sent_to_sink()}; load {load()}",
            flush=True,
        )
    finally:
        round_.close()


def held(round_: Round) -> dict[int, dt.datetime]:
    rows = round_.admin.execute("SELECT id, lease_until FROM outbox WHERE status = 'sending'")
    return dict(rows.fetchall())


def failover(folder: Path, n: int, daemons: int, kill_at: float) -> None:
    round_ = Round(folder, n)
    try:
        round_.start(daemons)
        while (sent_at_kill := round_.sent_to_sink()) < n * kill_at:
            time.sleep(0.05)
        victim = round_.daemons[0]
        killed = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        at_kill = held(round_)
        time.sleep(8)  # the survivors renew theirs within a third of the lease
        theirs = {i: lease for i, lease in held(round_).items() if at_kill.get(i) == lease}
        while True:
            ids = list(theirs)
            left = round_.admin.execute(
                "SELECT count(*) FROM outbox WHERE id = ANY(%s) AND status <> 'sent'", (ids,)
            ).fetchone()
            if not left or not left[0]:
                break
            time.sleep(0.1)
        taken = time.monotonic() - killed
        done = until_sent(round_) - killed
        letters = round_.letter_ids()
        received = Counter({i: c for i, c in round_.ids().items() if i in letters})
        twins = sum(c - 1 for c in received.values())
        print(
            f"kill -9 of 1 of {daemons} daemons at {sent_at_kill} sent: it held"
            f" {len(theirs)} rows; all of them sent {taken:.1f} s after the kill, nothing"
            f" owed after {done:.1f} s; {twins} duplicates; {len(letters - set(received))}"
            f" of the {len(letters)} letters lost; load {load()}",
            flush=True,
        )
    finally:
        round_.close()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=0.3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {load()}; {args.n} letters a round", flush=True)
    with tempfile.TemporaryDirectory(prefix="reminder-fleet-") as name:
        folder = Path(name)
        os.chmod(folder, 0o755)
        throughput(folder, args.n, 1)
        throughput(folder, args.n, args.daemons)
        failover(folder, args.n, args.daemons, args.kill_at)


if __name__ == "__main__":
    main()
