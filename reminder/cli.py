"""The `reminder` command: wiring only, and the one exception boundary.

Every command loads what it needs through ``App`` (config, contacts, store) and
leaves the work to the modules that own it. ``main`` turns a ``ReminderError`` into
``错误/Error: <what, where>`` on stderr and the error's exit code, with no traceback.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import textwrap

import click

from reminder.errors import ReminderError

# each command: the module that defines it (a command imports only what it needs:
# `simulate` needs no SMTP client, `status` no scheduler) and its one-line help, which
# `reminder --help` lists without importing any of them (a test holds the two to the
# commands' own help)
COMMANDS = {
    "import": "ledger",
    "tasks": "ledger",
    "check": "ledger",
    "calendar": "calendar",
    "plan": "work",
    "simulate": "work",
    "done": "work",
    "reopen": "work",
    "progress": "work",
    "run": "sending",
    "outbox": "sending",
    "retry": "sending",
    "send-test": "sending",
    "status": "overview",
    "digest": "overview",
    "web": "answers",
    "review": "answers",
    "history": "answers",
    "export": "answers",
    "db": "db",
}
SHORT_HELP = {
    "calendar": "A year's days off and make-up working days, and where they come from.",
    "check": "Report config and ledger problems; exit 1 if any is an error.",
    "db": "The store's schema: `reminder db upgrade` creates it or brings it to this version.",
    "digest": "Send today's digests (and escalation lists) now, if not sent yet; or print them.",
    "done": "Mark a task (or one unit's part of it) done: its reminders stop.",
    "export": "Write the board as a workbook (通报: units ranked; every task × unit by state).",
    "history": "A task's journal: letters and their reading, notes, reports, decisions.",
    "import": "Read a ledger (.txt, .docx, .xlsx, .csv) into the store, in one transaction.",
    "outbox": "The newest messages of the outbox, with their last attempt.",
    "plan": "What would be sent at a moment, given the store.",
    "progress": "Record a unit's progress on a task (it answers this month's check-in).",
    "reopen": "Open a task again: its reminders resume.",
    "retry": "Send a dead (or waiting) message again at the next delivery.",
    "review": "What waits for review: completions (办结审核) and extensions (延期审批).",
    "run": "The daemon; with --once, one tick and exit (0, or non-zero if the tick failed).",
    "send-test": (
        "Send one test e-mail now through the configured SMTP server (or the file channel)."
    ),
    "simulate": "Run the policy over a period on a virtual clock, on a copy of the store.",
    "status": (
        "Last tick, next digest, the queue, dead letters, recent failures, the ledger's lights."
    ),
    "tasks": "List the ledger's tasks, with their units, deadlines and status.",
    "web": "Serve the answers web ([web] listen): units' pages and the supervisors' board.",
}
EX_STORE = 74  # ``StoreError.exit_code``, for a database error the store did not wrap


class LazyGroup(click.Group):
    """Loads a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        found = importlib.import_module(f"reminder.commands.{module}")
        if not gc.isenabled():  # paused while the command starts (see reminder/__main__.py)
            # what start-up made (modules, classes, functions) lives as long as the
            # process: frozen, the first collection does not walk its 300,000 objects
            # (~30 ms), nor do later full ones (not done in a process that calls ``main``,
            # the tests': its objects are not ours to freeze)
            gc.freeze()
            gc.enable()
        commands: list[click.Command] = found.COMMANDS
        return next(command for command in commands if command.name == cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their help, from ``SHORT_HELP``: no command module is loaded
        (cut to the width as ``click.Group.format_commands`` does)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, _shorten(SHORT_HELP.get(name, ""), limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shorten(text: str, limit: int) -> str:
    """As click shortens a command's help for the list of commands."""
    if len(text) <= limit:
        return text
    return textwrap.shorten(text, max(limit, 3), placeholder="...", break_on_hyphens=False)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reminder")
def cli() -> None:
    """督办提醒: keeps a task ledger and reminds every responsible unit of its deadlines."""
    from reminder import logs  # noqa: PLC0415 - not for --help and --version

    logs.configure(level=os.environ.get("REMINDER_LOG_LEVEL", "warning"))


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: the single place where errors become exit codes."""
    try:
        cli.main(args=argv, prog_name="reminder", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"错误/Error: {_click_message(exc)}", err=True)
        sys.exit(exc.exit_code)
    except ReminderError as exc:
        click.echo(f"错误/Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        reason = _database_error(exc)
        if reason is None:
            raise
        click.echo(f"错误/Error: database: {reason}", err=True)
        sys.exit(EX_STORE)


def _click_message(exc: click.ClickException) -> str:
    """Click's message on one line; a usage error names the command and where its help is
    (instead of click's usage block, a blank line and ``Error: …``)."""
    message = " ".join(exc.format_message().split())
    if not isinstance(exc, click.UsageError):
        return message
    path = exc.ctx.command_path if exc.ctx is not None else "reminder"
    return f"{path}: {message} (see `{path} --help`)"


def _database_error(exc: Exception) -> str | None:
    """The first line of a driver's error that reached the boundary unwrapped, else None.
    (SQLAlchemy is imported only by the commands that open the store.)"""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415 - see the docstring

    from reminder.store.db import driver_error  # noqa: PLC0415 - loaded with SQLAlchemy

    return driver_error(exc) if isinstance(exc, DBAPIError) else None
