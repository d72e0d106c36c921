"""sd_notify and the single-daemon lock: the daemon's contract with systemd.

``notify("READY=1")`` sends a datagram to ``$NOTIFY_SOCKET`` (an abstract socket when it
starts with ``@``), as libsystemd's ``sd_notify`` does; without the variable it does
nothing. The watchdog interval is half of ``$WATCHDOG_USEC`` (when ``$WATCHDOG_PID`` is
unset or names this process), so a loop that hangs stops the pings and systemd restarts
the service.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from reminder.errors import AlreadyRunningError


def notify(*states: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


class DaemonLock:
    """One daemon per SQLite file: an exclusive lock on ``<file>.lock`` held while it runs."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            store = self.path.with_suffix("")
            raise AlreadyRunningError(
                f"another reminder daemon (pid {holder}) is running on {store}; "
                "only one may use an SQLite store (use PostgreSQL for several)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
