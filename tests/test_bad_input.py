"""Bad input of every kind: one line saying what and where, non-zero exit, store untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CONFIG, SEED, Cli
from tests.daemon_process import run_until_exit
from tests.ledger_files import other_ledger
from tests.test_import import dump


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("错误/Error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def seed_with(tmp: Path, name: str, change: Callable[[str], str]) -> Path:
    path = tmp / name
    path.write_text(change(SEED.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def truncated(text: str) -> str:
    return text[: text.index("\t57\n") + len("\t57\n\t钢铁、建材")]


def malformed(text: str) -> str:
    return text.replace("\t12\n\t在集中供热管网", "\t在集中供热管网")


def impossible(text: str) -> str:
    return text.replace("\t1月31日\n", "\t13月45日\n", 1)


def duplicated(text: str) -> str:
    return text.replace("\t11\n\t积极争取气源指标", "\t10\n\t积极争取气源指标")


def headless(text: str) -> str:
    return text.replace("\t序号\n", "\t编号X\n")


BAD_LEDGERS = [
    ("truncated.txt", truncated, ["truncated.txt:", "task 57", "truncated"]),
    ("malformed.txt", malformed, ["malformed.txt:", "expected a task number", "在集中供热管网"]),
    ("impossible.txt", impossible, ["impossible.txt:", "task 1", "13月45日"]),
    ("duplicated.txt", duplicated, ["duplicated.txt:", "task number 10 appears twice"]),
    ("headless.txt", headless, ["headless.txt:", "no header row"]),
]


@pytest.mark.parametrize(("name", "change", "fragments"), BAD_LEDGERS)
def test_bad_ledger_leaves_the_store_as_it_was(
    cli: Cli,
    isolated_env: Path,
    name: str,
    change: Callable[[str], str],
    fragments: list[str],
) -> None:
    assert cli("import", str(SEED)).code == 0
    before = dump(isolated_env / "ledger.db")
    result = cli("import", str(seed_with(isolated_env, name, change)))
    assert result.code == 2
    assert_one_line_error(result.err, *fragments)
    assert dump(isolated_env / "ledger.db") == before


def test_bad_ledger_on_a_fresh_machine_creates_no_store(cli: Cli, isolated_env: Path) -> None:
    result = cli("import", str(seed_with(isolated_env, "bad.txt", impossible)))
    assert result.code == 2
    assert not (isolated_env / "ledger.db").exists()


def test_impossible_date_names_the_line(cli: Cli, isolated_env: Path) -> None:
    path = seed_with(isolated_env, "impossible.txt", impossible)
    result = cli("import", str(path))
    assert_one_line_error(
        result.err,
        f"{path}:16: task 1: impossible date: there is no month 13 in 完成时限 '13月45日'",
    )


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (None, ["missing.txt: no such file"]),
        (b"\x00\x01binary\x00" * 20, ["binary content"]),
        (b"PK\x03\x04not really", ["damaged ZIP container"]),
    ],
)
def test_unreadable_file(
    cli: Cli, isolated_env: Path, content: bytes | None, fragments: list[str]
) -> None:
    path = isolated_env / "missing.txt"
    if content is not None:
        path.write_bytes(content)
    result = cli("import", str(path))
    assert result.code == 2
    assert_one_line_error(result.err, str(path), *fragments)


def config_copy(tmp: Path) -> Path:
    folder = tmp / "config"
    shutil.copytree(CONFIG, folder)
    return folder


def test_bad_contacts_toml(cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    contacts.write_text(contacts.read_text(encoding="utf-8") + "\n[[unit]\nname = 'x'\n")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    result = cli("import", str(SEED))
    assert result.code == 78
    assert_one_line_error(result.err, str(contacts), "invalid TOML", "line")
    assert not (isolated_env / "ledger.db").exists()


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        ('[[unit]]\nname = "环保局"\n', ["'环保局' is already used by '环境保护局'"]),
        (
            '[[unit]]\nname = "新单位"\ntel = "1"\n',
            ["[[unit]] #", "'新单位'", "tel", "Extra inputs"],
        ),
        (
            '[[group]]\nname = "新组"\nmembers = ["不存在的单位"]\n',
            ["member '不存在的单位' is not a [[unit]]"],
        ),
    ],
)
def test_invalid_contacts_entries(
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    fragments: list[str],
) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    contacts.write_text(contacts.read_text(encoding="utf-8") + "\n" + extra, encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    result = cli("import", str(SEED))
    assert result.code == 78
    assert_one_line_error(result.err, str(contacts), *fragments)


def test_bad_setting_in_reminder_toml(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = config_copy(isolated_env)
    (folder / "reminder.toml").write_text('[ledger]\nseason_start = "13-45"\n', encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    result = cli("import", str(SEED))
    assert result.code == 78
    assert_one_line_error(result.err, "reminder.toml: [ledger] season_start", "13-45")


def test_bad_setting_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_LEDGER__SEASON_START", "eleventh")
    result = cli("import", str(SEED))
    assert result.code == 78
    assert_one_line_error(result.err, "season_start", "MM-DD", "REMINDER_LEDGER__SEASON_START")


def test_setting_from_the_environment_is_used(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_LEDGER__SEASON_START", "11-01")
    assert cli("import", str(SEED)).code == 0
    result = cli("tasks", "--section", "六")
    assert "采暖季 [11-01→03-15]" in result.out


def test_missing_config_folder(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_CONFIG", "/nonexistent/config")
    result = cli("import", str(SEED))
    assert result.code == 78
    assert_one_line_error(result.err, "REMINDER_CONFIG=/nonexistent/config: no such folder")


def test_bad_database_url(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_DB", "sqlite:////nonexistent/dir/ledger.db")
    result = cli("import", str(SEED))
    assert result.code == 74
    assert_one_line_error(result.err, "/nonexistent/dir/ledger.db", "does not exist")


def test_a_file_that_is_not_a_database(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_env / "ledger.db").write_text("this is not sqlite" * 100)
    result = cli("import", str(SEED))
    assert result.code == 74
    assert_one_line_error(result.err, "cannot open the store", "not a database")


def test_console_script_exit_code_and_stderr(isolated_env: Path) -> None:
    """The installed `reminder` script, as an administrator runs it."""
    completed = run_until_exit(isolated_env, dict(os.environ), "import", "missing.txt")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert_one_line_error(completed.stderr, "missing.txt: no such file")


# --- every bad input as one row: refused on one line, with its exit code, store as it was --


@dataclass(frozen=True)
class Bad:
    """One bad input: the command's arguments, the environment it runs in, whether a
    ledger is imported first (else the store must not even be created), the exit code
    and what the one line says."""

    args: tuple[str, ...]
    code: int
    fragments: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    seeded: bool = True
    make: Callable[[Path], object] | None = None  # writes the input into the test's folder


BAD_INPUTS = {
    # REMINDER_DB that names no database this program can open (exit 78: systemd stops)
    "db-unknown-scheme": Bad(
        ("status",),
        78,
        ("REMINDER_DB=nonsense://", "unknown kind of database 'nonsense'"),
        (("REMINDER_DB", "nonsense://"),),
        seeded=False,
    ),
    "db-unparseable": Bad(
        ("import", str(SEED)),
        78,
        ("REMINDER_DB='::::'", "not a database URL"),
        (("REMINDER_DB", "::::"),),
        seeded=False,
    ),
    "db-bad-port": Bad(
        ("status",),
        78,
        ("REMINDER_DB='postgresql://u:***@h:port/db'", "not a database URL"),
        (("REMINDER_DB", "postgresql://u:secret@h:port/db"),),
        seeded=False,
    ),
    "db-unknown-driver": Bad(
        ("plan",),
        78,
        ("REMINDER_DB=postgresql+nodriver://u:***@h/db", "unknown kind of database"),
        (("REMINDER_DB", "postgresql+nodriver://u:secret@h/db"),),
        seeded=False,
    ),
    "db-driver-not-installed": Bad(
        ("status",),
        78,
        ("REMINDER_DB=mysql://u@h/db", "no driver for mysql"),
        (("REMINDER_DB", "mysql://u@h/db"),),
        seeded=False,
    ),
    # click's usage errors: one line naming the command and where its help is, exit 2
    "unknown-option": Bad(
        ("status", "--frob"), 2, ("reminder status:", "No such option '--frob'", "--help")
    ),
    "unknown-command": Bad(("stauts",), 2, ("No such command 'stauts'",)),
    "missing-argument": Bad(
        ("import",), 2, ("reminder import: Missing argument 'FILE'", "reminder import --help")
    ),
    "missing-option": Bad(("simulate", "--to", "2018-12-31"), 2, ("Missing option '--from'",)),
    "option-without-value": Bad(("plan", "--at"), 2, ("'--at' requires an argument",)),
    "bad-number": Bad(("done", "abc"), 2, ("reminder done:", "'abc' is not a valid integer")),
    "out-of-range": Bad(("outbox", "--limit", "0"), 2, ("Invalid value for '--limit'",)),
    "bad-choice": Bad(("outbox", "--status", "lost"), 2, ("Invalid value for '--status'",)),
    # commands that said the wrong thing
    "retry-nothing": Bad(("retry",), 2, ("give a message KEY", "or --dead"), seeded=False),
    "retry-both": Bad(("retry", "k", "--dead"), 2, ("not both",), seeded=False),
    # simulate: a period of at most 3 years
    "simulate-a-century": Bad(
        ("simulate", "--from", "2018-01-01", "--to", "2118-12-31"),
        2,
        ("36889 days", "at most 1096 days (3 years)"),
        seeded=False,
    ),
    # the SMS token would travel in clear to a remote gateway
    "sms-plaintext-remote": Bad(
        ("status",),
        78,
        ("sms: plaintext HTTP to sms.example.com refused", "allow_plaintext"),
        (("REMINDER_SMS__URL", "http://sms.example.com/send"),),
    ),
    # a ledger that would remove more than half of the stored tasks (dry run or not)
    "import-replaces-most": Bad(
        ("import", "other.txt"),
        2,
        ("other.txt: would remove 99 of the 99 stored tasks", "--replace"),
        make=other_ledger,
    ),
    "import-replaces-most-dry-run": Bad(
        ("import", "--dry-run", "other.txt"),
        2,
        ("other.txt: would remove 99 of the 99 stored tasks", "--replace"),
        make=other_ledger,
    ),
    "simulate-backwards": Bad(
        ("simulate", "--from", "2018-02-01", "--to", "2018-01-01"),
        2,
        ("--to 2018-01-01 is before --from 2018-02-01",),
        seeded=False,
    ),
}


def files_of(folder: Path) -> dict[str, str]:
    """Every file of the test's folder and a hash of its bytes (SQLite's -wal and -shm
    come and go with connections: the database's own file is what must not change)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir()
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


