"""An import in batches of tasks and chunks of rows writes what one pass writes.

The batch and chunk sizes are made tiny here, so that every boundary is crossed: tasks
of one ledger in many batches, a task's units and a group's members in another batch
than the task before, executemany statements of a few rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reminder.store import batches, db
from tests.conftest import SEED, Cli
from tests.test_import import (
    ROWS_AFTER_REVISION,
    import_and_revise,
    revise_more,
    rows_digest,
    store_rows,
)


@pytest.fixture
def tiny_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "BATCH_ROWS", 7)  # a task or a few
    monkeypatch.setattr(batches, "MOST_TASKS", 2)
    monkeypatch.setattr(db, "CHUNK_ROWS", 3)


def test_batches_cover_the_items_in_order(tiny_batches: None) -> None:
    sizes = [3, 0, 5, 9, 1, 1, 1, 2]
    found = list(batches.batches(list(range(len(sizes))), sizes.__getitem__))
    assert [item for batch in found for item in batch] == list(range(len(sizes)))
    assert found == [[0, 1], [2, 3], [4, 5], [6, 7]]  # 7 rows or 2 items, whichever first


@pytest.mark.usefixtures("tiny_batches")
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_rows_after_a_revision_in_tiny_batches(
    backend: str,
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The rows of the one-pass import (``ROWS_AFTER_REVISION``), ids included."""
    url = f"sqlite:///{isolated_env / 'ledger.db'}"
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("REMINDER_DB", url)
    import_and_revise(cli, isolated_env)
    assert rows_digest(url) == ROWS_AFTER_REVISION


def revise_groups(folder: Path) -> Path:
    """``revise_more`` (task 2, renumbered, now lists a group), and task 10, kept under
    its number, a group too: the new member rows of a task matched late (2) come before
    those of one matched early (10), as task numbers go."""
    target = revise_more(SEED, folder / "groups.txt")
    text = target.read_text(encoding="utf-8")
    text = text.replace(
        "\t财政局、发展和改革委员会\n", "\t财政局、发展和改革委员会、各镇人民政府\n", 1
    )
    target.write_text(text, encoding="utf-8")
    return target


def import_twice(cli: Cli, folder: Path) -> list[str]:
    """The seed, then ``revise_groups``: the summaries printed (without the seconds)."""
    printed = []
    for path in (SEED, revise_groups(folder)):
        result = cli("import", str(path))
        assert result.code == 0, result.err
        printed.append(re.sub(r"in [0-9.]+ s", "in … s", result.out))
    return printed


def test_tiny_batches_write_the_rows_and_the_summary_of_one_batch(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    urls = [f"sqlite:///{isolated_env / name}" for name in ("whole.db", "tiny.db")]
    monkeypatch.setenv("REMINDER_DB", urls[0])
    whole = import_twice(cli, isolated_env)
    assert "changes: 2 added, 2 removed, 4 changed" in whole[1]
    assert "~ 10: unit added: 镇人民政府" in whole[1]
    request.getfixturevalue("tiny_batches")
    monkeypatch.setenv("REMINDER_DB", urls[1])
    assert import_twice(cli, isolated_env) == whole
    expected, found = store_rows(urls[0]), store_rows(urls[1])
    members = [
        (row["task_id"], row["unit"])
        for row in dict(found)["task_unit"]
        if row["via"] == "镇人民政府"
    ]
    assert {task for task, _ in members} >= {2, 10}
    assert found == expected
