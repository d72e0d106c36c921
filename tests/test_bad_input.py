"""Bad input of every kind: one line saying what and where, non-zero exit, store untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CONFIG, SEED, Cli
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
    script = Path(sys.executable).with_name("reminder")
    env = dict(os.environ)
    completed = subprocess.run(
        [str(script), "import", "missing.txt"],
        capture_output=True,
        text=True,
        env=env,
        cwd=isolated_env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert_one_line_error(completed.stderr, "missing.txt: no such file")
