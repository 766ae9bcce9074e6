"""The embedded roster store: one DuckDB file.

Concurrency: every writer holds an exclusive ``fcntl`` lock on ``<file>.lock`` for the
whole read-compute-write, and writes inside one DuckDB transaction, so a sync is
atomic and two racing syncs are serialized (the second one sees the first one's ids).
Readers take a shared lock. A store that cannot be locked within ``lock_timeout``
seconds fails with a clear message and nothing is changed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..roster import Profile, Student, SyncOutcome
from .base import (
    STUDENT_COLUMNS,
    ChangeRecord,
    Snapshot,
    StoreError,
    SyncFn,
    format_meta_time,
    naive_utc,
    student_from_row,
    utc,
)

__all__ = ["DuckDBStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS students (
    student_id BIGINT PRIMARY KEY,
    identity VARCHAR NOT NULL UNIQUE,
    username VARCHAR NOT NULL UNIQUE,
    host VARCHAR NOT NULL,
    agreements TIMESTAMP[] NOT NULL,
    first_registered_at TIMESTAMP NOT NULL,
    last_registered_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    admission INTEGER NOT NULL,
    admitted_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (student_id > 0),
    CHECK (length(username) > 0)
);
CREATE TABLE IF NOT EXISTS profiles (
    identity VARCHAR PRIMARY KEY,
    email VARCHAR NOT NULL,
    full_name VARCHAR NOT NULL,
    city VARCHAR NOT NULL,
    country VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    run_id VARCHAR NOT NULL,
    changed_at TIMESTAMP NOT NULL,
    kind VARCHAR NOT NULL,
    student_id BIGINT,
    username VARCHAR,
    before VARCHAR,
    after VARCHAR
);
"""


