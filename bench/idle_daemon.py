"""The idle daemon after a catch-up: memory of all its processes, store writes, STATUS=.

    .venv/bin/python -m bench.idle_daemon [--idle 120] [--at "2018-10-08 09:25"]
        [--tick 60] [--runs 1] [--peer CHECKOUT] [--db sqlite|postgres]

In a fresh folder, with the embedded defaults (SQLite, the file channel) and the clock
set to ``--at`` Beijing time by libfaketime (Debian package ``faketime``; the clock
ticks on from there); with ``--db postgres`` the store is a new schema in the database
``test`` on 127.0.0.1:5432 (as tests/conftest.py's ``pg_url``), dropped afterwards:

1. import the bundled ledger, start `reminder run` with ``NOTIFY_SOCKET`` set, as
   systemd would, and wait for the catch-up to finish (a delivery run logged and
   nothing left pending in the outbox);
2. once no session process runs any more (the catch-up's exits a few seconds after
   its last send; a daemon of one process has none), wait ``--idle`` seconds (the
   issue's target is stated two minutes after a catch-up), counting the ticks, those
   after which the store had changed (SQLite: its files, ledger.db and its WAL;
   PostgreSQL: the rows inserted, updated and deleted in the schema's tables, from
   ``pg_stat_user_tables``, which a backend reports within seconds and when it exits),
   and the STATUS= messages;
3. read the daemon's and each descendant's memory: RSS (VmRSS) and PSS (from
   /proc/PID/smaps_rollup, which shares out the pages that the processes share, so the
   fairer sum), and print them per process and summed; and the CPU time the daemon and
   its sessions that ended used over the idle wait, and how many sessions it started;
4. SIGTERM it.

``--peer CHECKOUT`` runs the same with CHECKOUT's ``.venv/bin/reminder`` (its own
config folder) in the same run, alternating, this checkout first. ``--floor`` prints
instead what importing the daemon's libraries costs, step by step (RSS of a fresh
interpreter of this checkout's venv): the least a process that does the daemon's
work (a session) can hold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
BEIJING = dt.timezone(dt.timedelta(hours=8))


@dataclass
class Notes:
    """What the daemon tells its NOTIFY_SOCKET, read all the time (as systemd does)."""

    sock: socket.socket
    messages: list[tuple[float, str]] = field(default_factory=list)

    def read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def count(self, prefix: str, since: float) -> int:
        return sum(
            1
            for at, message in self.messages
            if at >= since and any(x.startswith(prefix) for x in message.splitlines())
        )


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def memory(pid: int) -> tuple[str, float, float | None]:
    """A process's command line (short), RSS and PSS in MiB (PSS None if unreadable)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    rss = pss = None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return cmdline.strip()[:90], rss or 0.0, pss


def cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process, and of its children that ended."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:13]) / tick, sum(int(x) for x in fields[13:15]) / tick


def sessions_alive(pid: int) -> bool:
    """Whether a session process (``reminder.session``) is below ``pid``, running or
    ended and not yet reaped (its CPU is counted as its parent's when it is)."""
    for child in descendants(pid)[1:]:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"reminder.session" in cmdline or state == "Z":
            return True
    return False


def events(log: Path) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


OWED = "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'retry')"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class SqliteStore:
    """ledger.db in the run's folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = "sqlite:///ledger.db"

    def owed(self) -> int:
        """Messages not yet sent (pending, being sent or to retry), read-only."""
        db = self.folder / "ledger.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return int(con.execute(OWED).fetchone()[0])

    def state(self) -> object:
        return tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(self.folder.glob("ledger.db*"))
            if p.name != "ledger.db.lock"
        )

    def close(self) -> None:
        pass


class PostgresStore:
    """A new schema in the database ``test``, dropped by ``close``."""

    def __init__(self) -> None:
        import psycopg  # noqa: PLC0415 - PostgreSQL runs only

        self.schema = f"bench_idle_{os.urandom(6).hex()}"
        self.url = f"{PG_ADMIN}?options=-csearch_path%3D{self.schema}"
        self.connection = psycopg.connect(PG_ADMIN.replace("+psycopg", ""), autocommit=True)
        self.connection.execute(f'CREATE SCHEMA "{self.schema}"')
        self.connection.execute(f"SET search_path = {self.schema}")

    def owed(self) -> int:
        found = self.connection.execute(OWED).fetchone()
        return int(found[0]) if found else 0

    def state(self) -> object:
        """Rows written to the schema's tables, as the statistics have them now."""
        self.connection.execute("SELECT pg_stat_clear_snapshot()")
        found = self.connection.execute(
            "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables "
            "WHERE schemaname = %s",
            (self.schema,),
        ).fetchone()
        return int(found[0] or 0) if found else 0

    def close(self) -> None:
        self.connection.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        self.connection.close()


