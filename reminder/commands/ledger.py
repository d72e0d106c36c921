"""Commands about the ledger: import, tasks, check."""

from __future__ import annotations

import getpass
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from reminder.app import App, now, pass_app
from reminder.contacts import Problem, load_contacts
from reminder.errors import ConfigError, InputError, LedgerError, SchemaError
from reminder.ledger import parse_ledger
from reminder.loop import paused_collector
from reminder.records import StoredLedger, StoredTask
from reminder.settings import config_folder
from reminder.store.db import sqlite_file_missing
from reminder.store.importer import ImportReport, apply_import, compare, plan_import
from reminder.store.overview import digest_inputs
from reminder.store.tasks import (
    ledger_facts,
    ledger_header,
    ledger_years,
    task_batches,
    units_listed,
)
from reminder.views import (
    import_lines,
    ledger_json_text,
    print_lines,
    summarise,
    summary_lines,
    task_table,
)

# more of the stored tasks than this share gone: most likely another ledger, not a revision
REPLACE_SHARE = 0.5


def read_file(path: Path) -> bytes:
    """A ledger file's bytes; what keeps it from being read, in one line."""
    source = str(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LedgerError("no such file", source=source) from None
    except IsADirectoryError:
        raise LedgerError("is a folder, not a ledger file", source=source) from None
    except OSError as exc:
        raise LedgerError(f"cannot read: {exc.strerror}", source=source) from None


def refuse_replacement(report: ImportReport) -> None:
    """A ledger that would remove more than half of the stored tasks is imported only
    with ``--replace``: a re-import is a revision, not another ledger."""
    removed = len(report.removed)
    if report.stored and removed > REPLACE_SHARE * report.stored:
        raise InputError(
            f"{report.ledger.source}: would remove {removed} of the {report.stored} stored "
            f"tasks (more than half; title {report.ledger.title!r}); if this ledger is "
            "meant to replace the stored one, import it with --replace"
        )


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--year", type=click.IntRange(1990, 2100), help="The ledger's year (default: from its title)."
)
@click.option("--dry-run", is_flag=True, help="Read and compare, change nothing.")
@click.option(
    "--replace",
    is_flag=True,
    help="Accept a ledger that removes more than half of the stored tasks.",
)
@click.option("--by", "actor", default=None, help="Who imports (default: the login name).")
@pass_app
def import_command(
    app: App, file: Path, year: int | None, dry_run: bool, replace: bool, actor: str | None
) -> None:
    """Read a ledger (.txt, .docx, .xlsx, .csv) into the store, in one transaction."""
    started = time.perf_counter()
    settings = app.config.settings
    app.creates_store = True  # the first step on a new machine (never an upgrade)
    data = read_file(file)
    with paused_collector():
        ledger = parse_ledger(data, str(file), app.contacts.directory, settings.ledger.season, year)
        sha = hashlib.sha256(data).hexdigest()
        if dry_run and sqlite_file_missing(settings.db):
            # nothing stored yet: compared with an empty store, which is not created
            report = compare(ledger, sha)
        elif dry_run:
            with app.store.read() as session:
                report, _plan = plan_import(session, ledger, sha)
        else:
            with app.store.write() as session:
                report, plan = plan_import(session, ledger, sha)
                if not replace:
                    refuse_replacement(report)
                actor = actor or getpass.getuser()
                apply_import(session, report, plan, now(), actor, app.planning)
    if dry_run and not replace:
        refuse_replacement(report)
    seconds = time.perf_counter() - started
    summary = summarise(ledger.tasks, len(ledger.sections), app.contacts)
    print_lines(app.out, import_lines(report, summary, seconds))
    if dry_run:
        app.out.print("(dry run: nothing was written)", markup=False)


