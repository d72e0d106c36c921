"""What every command may need, loaded on first use and only once."""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reminder.clock import now
from reminder.contacts import Contacts, load_contacts
from reminder.errors import ConfigError, InputError
from reminder.records import StoredLedger
from reminder.rules import Rules
from reminder.settings import Config, Settings, load_config
from reminder.store.db import SchemaUse, Store, describe, open_store
from reminder.store.overview import digest_inputs
from reminder.store.tasks import latest_import, ledger_facts, load_ledger

__all__ = ["App", "now", "parse_day", "parse_moment", "pass_app", "refuse_broken_templates"]

if TYPE_CHECKING:
    from rich.console import Console

    from reminder.render import Renderer


class App:
    """What a command may need, loaded on first use and only once (rich and Jinja2 too:
    a command that prints no table and renders no message does not load them)."""

    @cached_property
    def out(self) -> Console:
        from rich.console import Console  # noqa: PLC0415 - see the class docstring

        # emoji=False: a message key's ":email:" is text, not ✉
        console = Console(emoji=False)
        # piped output (less, files, CI logs) should not be cut to 80 columns
        return console if console.is_terminal else Console(width=160, emoji=False)

    @cached_property
    def config(self) -> Config:
        return load_config()

    @cached_property
    def contacts(self) -> Contacts:
        return load_contacts(self.config.contacts_path)

    creates_store = False  # `reminder import`: a store without a schema is created

    @cached_property
    def store(self) -> Store:
        """The store, its schema checked (never changed: `reminder db upgrade` does)."""
        schema: SchemaUse = "create" if self.creates_store else "check"
        store = open_store(self.config.settings.db, schema=schema)
        context = click.get_current_context(silent=True)
        if context is not None:  # close pooled connections when the command ends
            context.find_root().call_on_close(store.dispose)
        return store

    @cached_property
    def planning(self) -> Rules:
        settings = self.config.settings
        return Rules(settings.policy, self.config.calendar(), settings.zone, self.contacts)

    @cached_property
    def renderer(self) -> Renderer:
        from reminder.render import Renderer  # noqa: PLC0415 - see the class docstring

        folder = self.config.settings.messages.templates
        return Renderer(Path(folder) if folder else None)

    def ledger(self) -> StoredLedger:
        with self.store.read() as session:
            ledger = load_ledger(session)
        if ledger is None:
            raise self.nothing_imported()
        return ledger

    def require_ledger(self) -> None:
        """A clear message before the first import, from one row: whatever the size of
        the ledger, a command that reads only what it shows does not load it to ask."""
        with self.store.read() as session:
            if latest_import(session) is None:
                raise self.nothing_imported()

    def nothing_imported(self) -> InputError:
        return InputError(
            f"{describe(self.config.settings.db)}: no ledger imported yet; "
            "run `reminder import FILE` first"
        )


pass_app = click.make_pass_decorator(App, ensure=True)


def parse_moment(app: App, text: str | None, option: str) -> dt.datetime:
    """A local "YYYY-MM-DD HH:MM" in the configured zone (now if not given), as UTC."""
    if text is None:
        return now()
    try:
        local = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise InputError(f"{option} {text!r}: expected YYYY-MM-DD HH:MM") from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=app.config.settings.zone)
    return local.astimezone(dt.UTC)


def parse_day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} {text!r}: expected YYYY-MM-DD") from None


def refuse_broken_templates(
    store: Store, planning: Rules, renderer: Renderer, settings: Settings, moment: dt.datetime
) -> None:
    """Render every template against the ledger (as `reminder check` does); raise a
    ``ConfigError`` naming the first that fails. Nothing to check without a ledger, nor
    without a templates folder: the bundled templates are rendered against ledgers by the
    test suite, and rendering them all would weigh on every start and `run --once`."""
    if not settings.messages.templates:
        return
    from reminder.check import rendering_problems  # noqa: PLC0415 - Jinja2, only with a folder

    with store.read() as session:
        inputs = digest_inputs(session)
    if inputs is None:
        return
    today = moment.astimezone(settings.zone).date()
    facts = ledger_facts(inputs.ledger)
    problems = rendering_problems(renderer, inputs, facts, planning, settings.office, today)
    if problems:
        folder = settings.messages.templates
        where = f"templates folder {folder}"
        more = f" (and {len(problems) - 1} more; see `reminder check`)" if len(problems) > 1 else ""
        raise ConfigError(f"{where}: {problems[0].message}{more}")
