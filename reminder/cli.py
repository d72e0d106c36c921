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

import click
from sqlalchemy.exc import DBAPIError

from reminder import logs
from reminder.errors import ReminderError, StoreError

# each command and the module that defines it: a command imports only what it needs
# (`simulate` needs no SMTP client, `status` no scheduler)
COMMANDS = {
    "import": "ledger",
    "tasks": "ledger",
    "check": "ledger",
    "calendar": "calendar",
    "plan": "planning",
    "simulate": "planning",
    "done": "planning",
    "reopen": "planning",
    "progress": "planning",
    "run": "sending",
    "outbox": "sending",
    "retry": "sending",
    "send-test": "sending",
    "status": "reports",
    "digest": "reports",
    "web": "answers",
    "review": "answers",
    "history": "answers",
    "export": "answers",
}


class LazyGroup(click.Group):
    """Loads a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        found = importlib.import_module(f"reminder.commands.{module}")
        gc.enable()  # paused while the command starts (see reminder/__main__.py)
        commands: list[click.Command] = found.COMMANDS
        return next(command for command in commands if command.name == cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reminder")
def cli() -> None:
    """督办提醒: keeps a task ledger and reminds every responsible unit of its deadlines."""
    logs.configure(level=os.environ.get("REMINDER_LOG_LEVEL", "warning"))


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: the single place where errors become exit codes."""
    try:
        cli.main(args=argv, prog_name="reminder", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ReminderError as exc:
        click.echo(f"错误/Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        click.echo(f"错误/Error: database: {reason}", err=True)
        sys.exit(StoreError.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
