"""The shape of the code a newcomer reads: short functions, imports that follow the flow,
and a README whose map names every module a reminder passes through."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "reminder"
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.relative_to(PACKAGE).parts
    )


def dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The reminder modules a module imports (at any level, lazily or not)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "reminder" or name.startswith("reminder.")}


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{dotted(path)}.{node.name}: {lines} lines")
    assert long == []


def test_the_readme_map_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    development = readme[readme.index("## Development") :]
    named = set(re.findall(r"`(reminder/[\w/]+\.py)`", development))
    missing = [
        str(path.relative_to(ROOT))
        for path in modules()
        if path.name != "__init__.py" and str(path.relative_to(ROOT)) not in named
    ]
    assert missing == []


# the flow: ledger → store → planner → items → letters → outbox → channels. Pure modules
# take data and return data; the store layer keeps the ledger and the next reminder of
# each part (with the planner's rules), and imports nothing that reads from it
PURE = {
    "reminder.planner",
    "reminder.recipients",
    "reminder.letters",
    "reminder.digest",
    "reminder.context",
    "reminder.render",
    "reminder.sandbox",
    "reminder.prepare",
    "reminder.wording",
    "reminder.text",
    "reminder.rows",
    "reminder.records",
    "reminder.check",
    "reminder.policy",
    "reminder.rules",
}
IO_AND_WIRING = (
    "reminder.store",
    "reminder.outbox",
    "reminder.delivery",
    "reminder.recorder",
    "reminder.render_pool",
    "reminder.tick",
    "reminder.letter_round",
    "reminder.digest_round",
    "reminder.simulate",
    "reminder.daemon",
    "reminder.commands",
    "reminder.cli",
    "reminder.app",
    "reminder.web",
    "reminder.views",
)
BELOW_THE_STORE = (
    "reminder.store",
    "reminder.records",
    "reminder.errors",
    "reminder.ledger",
    "reminder.policy",
    "reminder.calendar",
    "reminder.contacts",
    "reminder.planner",
    "reminder.rules",
)


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def test_pure_modules_import_no_store_and_no_wiring() -> None:
    pure = [path for path in modules() if dotted(path) in PURE or "ledger" in path.parts]
    assert len(pure) >= len(PURE)
    against = {
        dotted(path): sorted(name for name in imports_of(path) if within(name, IO_AND_WIRING))
        for path in pure
    }
    assert {module: names for module, names in against.items() if names} == {}


def test_the_store_imports_nothing_above_it() -> None:
    store = [path for path in modules() if path.parent.name == "store"]
    above = {
        dotted(path): sorted(name for name in imports_of(path) if not within(name, BELOW_THE_STORE))
        for path in store
    }
    assert {module: names for module, names in above.items() if names} == {}
