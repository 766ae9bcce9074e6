"""The events table, next to the roster.

Embedded default: a DuckDB file beside the roster file (``roster.duckdb`` ->
``roster.events.duckdb``), so ingesting a million events never holds the roster's lock;
``events`` (one row per event) and ``events_meta`` (the journal cursor ingest resumes
from). Production (``bigquery://PROJECT/DATASET``): the table ``events`` in the roster's
dataset, written with load jobs (:mod:`cdsops.events.bigquery_events`).

Rows hold a username and a student id, never an email or a name. ``event_key`` (the journal
cursor, or the log entry's insert id) makes a re-run add nothing.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..store import StoreError
from .model import ACTIVITY_KINDS, Event

__all__ = ["EventStore", "DuckDBEvents", "open_events", "events_path", "ACTIVITY_KINDS"]

#: kinds counted as a student's activity in the weekly heatmap

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_key VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    host VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    student_id BIGINT,
    username VARCHAR,
    detail VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS events_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""
_CSV_OPTS = "header=false, quote='\"', escape='\"', delim=',', nullstr='\\N', auto_detect=false"
_COLUMNS = (
    "{'event_key': 'VARCHAR', 'at_us': 'BIGINT', 'host': 'VARCHAR', 'kind': 'VARCHAR', "
    "'student_id': 'BIGINT', 'username': 'VARCHAR', 'detail': 'VARCHAR'}"
)


class EventStore(Protocol):
    uri: str

    def add(self, events: Iterable[Event], *, now: datetime) -> tuple[int, int]: ...

    def purge(self, before: datetime) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def recent(self, student_id: int, kinds: Sequence[str], limit: int) -> list[Event]: ...

    def per_student_counts(self, start: datetime | None, end: datetime | None) -> list[tuple[int, str, int]]: ...

    def hour_buckets(self, start: datetime | None, end: datetime | None) -> list[tuple[int, int, int]]: ...

    def stats(self) -> dict[str, Any]: ...


def events_path(roster_path: str) -> Path:
    p = Path(roster_path)
    stem = p.name[: -len(".duckdb")] if p.name.endswith(".duckdb") else p.name
    return p.with_name(stem + ".events.duckdb")


def open_events(roster_uri: str) -> EventStore:
    """The events store beside the roster store ``roster_uri`` (same forms as ``--roster``)."""
    if roster_uri.startswith("bigquery://"):
        parts = roster_uri[len("bigquery://"):].strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise StoreError(f"BigQuery roster store must be bigquery://PROJECT/DATASET, got {roster_uri!r}")
        from .bigquery_events import BigQueryEvents

        return BigQueryEvents(parts[0], parts[1])
    path = roster_uri[len("duckdb:"):] if roster_uri.startswith("duckdb:") else roster_uri
    return DuckDBEvents(events_path(path))


def _us(dt: datetime) -> int:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
    return int(dt.timestamp() * 1_000_000)


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def event_from_row(r: Sequence[Any]) -> Event:
    """(event_key, occurred_at, host, kind, student_id, username, detail) -> Event."""
    at = r[1] if r[1].tzinfo else r[1].replace(tzinfo=UTC)
    return Event(r[0], at.astimezone(UTC), r[2], r[3], r[5], r[4], json.loads(r[6]) if r[6] else {})


def period_sql(start: datetime | None, end: datetime | None, params: list[Any], col: str = "occurred_at") -> str:
    where = []
    if start is not None:
        where.append(f"{col} >= ?")
        params.append(_naive(start))
    if end is not None:
        where.append(f"{col} < ?")
        params.append(_naive(end))
    return (" AND " + " AND ".join(where)) if where else ""


class DuckDBEvents:
    def __init__(self, path: Path, *, lock_timeout: float | None = None) -> None:
        self.path = Path(path)
        self.uri = str(self.path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout if lock_timeout is not None else float(os.environ.get("CDSOPS_LOCK_TIMEOUT", "60"))

    @contextlib.contextmanager
    def _connected(self, write: bool) -> Iterator[Any]:
        import duckdb

        if not write and not self.path.exists():
            yield None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH, self.lock_timeout, self.path)
            try:
                con = duckdb.connect(str(self.path), read_only=not write)
                if write:
                    con.execute(SCHEMA)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open events store {self.path}: {exc}") from None
            try:
                yield con
            except duckdb.Error as exc:
                raise StoreError(f"events store {self.path}: {exc}; nothing was changed") from None
            finally:
                con.close()
        finally:
            os.close(fd)

    def add(self, events: Iterable[Event], *, now: datetime) -> tuple[int, int]:
        with self._connected(write=True) as con, tempfile.TemporaryDirectory(prefix=".cdsops-events-", dir=self.path.parent) as tmp:
            staged = os.path.join(tmp, "events.csv")
            n = _stage(staged, events)
            if not n:
                return 0, 0
            before = con.execute("SELECT count(*) FROM events").fetchone()[0]
            con.execute("BEGIN TRANSACTION")
            con.execute(
                "INSERT INTO events SELECT s.event_key, make_timestamp(s.at_us), s.host, s.kind, s.student_id, s.username, "
                f"s.detail, make_timestamp(?) FROM (SELECT DISTINCT ON (event_key) * FROM read_csv(?, {_CSV_OPTS}, columns={_COLUMNS})) s "
                "WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_key = s.event_key)",
                [_us(now), staged],
            )
            con.execute("COMMIT")
            added = con.execute("SELECT count(*) FROM events").fetchone()[0] - before
        return added, n - added

    def purge(self, before: datetime) -> int:
        with self._connected(write=True) as con:
            n = con.execute("SELECT count(*) FROM events WHERE occurred_at < ?", [_naive(before)]).fetchone()[0]
            if n:
                con.execute("DELETE FROM events WHERE occurred_at < ?", [_naive(before)])
            return int(n)

    def get_meta(self, key: str) -> str | None:
        with self._connected(write=False) as con:
            if con is None:
                return None
            row = con.execute("SELECT value FROM events_meta WHERE key = ?", [key]).fetchone()
            return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._connected(write=True) as con:
            con.execute("INSERT INTO events_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])

    def recent(self, student_id: int, kinds: Sequence[str], limit: int) -> list[Event]:
        with self._connected(write=False) as con:
            if con is None:
                return []
            rows = con.execute(
                "SELECT event_key, occurred_at, host, kind, student_id, username, detail FROM events "
                "WHERE student_id = ? AND list_contains(?, kind) ORDER BY occurred_at DESC, event_key DESC LIMIT ?",
                [student_id, list(kinds), limit],
            ).fetchall()
        return [event_from_row(r) for r in rows]

    def per_student_counts(self, start: datetime | None, end: datetime | None) -> list[tuple[int, str, int]]:
        params: list[Any] = []
        where = period_sql(start, end, params)
        with self._connected(write=False) as con:
            if con is None:
                return []
            return con.execute(
                f"SELECT student_id, kind, count(*) FROM events WHERE student_id IS NOT NULL{where} GROUP BY ALL ORDER BY ALL",
                params,
            ).fetchall()

    def hour_buckets(self, start: datetime | None, end: datetime | None) -> list[tuple[int, int, int]]:
        params: list[Any] = [list(ACTIVITY_KINDS)]
        where = period_sql(start, end, params)
        with self._connected(write=False) as con:
            if con is None:
                return []
            return con.execute(
                "SELECT student_id, epoch(date_trunc('hour', occurred_at))::BIGINT AS h, count(*) FROM events "
                f"WHERE student_id IS NOT NULL AND list_contains(?, kind){where} GROUP BY ALL ORDER BY ALL",
                params,
            ).fetchall()

    def stats(self) -> dict[str, Any]:
        with self._connected(write=False) as con:
            if con is None:
                return {"events": 0, "newest": None}
            n, newest = con.execute("SELECT count(*), max(occurred_at) FROM events").fetchone()
        return {"events": int(n), "newest": newest.replace(tzinfo=UTC) if newest else None}


def _flock(fd: int, mode: int, timeout: float, path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(f"events store {path} is busy (locked for over {timeout:g} s); nothing was changed") from None
            time.sleep(0.05)


def _stage(path: str, events: Iterable[Event]) -> int:
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for e in events:
            w.writerow((
                e.key, _us(e.at), e.host, e.kind,
                "\\N" if e.student_id is None else e.student_id,
                "\\N" if e.username is None else e.username,
                e.detail_json(),
            ))  # fmt: skip
            n += 1
    return n
