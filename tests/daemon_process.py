"""The real daemon as a subprocess, with a fake systemd notify socket to talk to."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(sys.executable).with_name("reminder")


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; collects what the daemon says.

    A thread reads it all the time, as systemd does: a socket read only while a test
    waits on it would fill up and drop (or, before notify() stopped blocking, hang)
    what the daemon says meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.arrived = threading.Condition()
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.closing.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.arrived:
                self.messages.append(data.decode())
                self.arrived.notify_all()

    def wait_for(self, line: str, timeout: float = 30.0) -> bool:
        """Wait until a datagram has a line that starts with ``line``."""
        with self.arrived:
            return self.arrived.wait_for(lambda: self._seen(line), timeout=timeout)

    def _seen(self, line: str) -> bool:
        return any(x.startswith(line) for m in self.messages for x in m.splitlines())

    def seen(self, line: str) -> bool:
        with self.arrived:
            return self._seen(line)

    def lines(self, prefix: str) -> list[str]:
        with self.arrived:
            return [x for m in self.messages for x in m.splitlines() if x.startswith(prefix)]

    def close(self) -> None:
        self.closing.set()
        self.reader.join(5)
        self.sock.close()


def full_socket(path: Path) -> socket.socket:
    """A datagram socket nobody reads, its queue filled: a sender gets EAGAIN (or, if
    it blocks, waits for ever)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as writer:
        writer.setblocking(False)
        writer.connect(str(path))
        try:
            for _ in range(100_000):
                writer.send(b"WATCHDOG=1")
        except BlockingIOError:
            return sock
    raise AssertionError("the socket's queue did not fill")


class Daemon:
    """`reminder run` in ``cwd`` with ``env``; its stdout (JSON logs) goes to a file."""

    def __init__(self, cwd: Path, env: dict[str, str], name: str = "daemon") -> None:
        self.cwd = cwd
        self.env = env
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SCRIPT), "run"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: see ``kill``
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; the exit code."""
        assert self.process is not None
        self.signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to the daemon and its helper processes (render workers, forkserver), as
        systemd kills a unit's whole cgroup: they would otherwise outlive the test."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """The log's events so far: its whole lines (the daemon may be writing the last
        one, cut anywhere, even inside a character)."""
        written = self.log_path.read_bytes()
        whole = written[: written.rfind(b"\n") + 1].decode("utf-8")
        found = []
        for line in whole.splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def wait_event(self, name: str, count: int = 1, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for e in self.events() if e["event"] == name) >= count:
                return True
            if not self.running():
                return False
            time.sleep(0.05)
        return False

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running():
            self.kill()


def run_until_exit(
    folder: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`reminder ARGS` (default: `reminder run`, expected to refuse to start) in
    ``folder`` with ``env``, run to its end; its output captured."""
    return subprocess.run(
        [str(SCRIPT), *(args or ("run",))],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def daemon_env(**extra: str) -> dict[str, str]:
    """The test's environment (REMINDER_* from the fixtures) plus ``extra``."""
    return dict(os.environ) | extra
