"""Shared fixtures: an isolated environment per test, the seed, the bundled contacts."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from reminder.cli import main
from reminder.contacts import Contacts, load_contacts
from reminder.ledger import read_ledger
from reminder.ledger.model import Ledger
from reminder.records import DigestInputs
from reminder.rules import Rules
from reminder.settings import load_config
from reminder.store.db import open_store
from reminder.store.overview import digest_inputs
from tests.daemon_process import NotifySocket
from tests.smtp_server import Handler, smtp_server

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
CONFIG = ROOT / "config"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test runs in its own folder with its own store and the bundled config."""
    for name in list(os.environ):
        if name.startswith("REMINDER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REMINDER_CONFIG", str(CONFIG))
    monkeypatch.setenv("REMINDER_DB", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def contacts() -> Contacts:
    return load_contacts(CONFIG / "contacts.toml")


@pytest.fixture(scope="session")
def seed_ledger(contacts: Contacts) -> Ledger:
    return read_ledger(SEED, contacts.directory)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


class Cli:
    """Runs `reminder …` in-process through the same entry point as the console script."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


def seed_inputs(cli: Cli) -> tuple[DigestInputs, Rules]:
    """The bundled ledger imported into the test's store, as digests and agendas read it,
    and the shipped config's planning (its contacts: ``planning.contacts``)."""
    assert cli("import", str(SEED)).code == 0
    config = load_config()
    settings = config.settings
    contacts = load_contacts(config.contacts_path)
    planning = Rules(settings.policy, config.calendar(), settings.zone, contacts)
    store = open_store(settings.db)
    with store.read() as session:
        inputs = digest_inputs(session)
    store.dispose()
    assert inputs is not None
    return inputs, planning


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the machine's PostgreSQL (database `test`), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except OperationalError as exc:  # pragma: no cover - the machine's PostgreSQL is down
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for this test: {exc}")
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def downgrade(url: str, revision: str, *statements: str) -> None:
    """The store at ``url`` taken back to ``revision`` (as an older version left it), and
    ``statements`` run on it there."""
    from alembic import command

    from reminder.store.migrate import alembic_config

    engine = create_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def revision_at(url: str) -> str | None:
    from reminder.store.migrate import current_revision

    engine = create_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


@pytest.fixture
def smtp() -> Iterator[tuple[Handler, int]]:
    """An SMTP server in the test process (aiosmtpd): its handler and port."""
    with smtp_server() as server:
        yield server


@pytest.fixture
def notify(isolated_env: Path) -> Iterator[NotifySocket]:
    """systemd's notify socket, as a daemon under test sees it."""
    sock = NotifySocket(isolated_env / "notify.sock")
    yield sock
    sock.close()


@pytest.fixture
def no_gc_callbacks() -> Iterator[None]:
    """As in the daemon, no Python code runs from the garbage collector: hypothesis (in
    other tests of this process) leaves a gc callback, and a shot delivered inside one
    is swallowed as unraisable, shot after shot while a render allocates. For the same
    reason the garbage earlier tests left is collected first: its weakref callbacks
    (SQLAlchemy's event registry) would otherwise run, and take a shot, inside a render."""
    gc.collect()
    saved = gc.callbacks[:]
    gc.callbacks.clear()  # the list gc itself reads
    yield
    gc.callbacks.extend(saved)
