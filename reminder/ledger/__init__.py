"""Reading ledgers: formats → rows → tasks with deadlines and units."""

from __future__ import annotations

from pathlib import Path

from reminder.ledger.deadline import SeasonRule
from reminder.ledger.formats import read_table
from reminder.ledger.model import Ledger
from reminder.ledger.table import build_ledger
from reminder.ledger.units import Directory


def read_ledger(
    path: Path, directory: Directory, season: SeasonRule | None = None, year: int | None = None
) -> Ledger:
    """Read a .txt, .docx, .xlsx or .csv ledger; raises ``LedgerError`` naming file and line."""
    return build_ledger(read_table(path), directory, season, year)
