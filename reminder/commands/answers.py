"""Commands about answers: web (serve, revoke), review, history, export."""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path

import click

from reminder.app import App, now, pass_app
from reminder.errors import InputError
from reminder.store import answers
from reminder.store.models import EventRow, TaskRow
from reminder.web.links import Scope, revoke


def _actor() -> answers.Actor:
    return answers.Actor(getpass.getuser(), "cli")


@click.group("web", invoke_without_command=True)
@click.pass_context
def web_command(ctx: click.Context) -> None:
    """Serve the answers web ([web] listen): units' pages and the supervisors' board."""
    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.ensure_object(App)
    from reminder.web.serve import server  # noqa: PLC0415 - uvicorn: for this command only

    app.require_ledger()
    settings = app.config.settings
    serving = server(app.config, app.store, app.planning)
    click.echo(
        f"reminder web: listening on http://{settings.web.listen} "
        f"(links point to {settings.web.base_url or 'nowhere: [web] base_url is empty'})"
    )
    try:
        serving.run()
    except OSError as exc:
        raise InputError(f"[web] listen {settings.web.listen}: {exc.strerror}") from None
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        raise InputError(f"[web] listen {settings.web.listen}: cannot listen there") from exc


@web_command.command("revoke")
@click.option("--unit", help="Revoke every link of this unit.")
@click.option("--supervisor", help="Revoke every board link of this supervisor.")
@pass_app
def revoke_command(app: App, unit: str | None, supervisor: str | None) -> None:
    """Make a unit's (or a supervisor's) links stop working at once."""
    if bool(unit) == bool(supervisor):
        raise InputError("give --unit NAME or --supervisor NAME")
    scope, name = (Scope.UNIT, unit) if unit else (Scope.SUPERVISOR, supervisor)
    assert name is not None
    moment = now()
    with app.store.write() as session:
        count = revoke(session, scope, name, moment)
        session.add(
            EventRow(
                at=moment,
                kind="revoke",
                unit=name,
                note=f"{count} links",
                actor=getpass.getuser(),
                origin="cli",
            )
        )
    click.echo(f"revoked {count} links of {name}; its next letter carries a new one")


@click.group("review", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def review_command(ctx: click.Context, as_json: bool) -> None:
    """What waits for review: completions (办结审核) and extensions (延期审批)."""
    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.ensure_object(App)
    with app.store.read() as session:
        waiting = answers.pending(session)
    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "task": no,
            "unit": a.unit,
            "at": a.at.astimezone(app.config.settings.zone).isoformat(timespec="minutes"),
            "note": a.note,
            "due": a.due.isoformat() if a.due else None,
            "attachment": a.attachment or None,
        }
        for a, no in waiting
    ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("nothing waits for review")
    for row in rows:
        what = "办结审核" if row["kind"] == answers.COMPLETION else f"延期至{row['due']}"
        click.echo(
            f"#{row['id']} {what} task {row['task']} {row['unit']} ({row['at']}): {row['note']}"
        )


def _decide(app: App, answer_id: int, approve: bool, note: str, due: str | None) -> None:
    day = None
    if due:
        try:
            day = dt.date.fromisoformat(due)
        except ValueError:
            raise InputError(f"--due {due}: not a date (YYYY-MM-DD)") from None
    with app.store.write() as session:
        answer = answers.decide(
            session, app.planning, answer_id, approve, note, _actor(), now(), day
        )
        task = session.get(TaskRow, answer.task_id)
    number = task.no if task else "?"
    click.echo(f"#{answer.id} task {number} {answer.unit}: {answer.status}")


@review_command.command("approve")
@click.argument("answer_id", type=int)
@click.option("--note", default="", help="The decision's note.")
@click.option("--due", help="An extension: approve to this date instead (YYYY-MM-DD).")
@pass_app
def approve_command(app: App, answer_id: int, note: str, due: str | None) -> None:
    """Approve a completion (the part is done) or an extension (the unit's due moves)."""
    _decide(app, answer_id, True, note, due)


@review_command.command("return")
@click.argument("answer_id", type=int)
@click.option("--note", required=True, help="Why (the unit reads it in its next letter).")
@pass_app
def return_command(app: App, answer_id: int, note: str) -> None:
    """Return a completion report (退回): the reminders resume."""
    _decide(app, answer_id, False, note, None)


@review_command.command("refuse")
@click.argument("answer_id", type=int)
@click.option("--note", required=True, help="Why.")
@pass_app
def refuse_command(app: App, answer_id: int, note: str) -> None:
    """Refuse an extension (不予延期)."""
    _decide(app, answer_id, False, note, None)


@click.command("history")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def history_command(app: App, number: int, as_json: bool) -> None:
    """A task's journal: letters and their reading, notes, reports, decisions."""
    zone = app.config.settings.zone
    with app.store.read() as session:
        entries = answers.history(session, number)
    shown = [
        {
            **entry,
            "at": _moment(entry["at"], zone),
            **({"read_at": _moment(entry["read_at"], zone)} if "read_at" in entry else {}),
        }
        for entry in entries
    ]
    if as_json:
        click.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    for entry in shown:
        read = f" (read {entry['read_at']})" if entry.get("read_at") else ""
        unit = f" {entry['unit']}" if entry["unit"] else ""
        click.echo(f"{entry['at']} {entry['action']}{unit} by {entry['by']}: {entry['note']}{read}")


def _moment(value: object, zone: dt.tzinfo) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(zone).isoformat(timespec="seconds")
    return None


@click.command("export")
@click.option("--xlsx", "path", required=True, type=click.Path(path_type=Path), help="File.")
@pass_app
def export_command(app: App, path: Path) -> None:
    """Write the board as a workbook (通报: units ranked; every task × unit by state)."""
    from reminder.web.export import workbook  # noqa: PLC0415 - openpyxl: for this only

    app.require_ledger()
    today = now().astimezone(app.config.settings.zone).date()
    with app.store.read() as session:
        body = workbook(session, app.planning, app.config.settings, today)
    temporary = path.with_name(f".{path.name}.part")
    try:
        temporary.write_bytes(body)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    click.echo(f"wrote {path}")


COMMANDS = [web_command, review_command, history_command, export_command]
