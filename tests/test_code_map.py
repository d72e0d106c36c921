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
