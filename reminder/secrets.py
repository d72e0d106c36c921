"""Secrets: from the environment, a file, or a systemd credential; never from config files.

``secret("SMTP_PASSWORD", "smtp_password")`` looks, in order, at ``REMINDER_SMTP_PASSWORD``,
the file named by ``REMINDER_SMTP_PASSWORD_FILE``, and ``$CREDENTIALS_DIRECTORY/smtp_password``
(systemd ``LoadCredential=``). Errors name the variable or the file, never the value.

A file that group or others may read is used, with a warning (``credential_file_readable``,
and a line of ``reminder check``): the secret is as good as shared with them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from reminder.errors import ConfigError

# every secret the program reads: (the name after REMINDER_, the systemd credential)
SECRETS = (
    ("SMTP_PASSWORD", "smtp_password"),
    ("SMS_TOKEN", "sms_token"),
    ("WEB_SECRET", "web_secret"),
)


class SecretFile(NamedTuple):
    origin: str  # REMINDER_SMTP_PASSWORD_FILE, or "systemd credential"
    path: Path


def secret(name: str, credential: str) -> str | None:
    value = os.environ.get(f"REMINDER_{name}")
    if value:
        return value
    found = secret_file(name, credential, os.environ)
    if found is None:
        return None
    return _read(found)


def secret_file(name: str, credential: str, env: Mapping[str, str]) -> SecretFile | None:
    """The file ``secret`` would read the secret from (None: from the environment, or
    not set at all)."""
    if env.get(f"REMINDER_{name}"):
        return None
    file = env.get(f"REMINDER_{name}_FILE")
    if file:
        return SecretFile(f"REMINDER_{name}_FILE", Path(file))
    folder = env.get("CREDENTIALS_DIRECTORY")
    if folder and (Path(folder) / credential).is_file():
        return SecretFile("systemd credential", Path(folder) / credential)
    return None


def loose_mode(path: Path) -> int | None:
    """The file's permission bits if group or others may read it, else None (also when
    it cannot be looked at: reading it says why)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o044 else None


def loose_secrets(env: Mapping[str, str]) -> list[tuple[SecretFile, int]]:
    """The files the program's secrets would be read from that group or others may
    read, with their permission bits (for ``reminder check``)."""
    loose = []
    for name, credential in SECRETS:
        found = secret_file(name, credential, env)
        if found is not None and (mode := loose_mode(found.path)) is not None:
            loose.append((found, mode))
    return loose


def _read(found: SecretFile) -> str:
    path, origin = found.path, found.origin
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{origin} {path}: cannot read: {reason}") from None
    if not value:
        raise ConfigError(f"{origin} {path}: the file is empty")
    mode = loose_mode(path)
    if mode is not None:
        from reminder.logs import get_logger  # noqa: PLC0415 - a command that reads no secret logs nothing

        get_logger().warning(
            "credential_file_readable", origin=origin, path=str(path), mode=f"{mode:04o}"
        )
    return value
