"""`reminder import` guards: a task nobody owns, another ledger under the same title,
long ledgers, and a dry run that leaves no store behind."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SEED, Cli
from tests.ledger_files import other_ledger
from tests.test_import import tasks_json

TASK_12_UNITS = (
    "\t发展和改革委员会、财政局、环境保护局、住房和城乡建设局、质量技术监督局、"
    "济源供电公司，各镇人民政府、街道办事处\n"
)


def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def unowned(folder: Path) -> Path:
    """The seed with task 12's 责任单位 cell left empty."""
    text = seed_text()
    assert TASK_12_UNITS in text
    return write(folder, "unowned.txt", text.replace(TASK_12_UNITS, "\t\n", 1))


def renumbered(folder: Path, offset: int = 9999) -> Path:
    """The seed with every task number raised by ``offset`` (10000 … 10098), the page
    numbers glued to some of them (`7— 47 —`) kept as they are."""
    text = re.sub(
        r"(?m)^\t(\d{1,2})((?:— \d+ —)?)$",
        lambda m: f"\t{int(m[1]) + offset}{m[2]}",
        seed_text(),
    )
    assert "\t10006— 47 —\n" in text
    return write(folder, "long.txt", text)


# Refusals, for the table-driven test of every bad input (tests/test_bad_input.py):
# (id, the arguments after `reminder` given the test's folder, exit code, what the one
# line says). Each runs over a store holding the seed; the store must stay as it was.
def test_another_ledger_replaces_the_stored_one_with_replace(cli: Cli, isolated_env: Path) -> None:
    assert cli("import", str(SEED)).code == 0
    result = cli("import", "--replace", str(other_ledger(isolated_env)))
    assert result.code == 0, result.err
    assert "changes: 2 added, 99 removed, 0 changed" in result.out
    assert [task["no"] for task in tasks_json(cli)["tasks"]] == [1, 2]


def test_a_revision_that_removes_less_than_half_needs_no_replace(
    cli: Cli, isolated_env: Path
) -> None:
    assert cli("import", str(SEED)).code == 0
    text = seed_text()
    cut = text[: text.index("\t50— 65 —\n")]  # tasks 1-49 of 99: 50 removed, more than half
    assert cli("import", str(write(isolated_env, "half.txt", cut))).code == 2
    cut = text[: text.index("\t51— 66 —\n")]  # tasks 1-50: 49 removed
    result = cli("import", str(write(isolated_env, "most.txt", cut)))
    assert result.code == 0, result.err
    assert "changes: 0 added, 49 removed" in result.out


def test_a_task_without_a_unit_is_named_by_the_import_and_by_check(
    cli: Cli, isolated_env: Path
) -> None:
    result = cli("import", str(unowned(isolated_env)))
    assert result.code == 0, result.err
    assert "tasks without a responsible unit: 12 (never reminded)" in result.out
    check = cli("check")
    assert check.code == 1
    assert any(
        line.startswith("error") and "task 12 " in line and "no responsible unit" in line
        for line in check.out.splitlines()
    ), check.out
    # a re-import says so again
    again = cli("import", str(unowned(isolated_env)))
    assert "tasks without a responsible unit: 12 (never reminded)" in again.out


def test_task_numbers_of_ten_thousand_and_more(cli: Cli, isolated_env: Path) -> None:
    result = cli("import", str(renumbered(isolated_env)))
    assert result.code == 0, result.err
    assert "first import, 99 tasks added" in result.out
    tasks = tasks_json(cli)["tasks"]
    assert [task["no"] for task in tasks] == list(range(10000, 10099))
    # the rows whose number had a page number glued to it are whole
    assert tasks[6]["text"].startswith("开辟供暖设施审批绿色通道")  # task 7, `7— 47 —`


def test_dry_run_without_a_store_creates_nothing(cli: Cli, isolated_env: Path) -> None:
    before = sorted(path.name for path in isolated_env.iterdir())
    result = cli("import", "--dry-run", str(SEED))
    assert result.code == 0, result.err
    assert "first import, 99 tasks added" in result.out
    assert "dry run" in result.out
    assert sorted(path.name for path in isolated_env.iterdir()) == before
    assert not (isolated_env / "ledger.db").exists()