@pytest.mark.parametrize("bad", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_refused_on_one_line_and_changes_nothing(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, bad: Bad
) -> None:
    if bad.seeded:
        assert cli("import", str(SEED)).code == 0
    if bad.make is not None:
        bad.make(isolated_env)
    before = files_of(isolated_env)
    assert ("ledger.db" in before) == bad.seeded
    for name, value in bad.env:
        monkeypatch.setenv(name, value)
    result = cli(*bad.args)
    assert result.code == bad.code, result.err
    assert_one_line_error(result.err, *bad.fragments)
    assert "secret" not in result.err
    assert files_of(isolated_env) == before


def test_check_lists_every_configuration_error(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two independent errors in reminder.toml and one in contacts.toml: all three are
    listed, and every other command names the first and says how many more there are."""
    folder = config_copy(isolated_env)
    (folder / "reminder.toml").write_text(
        '[ledger]\nseason_start = "13-45"\n[smtp]\nport = 0\n', encoding="utf-8"
    )
    contacts = folder / "contacts.toml"
    extra = '\n[[unit]]\nname = "新单位"\ntel = "1"\n'
    contacts.write_text(contacts.read_text(encoding="utf-8") + extra, encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    result = cli("check")
    assert result.code == 78
    lines = result.out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["error"] * 3
    assert "reminder.toml: [ledger] season_start" in lines[0]
    assert "reminder.toml: [smtp] port" in lines[1]
    assert "contacts.toml: [[unit]] #" in lines[2] and "tel" in lines[2]
    assert lines[-1] == "3 configuration errors: fix them, then check again"
    other = cli("status")
    assert other.code == 78
    assert_one_line_error(other.err, "season_start", "(and 1 more: `reminder check` lists them)")


def test_check_lists_every_error_of_contacts_names(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = config_copy(isolated_env)
    contacts = folder / "contacts.toml"
    extra = '\n[[unit]]\nname = "环保局"\n\n[[group]]\nname = "新组"\nmembers = ["不存在的单位"]\n'
    contacts.write_text(contacts.read_text(encoding="utf-8") + extra, encoding="utf-8")
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    result = cli("check")
    assert result.code == 78
    assert "'环保局' is already used by '环境保护局'" in result.out
    assert "member '不存在的单位' is not a [[unit]] name" in result.out
    assert result.out.splitlines()[-1].startswith("2 configuration errors")
