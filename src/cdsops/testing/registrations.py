"""Write registration CSVs as the form exports them (tests and benchmarks)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from ..times import format_iso

COLUMNS = ("submitted_at", "email", "full_name", "city", "country", "agreed_dua", "agreed_terms")


def iso(when: datetime) -> str:
    return format_iso(when, "seconds")


def write_registrations(path: str | Path, rows: Iterable[Sequence[object]]) -> Path:
    """Write ``rows`` (each in :data:`COLUMNS` order; datetimes become ISO 8601 UTC) under the header."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([iso(v) if isinstance(v, datetime) else v for v in row])
    return path
