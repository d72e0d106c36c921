"""SMTP pipelining against a scripted server: commands go together, answers that
arrive together (or split anywhere) are each read, and refusals end cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiosmtplib
import pytest

from reminder.channels.pipelining import Pipelined
from reminder.errors import DeliveryError

MESSAGE = b"Subject: test\r\n\r\nhello\r\n"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 scripted ESMTP\r\n")
    assert (await reader.readline()).startswith(b"EHLO ")
    writer.write(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")


async def commands(reader: asyncio.StreamReader) -> list[bytes]:
    """Lines up to and including DATA, read before anything is answered: a client that
    waited for each answer would wait for ever here (and the test would time out)."""
    lines = [await reader.readline()]
    while lines[-1] != b"DATA\r\n":
        if not lines[-1]:
            raise ConnectionError(f"the client hung up after {lines[:-1]}")
        lines.append(await reader.readline())
    return lines


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[bytes]:
    """A message's MAIL, RCPT and DATA, all answered yes at once."""
    lines = await commands(reader)
    writer.write(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    return lines


def envelope(recipient: str) -> list[bytes]:
    """What the client sends for a message to ``recipient`` before its content."""
    mail = b"MAIL FROM:<duban@example.org>\r\n"
    return [mail, f"RCPT TO:<{recipient}>\r\n".encode(), b"DATA\r\n"]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Pipelined]:
    failures: list[BaseException] = []
    finished = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await greet(reader, writer)
            await script(reader, writer)
        except BaseException as exc:  # reported by the test, not lost in the server task
            failures.append(exc)
        finally:
            writer.close()
            finished.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5, start_tls=False)
    await client.connect()
    await client.ehlo()
    assert client.supports_extension("pipelining")
    connection = Pipelined(client, 5)
    try:
        async with asyncio.timeout(10):  # a client that lost an answer waits: fail, not hang
            yield connection
    finally:
        connection.close()
        await asyncio.wait_for(finished.wait(), 5)  # the script ran to its end
        server.close()
        await server.wait_closed()
    if failures:
        raise failures[0]


async def test_commands_go_together_and_answers_together_are_all_read() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(2):
            assert await commands(reader) == envelope(f"unit{n}@example.org")
            writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
            assert await reader.readuntil(b"\r\n.\r\n") == MESSAGE + b".\r\n"
            # the final answer split mid-line and spread over packets, multi-line
            for piece in (b"25", b"0-2.0.0 Ok: queued\r\n250 2.0.0 as ", f"{n}\r\n".encode()):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
        assert await reader.readline() == b"QUIT\r\n"
        writer.write(b"221 2.0.0 Bye\r\n")

    async with scripted(script) as connection:
        for n in range(2):
            answer = await connection.send("duban@example.org", f"unit{n}@example.org", MESSAGE)
            assert answer == f"250 2.0.0 Ok: queued\n2.0.0 as {n}"
        await connection.quit()
        assert not connection.is_connected


async def test_the_next_envelope_goes_with_the_end_of_a_message() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        await reader.readuntil(b"\r\n.\r\n")
        # the second message's envelope is read before the first is answered: a client
        # that waited for that answer would wait for ever here
        assert await commands(reader) == envelope("second@example.org")
        writer.write(b"554 5.7.1 first rejected\r\n250 Ok\r\n250 Ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 queued second\r\n")

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPDataError) as rejected:
            await connection.send(
                "duban@example.org", "first@example.org", MESSAGE, then="second@example.org"
            )
        assert rejected.value.code == 554
        assert connection.is_connected  # the second message's answers are on their way
        answer = await connection.send("duban@example.org", "second@example.org", MESSAGE)
        assert answer == "250 queued second"


async def test_a_next_envelope_that_cannot_go_is_not_announced() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        assert await reader.readuntil(b"\r\n.\r\n") == MESSAGE + b".\r\n"
        writer.write(b"250 queued\r\n")
        assert await commands(reader) == envelope("third@example.org")
        writer.write(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 queued third\r\n")

    async with scripted(script) as connection:  # the server offers no SMTPUTF8
        then = "环保局@example.org"
        assert await connection.send("duban@example.org", "hbj@example.org", MESSAGE, then) == (
            "250 queued"
        )
        with pytest.raises(DeliveryError, match="SMTPUTF8"):
            await connection.send("duban@example.org", then, MESSAGE)
        assert connection.is_connected
        answer = await connection.send("duban@example.org", "third@example.org", MESSAGE)
        assert answer == "250 queued third"


async def test_a_message_other_than_the_announced_one_is_not_sent_out_of_step() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        await reader.readuntil(b"\r\n.\r\n")
        await commands(reader)
        writer.write(b"250 queued\r\n")
        assert await reader.read() == b""  # nothing more: the client hung up

    async with scripted(script) as connection:
        await connection.send("duban@example.org", "a@example.org", MESSAGE, "b@example.org")
        with pytest.raises(aiosmtplib.SMTPServerDisconnected, match="out of step"):
            await connection.send("duban@example.org", "c@example.org", MESSAGE)
        assert not connection.is_connected


async def test_a_refused_recipient_resets_and_the_connection_goes_on() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await commands(reader)
        writer.write(b"250 Ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n")
        assert await reader.readline() == b"RSET\r\n"
        writer.write(b"250 Ok\r\n")
        await accept(reader, writer)
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 queued\r\n")

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await connection.send("duban@example.org", "nobody@example.org", MESSAGE)
        assert refused.value.recipients[0].code == 550
        assert connection.is_connected
        assert await connection.send("duban@example.org", "hbj@example.org", MESSAGE) == (
            "250 queued"
        )


async def test_a_refusal_is_reported_even_if_the_reset_fails() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await commands(reader)
        writer.write(b"250 Ok\r\n550 5.1.1 no such user\r\n554 no valid recipients\r\n")
        assert await reader.readline() == b"RSET\r\n"  # then hangs up without answering

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await connection.send("duban@example.org", "nobody@example.org", MESSAGE)
        assert refused.value.recipients[0].code == 550
        assert not connection.is_connected


async def test_an_answer_before_the_server_hangs_up_is_the_reason() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await commands(reader)
        writer.write(b"421 4.3.2 shutting down\r\n")
        await writer.drain()

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await connection.send("duban@example.org", "hbj@example.org", MESSAGE)
        assert refused.value.code == 421


async def test_data_opened_after_a_refusal_sends_nothing() -> None:
    received: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await commands(reader)
        writer.write(b"250 Ok\r\n550 no such user\r\n354 go ahead anyway\r\n")
        received.append(await reader.read())  # until the client closes

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await connection.send("duban@example.org", "nobody@example.org", MESSAGE)
        assert not connection.is_connected
    assert received == [b""]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"x" * 9000 + b"\r\n", "Response too long"),
        (b"hello there\r\n", "Malformed SMTP response line: hello there"),
    ],
)
async def test_a_bad_answer_is_an_error_not_a_hang(answer: bytes, error: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await commands(reader)
        writer.write(answer)
        await reader.read()

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await connection.send("duban@example.org", "hbj@example.org", MESSAGE)
        assert raised.value.message == error
        assert not connection.is_connected  # what follows on it cannot be trusted


async def test_a_dropped_connection_is_a_disconnection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await commands(reader)

    async with scripted(script) as connection:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await connection.send("duban@example.org", "hbj@example.org", MESSAGE)
        assert not connection.is_connected