def one_run(checkout: Path, at: str, idle_s: float, tick_s: float, db: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="reminder-idle-") as tmp:
        folder = Path(tmp)
        store = SqliteStore(folder) if db == "sqlite" else PostgresStore()
        try:
            return run_in(checkout, at, idle_s, tick_s, folder, store)
        finally:
            store.close()


def run_in(
    checkout: Path,
    at: str,
    idle_s: float,
    tick_s: float,
    folder: Path,
    store: SqliteStore | PostgresStore,
) -> dict[str, object]:
    """Steps 1 to 4 of the module docstring, in ``folder`` on ``store``."""
    reminder = checkout / ".venv" / "bin" / "reminder"
    moment = dt.datetime.fromisoformat(at).replace(tzinfo=BEIJING).astimezone(dt.UTC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
    env |= {
        "REMINDER_CONFIG": str(checkout / "config"),
        "REMINDER_DB": store.url,
        "REMINDER_DAEMON__TICK_S": str(tick_s),
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": f"@{moment:%Y-%m-%d %H:%M:%S}",
        "FAKETIME_DONT_RESET": "1",
        "TZ": "UTC",
    }
    seed = checkout / "data" / "jiyuan-2018-ledger.txt"
    subprocess.run(
        [str(reminder), "import", str(seed)],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    sock, notes = listen(folder / "notify.sock")
    log = folder / "daemon.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(reminder), "run"],
            cwd=folder,
            env=env | {"NOTIFY_SOCKET": str(folder / "notify.sock")},
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        caught_up = wait_catch_up(store, log, process, timeout=300)
        took = time.monotonic() - started
        ended = time.monotonic() + 60  # the catch-up's session exits (none with a peer
        while sessions_alive(process.pid) and time.monotonic() < ended:  # of one process)
            time.sleep(0.1)
        own, children = cpu_s(process.pid)
        sessions_before = count(log, "session_started")
        ticks, wrote, statuses = idle(store, log, notes, idle_s)
        tree = [memory(pid) for pid in descendants(process.pid)]
        own_after, children_after = cpu_s(process.pid)
        idle_cpu = (own_after - own, children_after - children)
        sessions = count(log, "session_started") - sessions_before
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        sock.close()
    if code != 0:
        raise SystemExit(f"exit {code}: {log.read_text()[-2000:]}")
    return {
        "sent": caught_up,
        "catch_up_s": took,
        "tree": tree,
        "idle_ticks": ticks,
        "wrote": wrote,
        "statuses": statuses,
        "idle_cpu_s": idle_cpu,
        "sessions": sessions,
    }


def listen(path: Path) -> tuple[socket.socket, Notes]:
    """systemd's notify socket, read in a thread."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    notes = Notes(sock)
    threading.Thread(target=notes.read, daemon=True).start()
    return sock, notes


def count(log: Path, event: str) -> int:
    return sum(1 for e in events(log) if e["event"] == event)


def idle(
    store: SqliteStore | PostgresStore, log: Path, notes: Notes, idle_s: float
) -> tuple[int, int, int]:
    """Step 2: the ticks in ``idle_s`` seconds, how many of them changed the store
    (looked at after each tick), and the STATUS= sent."""
    since = time.monotonic()
    state, seen, ticks, wrote = store.state(), None, 0, 0
    while time.monotonic() - since < idle_s:
        count = sum(1 for e in events(log) if e["event"] == "tick")
        if seen is not None and count > seen:
            ticks += count - seen
            time.sleep(0.5)  # the tick's delivery run (it finds nothing) ends meanwhile
            now_state = store.state()
            wrote += now_state != state
            state = now_state
        seen = count
        time.sleep(0.2)
    return ticks, wrote, notes.count("STATUS=", since)


def wait_catch_up(
    store: SqliteStore | PostgresStore,
    log: Path,
    process: subprocess.Popen[bytes],
    timeout: float,
) -> int:
    """Wait for a delivery run that sent something and an outbox with nothing owed;
    the number of messages that run sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited: {log.read_text()[-2000:]}")
        delivered = [e for e in events(log) if e["event"] == "delivered"]
        if delivered and store.owed() == 0:
            return sum(int(e["messages"]) for e in delivered)  # type: ignore[call-overload]
        time.sleep(0.2)
    raise SystemExit(f"no catch-up within {timeout} s: {log.read_text()[-2000:]}")


def report(name: str, result: dict[str, object]) -> None:
    tree: list[tuple[str, float, float | None]] = result["tree"]  # type: ignore[assignment]
    rss = sum(r for _, r, _ in tree)
    pss = None if any(p is None for *_, p in tree) else sum(p or 0.0 for *_, p in tree)
    pss_text = f"{pss:.1f}" if pss is not None else "n/a"
    cpu: tuple[float, float] = result["idle_cpu_s"]  # type: ignore[assignment]
    own, children = cpu
    print(
        f"{name}: caught up {result['sent']} messages in {result['catch_up_s']:.1f} s; "
        f"after the idle wait: {len(tree)} processes, RSS {rss:.1f} MiB, PSS {pss_text} MiB; "
        f"{result['idle_ticks']} ticks since, {result['wrote']} of them wrote to the store, "
        f"{result['statuses']} STATUS= sent; CPU while idle: the daemon {own:.2f} s, "
        f"sessions {children:.2f} s ({result['sessions']} started)"
    )
    for cmdline, one_rss, one_pss in tree:
        pss_one = f"{one_pss:6.1f}" if one_pss is not None else "   n/a"
        print(f"    RSS {one_rss:6.1f}  PSS {pss_one}  {cmdline}")


FLOOR_STEPS = [
    ("the interpreter", ""),
    ("+ SQLAlchemy", "import sqlalchemy"),
    ("+ SQLModel (pydantic)", "import sqlmodel"),
    ("+ pydantic-settings", "import pydantic_settings"),
    ("+ click", "import click"),
    ("+ structlog (without rich)", "from reminder.logs import get_logger; get_logger()"),
    ("+ APScheduler", "import apscheduler.schedulers.asyncio"),
    ("+ the store and settings modules", "import reminder.app, reminder.store.models"),
    ("+ the tick and planner", "import reminder.tick"),
    (
        "+ delivery (Jinja2, httpx, aiosmtplib)",
        "from reminder.logs import imports_without_rich\n"
        "with imports_without_rich(): import reminder.delivery",
    ),
    ("+ the daemon (uvloop)", "import reminder.daemon, reminder.loop, uvloop"),
]


def floor() -> None:
    """Each step's RSS in one fresh interpreter, imports in the daemon's order."""
    code = ["import sys", "def rss():", "    for line in open('/proc/self/status'):"]
    code += ["        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024"]
    for name, step in FLOOR_STEPS:
        code += [step, f"print({name!r}, round(rss(), 1), flush=True)"]
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(code)], capture_output=True, text=True, check=True
    )
    print("the idle daemon's floor: RSS after each import, one interpreter")
    for line in done.stdout.splitlines():
        name, _, mib = line.rpartition(" ")
        print(f"  {name:42} {float(mib):6.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=120.0, help="seconds idle after catch-up")
    parser.add_argument("--at", default="2018-10-08 09:25", help="Beijing time at start")
    parser.add_argument("--tick", type=float, default=60.0, help="[daemon] tick_s")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--peer", type=Path, help="another checkout, run alternating")
    parser.add_argument("--floor", action="store_true", help="what the imports cost, only")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    if args.floor:
        floor()
        return
    if not FAKETIME.exists():
        raise SystemExit(f"needs {FAKETIME}: apt-get install faketime")
    checkouts = [("this", ROOT)] + ([("peer", args.peer.resolve())] if args.peer else [])
    print(
        f"load {os.getloadavg()[0]:.2f}; at {args.at} Beijing; idle {args.idle:.0f} s;"
        f" store {args.db}"
    )
    for number in range(1, args.runs + 1):
        for name, checkout in checkouts:
            report(
                f"run {number} {name} ({checkout})",
                one_run(checkout, args.at, args.idle, args.tick, args.db),
            )
            sys.stdout.flush()
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
