"""E-mail: an aiosmtplib sender with a pool of reused connections.

The messages come built (``reminder.channels.mime``). ``SmtpSender`` keeps up to
``connections`` SMTP sessions busy, each reused for many messages. aiosmtplib opens
each connection (TLS, EHLO, login); a server that offers PIPELINING then gets each
message in two writes (``reminder.channels.pipelining``, which takes the connection over
from aiosmtplib: tests/test_smtp_internals.py pins what it relies on), any other one
command at a time through aiosmtplib's public ``sendmail`` (``OneByOne``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence

import aiosmtplib

from reminder.channels import Outgoing, Report, Result, Window, always_open
from reminder.channels.pipelining import Pipelined
from reminder.errors import DeliveryError
from reminder.logs import get_logger
from reminder.settings import SmtpSettings


def classify(exc: BaseException) -> DeliveryError:
    """An SMTP failure as permanent (5xx, refused) or transient (4xx, timeouts, drops)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        refused = exc.recipients[0]
        return DeliveryError(
            f"recipient refused: {refused.code} {refused.message}",
            permanent=refused.code >= 500,
            code=refused.code,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"{exc.code} {exc.message}",
            permanent=500 <= exc.code < 600,
            code=exc.code,
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return DeliveryError("timed out", permanent=False)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return DeliveryError(f"disconnected: {exc}", permanent=False)
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)
    raise exc


async def _login(client: aiosmtplib.SMTP, username: str, password: str) -> None:
    """AUTH with the mechanisms the server offers, as ``SMTP.login`` does, but a 535
    (the credentials are wrong) ends it: ``login`` would send the same password again
    with each other mechanism."""
    if client.is_ehlo_or_helo_needed:  # after STARTTLS: the server's AUTH list is anew
        await client.ehlo()
    methods = client.supported_auth_methods
    if not methods:
        await client.login(username, password)  # raises why no AUTH can be done
        return
    refused: aiosmtplib.SMTPAuthenticationError | None = None
    for name in methods:
        try:
            await getattr(client, f"auth_{name.replace('-', '')}")(username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code == 535:
                raise
            refused = exc  # a mechanism offered but not working: try the next
        else:
            return
    assert refused is not None
    raise refused


class OneByOne:
    """A connection that sends one command at a time (a server without PIPELINING, or
    ``pipelining = false``): each message through aiosmtplib's public ``sendmail``.

    This path once wrote DATA on aiosmtplib's protocol, skipping its line-end and dot
    regular expressions: ``bench.delivery --no-pipelining`` (3,000 messages, two cores
    at load 5-8) measured ~290 µs of the sending process's CPU a message that way and
    ~420 µs through ``sendmail``, but no difference in messages a second (medians ~530
    and ~590, within the noise). Only a server without PIPELINING takes this path, so it
    stays on the public API; the pipelined path keeps its internals (half the CPU a
    message at both ends) behind tests/test_smtp_internals.py.
    """

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self._protocol = client.protocol  # aiosmtplib forgets it on close()

    @property
    def is_connected(self) -> bool:
        return self.client.is_connected

    async def send(self, sender: str, recipient: str, data: bytes, then: str | None = None) -> str:
        client = self.client
        options: list[str] = []
        if not (sender.isascii() and recipient.isascii()):
            if not client.supports_extension("smtputf8"):
                raise DeliveryError(
                    f"the server does not offer SMTPUTF8, needed for {recipient!r}",
                    permanent=True,
                )
            options.append("SMTPUTF8")
        # no timer per command: _send_one puts one deadline on the whole transaction
        refused, message = await client.sendmail(
            sender, [recipient], data, mail_options=options, timeout=None
        )
        if refused:
            address, response = next(iter(refused.items()))
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(response.code, response.message, address)]
            )
        return f"250 {message}"

    async def quit(self) -> None:
        await self.client.quit()

    def close(self) -> None:
        self.client.close()

    async def closed(self) -> None:
        """Wait until the transport is closed (see ``settle``)."""
        while self._protocol is not None and self._protocol.transport is not None:
            await asyncio.sleep(0.005)


Connection = Pipelined | OneByOne
SETTLE_S = 1.0


