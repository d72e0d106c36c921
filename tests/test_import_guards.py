"""`reminder import` guards: a task nobody owns, another ledger under the same title,
long ledgers, and a dry run that leaves no store behind."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SEED, Cli
from tests.test_bad_input import assert_one_line_error
from tests.test_import import dump, tasks_json

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


def other_ledger(folder: Path) -> Path:
    """Another ledger under the seed's title: its header, one section, two new tasks."""
    lines = seed_text().splitlines(keepends=True)
    head = "".join(lines[:11])  # the title, the header and section 一
    tasks = "".join(
        f"\t{no}\n\t{text}\n\t环境保护局\n\t6月30日\n\t\n\n"
        for no, text in ((1, "开展秸秆禁烧巡查。"), (2, "建立重污染天气应急减排清单。"))
    )
    return write(folder, "other.txt", head + "\n" + tasks)


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
IMPORT_BAD_INPUTS: list[tuple[str, Callable[[Path], list[str]], int, list[str]]] = [
    (
        "another ledger under the same title",
        lambda folder: ["import", str(other_ledger(folder))],
        2,
        ["other.txt: would remove 99 of the 99 stored tasks", "--replace"],
    ),
    (
        "another ledger under the same title, dry run",
        lambda folder: ["import", "--dry-run", str(other_ledger(folder))],
        2,
        ["other.txt: would remove 99 of the 99 stored tasks", "--replace"],
    ),
]


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        pytest.param(args, code, fragments, id=name)
        for name, args, code, fragments in IMPORT_BAD_INPUTS
    ],
)
def test_import_refusals_leave_the_store_as_it_was(
    cli: Cli,
    isolated_env: Path,
    args: Callable[[Path], list[str]],
    code: int,
    fragments: list[str],
) -> None:
    assert cli("import", str(SEED)).code == 0
    before = dump(isolated_env / "ledger.db")
    result = cli(*args(isolated_env))
    assert result.code == code
    assert_one_line_error(result.err, *fragments)
    assert dump(isolated_env / "ledger.db") == before


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
