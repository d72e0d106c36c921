"""The `reminder` command: wiring only, and the one exception boundary.

Every command loads what it needs through ``App`` (config, contacts, store) and
leaves the work to the modules that own it. ``main`` turns a ``ReminderError`` into
``错误/Error: <what, where>`` on stderr and the error's exit code, with no traceback.
"""

from __future__ import annotations

import os
import sys

import click
from sqlalchemy.exc import DBAPIError

from reminder import logs
from reminder.commands import calendar, ledger, planning, reports, sending
from reminder.errors import ReminderError, StoreError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reminder")
def cli() -> None:
    """督办提醒: keeps a task ledger and reminds every responsible unit of its deadlines."""
    logs.configure(level=os.environ.get("REMINDER_LOG_LEVEL", "warning"))


for command in (
    *ledger.COMMANDS,
    *calendar.COMMANDS,
    *planning.COMMANDS,
    *sending.COMMANDS,
    *reports.COMMANDS,
):
    cli.add_command(command)


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
