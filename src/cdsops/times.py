"""Time helpers, the one place cdsops parses and formats times.

Every time inside cdsops is an aware UTC ``datetime``; on the way out it is ISO 8601 with a
``Z`` (``2026-01-05T10:00:00Z``, microseconds only when there are some). Input is ISO 8601
with ``Z`` or an offset; a naive time is taken as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "UTC", "utcnow", "naive_utcnow", "from_epoch", "as_utc", "naive_utc", "parse_iso", "parse_iso_or_none",
    "parse_iso_lenient", "format_iso", "iso", "compact_stamp",
]

UTC = UTC


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


def naive_utcnow() -> datetime:
    """The current time as naive UTC (what a ``TIMESTAMP`` column holds)."""
    return naive_utc(utcnow())


def from_epoch(seconds: float) -> datetime:
    """A POSIX timestamp as aware UTC."""
    return datetime.fromtimestamp(seconds, UTC)


def as_utc(dt: datetime) -> datetime:
    """``dt`` as aware UTC (a naive ``dt`` is taken as UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt if dt.tzinfo is UTC else dt.astimezone(UTC)


def naive_utc(dt: datetime) -> datetime:
    """``dt`` as naive UTC (what a ``TIMESTAMP`` column holds); a naive ``dt`` is returned as is."""
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time (a trailing ``Z``/``z`` is UTC; a naive time is UTC) as aware UTC;
    ``ValueError`` when ``text`` is not one."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return as_utc(datetime.fromisoformat(value))


def parse_iso_lenient(text: object) -> datetime | None:
    """:func:`parse_iso` for untrusted input (log lines): ``None`` when ``text`` is not a
    non-empty string holding an ISO 8601 time, never an exception."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


def parse_iso_or_none(text: str | None) -> datetime | None:
    """:func:`parse_iso`, with ``None`` for an empty or missing value."""
    return parse_iso(text) if text else None


def format_iso(dt: datetime, timespec: str = "auto") -> str:
    """``dt`` (naive = UTC) as ISO 8601 UTC with a ``Z``; ``timespec`` as for
    :meth:`datetime.isoformat` (``"seconds"``, ``"milliseconds"``, ...)."""
    return as_utc(dt).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso(dt: datetime | None) -> str | None:
    """:func:`format_iso`, with ``None`` for ``None`` (optional fields of JSON output)."""
    return None if dt is None else format_iso(dt)


def compact_stamp(dt: datetime) -> str:
    """``20261202T054500Z``: a sortable UTC stamp for file and run names."""
    return f"{as_utc(dt):%Y%m%dT%H%M%SZ}"
