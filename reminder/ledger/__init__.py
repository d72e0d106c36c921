"""Reading ledgers: formats → rows → tasks with deadlines and units."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reminder.ledger.deadline import SeasonRule
    from reminder.ledger.model import Ledger
    from reminder.ledger.units import Directory


def read_ledger(
    path: Path, directory: Directory, season: SeasonRule | None = None, year: int | None = None
) -> Ledger:
    """Read a .txt, .docx, .xlsx or .csv ledger; raises ``LedgerError`` naming file and line.

    The readers are imported here: what only uses the ledger's model (every command but
    `import`) does not load them."""
    from reminder.ledger.formats import read_table  # noqa: PLC0415
    from reminder.ledger.table import build_ledger  # noqa: PLC0415

    return build_ledger(read_table(path), directory, season, year)