class DuckDBStore:
    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float | None = None) -> None:
        self.path = Path(path)
        self.uri = str(self.path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        if lock_timeout is None:
            lock_timeout = float(os.environ.get("CDSOPS_LOCK_TIMEOUT", "60"))
        self.lock_timeout = lock_timeout

    # -- locking -------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open roster store {self.path}: {exc.strerror or exc}") from None
        try:
            deadline = time.monotonic() + self.lock_timeout
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StoreError(f"cannot lock roster store {self.path}: {exc.strerror}") from None
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"roster store {self.path} is busy (another sync holds its lock for over "
                            f"{self.lock_timeout:g} s); nothing was changed"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.25)
            yield
        finally:
            os.close(fd)

    def _connect(self, read_only: bool) -> Any:
        import duckdb

        if read_only and not self.path.exists():
            return None
        try:
            con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open roster store {self.path}: {exc}") from None
        if not read_only:
            con.execute(SCHEMA)
        return con

    # -- reads ---------------------------------------------------------------------
    def load(self) -> Snapshot:
        with self._locked(exclusive=False):
            con = self._connect(read_only=True)
            if con is None:
                return Snapshot(())
            try:
                return self._load(con)
            finally:
                con.close()

    def _load(self, con: Any) -> Snapshot:
        import duckdb

        try:
            tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            if "students" not in tables:
                return Snapshot(())
            rows = con.execute(f"SELECT {', '.join(STUDENT_COLUMNS)} FROM students ORDER BY student_id").fetchall()
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
        except duckdb.Error as exc:
            raise StoreError(f"cannot read roster store {self.path}: {exc}") from None
        return Snapshot(tuple(student_from_row(r) for r in rows), meta)

    def load_meta(self) -> dict[str, str]:
        with self._locked(exclusive=False):
            con = self._connect(read_only=True)
            if con is None:
                return {}
            try:
                tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
                return dict(con.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
            finally:
                con.close()

    def sent_notifications(self) -> frozenset[tuple[int, int, str]]:
        """(student_id, admission, kind) of notifications the email ledger marks as sent."""
        with self._locked(exclusive=False):
            con = self._connect(read_only=True)
            if con is None:
                return frozenset()
            try:
                cols = {
                    r[0]
                    for r in con.execute(
                        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'notifications'"
                    ).fetchall()
                }
                if not {"student_id", "admission", "kind"} <= cols:
                    return frozenset()
                where = " WHERE status = 'sent'" if "status" in cols else ""
                rows = con.execute(f"SELECT student_id, admission, kind FROM notifications{where}").fetchall()
            finally:
                con.close()
        return frozenset((int(a), int(b), str(c)) for a, b, c in rows)

    def profiles(self, student_ids: Sequence[int]) -> dict[int, Profile]:
        with self._locked(exclusive=False):
            con = self._connect(read_only=True)
            if con is None:
                return {}
            try:
                rows = con.execute(
                    "SELECT s.student_id, p.identity, p.email, p.full_name, p.city, p.country, p.updated_at "
                    "FROM students s JOIN profiles p USING (identity) WHERE list_contains(?, s.student_id)",
                    [list(student_ids)],
                ).fetchall()
            finally:
                con.close()
        return {r[0]: Profile(r[1], r[2], r[3], r[4], r[5], utc(r[6])) for r in rows}

    def changes(self, *, student_id: int | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict]:
        with self._locked(exclusive=False):
            con = self._connect(read_only=True)
            if con is None:
                return []
            try:
                where, params = [], []
                if student_id is not None:
                    where.append("student_id = ?")
                    params.append(student_id)
                if run_id is not None:
                    where.append("run_id = ?")
                    params.append(run_id)
                sql = "SELECT run_id, changed_at, kind, student_id, username, before, after FROM changes"
                if where:
                    sql += " WHERE " + " AND ".join(where)
                sql += " ORDER BY changed_at, rowid LIMIT ?"
                rows = con.execute(sql, params + [limit]).fetchall()
            finally:
                con.close()
        return [
            {
                "run_id": r[0],
                "at": format_meta_time(r[1]),
                "kind": r[2],
                "student_id": r[3],
                "username": r[4],
                "before": json.loads(r[5]) if r[5] else None,
                "after": json.loads(r[6]) if r[6] else None,
            }
            for r in rows
        ]

    # -- writes --------------------------------------------------------------------
    def sync(self, compute: SyncFn, *, run_id: str, now: datetime, meta: Mapping[str, str] | None = None) -> SyncOutcome:
        with self._locked(exclusive=True):
            con = self._connect(read_only=False)
            try:
                snapshot = self._load(con)
                outcome = compute(snapshot)
                self._write(con, outcome, run_id, now, meta or {})
                return outcome
            finally:
                con.close()

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._locked(exclusive=True):
            con = self._connect(read_only=False)
            try:
                con.execute("BEGIN TRANSACTION")
                _upsert_meta(con, values)
                con.execute("COMMIT")
            finally:
                con.close()

    def record_changes(self, records: Iterable[ChangeRecord]) -> None:
        records = list(records)
        if not records:
            return
        with self._locked(exclusive=True):
            con = self._connect(read_only=False)
            try:
                con.execute("BEGIN TRANSACTION")
                _insert_changes(con, records)
                con.execute("COMMIT")
            finally:
                con.close()

    def _write(self, con: Any, out: SyncOutcome, run_id: str, now: datetime, meta: Mapping[str, str]) -> None:
        import duckdb
        import pyarrow as pa

        stamp = naive_utc(now)
        try:
            con.execute("BEGIN TRANSACTION")
            if out.added:
                tbl = _students_arrow(pa, out.added, stamp)  # noqa: F841 (used by DuckDB by name)
                con.execute("INSERT INTO students SELECT * FROM tbl")
            if out.changed_agreements:
                upd = _students_arrow(pa, out.changed_agreements, stamp)  # noqa: F841
                con.execute(
                    "UPDATE students SET agreements = upd.agreements, first_registered_at = upd.first_registered_at, "
                    "last_registered_at = upd.last_registered_at, expires_at = upd.expires_at, "
                    "admission = upd.admission, admitted_at = upd.admitted_at, updated_at = upd.updated_at "
                    "FROM upd WHERE students.student_id = upd.student_id AND students.identity = upd.identity"
                )
            touched = {s.identity for s in out.added} | {s.identity for s in out.changed_agreements}
            profiles = [p for p in out.profiles if p.identity in touched]
            if profiles:
                prof = pa.table(  # noqa: F841
                    {
                        "identity": [p.identity for p in profiles],
                        "email": [p.email for p in profiles],
                        "full_name": [p.full_name for p in profiles],
                        "city": [p.city for p in profiles],
                        "country": [p.country for p in profiles],
                        "updated_at": pa.array([naive_utc(p.updated_at) for p in profiles], pa.timestamp("us")),
                    }
                )
                con.execute(
                    "INSERT INTO profiles SELECT * FROM prof ON CONFLICT (identity) DO UPDATE SET "
                    "email = excluded.email, full_name = excluded.full_name, city = excluded.city, "
                    "country = excluded.country, updated_at = excluded.updated_at "
                    "WHERE excluded.updated_at >= profiles.updated_at"
                )
            _insert_changes(
                con,
                [ChangeRecord(run_id, now, c.kind, c.student_id, c.username, c.before, c.after) for c in out.changes],
            )
            values = dict(meta)
            values["last_synced_at"] = format_meta_time(now)
            _upsert_meta(con, values)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise StoreError(f"cannot write roster store {self.path}: {exc}; nothing was changed") from None

    def close(self) -> None:
        pass


def _students_arrow(pa: Any, students: Sequence[Student], stamp: datetime) -> Any:
    ts = pa.timestamp("us")
    return pa.table(
        {
            "student_id": pa.array([s.student_id for s in students], pa.int64()),
            "identity": [s.identity for s in students],
            "username": [s.username for s in students],
            "host": [s.host for s in students],
            "agreements": pa.array([[naive_utc(t) for t in s.agreements] for s in students], pa.list_(ts)),
            "first_registered_at": pa.array([naive_utc(s.first_registered_at) for s in students], ts),
            "last_registered_at": pa.array([naive_utc(s.last_registered_at) for s in students], ts),
            "expires_at": pa.array([naive_utc(s.expires_at) for s in students], ts),
            "admission": pa.array([s.admission for s in students], pa.int32()),
            "admitted_at": pa.array([naive_utc(s.admitted_at) for s in students], ts),
            "updated_at": pa.array([stamp] * len(students), ts),
        }
    )


def _upsert_meta(con: Any, values: Mapping[str, str]) -> None:
    for k, v in sorted(values.items()):
        con.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [k, str(v)]
        )


def _insert_changes(con: Any, records: Sequence[ChangeRecord]) -> None:
    if not records:
        return
    import pyarrow as pa

    chg = pa.table(  # noqa: F841
        {
            "run_id": [r.run_id for r in records],
            "changed_at": pa.array([naive_utc(r.at) for r in records], pa.timestamp("us")),
            "kind": [r.kind for r in records],
            "student_id": pa.array([r.student_id for r in records], pa.int64()),
            "username": [r.username for r in records],
            "before": [json.dumps(r.before, sort_keys=True) if r.before is not None else None for r in records],
            "after": [json.dumps(r.after, sort_keys=True) if r.after is not None else None for r in records],
        }
    )
    con.execute("INSERT INTO changes SELECT * FROM chg")
