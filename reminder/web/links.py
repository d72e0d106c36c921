"""Personal links: capability URLs in letters (a unit's page) and digests (the board).

A link is a random id, kept in the ``link`` table with whose it is (a unit or a
supervisor) and the letter it came in (so that opening it is the letter's 签收). The
URL carries the id signed with its issue time (itsdangerous ``TimestampSigner``, HMAC
with the web secret): a tampered id is refused before the store is read, an expired one
by its signed time (``[web] link_days``), a revoked one by its row.

The secret: ``REMINDER_WEB_SECRET``, ``REMINDER_WEB_SECRET_FILE`` or the systemd
credential ``web_secret``; else, on the embedded default, one generated once into
``[web] state_dir``/web_secret (mode 0600). The daemon signs with it, the web checks.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import secrets as random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import insert, update
from sqlmodel import Session

from reminder.errors import ConfigError
from reminder.rows import Message
from reminder.secrets import secret
from reminder.settings import WebSettings
from reminder.store.models import LinkRow

if TYPE_CHECKING:
    from itsdangerous import TimestampSigner

SALT = "reminder.link"
SECRET_FILE = "web_secret"


class Scope(StrEnum):
    UNIT = "unit"
    SUPERVISOR = "supervisor"


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    scope: Scope
    name: str
    letter_key: str | None
    url: str


class Refused(StrEnum):
    """Why a link does not open: 403 (not ours) or 410 (was ours, no longer)."""

    TAMPERED = "tampered"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


def web_secret(web: WebSettings) -> bytes:
    """The link-signing secret (see the module docstring)."""
    found = secret("WEB_SECRET", "web_secret")
    if found:
        return found.encode()
    return _generated(str(Path(web.state_dir).resolve()))


@functools.lru_cache(maxsize=4)
def _generated(folder: str) -> bytes:
    path = Path(folder) / SECRET_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = path.read_text(encoding="ascii").strip()
        else:
            value = random.token_urlsafe(32)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(value + "\n")
                handle.flush()
                os.fsync(handle.fileno())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not ASCII"
        raise ConfigError(f"{path}: cannot read or create the web secret: {reason}") from None
    if len(value) < 16:
        raise ConfigError(f"{path}: the web secret is too short (at least 16 characters)")
    return value.encode()


class Links:
    """Makes links and checks them, with the secret read once (on first use: a
    composition with no link to make, or ``[web] base_url`` empty, never reads it)."""

    def __init__(self, web: WebSettings) -> None:
        self.web = web
        self._signer: TimestampSigner | None = None

    @property
    def signer(self) -> TimestampSigner:
        if self._signer is None:
            # imported here: every command that enqueues letters or digests loads this
            # module, and most never sign or check a link
            from itsdangerous import TimestampSigner  # noqa: PLC0415

            self._signer = TimestampSigner(web_secret(self.web), salt=SALT)
        return self._signer

    def new(self, scope: Scope, name: str, letter_key: str | None = None) -> Link | None:
        """A fresh link (not yet saved); None when ``[web] base_url`` is empty."""
        if not self.web.base_url:
            return None
        link_id = random.token_urlsafe(9)
        token = self.signer.sign(link_id).decode()
        prefix = "l" if scope is Scope.UNIT else "s"
        return Link(link_id, scope, name, letter_key, f"{self.web.base_url}/{prefix}/{token}")

    def for_letter(self, letter: Message) -> Link | None:
        """A letter's link to its unit's page, put in its payload (saved by the caller if
        the letter is enqueued: a letter whose key was taken keeps the link it went out
        with)."""
        link = self.new(Scope.UNIT, letter.unit or letter.recipient_name, letter.key)
        if link is not None:
            letter.payload["link"] = link.url
        return link

    def check(
        self, session: Session, token: str, scope: Scope
    ) -> tuple[LinkRow | None, Refused | None]:
        """The link a token names, or why it is refused."""
        from itsdangerous import BadSignature, SignatureExpired  # noqa: PLC0415

        try:
            signed = self.signer.unsign(token, max_age=self.web.link_days * 86400)
        except SignatureExpired:
            return None, Refused.EXPIRED
        except BadSignature:
            return None, Refused.TAMPERED
        row = session.get(LinkRow, signed.decode("ascii", "replace"))
        if row is None or row.scope != scope.value:
            return None, Refused.UNKNOWN
        if row.revoked_at is not None:
            return row, Refused.REVOKED
        return row, None


def save_links(session: Session, links: Sequence[Link], now: dt.datetime) -> None:
    if not links:
        return
    table = LinkRow.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        insert(table),
        [
            {
                "id": link.id,
                "scope": link.scope.value,
                "name": link.name,
                "letter_key": link.letter_key,
                "created_at": now,
                "opened_at": None,
                "revoked_at": None,
            }
            for link in links
        ],
    )


def revoke(session: Session, scope: Scope, name: str, now: dt.datetime) -> int:
    """Revoke every link of a unit or supervisor; returns how many were live."""
    table = LinkRow.__table__  # type: ignore[attr-defined]
    done = session.connection().execute(
        update(table)
        .where(table.c.scope == scope.value, table.c.name == name, table.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(done.rowcount or 0)
