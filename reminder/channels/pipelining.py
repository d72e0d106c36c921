"""SMTP command pipelining (RFC 2920) on a connection that aiosmtplib opened.

aiosmtplib connects, starts TLS, says EHLO and logs in. After that it sends one command
and waits for its answer, and its protocol parses one answer per packet received, so it
cannot pipeline: answers that arrive together would be lost. When the server offers
PIPELINING (Postfix, Exim, Exchange and the mail services do), ``Pipelined`` takes the
connection over (``transport.set_protocol``, so aiosmtplib's protocol no longer reads
from it) and sends MAIL, RCPT and DATA together, then the message once DATA is answered
354; when the session already holds its next message, that one's MAIL, RCPT and DATA go
in the same write as this one's end (RFC 2920 allows the message content to start a
group). So a message costs one write instead of four. Every answer is read and checked
in order. Both ends spend about half the CPU per message (bench/delivery.py).

Failures read as aiosmtplib's would (``SMTPSenderRefused``, ``SMTPRecipientsRefused``,
``SMTPDataError``, ``SMTPServerDisconnected``), so the sender classifies them the same.

This relies on aiosmtplib's internals (``SMTP.transport`` is the live transport, the TLS
one after STARTTLS; ``SMTP.close`` closes it): tests/test_smtp_internals.py checks them,
and pyproject.toml allows only the versions they were checked on.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque

import aiosmtplib
from aiosmtplib import SMTPResponse

from reminder.errors import DeliveryError

MAX_LINE = 8192  # bytes in one answer line, as aiosmtplib allows
MAX_ANSWER = 4 * MAX_LINE  # bytes in one answer, continuation lines included
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Answers(asyncio.Protocol):
    """Reads every SMTP answer in what arrives, and hands them out in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._answers: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self.gone = asyncio.Event()  # the transport is closed (connection_lost)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (answer := self._parse()) is not None:
                self._answers.append(answer)
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        self.gone.set()

    @property
    def failed(self) -> bool:
        """The connection is lost, or an answer could not be read: nothing more will be."""
        return self._error is not None

    async def answer(self) -> SMTPResponse:
        """The next answer; answers that came before a disconnection are still given."""
        while not self._answers:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._answers.popleft()

    def _parse(self) -> SMTPResponse | None:
        """One whole answer from the buffer (removed from it), or None if incomplete."""
        lines: list[bytes] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                if len(self._buffer) - start > MAX_LINE or len(self._buffer) > MAX_ANSWER:
                    raise aiosmtplib.SMTPResponseException(-1, "Response too long")
                return None
            line = bytes(self._buffer[start : end + 1])
            start = end + 1
            if len(line) > MAX_LINE or start > MAX_ANSWER:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            lines.append(line)
            if line[3:4] != b"-":
                break
        del self._buffer[:start]
        try:
            code = int(lines[-1][:3])
        except ValueError:
            text = lines[-1].decode("utf-8", "replace").strip()
            raise aiosmtplib.SMTPResponseException(
                -1, f"Malformed SMTP response line: {text}"
            ) from None
        text = "\n".join(
            line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape") for line in lines
        )
        return SMTPResponse(code, text)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Pipelined:
    """A connection aiosmtplib made ready (TLS, EHLO, login), taken over to pipeline."""

    def __init__(self, client: aiosmtplib.SMTP, timeout_s: float) -> None:
        transport = client.transport
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._client = client  # keeps aiosmtplib's state for close(); never sends again
        self._transport = transport
        self._answers = Answers()
        transport.set_protocol(self._answers)
        self._utf8 = client.supports_extension("smtputf8")
        self._timeout_s = timeout_s
        self._announced: tuple[str, str] | None = None  # the next envelope, already sent

    @property
    def is_connected(self) -> bool:
        return not self._transport.is_closing() and not self._answers.failed

    def _write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(data)  # type: ignore[attr-defined]

    def _envelope(self, sender: str, recipient: str) -> bytes:
        """MAIL, RCPT and DATA for one message; refused here if they cannot be sent."""
        for address in (sender, recipient):
            if _CONTROL.search(address):
                raise DeliveryError(
                    f"address {address!r} contains a control character", permanent=True
                )
        utf8 = not (sender.isascii() and recipient.isascii())
        if utf8 and not self._utf8:
            raise DeliveryError(
                f"the server does not offer SMTPUTF8, needed for {recipient!r}", permanent=True
            )
        option = " SMTPUTF8" if utf8 else ""
        return f"MAIL FROM:<{sender}>{option}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()

    # one branch per reply of the pipelined exchange, in the order the server sends them
    async def send(  # noqa: PLR0912
        self, sender: str, recipient: str, data: bytes, then: str | None = None
    ) -> str:
        """One message (``data`` ready for DATA as it is); the server's final answer.

        ``then``: the recipient of the message this connection sends next, if known: its
        MAIL, RCPT and DATA go in the same write as this message's end.
        """
        if self._announced is None:
            self._write(self._envelope(sender, recipient))
        elif self._announced == (sender, recipient):
            self._announced = None  # its commands went out with the last message's end
        else:  # answers are on their way for another message: nothing else can be sent
            self.close()
            raise aiosmtplib.SMTPServerDisconnected("pipeline out of step; reconnecting")
        answers: list[SMTPResponse] = []
        lost: aiosmtplib.SMTPServerDisconnected | None = None
        try:
            while len(answers) < 3:
                answers.append(await self._answers.answer())
        except aiosmtplib.SMTPServerDisconnected as exc:
            lost = exc  # a refusal read before it explains more (421 is sent, then closed)
        refusal: aiosmtplib.SMTPException | None = None
        if answers and answers[0].code != 250:
            refusal = aiosmtplib.SMTPSenderRefused(answers[0].code, answers[0].message, sender)
        elif len(answers) > 1 and answers[1].code not in (250, 251):
            refused = aiosmtplib.SMTPRecipientRefused(
                answers[1].code, answers[1].message, recipient
            )
            refusal = aiosmtplib.SMTPRecipientsRefused([refused])
        elif lost is not None:
            raise lost
        elif answers[2].code != 354:
            refusal = aiosmtplib.SMTPDataError(answers[2].code, answers[2].message)
        if refusal is not None:
            if lost is None:
                await self._abandon(answers[2])
            raise refusal
        following = b""
        if then is not None:
            try:
                following = self._envelope(sender, then)
                self._announced = (sender, then)
            except DeliveryError:
                pass  # refused in its own turn, before anything is written
        self._write(data + b".\r\n" + following)
        done = await self._answers.answer()
        if done.code != 250:
            raise aiosmtplib.SMTPDataError(done.code, done.message)
        return f"{done.code} {done.message}"

    async def _abandon(self, data_answer: SMTPResponse) -> None:
        """End a refused transaction, so that the connection can carry the next one."""
        if data_answer.code == 354:
            # DATA was opened although MAIL or RCPT was refused: no message is sent; the
            # connection is closed rather than ended with an empty one
            self.close()
            return
        try:
            self._write(b"RSET\r\n")
            if (await self._answers.answer()).code == 250:
                return
        except aiosmtplib.SMTPException:
            pass  # the refusal is what the caller reports
        self.close()

    async def quit(self) -> None:
        try:
            if self.is_connected:
                self._write(b"QUIT\r\n")
                async with asyncio.timeout(self._timeout_s):
                    await self._answers.answer()
        finally:
            self.close()

    def close(self) -> None:
        self._client.close()  # closes the transport and resets aiosmtplib's state

    async def closed(self) -> None:
        """Wait until the transport is closed (see ``email.settle``)."""
        await self._answers.gone.wait()