async def settle(connection: Connection) -> None:
    """Wait (at most ``SETTLE_S``) until a closed connection's transport is gone. A TLS
    transport closes a few turns of the loop after close() (its close_notify), and a
    loop that ends before that fails to close (uvloop: EBUSY, after a `run --once` that
    sent everything)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE_S):
            await connection.closed()


Job = tuple[Outgoing, Report, Window, asyncio.Future[None]]  # a message, and its outcome's way


class SmtpSender:
    """Up to ``connections`` sessions kept busy from one queue (see the module docstring).

    Each session is a task that takes the next message, sends it on its connection and
    reports the outcome; a connection is reused until it fails. If a connection cannot
    be made (refused, TLS, a temporary login failure), the server is taken as down for
    ``RETRY_CONNECT_S``: messages taken meanwhile are reported for retry at once instead
    of each waiting for its own connection timeout. A login refused for good (SMTP 5xx
    to AUTH: 535, a wrong password) is permanent: that message and every later one of
    this sender are dead with the reason, and the password is not sent again (a server
    locks an account that keeps failing). Until a connection has been made, sessions
    connect one at a time, so a wrong password is tried once.
    """

    RETRY_CONNECT_S = 30.0

    def __init__(self, settings: SmtpSettings, password: str | None) -> None:
        self.settings = settings
        self._password = password
        self._queue: asyncio.Queue[Job | None] | None = None
        self._sessions: list[asyncio.Task[None]] = []
        self._down_until = 0.0
        self._down_reason: DeliveryError | None = None
        # a login the server refused for good (535): never tried again with the same
        # password (that is how accounts get locked); a reload reads the password anew
        self._login_refused: DeliveryError | None = None
        # until a connection has been made, one session at a time tries: a wrong
        # password is sent once, not once per session
        self._proven = False
        self._opening: asyncio.Lock | None = None  # made in the loop that sends
        self._log = get_logger().bind(channel="email", host=settings.host)

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file or None)

    async def _connect(self) -> Connection:
        settings = self.settings
        security = settings.security
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            timeout=settings.timeout_s,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=self._tls_context() if security != "none" else None,
        )
        try:
            # with start_tls, connect() fails if the server does not offer STARTTLS
            await client.connect()
            if settings.username:
                await _login(client, settings.username, self._password or "")
            if client.is_ehlo_or_helo_needed:  # before MAIL: data() would EHLO mid-transaction
                await client.ehlo()
            if settings.pipelining and client.supports_extension("pipelining"):
                return Pipelined(client, settings.timeout_s)
        except BaseException:
            client.close()
            raise
        return OneByOne(client)

    async def _send_one(self, connection: Connection, item: Outgoing, then: str | None) -> str:
        # one deadline for the whole transaction instead of a timer per command
        async with asyncio.timeout(self.settings.timeout_s):
            return await connection.send(self.settings.from_address, item.to, item.data, then)

    async def _deliver(
        self,
        connection: Connection | None,
        item: Outgoing,
        report: Report,
        then: str | None = None,
    ) -> Connection | None:
        """One message on this session's connection; returns the connection to keep."""
        if connection is None or not connection.is_connected:
            if self._proven or self._opening is None:
                connection = await self._open(item, report)
            else:
                async with self._opening:
                    connection = await self._open(item, report)
            if connection is None:
                return None
        try:
            answer = await self._send_one(connection, item, then)
        except Exception as exc:
            try:
                error = classify(exc)
            except Exception:  # a bug, or an error classify() does not know
                connection.close()
                raise
            # a refusal (the transaction reset) or a message refused before anything was
            # written keeps the connection; 421, an answer that is no SMTP answer, a
            # timeout or a dropped connection does not
            refusal = aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused
            answered = error.code is not None and 200 <= error.code < 600 and error.code != 421
            kept = isinstance(exc, DeliveryError) or (isinstance(exc, refusal) and answered)
            if not (kept and connection.is_connected):
                connection.close()
                connection = None
            report(Result.failed(item, error))
            self._log.warning(
                "delivery_failed",
                key=item.key,
                code=error.code,
                error=error.message,
                permanent=error.permanent,
            )
            return connection
        report(Result.sent(item, 250, answer))
        return connection

    async def _open(self, item: Outgoing, report: Report) -> Connection | None:
        """A new connection, or None with ``item``'s outcome reported: a retry while the
        server is down, dead once it refused the login for good."""
        if self._login_refused is not None:
            report(Result.failed(item, self._login_refused))
            return None
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until and self._down_reason is not None:
            report(Result(item.id, "retry", self._down_reason.code, self._down_reason.message))
            return None
        try:
            connection = await self._connect()
        except Exception as exc:  # classify() re-raises what it does not know
            error = classify(exc)
            self._proven = False
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError) and error.permanent:
                self._login_refused = DeliveryError(
                    f"login as {self.settings.username!r} refused: {error.message}; not"
                    " tried again: fix [smtp] username or the password, reload, then"
                    " `reminder retry --dead`",
                    permanent=True,
                    code=error.code,
                )
                self._log.error("smtp_login_refused", error=error.message, code=error.code)
                report(Result.failed(item, self._login_refused))
                return None
            reason = DeliveryError(f"connect: {error.message}", permanent=False, code=error.code)
            self._down_until, self._down_reason = loop.time() + self.RETRY_CONNECT_S, reason
            self._log.error("smtp_unavailable", error=error.message, code=error.code)
            report(Result(item.id, "retry", reason.code, reason.message))
            return None
        self._down_until, self._down_reason = 0.0, None
        self._proven = True
        return connection

    async def _session(self, queue: asyncio.Queue[Job | None]) -> None:
        connection: Connection | None = None
        following: Job | None = None
        try:
            job = await queue.get()
            while job is not None:
                item, report, window, done = job
                # a message already waiting is this session's next (None: the end): its
                # envelope can go in the same write as the end of this one
                waiting = not queue.empty()
                following = queue.get_nowait() if waiting else None
                then = following[0].to if following is not None else None
                outcome: list[Result] = []
                try:
                    try:
                        await window()  # the in-flight window (see reminder.channels)
                        connection = await self._deliver(connection, item, outcome.append, then)
                    except Exception as exc:  # a bug, or an error classify() does not know
                        # _deliver closed the connection it used; the message is tried
                        # again later and the session goes on: a message without an
                        # outcome, or every session gone, would stall the run
                        error = f"{type(exc).__name__}: {exc}"
                        self._log.error("delivery_error", key=item.key, error=error)
                        if not outcome:
                            outcome.append(
                                Result(item.id, "retry", None, f"delivery failed: {error}")
                            )
                        connection = None
                    for result in outcome:
                        report(result)
                except Exception as exc:  # recording it failed (the store): send() raises it
                    done.set_exception(exc)
                finally:
                    if not done.done():
                        done.set_result(None)
                job = following if waiting else await queue.get()
        finally:
            if following is not None and not following[3].done():  # cancelled meanwhile
                following[3].set_result(None)
            task = asyncio.current_task()
            if connection is not None and task is not None and task.cancelling():
                connection.close()  # abort(): no QUIT to a server that may never answer
            elif connection is not None and connection.is_connected:
                try:
                    await connection.quit()
                except (aiosmtplib.SMTPException, OSError):
                    connection.close()
                await settle(connection)

    async def send(
        self, items: Sequence[Outgoing], report: Report, window: Window = always_open
    ) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._opening = asyncio.Lock()
            self._sessions = [
                asyncio.create_task(self._session(self._queue))
                for _ in range(self.settings.connections)
            ]
        loop = asyncio.get_running_loop()
        waiting = []
        for item in items:
            done: asyncio.Future[None] = loop.create_future()
            self._queue.put_nowait((item, report, window, done))
            waiting.append(done)
        # every message is answered before a failure to record one is raised
        for failure in await asyncio.gather(*waiting, return_exceptions=True):
            if isinstance(failure, BaseException):
                raise failure

    async def close(self) -> None:
        """Let the sessions finish what they hold, then QUIT."""
        queue, self._queue = self._queue, None
        if queue is None:
            return
        for _ in self._sessions:
            queue.put_nowait(None)
        await asyncio.gather(*self._sessions, return_exceptions=True)
        self._sessions = []

    def abort(self) -> None:
        """Stop at once (a run's deadline, a stop out of time): what is queued is not sent,
        the sessions are cancelled and their connections closed without QUIT. Messages
        left without an outcome keep their lease; a later run sends them."""
        self._queue = None
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.cancel()
