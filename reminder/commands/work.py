"""Commands about the work: what would be sent (plan, simulate) and what was done
(done, reopen, progress)."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from reminder.app import App, now, parse_day, parse_moment, pass_app
from reminder.store.completion import Outcome, mark_done, record_progress, reopen
from reminder.tick import preview


@click.command("plan")
@click.option(
    "--at", "at", metavar="'YYYY-MM-DD HH:MM'", help="The moment (local time); now if not given."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def plan_command(app: App, at: str | None, as_json: bool) -> None:
    """What would be sent at a moment, given the store. Sends nothing, writes nothing."""
    moment = parse_moment(app, at, "--at")
    app.require_ledger()
    settings = app.config.settings
    found = preview(app.store, app.planning, settings, moment)
    from reminder.views import plan_json, plan_table  # noqa: PLC0415 - rich: for tables only

    if as_json:
        click.echo(json.dumps(plan_json(found, settings.zone), ensure_ascii=False, indent=2))
        return
    app.out.print(plan_table(found, settings.zone))
    letters = len(set(found.letters.values()))
    app.out.print(f"{len(found.items)} items in {letters} letters", markup=False)


@click.command("simulate")
@click.option("--from", "start", required=True, metavar="YYYY-MM-DD", help="First day.")
@click.option("--to", "end", required=True, metavar="YYYY-MM-DD", help="Last day.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write every message here (JSON lines)."
)
@pass_app
def simulate_command(app: App, start: str, end: str, out: Path | None) -> None:
    """Run the policy over a period on a virtual clock, on a copy of the store."""
    from reminder.simulate import check_period, simulate  # noqa: PLC0415 - this command's

    first, last = parse_day(start, "--from"), parse_day(end, "--to")
    check_period(first, last)  # before the store is opened
    days = (last - first).days + 1
    with _progress(days) as advance:
        report = simulate(app.store, app.planning, app.config.settings, first, last, out, advance)
    for line in report.lines():
        click.echo(line)


@contextmanager
def _progress(days: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal (rich, gone when done); nothing else
    when stderr is piped, so output and logs stay as they are."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # noqa: PLC0415 - on a terminal only
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("simulating", total=days)
        yield lambda done: bar.update(task, completed=done)


def _outcome(app: App, verb: str, outcome: Outcome) -> None:
    shown = "、".join(outcome.units[:5]) if outcome.units else "no unit"
    more = len(outcome.units) - 5
    units = f"{shown} and {more} more" if more > 0 else shown
    changed = "" if outcome.changed else " (nothing changed)"
    app.out.print(
        f"task {outcome.task_no}: {verb} for {units}; task is {outcome.status}{changed}",
        markup=False,
    )


_BY = click.option("--by", "actor", default=None, help="Who records it (default: the login name).")


@click.command("done")
@click.argument("number", type=int)
@click.option("--unit", help="Only this unit's part (a group: all its members).")
@click.option("--note", default="", help="A note kept with the completion.")
@_BY
@pass_app
def done_command(app: App, number: int, unit: str | None, note: str, actor: str | None) -> None:
    """Mark a task (or one unit's part of it) done: its reminders stop."""
    with app.store.write() as session:
        outcome = mark_done(
            session, app.planning, number, unit, note, actor or getpass.getuser(), now()
        )
    _outcome(app, "done", outcome)


@click.command("reopen")
@click.argument("number", type=int)
@click.option("--note", default="", help="Why it is open again.")
@_BY
@pass_app
def reopen_command(app: App, number: int, note: str, actor: str | None) -> None:
    """Open a task again: its reminders resume."""
    with app.store.write() as session:
        outcome = reopen(session, app.planning, number, note, actor or getpass.getuser(), now())
    _outcome(app, "reopened", outcome)


@click.command("progress")
@click.argument("number", type=int)
@click.option("--unit", required=True, help="The unit reporting.")
@click.option("--note", required=True, help="What was done.")
@_BY
@pass_app
def progress_command(app: App, number: int, unit: str, note: str, actor: str | None) -> None:
    """Record a unit's progress on a task (it answers this month's check-in)."""
    with app.store.write() as session:
        outcome = record_progress(
            session, app.planning, number, unit, note, actor or getpass.getuser(), now()
        )
    _outcome(app, "progress noted", outcome)


COMMANDS = [plan_command, simulate_command, done_command, reopen_command, progress_command]
