"""The file channel: each message written under var/outbox/ instead of being sent.

The default on a fresh install (no SMTP host, no SMS gateway), and what `simulate`
writes into. E-mail is written as the .eml it would have been on the wire, SMS as .txt,
robot messages as .md. A file is written whole or not at all (a temporary file renamed
into place), and its name comes from the outbox key, so a repeat after a crash rewrites
the same file instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from reminder.channels import Outgoing, Report, Result

_SUFFIX = {"email": ".eml", "sms": ".txt"}


def file_name(item: Outgoing) -> str:
    digest = hashlib.sha256(item.key.encode()).hexdigest()[:12]
    return f"{item.kind}-{digest}{_SUFFIX.get(item.channel, '.md')}"


def content(item: Outgoing) -> bytes:
    if item.channel == "email":
        return item.data
    head = f"To: {item.to} ({item.recipient_name})\nChannel: {item.channel}\n"
    if item.subject:
        head += f"Subject: {item.subject}\n"
    return (head + "\n" + item.body + "\n").encode()


class FileSender:
    """Each file is fsynced before its message counts as sent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, item: Outgoing) -> Path:
        folder = self.folder / (item.scheduled_day or "undated")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name(item)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as handle:
            handle.write(content(item))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return path

    async def send(self, items: Sequence[Outgoing], report: Report) -> None:
        for item in items:
            try:
                path = self.write(item)
            except OSError as exc:
                report(Result(item.id, "retry", None, f"cannot write: {exc.strerror}"))
                continue
            report(Result.sent(item, None, str(path)))

    async def close(self) -> None:
        return None
