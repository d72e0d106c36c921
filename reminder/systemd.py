"""sd_notify and the single-daemon lock: the daemon's contract with systemd.

``notify("READY=1")`` sends a datagram to ``$NOTIFY_SOCKET`` (an abstract socket when it
starts with ``@``), as libsystemd's ``sd_notify`` does; without the variable it does
nothing. It never blocks: it is called from the event loop, and a reader that went away
or fell behind (a full queue) must not stop the loop that handles SIGTERM, so a message
that cannot be queued at once is dropped (systemd reads a later one).

The watchdog interval is half of ``$WATCHDOG_USEC`` (when ``$WATCHDOG_PID`` is unset or
names this process), so a loop that hangs stops the pings and systemd restarts the
service.
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import suppress
from pathlib import Path
from typing import IO

from reminder.errors import AlreadyRunningError, StoreError
from reminder.logs import get_logger


def notify(*states: str) -> bool:
    """Send ``states`` to systemd without blocking; False if nothing was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send("\n".join(states).encode())
    except BlockingIOError:  # EAGAIN: the reader's queue is full
        get_logger().debug("notify_dropped", states=states[0].split("=", 1)[0])
        return False
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
        """Take the lock and write this process's id into its file; a file that cannot
        be written (a full disk, a read-only folder) is a ``StoreError``, on one line."""
        try:
            self._acquire()
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot take the daemon's lock: {exc.strerror or exc}"
            ) from None

    def _acquire(self) -> None:
        while True:
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
            if self._still_there(handle):
                break
            handle.close()  # locked a file its daemon removed as it stopped: open anew
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError:
            handle.close()
            raise
        self._handle = handle

    @classmethod
    def adopt(cls, path: Path, fd: int) -> DaemonLock:
        """The lock a process held before it became this one (``exec``: the descriptor,
        and with it the lock, was inherited)."""
        lock = cls.__new__(cls)
        lock.path = path
        lock._handle = os.fdopen(fd, "a+", encoding="utf-8")
        return lock

    def handover(self) -> int:
        """The descriptor that holds the lock, kept open across ``exec``."""
        assert self._handle is not None
        fd = self._handle.fileno()
        os.set_inheritable(fd, True)
        return fd

    def _still_there(self, handle: IO[str]) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Unlock and remove the file. Removed while still locked, so that a daemon that
        starts meanwhile either finds it locked (and is refused) or opens a new file,
        never one that is about to go away unlocked."""
        if self._handle is not None:
            with suppress(FileNotFoundError):
                self.path.unlink()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
