"""`reminder db upgrade`: the store's schema created or brought to this version."""

from __future__ import annotations

import click

from reminder.app import App, pass_app
from reminder.store.db import describe, open_store
from reminder.store.migrate import SCHEMA_HEAD


@click.group("db")
def db_group() -> None:
    """The store's schema: `reminder db upgrade` creates it or brings it to this version."""


@db_group.command("upgrade")
@pass_app
def upgrade_command(app: App) -> None:
    """Create the store's schema, or upgrade it to this version (under a lock: several
    hosts may run it at once; the second finds the work done). Run it after installing
    a new version, before the daemon and the web (the systemd unit's ExecStartPre)."""
    url = app.config.settings.db
    store = open_store(url, schema="upgrade")
    store.dispose()
    was = store.found_revision
    if was is None:
        said = f"schema created at revision {SCHEMA_HEAD}"
    elif was == SCHEMA_HEAD:
        said = f"schema already at revision {SCHEMA_HEAD}"
    else:
        said = f"schema upgraded from revision {was} to {SCHEMA_HEAD}"
    click.echo(f"{describe(url)}: {said}")


COMMANDS = [db_group]
