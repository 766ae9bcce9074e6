"""A local copy of the BigQuery roster's students, so the plan of a no-change run reads no
table in full (issue 14, section 4).

The BigQuery store keeps a *generation* in its ``meta`` table (``students_generation``):
every write of ``students`` first sets it to ``pending-<token>`` and, once the ``MERGE``
landed and the follow-up statements are written, to a new final token. A reader reads
``meta`` first (it does anyway), then:

- a final generation with a copy stored under it (and younger than the maximum age): the
  copy is the table, because any write since would have changed the generation;
- otherwise (no copy, another generation, ``pending-``, too old): it reads ``students`` in
  full and stores the copy under the generation it read *before* that read. A write that
  slipped in between changed the generation, so the next reader misses and reads again.

A writer that dies after its ``MERGE`` leaves ``pending-``: every reader reads in full until
the next write ends. Only cdsops writes ``students`` (see docs/bigquery.md); a hand edit is
seen at the latest after the maximum age (``CDSOPS_ROSTER_CACHE_MAX_AGE``, default 3,600 s;
``0`` turns the copy off). The copy lives in ``CDSOPS_ROSTER_CACHE_DIR`` (default
``$XDG_CACHE_HOME/cdsops`` or ``~/.cache/cdsops``), one private file per store; any problem
with it (unreadable, unwritable, malformed) only means a full read, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ..roster import Student
from ..times import format_iso, parse_iso
from .base import StoreError, student_from_row

__all__ = ["GENERATION_KEY", "PENDING", "RosterCache", "cache_max_age"]

GENERATION_KEY = "students_generation"
PENDING = "pending-"
DEFAULT_MAX_AGE = 3600


def cache_max_age() -> int:
    """Seconds a copy may be used (``CDSOPS_ROSTER_CACHE_MAX_AGE``); 0 means no copy."""
    raw = os.environ.get("CDSOPS_ROSTER_CACHE_MAX_AGE", "").strip()
    if not raw:
        return DEFAULT_MAX_AGE
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise StoreError(f"CDSOPS_ROSTER_CACHE_MAX_AGE must be a whole number of seconds (0 turns the copy off), not {raw!r}")
    return value


def _cache_dir() -> Path:
    explicit = os.environ.get("CDSOPS_ROSTER_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "cdsops"


def _encode(s: Student) -> list:
    return [s.student_id, s.identity, s.username, s.host, [format_iso(t) for t in s.agreements],
            format_iso(s.expires_at), s.admission, format_iso(s.admitted_at)]


def _decode(row: list) -> Student:
    sid, identity, username, host, agreements, expires, admission, admitted = row
    ag = [parse_iso(t) for t in agreements]
    return student_from_row((int(sid), str(identity), str(username), str(host), ag, ag[0], ag[-1],
                             parse_iso(expires), int(admission), parse_iso(admitted)))


class RosterCache:
    """The copy of one store's students, keyed by the generation read before them."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.max_age = cache_max_age()
        self.path = _cache_dir() / f"roster-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.json"

    @staticmethod
    def usable(generation: str | None) -> bool:
        return bool(generation) and not str(generation).startswith(PENDING)

    def get(self, generation: str | None) -> tuple[Student, ...] | None:
        if self.max_age == 0 or not self.usable(generation):
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("uri") != self.uri or data.get("generation") != generation:
                return None
            if not 0 <= time.time() - float(data["stored_at"]) <= self.max_age:
                return None
            return tuple(_decode(r) for r in data["students"])
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None

    def put(self, generation: str | None, students: tuple[Student, ...]) -> None:
        if self.max_age == 0 or not self.usable(generation):
            return
        data = {"uri": self.uri, "generation": generation, "stored_at": time.time(), "students": [_encode(s) for s in students]}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".roster-", suffix=".tmp")  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, separators=(",", ":"))
                os.replace(tmp, self.path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
