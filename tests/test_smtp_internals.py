"""What reminder relies on inside aiosmtplib, pinned to the versions it was checked on.

``reminder.channels.pipelining`` takes over a connection aiosmtplib opened (TLS, EHLO,
login): it swaps the transport's protocol for its own reader and writes on the transport.
That is worth it (README, Development: about half the CPU a message at both ends); it
relies on aiosmtplib's ``SMTP.transport`` being the live transport (the TLS one after
STARTTLS), on ``SMTP.close`` closing that transport, and on the signatures of the errors
it raises as aiosmtplib would. Everything else goes through aiosmtplib's public API
(``sendmail``, ``auth_*``). Widen the range in pyproject.toml only after these tests
and tests/test_pipelining.py pass on the new versions.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import ssl
import tomllib
from importlib.metadata import version
from pathlib import Path

import aiosmtplib
import trustme

from reminder.channels.pipelining import Pipelined
from tests.smtp_server import smtp_server

PINNED = ">=5.1,<6"  # the range these internals were checked on (5.1.3)
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_aiosmtplib_range_is_the_one_checked() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    [requirement] = [
        line.replace(" ", "")
        for line in project["dependencies"]
        if re.match(r"aiosmtplib\b", line, re.IGNORECASE)
    ]
    # no wider than the versions checked, and never across a major version
    assert requirement == f"aiosmtplib{PINNED}"
    installed = tuple(int(part) for part in version("aiosmtplib").split(".")[:2])
    assert (5, 1) <= installed < (6, 0)


def test_the_errors_are_made_as_pipelining_makes_them() -> None:
    def parameters(cls: type) -> list[str]:
        return list(inspect.signature(cls).parameters)

    assert aiosmtplib.SMTPResponse._fields == ("code", "message")
    assert parameters(aiosmtplib.SMTPResponseException)[:2] == ["code", "message"]
    assert parameters(aiosmtplib.SMTPSenderRefused)[:3] == ["code", "message", "sender"]
    assert parameters(aiosmtplib.SMTPRecipientRefused)[:3] == ["code", "message", "recipient"]
    assert parameters(aiosmtplib.SMTPRecipientsRefused)[:1] == ["recipients"]
    assert parameters(aiosmtplib.SMTPDataError)[:2] == ["code", "message"]
    assert issubclass(aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPResponseException)
    # the public API the other paths use
    for name in ("sendmail", "auth_plain", "auth_login", "auth_crammd5", "ehlo", "quit"):
        assert inspect.iscoroutinefunction(getattr(aiosmtplib.SMTP, name)), name
    for name in ("supported_auth_methods", "is_ehlo_or_helo_needed"):
        assert isinstance(inspect.getattr_static(aiosmtplib.SMTP, name), property), name


async def test_the_transport_taken_over_is_the_live_one_after_starttls() -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with smtp_server(tls_context=server) as (handler, port):
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=True, tls_context=client_context
        )
        await client.connect()
        await client.ehlo()
        transport = client.transport
        assert transport is not None and client.protocol is not None
        assert transport is client.protocol.transport  # not the plain one under TLS
        assert transport.get_extra_info("sslcontext") is not None
        assert isinstance(transport, asyncio.Transport)
        connection = Pipelined(client, timeout_s=10)
        answer = await asyncio.wait_for(
            connection.send("duban@example.org", "hbj@example.org", b"Subject: x\r\n\r\nhi\r\n"),
            timeout=10,
        )
        assert answer.startswith("250")
        assert handler.wait_for(1, timeout=10)
        connection.close()  # SMTP.close closes the transport that was taken over
        assert transport.is_closing()
        assert client.transport is None and not client.is_connected
