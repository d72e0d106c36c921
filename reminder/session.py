"""A session: the daemon's work, in a process that exits once nothing is due.

The supervisor (``reminder.supervisor``) starts one for the catch-up, and later when
something may be due. It is the daemon (``reminder.daemon.Daemon``: the same jobs,
delivery, leases, reloads and stop), run until it has nothing left to do now:

1. Stop when the supervisor does (``PR_SET_PDEATHSIG``: SIGTERM, as systemd would send).
2. Build the runtime from the configuration the supervisor hands on (accepted at the
   start or the last reload); reload first if the supervisor was sent SIGHUP. A state
   this code cannot read (the package was upgraded under the daemon) is logged
   (``state_unreadable``) and the configuration loaded and checked as at a start.
3. Start the daemon's jobs (a tick every ``tick_s``, the digest's cron, the watchdog),
   run the reports and a tick at once, and let the delivery run they ask for end.
4. Ask when a tick could next find work (``reminder.wake.next_wake``); if that moment
   has come (something fell due meanwhile), tick once more and go back to 3's end.
5. Stop as the daemon stops, close the store, and hand back (into the descriptor the
   supervisor gave): the next wake, the store files' state as it was before 4's last
   look, and the state for the next session (the configuration, the last tick's
   record).
Errors: a ``ReminderError`` is one line on stderr and the error's exit code, as every
command says it; a job's failure is logged and does not end the session.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import json
import os
import pickle
import signal
import sys
from typing import TYPE_CHECKING, Any

from reminder.errors import ReminderError
from reminder.supervisor import FileState, store_files

if TYPE_CHECKING:
    from reminder.daemon import Daemon
    from reminder.store.db import Store

PR_SET_PDEATHSIG = 1
EARLY_HANGUPS: list[int] = []  # SIGHUPs that came before the daemon's handlers were set


def hold_signals() -> None:
    """Until the daemon's handlers are set (``Daemon.start``): a SIGHUP is kept for then,
    SIGINT (a terminal's Ctrl-C, which the supervisor gets too and passes on as SIGTERM)
    is ignored."""
    signal.signal(signal.SIGHUP, lambda signum, frame: EARLY_HANGUPS.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def die_with_parent(parent: int) -> None:
    """SIGTERM when the supervisor ends (Linux), or exit now if it has already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM only
        pass
    if os.getppid() != parent:
        sys.exit(0)


async def work(orders: dict[str, Any], given: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Steps 2 to 5; what to hand back (the header and the state)."""
    store, daemon = _daemon(given)
    if orders.get("reload"):
        await daemon.reload()
    settings = daemon.runtime.settings
    started = daemon.clock()
    scheduler, watchdog = daemon.start(
        first_tick=started + dt.timedelta(seconds=settings.daemon.tick_s)
    )
    while EARLY_HANGUPS:  # a SIGHUP while this process started: answered now
        EARLY_HANGUPS.pop()
        await daemon.reload()
        daemon.hangups_answered += 1
    if orders.get("first"):
        daemon.look_around(started)
    loop = asyncio.get_running_loop()
    settling = loop.create_task(settle(daemon))
    stopping = loop.create_task(daemon.stopping.wait())
    await asyncio.wait({settling, stopping}, return_when=asyncio.FIRST_COMPLETED)
    wake, files = (None, None)  # None: the supervisor's next tick starts another session
    if settling.done() and not settling.cancelled():
        failure = settling.exception()
        if failure is None:
            wake, files = settling.result()
        elif isinstance(failure, Exception):  # the store went away, a bug: said, not lost
            daemon.failed("wake_failed", failure)
    daemon.stopping.set()  # the session ends: as a stop, without saying so
    await daemon.wind_down(scheduler, (settling, stopping, watchdog))  # type: ignore[arg-type]
    store.dispose()
    return _handback(daemon, wake, files)


def _daemon(given: dict[str, Any]) -> tuple[Store, Daemon]:
    """The store and the daemon of this session, from the state its supervisor gave."""
    from reminder.clock import now  # noqa: PLC0415 - after the parent check
    from reminder.daemon import Daemon  # noqa: PLC0415
    from reminder.logs import get_logger  # noqa: PLC0415
    from reminder.runtime import Runtime  # noqa: PLC0415
    from reminder.settings import load_config  # noqa: PLC0415
    from reminder.store.db import open_store  # noqa: PLC0415

    try:
        loaded = pickle.loads(given["accepted"])  # our own bytes, from our supervisor
    except Exception as error:  # the package was upgraded under a running daemon
        get_logger().warning("state_unreadable", error=f"{type(error).__name__}: {error}")
        store = open_store(load_config().settings.db, schema="check")
        runtime = Runtime.load(store, now)  # as at a start
    else:
        store = open_store(loaded.settings.db, schema="check")
        runtime = Runtime.of(store, given["accepted"], now, loaded)
    daemon = Daemon(store, runtime, now)
    for key in ("last_tick", "saved_tick"):
        setattr(daemon, key, given.get(key, {}))
    daemon.delivered.update(given.get("delivered", {}))
    return store, daemon


def _handback(
    daemon: Daemon, wake: dt.datetime | None, files: FileState | None
) -> tuple[dict[str, Any], bytes]:
    """What the supervisor reads of an ended session: the header and the state."""
    settings = daemon.runtime.settings
    header = {
        "next_wake": wake.timestamp() if wake is not None else None,
        "files": files,
        "tick_s": settings.daemon.tick_s,
        "stop_timeout_s": settings.daemon.stop_timeout_s,
        "hangups": daemon.hangups_answered,
    }
    state = {
        "accepted": daemon.runtime.accepted,
        "last_tick": daemon.last_tick,
        "saved_tick": daemon.saved_tick,
        "delivered": dict(daemon.delivered),
    }
    return header, pickle.dumps(state)


async def settle(daemon: Daemon) -> tuple[dt.datetime, FileState | None]:
    """Steps 3 (from the reports on) and 4: the next wake, once nothing is due now, and
    the store files' state as it was just before it was computed (after this session's
    last write: a write after it changes the state, which the supervisor sees)."""
    from reminder.daemon import sqlite_file  # noqa: PLC0415 - with the daemon's imports
    from reminder.wake import next_wake  # noqa: PLC0415

    await daemon.reports()
    await daemon.tick()
    for round_ in range(2):
        while True:  # the delivery run and any reload end first
            busy = [t for t in (daemon.sending, *daemon.reloads) if t and not t.done()]
            if not busy:
                break
            await asyncio.wait(busy)
        async with daemon.busy:
            if daemon.sending is not None and not daemon.sending.done():
                continue
            runtime = daemon.runtime
            files = store_files(sqlite_file(runtime.settings.db))
            moment = daemon.clock()
            wake: dt.datetime = next_wake(
                daemon.store, runtime.planning, runtime.settings, moment, daemon.saved_tick
            )
            if wake > moment:
                return wake, files
            if round_ == 0:  # it fell due meanwhile (or is held): once more
                daemon.tick_at(moment)
    # still due after a second tick (a tick that fails, a lease held elsewhere): the
    # supervisor's next tick starts another session
    return daemon.clock() + dt.timedelta(seconds=daemon.runtime.settings.daemon.tick_s), None


def main() -> None:
    hold_signals()
    orders = json.loads(os.environ["REMINDER_SESSION"])
    die_with_parent(int(orders["supervisor"]))
    from reminder import logs  # noqa: PLC0415 - after the parent check
    from reminder.loop import run_async  # noqa: PLC0415

    logs.configure(to_stdout=True, level=os.environ.get("REMINDER_LOG_LEVEL", "info"), force=True)
    given = pickle.loads(sys.stdin.buffer.read())
    try:
        with logs.imports_without_rich():  # httpx's CLI: see reminder/logs.py
            import reminder.daemon  # noqa: F401, PLC0415
        header, state = run_async(work(orders, given))
    except ReminderError as exc:
        print(f"错误/Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    with os.fdopen(int(orders["result_fd"]), "wb") as out:
        out.write(json.dumps(header).encode() + b"\n" + state)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
