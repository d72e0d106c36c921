"""Logging: what an error log may show. Never a frame's local variables (a password)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from reminder import logs


class Terminal(io.StringIO):
    """stdout as a terminal: the pretty renderer, where structlog would show locals."""

    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def connect_to_server() -> None:
    # made at run time, so that only a frame's locals (not its source line) can show it
    password = "S3CRET-IN-A-LOCAL".lower()
    raise ConnectionError(f"refused (user {len(password)})")


@pytest.mark.parametrize("stream", [Terminal, Pipe], ids=["terminal", "json"])
def test_error_logs_never_print_local_variables(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, stream: type[io.StringIO]
) -> None:
    out = stream()
    monkeypatch.setattr(sys, "stdout", out)
    logs.configure(to_stdout=True, force=True)  # as the daemon does
    log = logs.get_logger()
    try:
        connect_to_server()
    except ConnectionError:
        # a library's error through the standard logging (as APScheduler logs a job that
        # raised), and ours
        logging.getLogger("apscheduler.executors").exception("Job raised an exception")
        log.exception("tick_failed")
    text = out.getvalue()
    assert "s3cret" not in text
    # the tracebacks are there, as text: file, line, function, the error
    assert text.count("ConnectionError: refused (user 17)") == 2, text
    assert text.count("in connect_to_server") == 2
    if stream is Pipe:
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["event"] for line in lines] == ["Job raised an exception", "tick_failed"]
        assert all("Traceback" in line["exception"] for line in lines)
