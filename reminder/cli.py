"""The `reminder` command: wiring only, and the one exception boundary.

Every command loads what it needs through ``App`` (config, contacts, store) and
leaves the work to the modules that own it. ``main`` turns a ``ReminderError`` into
``错误/Error: <what, where>`` on stderr and the error's exit code, with no traceback.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import sys
import time
from functools import cached_property
from pathlib import Path

import click
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from reminder import logs
from reminder.check import check as run_check
from reminder.check import template_problems
from reminder.contacts import Contacts, load_contacts
from reminder.delivery import Delivery, DeliveryReport, close_all, make_senders, send_test
from reminder.errors import DeliveryError, InputError, ReminderError, StoreError
from reminder.ledger import read_ledger
from reminder.loop import run_async
from reminder.outbox import outbox_rows, requeue
from reminder.planning import Planning
from reminder.render import Renderer
from reminder.settings import Config, load_config
from reminder.simulate import simulate
from reminder.store.completion import Outcome, mark_done, record_progress, reopen
from reminder.store.db import Store, describe, open_store
from reminder.store.importer import import_ledger
from reminder.store.targets import replan_all
from reminder.store.tasks import StoredLedger, StoredTask, load_ledger, task_facts
from reminder.tick import preview, run_tick
from reminder.views import (
    import_lines,
    ledger_json,
    outbox_json,
    outbox_table,
    plan_json,
    plan_table,
    print_lines,
    summarise,
    summary_lines,
    task_table,
)


class App:
    """What a command may need, loaded on first use and only once."""

    def __init__(self) -> None:
        console = Console()
        # piped output (less, files, CI logs) should not be cut to 80 columns
        self.out = console if console.is_terminal else Console(width=160)

    @cached_property
    def config(self) -> Config:
        return load_config()

    @cached_property
    def contacts(self) -> Contacts:
        return load_contacts(self.config.contacts_path)

    @cached_property
    def store(self) -> Store:
        store = open_store(self.config.settings.db)
        context = click.get_current_context(silent=True)
        if context is not None:  # close pooled connections when the command ends
            context.find_root().call_on_close(store.dispose)
        return store

    @cached_property
    def planning(self) -> Planning:
        settings = self.config.settings
        log = logs.get_logger()
        calendar = self.config.calendar(
            on_uncovered=lambda year: log.warning(
                "calendar_year_not_covered", year=year, fallback="Monday to Friday"
            )
        )
        return Planning(settings.policy, calendar, settings.zone, self.contacts)

    @cached_property
    def renderer(self) -> Renderer:
        folder = self.config.settings.messages.templates
        return Renderer(Path(folder) if folder else None)

    def ledger(self) -> StoredLedger:
        with self.store.read() as session:
            ledger = load_ledger(session)
        if ledger is None:
            raise InputError(
                f"{describe(self.config.settings.db)}: no ledger imported yet; "
                "run `reminder import FILE` first"
            )
        return ledger


pass_app = click.make_pass_decorator(App, ensure=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reminder")
def cli() -> None:
    """督办提醒: keeps a task ledger and reminds every responsible unit of its deadlines."""
    logs.configure(level=os.environ.get("REMINDER_LOG_LEVEL", "warning"))


@cli.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--year", type=click.IntRange(1990, 2100), help="The ledger's year (default: from its title)."
)
@click.option("--dry-run", is_flag=True, help="Read and compare, change nothing.")
@click.option("--by", "actor", default=None, help="Who imports (default: the login name).")
@pass_app
def import_command(
    app: App, file: Path, year: int | None, dry_run: bool, actor: str | None
) -> None:
    """Read a ledger (.txt, .docx, .xlsx, .csv) into the store, in one transaction."""
    started = time.perf_counter()
    settings = app.config.settings
    ledger = read_ledger(file, app.contacts.directory, settings.ledger.season, year)
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    with app.store.write() as session:
        report = import_ledger(session, ledger, sha, _now(), actor or getpass.getuser())
        replan_all(session, app.planning)
        if dry_run:
            session.rollback()
    seconds = time.perf_counter() - started
    summary = summarise(ledger.tasks, len(ledger.sections), app.contacts)
    print_lines(app.out, import_lines(report, summary, seconds))
    if dry_run:
        app.out.print("(dry run: nothing was written)", markup=False)


def _select(
    app: App, ledger: StoredLedger, unit: str | None, section: str | None, status: str | None
) -> list[StoredTask]:
    tasks = list(ledger.tasks)
    if unit:
        entry = app.contacts.directory.resolve(unit)
        name = entry.name if entry else unit
        groups = {g.name for g in app.contacts.groups if name in g.members}
        tasks = [t for t in tasks if any(u.name == name or u.name in groups for u in t.task.units)]
        if not tasks and entry is None:
            raise InputError(f"--unit {unit}: no such unit in the ledger or contacts")
    if section:
        numbers = {
            s.no for s in ledger.sections if section in (str(s.no), s.numeral) or section in s.title
        }
        if not numbers:
            raise InputError(f"--section {section}: no such section")
        tasks = [t for t in tasks if t.task.section_no in numbers]
    if status:
        tasks = [t for t in tasks if t.status == status]
    return tasks


@cli.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Print the ledger as JSON.")
@click.option("--unit", help="Only tasks of this unit (or of a group it belongs to).")
@click.option("--section", help="Only this section: number, numeral or part of its title.")
@click.option("--status", type=click.Choice(["open", "done"]), help="Only tasks in this state.")
@click.option("--summary", is_flag=True, help="Print the ledger's summary instead.")
@pass_app
def tasks_command(
    app: App,
    as_json: bool,
    unit: str | None,
    section: str | None,
    status: str | None,
    summary: bool,
) -> None:
    """List the ledger's tasks, with their units, deadlines and status."""
    ledger = app.ledger()
    selected = _select(app, ledger, unit, section, status)
    if as_json:
        click.echo(json.dumps(ledger_json(ledger, selected), ensure_ascii=False, indent=2))
    elif summary:
        app.out.print(f"{ledger.title} — year {ledger.year} ({ledger.source})", markup=False)
        facts = summarise([t.task for t in selected], len(ledger.sections), app.contacts)
        print_lines(app.out, summary_lines(facts))
    else:
        app.out.print(task_table(ledger, selected))


