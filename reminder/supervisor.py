"""The daemon's lasting process: it schedules, and starts a session when there is work.

`reminder run` loads and checks the configuration, takes the single-daemon lock, then
becomes this module (``exec``: the same process id, which systemd knows as the service's
main process, the lock's descriptor inherited). Its imports are the standard library
and structlog, a fifth of the daemon's: the work itself (the tick, delivery, digests,
with SQLAlchemy, pydantic, Jinja2, the SMTP and HTTP clients) runs in a session process,
``reminder.session``, which exits once nothing is due, taking that memory with it.

1. Tell systemd READY=1; start a session at once (the catch-up).
2. Every ``tick_s``, with no session running: start one if the moment the last session
   gave (``reminder.wake.next_wake``) has come, or the SQLite store's files changed
   since it looked (someone wrote: an import, `done`, `retry`, an answer on the web),
   or, on PostgreSQL, someone else's write was notified (``reminder.listener``: one
   connection that LISTENs; the sessions connect as ``reminder-session``, whose writes
   notify nobody); else log an idle tick and sleep on.
3. A session gets what the last one handed back, through a memfd: the configuration
   accepted at the start or the last reload, and the last tick's record (so an idle
   tick neither writes nor tells). Its NOTIFY_SOCKET is this process's relay, which
   passes on what it says (STATUS=, WATCHDOG=1: once a session's event loop feeds the
   watchdog, this process stops feeding it until the session ends, so a session that
   hangs stops the pings). It dies with this process (``PR_SET_PDEATHSIG``: SIGTERM, so
   it stops as a daemon stops).
4. SIGHUP: a running session reloads itself; else a session starts and reloads (one
   that fails keeps the accepted configuration, as the daemon always did).
5. SIGTERM/SIGINT: STOPPING=1; a running session gets SIGTERM and stops as the daemon
   stops (in-flight sends finish within ``stop_timeout_s``, the rest is left to its
   leases); past ``stop_timeout_s`` and a grace it is killed. Exit 0.
A session that fails (exits non-zero) is logged, and the next tick starts another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from reminder import logs
from reminder.listener import SESSION_NAME, Listener
from reminder.systemd import DaemonLock, notify, watchdog_interval_s

FileState = list[list[Any]]
LISTEN_WAIT_S = 15.0  # PostgreSQL: how long the first session waits for the listening
STOP_GRACE_S = 5.0  # past stop_timeout_s: how long a session may take to exit
SESSION_ENV = "REMINDER_SESSION"  # the session's orders (JSON)


def store_files(database: Path | None) -> FileState | None:
    """The SQLite file's and its WAL's state (suffix, inode, size, mtime): any commit
    changes it. None without a file to look at (PostgreSQL)."""
    if database is None:
        return None
    state: FileState = []
    for suffix in ("", "-wal"):
        try:
            found = os.stat(database.with_name(database.name + suffix))
        except FileNotFoundError:
            continue
        state.append([suffix, found.st_ino, found.st_size, found.st_mtime_ns])
    return state


# sessions failed in a row before the supervisor exits (EX_SOFTWARE) for a restart
FAILING_SESSIONS = 3
EX_SOFTWARE = 70


class Supervisor:
    def __init__(self, orders: dict[str, Any], state: bytes) -> None:
        self.log = logs.get_logger()
        self.tick_s = float(orders["tick_s"])
        self.stop_timeout_s = float(orders["stop_timeout_s"])
        self.database = Path(orders["sqlite"]) if orders.get("sqlite") else None
        self.listener: Listener | None = None
        if orders.get("dsn_fd") is not None:  # PostgreSQL
            with os.fdopen(orders["dsn_fd"], "rb") as given:
                dsn = given.read().decode()
            self.listener = Listener(dsn, self.log, retry_s=self.tick_s)
        self.state = state  # opaque: what the last session handed back
        self.next_wake: float | None = None  # epoch seconds; None: at once
        self.ended_at = 0.0  # when the last session ended (epoch seconds)
        self.files: FileState | None = None
        self.stopping = asyncio.Event()
        self.woken = asyncio.Event()  # a signal came: look again before the next tick
        self.reload = False
        self.session: asyncio.subprocess.Process | None = None
        self.relay = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.relay_name = f"@reminder-{os.getpid()}-{os.urandom(6).hex()}"
        self.relay.bind("\0" + self.relay_name[1:])
        self.relay.setblocking(False)
        self.sessions = 0
        self.hangups_sent = 0  # to the running session
        self.session_pings = asyncio.Event()  # the running session feeds the watchdog
        self.interval: float | None = None  # the watchdog's, None without one
        self.failures = 0  # sessions failed in a row
        self.code = 0  # the supervisor's exit status

    # --- signals -------------------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            self.log.info("stopping", signal=signal.Signals(signum).name)
            notify("STOPPING=1")
            self.stopping.set()
            self.woken.set()
            self._signal_session(signal.SIGTERM)

    def hangup(self) -> None:
        if self.session is not None and self.session.returncode is None:
            self._signal_session(signal.SIGHUP)  # the session reloads itself …
            self.hangups_sent += 1  # … or, if it ended first, the next one does
        else:
            self.reload = True
            self.woken.set()

    def _signal_session(self, signum: int) -> None:
        if self.session is not None and self.session.returncode is None:
            with suppress(ProcessLookupError):
                self.session.send_signal(signum)

    def _relay(self) -> None:
        """What a session tells systemd, passed on (its READY=1 and STOPPING=1 too: it
        sends neither)."""
        while True:
            try:
                data = self.relay.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            told = data.decode(errors="replace")
            if "WATCHDOG=1" in told.splitlines():
                self.session_pings.set()
            notify(told)

    # --- the loop ------------------------------------------------------------------

    async def run(self) -> int:
        """Steps 1, 2 and 5 of the module docstring."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self.hangup)
        loop.add_reader(self.relay.fileno(), self._relay)
        notify("READY=1", "STATUS=started")
        self.log.info("started", pid=os.getpid(), sqlite=self.database is not None)
        watcher = self.hold_wal()
        await self.listen()
        interval = self.interval = watchdog_interval_s()
        next_tick = loop.time()
        reason: str | None = "catch_up"
        while not self.stopping.is_set():
            if reason is not None:
                await self.run_session(reason)
                next_tick = max(next_tick, loop.time())
            if self.stopping.is_set():
                break
            reason = await self.wait_tick(next_tick, interval)
            while next_tick <= loop.time():
                next_tick += self.tick_s
        self.relay.close()
        if watcher is not None:
            watcher.close()
        if self.listener is not None:
            await self.listener.stop()
        self.log.info("stopped")
        return self.code

    def hold_wal(self) -> sqlite3.Connection | None:
        """A connection that has read the SQLite store once and stays open, reading
        nothing more: a session that closes its own is then never the last one, so its
        close neither checkpoints nor removes the WAL, and the files' state changes only
        when someone writes."""
        if self.database is None:
            return None
        watcher = sqlite3.connect(self.database)
        watcher.execute("PRAGMA data_version").fetchone()
        return watcher

    async def listen(self) -> None:
        """PostgreSQL: listen before the first session, so that no write between its
        start and the listening goes unheard (a failure is said, and the sessions go on)."""
        if self.listener is None:
            return
        self.listener.start()
        with suppress(TimeoutError):
            await asyncio.wait_for(self.listener.attempted.wait(), timeout=LISTEN_WAIT_S)

    async def wait_tick(self, at: float, interval: float | None) -> str | None:
        """Sleep until ``at`` (pinging the watchdog) or a signal; then whether a session
        must start, and why (None: an idle tick)."""
        loop = asyncio.get_running_loop()
        if self.next_wake is not None and self.next_wake > time.time():  # e.g. the digest:
            at = min(at, loop.time() + self.next_wake - time.time())  # on time, not a tick late
        while not self.woken.is_set() and loop.time() < at:
            if interval:
                notify("WATCHDOG=1")
            wait = at - loop.time() if not interval else min(interval, at - loop.time())
            with suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), timeout=max(0.0, wait))
        self.woken.clear()
        if self.stopping.is_set():
            return None
        if self.reload:
            self.reload = False
            return "reload"
        if loop.time() < at:  # woken for nothing
            return await self.wait_tick(at, interval)
        now = time.time()
        files = store_files(self.database)  # None on PostgreSQL: the listener hears
        if self.next_wake is None or now >= self.next_wake:
            return "due"
        if now < self.ended_at - 1:  # the clock went back: the wake moment means nothing
            return "clock_changed"
        if self.listener is not None and self.listener.changed:
            return "store_changed"
        if files != self.files:
            return "store_changed"
        self.log.info("tick", work=False, next_wake=_iso(self.next_wake))
        return None

    async def run_session(self, reason: str) -> None:
        """Step 3: one session, to its end."""
        self.sessions += 1
        first = self.sessions == 1
        self.hangups_sent = 0
        orders = {"reload": reason == "reload", "first": first, "supervisor": os.getpid()}
        given = os.memfd_create("reminder-state", 0)
        handed = os.memfd_create("reminder-result", 0)
        try:
            os.write(given, self.state)
            os.lseek(given, 0, os.SEEK_SET)
            env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
            env |= {
                "NOTIFY_SOCKET": self.relay_name,
                SESSION_ENV: json.dumps(orders | {"result_fd": handed}),
                "PGAPPNAME": SESSION_NAME,  # PostgreSQL: its writes notify nobody
            }
            if self.listener is not None:
                self.listener.session_started()
            self.session = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "reminder.session",
                stdin=given,
                env=env,
                pass_fds=(handed,),
            )
            self.log.info("session_started", pid=self.session.pid, reason=reason)
            code = await self._wait_session()
            self.session = None
            self.ended_at = time.time()
            self._ended(code, os.pread(handed, os.fstat(handed).st_size, 0))
        finally:
            os.close(given)
            os.close(handed)

    async def _feed_until_the_session_does(self) -> None:
        """The watchdog fed while a session starts (its imports take a second or more),
        until its own event loop does: a session that hangs then stops the pings."""
        while self.interval and not self.session_pings.is_set():
            notify("WATCHDOG=1")
            with suppress(TimeoutError):
                await asyncio.wait_for(self.session_pings.wait(), timeout=self.interval)

    async def _wait_session(self) -> int:
        assert self.session is not None
        self.session_pings.clear()
        feeding = asyncio.ensure_future(self._feed_until_the_session_does())
        try:
            return await self._session_end()
        finally:
            feeding.cancel()

    async def _session_end(self) -> int:
        assert self.session is not None
        waiting = asyncio.ensure_future(self.session.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not waiting.done():  # stopping
            # (again, if a stop came while the session was being started: it stops once)
            self._signal_session(signal.SIGTERM)
            done, _ = await asyncio.wait({waiting}, timeout=self.stop_timeout_s + STOP_GRACE_S)
            if not done:
                self.log.warning("session_killed", pid=self.session.pid)
                self._signal_session(signal.SIGKILL)
        return await waiting

    def _give_up(self) -> None:
        """Sessions keep failing (a secret file gone, a package upgraded under the daemon):
        exit non-zero rather than feed the watchdog of a daemon that sends nothing, so
        that systemd restarts it (a start that fails says why, exit 78) and the failure
        shows in `systemctl status`."""
        message = f"{self.failures} sessions in a row failed: stopping for a restart"
        self.log.error("sessions_failing", failures=self.failures, error=message)
        notify(f"STATUS={message}", "STOPPING=1")
        self.code = EX_SOFTWARE
        self.stopping.set()
        self.woken.set()

    def _ended(self, code: int, result: bytes) -> None:
        """What a session handed back: the next state, when to wake, the files' state."""
        if code != 0 or not result:
            if not self.stopping.is_set():
                self.log.error("session_failed", code=code)
                self.next_wake = None  # the next tick tries again
                self.reload = self.reload or self.hangups_sent > 0
                self.failures += 1
                if self.failures >= FAILING_SESSIONS:
                    self._give_up()
            return
        self.failures = 0
        header, _, state = result.partition(b"\n")
        told = json.loads(header)
        if self.hangups_sent > told["hangups"]:  # one came as it ended: reload next
            self.reload = True
            self.woken.set()
        self.state = state
        self.next_wake = told["next_wake"]
        self.files = told["files"]
        self.tick_s = float(told["tick_s"])
        self.stop_timeout_s = float(told["stop_timeout_s"])


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def main() -> None:
    """``python -m reminder.supervisor ORDERS``: ORDERS (JSON) names the lock's path and
    descriptor, the descriptor of the first state, ``tick_s``, ``stop_timeout_s``, the
    SQLite file (or null) and, on PostgreSQL, the descriptor to read the libpq
    connection string from (``dsn_fd``: not on the command line, which anyone may read)."""
    orders = json.loads(sys.argv[1])
    logs.configure(to_stdout=True, level=os.environ.get("REMINDER_LOG_LEVEL", "info"), force=True)
    lock = None
    if orders.get("lock_fd") is not None:
        lock = DaemonLock.adopt(Path(orders["lock_path"]), orders["lock_fd"])
    with os.fdopen(orders["state_fd"], "rb") as given:
        state = given.read()
    try:
        code = asyncio.run(Supervisor(orders, state).run())
    finally:
        if lock is not None:
            lock.release()
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
