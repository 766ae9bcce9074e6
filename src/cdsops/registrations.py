"""Registration rows: parsing and validation, one row at a time.

A row is ``submitted_at, email, full_name, city, country, agreed_dua, agreed_terms``.
Every row is validated on its own: an invalid row becomes a :class:`Rejection` (row
number and reason) and never stops the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from sys import intern
from typing import Any

from .identity import InvalidEmail, canonicalize
from .times import as_utc, parse_iso

__all__ = [
    "COLUMNS",
    "Registration",
    "Rejection",
    "ValidationResult",
    "parse_time",
    "validate_row",
    "validate_rows",
    "normalize_header",
]

COLUMNS = ("submitted_at", "email", "full_name", "city", "country", "agreed_dua", "agreed_terms")
REQUIRED_COLUMNS = ("submitted_at", "email", "agreed_dua", "agreed_terms")

# Form exports name columns their own way; these are mapped onto ours.
HEADER_ALIASES = {
    "timestamp": "submitted_at",
    "submitted": "submitted_at",
    "submission_time": "submitted_at",
    "email_address": "email",
    "e_mail": "email",
    "name": "full_name",
    "fullname": "full_name",
    "dua": "agreed_dua",
    "agreed_to_dua": "agreed_dua",
    "terms": "agreed_terms",
    "agreed_to_terms": "agreed_terms",
}

MAX_TEXT = {"full_name": 200, "city": 100, "country": 100}
FUTURE_TOLERANCE = timedelta(minutes=10)

_TRUE = frozenset({"true", "t", "yes", "y", "1", "agree", "agreed", "i agree", "accepted", "accept", "x", "checked", "on"})
_FAST_TRUE = frozenset({"yes", "Yes", "YES", "true", "TRUE", "True", "1", "y", "Y"})
_FALSE = frozenset({"", "false", "f", "no", "n", "0", "disagree", "declined", "off", "none", "null"})
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NEWLINE_RE = re.compile(r"[\r\n\t]")
_ANY_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACE_RE = re.compile(r"\s+")
# Google Forms exports: 1/31/2026 13:05:09
_FORMS_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?\Z")


@dataclass(frozen=True, slots=True)
class Registration:
    """One valid agreement. ``identity`` is canonical; the rest is kept only in the
    management store (never on the compute host)."""

    row: int
    submitted_at: datetime  # timezone-aware, UTC
    identity: str
    email: str  # as given (trimmed), for correspondence only
    full_name: str
    city: str
    country: str

    @property
    def updated_at(self) -> datetime:
        """As a contact-details record (``SyncOutcome.profiles``): when they were given."""
        return self.submitted_at


@dataclass(frozen=True, slots=True)
class Rejection:
    row: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ValidationResult:
    registrations: tuple[Registration, ...]
    rejections: tuple[Rejection, ...]
    rows: int


def normalize_header(name: object) -> str:
    text = str(name or "").replace("\ufeff", "").strip().lower()
    text = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    return HEADER_ALIASES.get(text, text)


def parse_time(value: object) -> datetime:
    """Parse a submission time to an aware UTC datetime; naive times are taken as UTC."""
    dt = None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and len(value) >= 19 and value[10] in "T ":
        try:  # fast path: ISO 8601 (Python 3.11 reads "Z" too)
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt = None
    if dt is None:
        if value is None:
            raise ValueError("submitted_at is missing")
        text = str(value).strip()
        if not text:
            raise ValueError("submitted_at is missing")
        if _CONTROL_RE.search(text) or _NEWLINE_RE.search(text):
            raise ValueError("submitted_at contains control characters")
        m = _FORMS_RE.match(text)
        if m:
            mo, d, y, hh, mm, ss = m.groups()
            try:
                dt = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss or 0))
            except ValueError as exc:
                raise ValueError(f"submitted_at is not a valid time: {exc}") from None
        else:
            try:
                dt = parse_iso(text[:-4] + "+00:00" if text.upper().endswith(" UTC") else text)
            except ValueError:
                raise ValueError(f"submitted_at is not an ISO 8601 time: {_preview(text)}") from None
    dt = as_utc(dt)
    if dt.year < 2000:
        raise ValueError("submitted_at is before the year 2000")
    return dt


def _preview(text: str, limit: int = 40) -> str:
    text = _CONTROL_RE.sub("?", _NEWLINE_RE.sub(" ", text))
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _agreed(value: object) -> bool | None:
    if value in _FAST_TRUE:
        return True
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return bool(value)
    text = _SPACE_RE.sub(" ", str(value).strip().lower())
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _text(value: object, key: str) -> str:
    if value is None:
        return ""
    text = value.strip() if type(value) is str else str(value).strip()
    if not text:
        return ""
    if not text.isprintable() and _ANY_CONTROL_RE.search(text):
        raise ValueError(f"{key} contains control characters or line breaks")
    if len(text) > MAX_TEXT[key]:
        raise ValueError(f"{key} is longer than {MAX_TEXT[key]} characters")
    return text


def validate_row(row_number: int, row: Mapping[str, Any], now: datetime | None = None) -> Registration | Rejection:
    """Validate one row given as a mapping of column name to value."""
    return validate_values(row_number, tuple(row.get(c) for c in COLUMNS), now)


def validate_values(row_number: int, values: Sequence[Any], now: datetime | None = None) -> Registration | Rejection:
    """Validate one row given as values in :data:`COLUMNS` order.

    Returns a Registration or a Rejection with a specific reason."""
    submitted, raw_email, full_name, city, country, dua_v, terms_v = values
    try:
        submitted_at = parse_time(submitted)
    except ValueError as exc:
        return Rejection(row_number, str(exc))
    if now is not None and submitted_at > now + FUTURE_TOLERANCE:
        return Rejection(row_number, "submitted_at is in the future")
    try:
        identity = canonicalize(raw_email)
    except InvalidEmail as exc:
        return Rejection(row_number, str(exc))
    dua = _agreed(dua_v)
    if dua is None:
        return Rejection(row_number, "agreed_dua is not a yes/no value")
    if not dua:
        return Rejection(row_number, "data use agreement not agreed")
    terms = _agreed(terms_v)
    if terms is None:
        return Rejection(row_number, "agreed_terms is not a yes/no value")
    if not terms:
        return Rejection(row_number, "terms not agreed")
    try:
        full_name = _text(full_name, "full_name")
        city = _text(city, "city")
        country = _text(country, "country")
    except ValueError as exc:
        return Rejection(row_number, str(exc))
    email = raw_email.strip()
    if email == identity:
        email = identity  # share the string: 100,000 rows fit in less memory
    return Registration(row_number, submitted_at, identity, email, full_name, intern(city), intern(country))


def validate_rows(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]], now: datetime | None = None, first_row: int = 1
) -> ValidationResult:
    """Validate every row on its own. Rows are mappings or value tuples in COLUMNS order."""
    regs: list[Registration] = []
    rejs: list[Rejection] = []
    n = first_row - 1
    for n, row in enumerate(rows, start=first_row):
        if type(row) is tuple or not isinstance(row, Mapping):
            result = validate_values(n, row, now)
        else:
            result = validate_row(n, row, now)
        if type(result) is Registration:
            regs.append(result)
        else:
            rejs.append(result)  # type: ignore[arg-type]
    return ValidationResult(tuple(regs), tuple(rejs), n - first_row + 1)