def _select(
    app: App, ledger: StoredLedger, unit: str | None, section: str | None, status: str | None
) -> Callable[[StoredTask], bool]:
    """Which tasks the options keep (``ledger``: its sections at least)."""
    tests: list[Callable[[StoredTask], bool]] = []
    if unit:
        entry = app.contacts.directory.resolve(unit)
        name = entry.name if entry else unit
        names = {name} | {g.name for g in app.contacts.groups if name in g.members}
        if entry is None and not _lists_any(app, names):
            raise InputError(f"--unit {unit}: no such unit in the ledger or contacts")
        tests.append(lambda t: any(u.name in names for u in t.task.units))
    if section:
        numbers = {
            s.no for s in ledger.sections if section in (str(s.no), s.numeral) or section in s.title
        }
        if not numbers:
            raise InputError(f"--section {section}: no such section")
        tests.append(lambda t: t.task.section_no in numbers)
    if status:
        tests.append(lambda t: t.status == status)
    return lambda t: all(test(t) for test in tests)


def _lists_any(app: App, names: set[str]) -> bool:
    """Whether an active task lists one of these units."""
    with app.store.read() as session:
        return units_listed(session, names)


@click.command("tasks")
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
    if as_json:  # a task at a time, the first printed before the last is read
        with app.store.read() as session:
            header = ledger_header(session)
            if header is None:
                raise app.nothing_imported()
            keep = _select(app, header, unit, section, status)
            tasks = (t for batch in task_batches(session) for t in batch if keep(t))
            for piece in ledger_json_text(header, tasks):
                click.echo(piece, nl=False)
        click.echo("")
        return
    ledger = app.ledger()
    keep = _select(app, ledger, unit, section, status)
    selected = [t for t in ledger.tasks if keep(t)]
    if summary:
        app.out.print(f"{ledger.title} — year {ledger.year} ({ledger.source})", markup=False)
        facts = summarise([t.task for t in selected], len(ledger.sections), app.contacts)
        print_lines(app.out, summary_lines(facts))
    else:
        app.out.print(task_table(ledger, selected))


@click.command("check")
@pass_app
def check_command(app: App) -> None:
    """Report config and ledger problems; exit 1 if any is an error."""
    broken = config_errors(app)
    if broken:
        for message in broken:
            click.echo(f"{'error':<8}{message}")
        click.echo(f"{len(broken)} configuration errors: fix them, then check again")
        sys.exit(ConfigError.exit_code)
    # the templates (Jinja2): for this command only
    from reminder.check import channel_problems, rendering_problems  # noqa: PLC0415
    from reminder.check import check as run_check  # noqa: PLC0415
    from reminder.secrets import loose_secrets  # noqa: PLC0415

    settings = app.config.settings
    today = now().astimezone(settings.zone).date()
    inputs, schema = None, None
    calendar = app.planning.calendar.warning(set(), today)
    try:
        store = app.store
    except SchemaError as refused:  # none yet: said as "no ledger imported yet" below
        schema = None if refused.missing else Problem("error", "store", str(refused))
    else:
        with store.read() as session:
            inputs = digest_inputs(session)
            calendar = app.planning.calendar.warning(ledger_years(session), today)
    ledger = inputs.ledger if inputs else None
    templates = []
    if inputs is not None:
        facts = ledger_facts(ledger) if ledger else {}
        templates = rendering_problems(
            app.renderer, inputs, facts, app.planning, settings.office, today
        )
    problems = [schema] if schema is not None else []
    problems += run_check(app.contacts, ledger, templates)
    problems += channel_problems(app.config, app.contacts, os.environ, loose_secrets(os.environ))
    if calendar:
        problems.append(Problem("warning", "calendar", calendar))
    for problem in problems:
        click.echo(f"{problem.severity:<8}{problem}")
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    click.echo(f"{errors} errors, {warnings} warnings")
    if errors:
        sys.exit(1)


def config_errors(app: App) -> list[str]:
    """Every error of the config folder, each file read whatever the others hold: the
    settings (reminder.toml and the environment), contacts.toml, calendar.toml."""
    try:
        folder = config_folder(os.environ)
    except ConfigError as exc:
        return list(exc.problems)
    errors: list[str] = []
    try:
        settings = app.config.settings
    except ConfigError as exc:
        errors += exc.problems
        settings = None
    try:
        load_contacts(folder / "contacts.toml")
    except ConfigError as exc:
        errors += exc.problems
    if settings is not None:  # the calendar is read with the settings' policy
        try:
            app.config.calendar()
        except ConfigError as exc:
            errors += exc.problems
    return errors


COMMANDS = [import_command, tasks_command, check_command]
