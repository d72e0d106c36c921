"""A real SMTP server in the test process (aiosmtpd), with the failures tests need."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Behaviour:
    """What the server answers; tests change it while it runs."""

    mail: str | None = None  # e.g. "421 closing"
    rcpt: str | None = None  # e.g. "550 no such user"
    data: str | None = None  # e.g. "450 try later", "554 rejected"
    drop: bool = False  # close the connection instead of answering DATA
    stall_s: float = 0.0  # wait this long before answering DATA
    delay_s: float = 0.0  # a short pause per message (to make delivery take time)


@dataclass
class Handler:
    behaviour: Behaviour = field(default_factory=Behaviour)
    pipelining: bool = True  # offered in the EHLO answer, as Postfix and the mail services do
    ehlos: int = 0  # one per connection (two with STARTTLS)
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.ehlos += 1
        if self.pipelining:  # aiosmtpd reads one command at a time, so it can take them
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.behaviour.mail:
            return self.behaviour.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.behaviour.rcpt:
            return self.behaviour.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        behaviour = self.behaviour
        if behaviour.stall_s:
            await asyncio.sleep(behaviour.stall_s)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.drop:
            server.transport.close()
            return "421 dropped"
        if behaviour.data:
            return behaviour.data
        with self.arrived:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
            )
            self.arrived.notify_all()
        return "250 2.0.0 Ok: queued"

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout)


def authenticator(handler: Handler) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            handler.logins.append((user, password))
            if (user, password) == ("reminder", "s3cret-密码"):
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    return check


@contextmanager
def smtp_server(
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    auth: bool = False,
    pipelining: bool = True,
    smtputf8: bool = False,
) -> Iterator[tuple[Handler, int]]:
    """An aiosmtpd server on a free loopback port; STARTTLS, implicit TLS and AUTH optional."""
    handler = Handler(pipelining=pipelining)
    port = free_port()
    server_kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
    if tls_context is not None and not implicit_tls:
        server_kwargs |= {"tls_context": tls_context, "require_starttls": True}
    if auth:
        server_kwargs |= {"authenticator": authenticator(handler), "auth_required": True}
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        ssl_context=tls_context if implicit_tls else None,
        **server_kwargs,
    )
    if implicit_tls:
        # aiosmtpd's start-up check would verify our test certificate as a client: do it
        # with a client that does not
        def trigger() -> None:
            client = ssl.create_default_context()
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw) as wrapped,
            ):
                wrapped.recv(1024)

        controller._trigger_server = trigger  # type: ignore[method-assign]
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
