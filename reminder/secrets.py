"""Secrets: from the environment, a file, or a systemd credential; never from config files.

``secret("SMTP_PASSWORD", "smtp_password")`` looks, in order, at ``REMINDER_SMTP_PASSWORD``,
the file named by ``REMINDER_SMTP_PASSWORD_FILE``, and ``$CREDENTIALS_DIRECTORY/smtp_password``
(systemd ``LoadCredential=``). Errors name the variable or the file, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from reminder.errors import ConfigError


def secret(name: str, credential: str) -> str | None:
    value = os.environ.get(f"REMINDER_{name}")
    if value:
        return value
    file = os.environ.get(f"REMINDER_{name}_FILE")
    if file:
        return _read(Path(file), f"REMINDER_{name}_FILE")
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if folder and (Path(folder) / credential).is_file():
        return _read(Path(folder) / credential, "systemd credential")
    return None


def _read(path: Path, origin: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{origin} {path}: cannot read: {reason}") from None
    if not value:
        raise ConfigError(f"{origin} {path}: the file is empty")
    return value
