"""structlog, configured once: JSON lines when not on a terminal (journald), readable on one.

Event names are stable snake_case (``tick``, ``letter_enqueued``, ``reminder_sent``,
``delivery_failed``, ``digest_sent``) with key-value context. Values under a key that
names a secret are masked, as a last line of defence: secrets are never passed in.
Exceptions, ours and the libraries' (APScheduler, SQLAlchemy), are logged as a plain
traceback: never with the frames' local variables, which structlog's rich tracebacks
show by default on a terminal.

structlog is imported, and set up, when the first logger is made: a command that logs
nothing (``simulate``, ``plan``) does not pay for it. It is imported without rich
(``imports_without_rich``): its ``dev`` module loads rich and pygments when they are
installed (they are, for the CLI's tables), for the rich tracebacks that are never used
here; 4 MiB in every process that logs. httpx does the same for its own command line
(``httpx/__init__`` imports it), so the daemon imports its modules that way too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import structlog

_SECRET_KEYS = ("password", "secret", "token", "authorization", "webhook")


def _mask_secrets(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "***"
    return event


_PENDING: list[tuple[bool, str, bool]] = []  # what configure() asked for, not yet done


def configure(*, to_stdout: bool = False, level: str = "info", force: bool = False) -> None:
    """Set structlog up once (``force`` to change it, as the daemon does), when the first
    logger is made.

    Commands log to stderr so that their output (JSON, tables) stays clean; the daemon
    logs to stdout (journald). The stream is looked up when a logger is made, not now.
    """
    _PENDING[:] = [(to_stdout, level, force)]


@contextmanager
def imports_without_rich() -> Iterator[None]:
    """Within the block, ``import rich`` fails (as if it were not installed), unless rich
    is loaded already: for libraries that load it only to offer it (module docstring)."""
    hidden = "rich" not in sys.modules
    if hidden:
        sys.modules["rich"] = None  # type: ignore[assignment]  # what makes an import fail
    try:
        yield
    finally:
        if hidden and sys.modules.get("rich", "") is None:
            del sys.modules["rich"]  # after the block, rich imports as usual


def _import_without_rich() -> None:
    """structlog's first import, without rich (see the module docstring)."""
    if "structlog" not in sys.modules:
        with imports_without_rich():
            import structlog  # noqa: F401, PLC0415 - see the module docstring


def _apply(to_stdout: bool, level: str, force: bool) -> None:
    _import_without_rich()
    import structlog  # noqa: PLC0415 - see the module docstring

    if structlog.is_configured() and not force:
        return

    def stream() -> TextIO:
        return sys.stdout if to_stdout else sys.stderr

    renderer: structlog.typing.Processor
    if stream().isatty():
        # structlog's default for a terminal is a rich traceback *with the locals of every
        # frame* (a password, a token, a row of the ledger): never. Tracebacks are made
        # text by format_exc_info below; this formatter only backs that up.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        # one way to show an exception, ours and the libraries': a plain traceback, no locals
        structlog.processors.format_exc_info,
    ]
    if to_stdout:
        # The libraries' own warnings (APScheduler, SQLAlchemy) go the same way, same format.
        handler = logging.StreamHandler(stream())
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            )
        )
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # one write() a line, its newline included (print() writes the newline apart: a
        # session and its supervisor share the journal's stream, and their lines would
        # interleave between the two writes)
        logger_factory=lambda *_args: structlog.WriteLogger(stream()),
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    _import_without_rich()
    import structlog  # noqa: PLC0415 - see the module docstring

    if _PENDING:
        _apply(*_PENDING.pop())
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("reminder")
    return logger
