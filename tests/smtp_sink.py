"""A fast SMTP sink in the test process: it counts messages and keeps nothing else.

aiosmtpd burns ~0.5–0.8 ms of CPU a message (BENCH.md), too slow to take 10,000 in a
test that also has to leave the CPU to the sender. This one speaks just enough SMTP for
the e-mail channel (EHLO with PIPELINING, MAIL, RCPT, DATA, RSET, NOOP, QUIT), reads
pipelined commands in order, and runs in its own process (``python -m tests.smtp_sink``),
so that what it does never holds up the code under test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_END = b".\r\n"


@dataclass
class Counts:
    messages: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.messages += 1
        self.bytes += size


async def _session(
    counts: Counts, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(b"220 sink ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                size = 0
                while (chunk := await reader.readline()) != _END:
                    if not chunk:
                        return
                    size += len(chunk)
                counts.add(size)
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 ok\r\n")
            await writer.drain()  # at once when the socket takes it: no wait
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(counts: Counts, stop: asyncio.Event) -> None:
    """Serve on a free loopback port (printed first) until ``stop`` is set."""
    server = await asyncio.start_server(lambda r, w: _session(counts, r, w), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    """The sink as a process: the port on the first line; at the end of stdin, the
    count of messages and bytes received on the last."""
    counts = Counts()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 512) else None)
        await serve(counts, stop)

    asyncio.run(run())
    print(counts.messages, counts.bytes, flush=True)


@dataclass
class Sink:
    port: int
    process: subprocess.Popen[str]

    def messages(self) -> int:
        """Stop the sink; how many messages it took in."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        last = self.process.stdout.read().split()
        self.process.stdout.close()
        self.process.wait(10)
        return int(last[0])


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    """A running sink in its own process, so that it shares no interpreter lock with
    the code under test (a thread of this process would hold up its event loop)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.smtp_sink"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    try:
        sink = Sink(int(process.stdout.readline()), process)
        yield sink
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


if __name__ == "__main__":
    main()