@cli.command("check")
@pass_app
def check_command(app: App) -> None:
    """Report config and ledger problems; exit 1 if any is an error."""
    with app.store.read() as session:
        ledger = load_ledger(session)
        facts = task_facts(session, [stored.id for stored in ledger.tasks]) if ledger else {}
    templates = template_problems(app.renderer, facts, app.contacts, app.config.settings.messages)
    problems = run_check(app.contacts, ledger, templates)
    for problem in problems:
        click.echo(f"{problem.severity:<8}{problem}")
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    click.echo(f"{errors} errors, {warnings} warnings")
    if errors:
        sys.exit(1)


def _moment(app: App, text: str | None, option: str) -> dt.datetime:
    """A local "YYYY-MM-DD HH:MM" in the configured zone (now if not given), as UTC."""
    if text is None:
        return _now()
    try:
        local = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise InputError(f"{option} {text!r}: expected YYYY-MM-DD HH:MM") from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=app.config.settings.zone)
    return local.astimezone(dt.UTC)


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} {text!r}: expected YYYY-MM-DD") from None


@cli.command("plan")
@click.option(
    "--at", "at", metavar="'YYYY-MM-DD HH:MM'", help="The moment (local time); now if not given."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def plan_command(app: App, at: str | None, as_json: bool) -> None:
    """What would be sent at a moment, given the store. Sends nothing, writes nothing."""
    moment = _moment(app, at, "--at")
    app.ledger()  # a clear message before the first import
    messages = preview(app.store, app.planning, moment)
    if as_json:
        click.echo(
            json.dumps(plan_json(messages, app.config.settings.zone), ensure_ascii=False, indent=2)
        )
        return
    app.out.print(plan_table(messages, app.config.settings.zone))
    app.out.print(f"{len(messages)} messages", markup=False)


@cli.command("simulate")
@click.option("--from", "start", required=True, metavar="YYYY-MM-DD", help="First day.")
@click.option("--to", "end", required=True, metavar="YYYY-MM-DD", help="Last day.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write every message here (JSON lines)."
)
@pass_app
def simulate_command(app: App, start: str, end: str, out: Path | None) -> None:
    """Run the policy over a period on a virtual clock, on a copy of the store."""
    first, last = _day(start, "--from"), _day(end, "--to")
    if last < first:
        raise InputError(f"--to {end} is before --from {start}")
    app.ledger()
    report = simulate(app.store, app.planning, first, last, out)
    print_lines(app.out, report.lines())


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


@cli.command("done")
@click.argument("number", type=int)
@click.option("--unit", help="Only this unit's part (a group: all its members).")
@click.option("--note", default="", help="A note kept with the completion.")
@_BY
@pass_app
def done_command(app: App, number: int, unit: str | None, note: str, actor: str | None) -> None:
    """Mark a task (or one unit's part of it) done: its reminders stop."""
    with app.store.write() as session:
        outcome = mark_done(
            session, app.planning, number, unit, note, actor or getpass.getuser(), _now()
        )
    _outcome(app, "done", outcome)


@cli.command("reopen")
@click.argument("number", type=int)
@click.option("--note", default="", help="Why it is open again.")
@_BY
@pass_app
def reopen_command(app: App, number: int, note: str, actor: str | None) -> None:
    """Open a task again: its reminders resume."""
    with app.store.write() as session:
        outcome = reopen(session, app.planning, number, note, actor or getpass.getuser(), _now())
    _outcome(app, "reopened", outcome)


@cli.command("progress")
@click.argument("number", type=int)
@click.option("--unit", required=True, help="The unit reporting.")
@click.option("--note", required=True, help="What was done.")
@_BY
@pass_app
def progress_command(app: App, number: int, unit: str, note: str, actor: str | None) -> None:
    """Record a unit's progress on a task (it answers this month's check-in)."""
    with app.store.write() as session:
        outcome = record_progress(
            session, app.planning, number, unit, note, actor or getpass.getuser(), _now()
        )
    _outcome(app, "progress noted", outcome)


@cli.command("run")
@click.option("--once", is_flag=True, help="One tick (plan, enqueue, deliver), then exit.")
@click.option("--at", "at", metavar="'YYYY-MM-DD HH:MM'", help="With --once: the tick's moment.")
@pass_app
def run_command(app: App, once: bool, at: str | None) -> None:
    """The daemon; with --once, one tick and exit (0, or non-zero if the tick failed)."""
    if not once:
        raise InputError("the daemon is not part of this version yet; use `reminder run --once`")
    moment = _moment(app, at, "--at")
    app.ledger()
    result = run_tick(app.store, app.planning, moment)
    local = moment.astimezone(app.config.settings.zone)
    app.out.print(
        f"tick at {local:%Y-%m-%d %H:%M}: {result.targets} due, {len(result.messages)} "
        f"messages, {result.enqueued} enqueued ({result.superseded} superseded)",
        markup=False,
    )
    report = run_async(deliver_due(app, moment))
    app.out.print(report.line(), markup=False)


async def deliver_due(app: App, due_by: dt.datetime) -> DeliveryReport:
    senders = make_senders(app.config.settings, app.contacts)
    delivery = Delivery(app.store, app.config.settings, app.contacts, app.renderer, senders)
    try:
        return await delivery.run(due_by)
    finally:
        delivery.close()
        await close_all(senders)


@cli.command("outbox")
@click.option(
    "--status",
    type=click.Choice(["pending", "sending", "sent", "retry", "dead", "superseded"]),
    help="Only messages in this state.",
)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def outbox_command(app: App, status: str | None, limit: int, as_json: bool) -> None:
    """The newest messages of the outbox, with their last attempt."""
    with app.store.read() as session:
        rows = outbox_rows(session, status, limit)
    zone = app.config.settings.zone
    if as_json:
        click.echo(
            json.dumps([outbox_json(row, zone) for row in rows], ensure_ascii=False, indent=2)
        )
        return
    app.out.print(outbox_table(rows, zone))


@cli.command("retry")
@click.argument("key", required=False)
@click.option("--dead", is_flag=True, help="Every dead message.")
@pass_app
def retry_command(app: App, key: str | None, dead: bool) -> None:
    """Send a dead (or waiting) message again at the next delivery."""
    if (key is None) == (not dead):
        raise InputError("give a message KEY or --dead, not both")
    with app.store.write() as session:
        count = requeue(session, key, _now())
    if key is not None and count == 0:
        raise InputError(f"{key}: no such message waiting or dead in the outbox")
    app.out.print(f"{count} messages queued again", markup=False)


@cli.command("send-test")
@click.option("--to", "address", required=True, help="Where to send the test message.")
@pass_app
def send_test_command(app: App, address: str) -> None:
    """Send one test e-mail now through the configured SMTP server (or the file channel)."""
    outcome = run_async(send_test(app.config.settings, app.contacts, address, _now()))
    if outcome.status != "sent":
        raise DeliveryError(f"test message to {address}: {outcome.detail}", permanent=True)
    app.out.print(f"sent to {address}: {outcome.detail}", markup=False)


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
