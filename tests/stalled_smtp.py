"""An SMTP server that takes a message's DATA and never answers it (a stalled server).

A raw asyncio server on loopback in a thread of the test process: it greets, answers
EHLO (without PIPELINING), MAIL, RCPT and DATA, reads the body to its final dot, counts
it, and then says nothing more on that connection, as a server whose queue hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes


class Stalled:
    def __init__(self) -> None:
        self.bodies: Counter[str] = Counter()  # Message-ID → how many times its DATA came
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.port = 0
        self.released: asyncio.Event | None = None  # set when the server stops

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: sum(self.bodies.values()) >= count, timeout)

    def total(self) -> int:
        with self.lock:
            return sum(self.bodies.values())

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stalled.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-stalled.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = b""
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        body += chunk
                    with self.arrived:
                        self.bodies[str(message_from_bytes(body)["Message-ID"])] += 1
                        self.arrived.notify_all()
                    assert self.released is not None
                    await self.released.wait()  # never answers, until the server stops
                    break
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            # the transport let go before the loop closes (no ResourceWarning)
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


@contextmanager
def stalled_server() -> Iterator[Stalled]:
    stalled = Stalled()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        stalled.released = asyncio.Event()
        server = await asyncio.start_server(stalled.session, "127.0.0.1", 0)
        stalled.port = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await stop.wait()
        # the sessions that never answered end now, each closing its connection (a task
        # cancelled before it ran would never close its own)
        stalled.released.set()
        sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*sessions, return_exceptions=True), 10)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the stalled server did not start"
    try:
        yield stalled
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
