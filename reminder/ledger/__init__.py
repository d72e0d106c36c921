"""Reading ledgers: formats → rows → tasks with deadlines and units."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reminder.ledger.deadline import SeasonRule
    from reminder.ledger.model import Ledger
    from reminder.ledger.units import Directory


def parse_ledger(
    data: bytes,
    source: str,
    directory: Directory,
    season: SeasonRule | None = None,
    year: int | None = None,
) -> Ledger:
    """Read the content of a .txt, .docx, .xlsx or .csv ledger named ``source``; raises
    ``LedgerError`` naming file and line.

    The readers are imported here: what only uses the ledger's model (every command but
    `import`) does not load them."""
    from reminder.ledger.formats import read_table  # noqa: PLC0415
    from reminder.ledger.table import build_ledger  # noqa: PLC0415

    return build_ledger(read_table(data, source), directory, season, year)


def read_ledger(
    path: Path, directory: Directory, season: SeasonRule | None = None, year: int | None = None
) -> Ledger:
    """``parse_ledger`` of a file, for tests and benches (`reminder import` reads the file
    itself, and says so in one line when it cannot)."""
    return parse_ledger(path.read_bytes(), str(path), directory, season, year)
