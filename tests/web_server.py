"""The answers web on a real loopback port, in a thread of the test process (uvicorn on a
socket bound first, so that the letters can carry its address before it serves)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from reminder.contacts import load_contacts
from reminder.rules import Rules
from reminder.settings import load_config
from reminder.store.db import open_store
from reminder.web.serve import server as web_server

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Port:
    socket: socket.socket
    url: str


def bind(monkeypatch: pytest.MonkeyPatch) -> Port:
    """A loopback port for the web, and ``[web] base_url`` pointing at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("REMINDER_WEB__BASE_URL", url)
    monkeypatch.setenv("REMINDER_WEB__LISTEN", url.removeprefix("http://"))
    return Port(sock, url)


@contextmanager
def serving(port: Port) -> Iterator[str]:
    """The web app of the test's config and store, served on ``port`` until the block ends."""
    config = load_config()
    settings = config.settings
    contacts = load_contacts(config.contacts_path)
    planning = Rules(settings.policy, config.calendar(), settings.zone, contacts)
    store = open_store(settings.db)
    server = web_server(config, store, planning)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [port.socket]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web did not start")
        time.sleep(0.02)
    try:
        yield port.url
    finally:
        server.should_exit = True
        thread.join(10)
        store.dispose()
        port.socket.close()
