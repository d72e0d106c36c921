"""The one error tree of the package.

Every error a user can cause or meet (bad ledger, bad config, unreachable server)
is a ``ReminderError``. The CLI catches exactly this base class, prints
``错误/Error: <message>`` on one line and exits with the class's ``exit_code``;
anything else is a bug and keeps its traceback.

Exit codes are part of the contract with systemd: ``ConfigError`` has its own code
so that ``RestartPreventExitStatus=`` can stop a restart loop on a broken config.
"""

from __future__ import annotations

from collections.abc import Sequence


class ReminderError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(ReminderError, ValueError):
    """Bad input given to a command: a missing file, an unknown task, a bad option."""

    exit_code = 2


class LedgerError(InputError):
    """A ledger file that cannot be read: names the file, the line and the text."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None) -> None:
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line


class ConfigError(ReminderError, ValueError):
    """Invalid configuration, contacts or templates: names the file, key and value.

    ``more``: the other errors found in the same files; the message says how many there
    are, and `reminder check` lists them all (``problems``)."""

    exit_code = 78  # EX_CONFIG from sysexits.h; systemd: RestartPreventExitStatus=78

    def __init__(self, message: str, *, more: Sequence[str] = ()) -> None:
        others = f" (and {len(more)} more: `reminder check` lists them)" if more else ""
        super().__init__(message + others)
        self.problems: tuple[str, ...] = (message, *more)


class StoreError(ReminderError, RuntimeError):
    """The store cannot be opened or is in a state this version cannot use."""

    exit_code = 74  # EX_IOERR


class SchemaError(StoreError):
    """The store's schema is not the one this version uses: `reminder db upgrade` makes
    it so (or it is newer than this version knows)."""

    exit_code = 78  # EX_CONFIG: systemd does not restart into it (RestartPreventExitStatus)
    missing = False  # there is no store yet (rather than one of another version)


class AlreadyRunningError(StoreError):
    """A second daemon was started on the same SQLite file."""

    exit_code = 75  # EX_TEMPFAIL


class DeliveryError(ReminderError):
    """A message that could not be delivered.

    ``permanent``: SMTP 5xx, a refused recipient, HTTP 4xx, a bad template: retrying
    cannot help, the message goes to dead-letter. Otherwise (SMTP 4xx, timeouts,
    disconnects, HTTP 5xx) it is retried with capped backoff. ``retry_after_s`` is a
    delay the other side asked for (HTTP Retry-After, a robot's rate limit).
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.retry_after_s = retry_after_s
