"""The embedded roster store: one DuckDB file.

Concurrency: every writer holds an exclusive ``fcntl`` lock on ``<file>.lock`` for the
whole read-compute-write, and writes inside one DuckDB transaction, so a sync is
atomic and two racing syncs are serialized (the second one sees the first one's ids).
Readers take a shared lock. A store that cannot be locked within ``lock_timeout``
seconds fails with a clear message and nothing is changed.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Config
from ..registrations import Registration
from ..roster import Profile, RosterBase, Student, SyncOutcome
from ..roster import sync as roster_sync
from ..times import as_utc, format_iso
from .base import (
    STUDENT_COLUMNS,
    ChangeRecord,
    Notified,
    RosterStore,
    Snapshot,
    StoreError,
    change_from_row,
    student_from_row,
)

__all__ = ["DuckDBStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS students (
    student_id BIGINT PRIMARY KEY,
    identity VARCHAR NOT NULL UNIQUE,
    username VARCHAR NOT NULL,  -- unique: derived from the id; checked by every sync (an index would cost ~15 MB at 100k)
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
    identity VARCHAR NOT NULL,
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


class DuckDBStore(RosterStore):
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
            # one thread: the roster is small for DuckDB, and each thread costs buffers
            con.execute("SET threads = 1")
            con.execute(SCHEMA)
        return con

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """The exclusive lock, a writable connection and one transaction, committed when the
        block ends without an exception (else the connection closes uncommitted)."""
        with self._locked(exclusive=True):
            con = self._connect(read_only=False)
            try:
                con.execute("BEGIN TRANSACTION")
                yield con
                con.execute("COMMIT")
            finally:
                con.close()

    # -- reads ---------------------------------------------------------------------
    def load(self) -> Snapshot:
        if not self.path.exists():  # a read makes no file, lock or directory
            return Snapshot((), present=False)
        with self._locked(exclusive=False):
            con = self._connect(read_only=True)
            if con is None:
                return Snapshot((), present=False)
            try:
                return self._load(con)
            finally:
                con.close()

    def _load(self, con: Any) -> Snapshot:
        import duckdb

        try:
            tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            if "students" not in tables:
                return Snapshot((), present=False)
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

    def sent_notifications(self) -> frozenset[Notified]:
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
        return {r[0]: Profile(r[1], r[2], r[3], r[4], r[5], as_utc(r[6])) for r in rows}

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
        return [change_from_row(r) for r in rows]

    # -- writes --------------------------------------------------------------------
    def sync_registrations(
        self,
        registrations: Sequence[Registration],
        config: Config,
        *,
        run_id: str,
        now: datetime,
        meta: Mapping[str, str] | None = None,
    ) -> SyncOutcome:
        """The same result as ``roster.sync(<the whole roster>, registrations, config)``,
        but only the students the batch touches are loaded: an index read (identity, id and
        agreement times as integers) finds them, so a re-sync of a large unchanged export
        costs one query instead of rebuilding the whole roster in Python."""
        with self._locked(exclusive=True):
            con = self._connect(read_only=False)
            try:
                index = {
                    ident: (sid, set(ags))
                    for ident, sid, ags in con.execute(
                        "SELECT identity, student_id, list_transform(agreements, t -> epoch_us(t)) FROM students"
                    ).fetchall()
                }
                max_id = con.execute("SELECT coalesce(max(student_id), 0) FROM students").fetchone()[0]
                load = dict(con.execute("SELECT host, count(*) FROM students GROUP BY host").fetchall())
                seen: dict[str, bool] = {}  # identity -> touched
                for r in registrations:
                    ident = r.identity
                    if seen.get(ident):
                        continue
                    known = index.get(ident)
                    seen[ident] = known is None or _us(r.submitted_at) not in known[1]
                touched = [i for i, t in seen.items() if t]
                known_touched = [i for i in touched if i in index]
                del index
                students: tuple[Student, ...] = ()
                if known_touched:
                    students = self._load_identities(con, known_touched)
                touched_set = set(touched)
                batch = [r for r in registrations if r.identity in touched_set]
                base = RosterBase(max_id, load, len(seen) - len(touched))
                outcome = roster_sync(students, batch, config, base=base)
                self._write(con, outcome, run_id, now, meta or {})
                return outcome
            finally:
                con.close()

    def _load_identities(self, con: Any, identities: Sequence[str]) -> tuple[Student, ...]:
        with tempfile.TemporaryDirectory(prefix=".cdsops-", dir=self.path.parent) as tmp:
            staged = _stage_csv(Path(tmp) / "identities.csv", ((i,) for i in identities))
            rows = con.execute(
                f"SELECT {', '.join('s.' + c for c in STUDENT_COLUMNS)} FROM students s "
                f"JOIN read_csv(?, {_CSV_OPTS}, columns={{'identity': 'VARCHAR'}}) AS t USING (identity) "
                "ORDER BY s.student_id",
                [staged],
            ).fetchall()
        return tuple(student_from_row(r) for r in rows)

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._transaction() as con:
            _upsert_meta(con, values)

    def record_changes(self, records: Iterable[ChangeRecord]) -> None:
        records = list(records)
        if not records:
            return
        with self._transaction() as con:
            _insert_changes(con, records)

    def _write(self, con: Any, out: SyncOutcome, run_id: str, now: datetime, meta: Mapping[str, str]) -> None:
        """Write a sync's outcome in one transaction: new students, changed agreements, contact
        details, the changes record and the meta values; on any error nothing is written."""
        import duckdb

        now_us = _us(as_utc(now))
        try:
            with tempfile.TemporaryDirectory(prefix=".cdsops-", dir=self.path.parent) as tmp:
                stage = Path(tmp)
                con.execute("BEGIN TRANSACTION")
                if out.added:
                    _insert_students(con, stage, out.added, run_id, now_us)
                if out.changed_agreements:
                    _update_students(con, stage, out.changed_agreements, now_us)
                _write_profiles(con, stage, out)
                _insert_changes(
                    con,
                    [ChangeRecord(run_id, now, c.kind, c.student_id, c.username, c.before, c.after) for c in out.renewal_changes],
                )
                _upsert_meta(con, {**meta, "last_synced_at": format_iso(now)})
                con.execute("COMMIT")
        except StoreError:
            _rollback(con)
            raise
        except duckdb.Error as exc:
            _rollback(con)
            raise StoreError(f"cannot write roster store {self.path}: {exc}; nothing was changed") from None
        except OSError as exc:
            _rollback(con)
            raise StoreError(f"cannot write roster store {self.path}: {exc.strerror or exc}; nothing was changed") from None

    def close(self) -> None:
        pass


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# Bulk writes go through a staged CSV that DuckDB reads natively: fast, and it needs
# neither pandas nor pyarrow (whose imports alone would cost ~70 MB of memory).
_CSV_OPTS = "header=false, quote='\"', escape='\"', delim=',', nullstr='\\N', auto_detect=false"
_STUDENTS_FROM_CSV = (
    "SELECT student_id, identity, username, host, "
    "list_transform(string_split(agreements, ' '), x -> make_timestamp(CAST(x AS BIGINT))) AS agreements, "
    "make_timestamp(first_registered_at) AS first_registered_at, make_timestamp(last_registered_at) AS last_registered_at, "
    "make_timestamp(expires_at) AS expires_at, admission, make_timestamp(admitted_at) AS admitted_at, "
    "make_timestamp(updated_at) AS updated_at "
    f"FROM read_csv(?, {_CSV_OPTS}, columns={{'student_id': 'BIGINT', 'identity': 'VARCHAR', 'username': 'VARCHAR', "
    "'host': 'VARCHAR', 'agreements': 'VARCHAR', 'first_registered_at': 'BIGINT', 'last_registered_at': 'BIGINT', "
    "'expires_at': 'BIGINT', 'admission': 'INTEGER', 'admitted_at': 'BIGINT', 'updated_at': 'BIGINT'})"
)


_PROFILES_FROM_CSV = (
    "SELECT identity, email, full_name, city, country, make_timestamp(updated_at) AS updated_at "
    f"FROM read_csv(?, {_CSV_OPTS}, columns={{'identity': 'VARCHAR', 'email': 'VARCHAR', 'full_name': 'VARCHAR', "
    "'city': 'VARCHAR', 'country': 'VARCHAR', 'updated_at': 'BIGINT'})"
)


def _stage_csv(path: Path, rows: Iterable[Sequence[Any]]) -> str:
    """Write ``rows`` as the CSV that ``read_csv`` with :data:`_CSV_OPTS` reads (``\\N`` is
    NULL); returns the path as a string, the query's parameter."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return str(path)


def _profile_row(p: Any) -> tuple:
    """A profile as a row of :data:`_PROFILES_FROM_CSV`."""
    return (p.identity, p.email, p.full_name, p.city, p.country, _us(p.updated_at))


def _us(dt: datetime) -> int:
    """Microseconds since the epoch (UTC) of an aware datetime."""
    return (dt - _EPOCH) // _US


def _student_row(st: Student, now_us: int) -> tuple:
    """A student as a row of :data:`_STUDENTS_FROM_CSV` (``updated_at`` = ``now_us``)."""
    return (
        st.student_id,
        st.identity,
        st.username,
        st.host,
        " ".join(str(_us(t)) for t in st.agreements),
        _us(st.first_registered_at),
        _us(st.last_registered_at),
        _us(st.expires_at),
        st.admission,
        _us(st.admitted_at),
        now_us,
    )


def _rollback(con: Any) -> None:
    with contextlib.suppress(Exception):
        con.execute("ROLLBACK")


def _insert_students(con: Any, stage: Path, added: Sequence[Student], run_id: str, now_us: int) -> None:
    """Insert new students and one ``student.added`` change line each (set-wise)."""
    staged = _stage_csv(stage / "added.csv", (_student_row(st, now_us) for st in added))
    first = min(st.student_id for st in added)
    # new ids are new, but a changed username_prefix could still recreate an old name
    # (not when the roster was empty: ids start at 1)
    clash = first > 1 and con.execute(
        f"SELECT s.username FROM students s JOIN ({_STUDENTS_FROM_CSV}) n USING (username) LIMIT 1", [staged]
    ).fetchone()
    if clash:
        raise StoreError(f"username {clash[0]} already belongs to another student; nothing was changed")
    con.execute(f"INSERT INTO students SELECT * FROM ({_STUDENTS_FROM_CSV})", [staged])
    con.execute(
        "INSERT INTO changes SELECT ?, make_timestamp(?), 'student.added', student_id, username, NULL, "
        "json_object('expires_at', CASE WHEN epoch_us(expires_at) % 1000000 = 0 "
        "THEN strftime(expires_at, '%Y-%m-%dT%H:%M:%SZ') ELSE strftime(expires_at, '%Y-%m-%dT%H:%M:%S.%fZ') END, "
        "'admission', admission, 'host', host)::VARCHAR FROM students WHERE student_id >= ?",
        [run_id, now_us, first],
    )


def _update_students(con: Any, stage: Path, changed: Sequence[Student], now_us: int) -> None:
    """Replace the agreement times (and what follows from them) of known students."""
    staged = _stage_csv(stage / "changed.csv", (_student_row(st, now_us) for st in changed))
    con.execute(
        "UPDATE students SET agreements = upd.agreements, first_registered_at = upd.first_registered_at, "
        "last_registered_at = upd.last_registered_at, expires_at = upd.expires_at, "
        "admission = upd.admission, admitted_at = upd.admitted_at, updated_at = upd.updated_at "
        f"FROM ({_STUDENTS_FROM_CSV}) AS upd "
        "WHERE students.student_id = upd.student_id AND students.identity = upd.identity",
        [staged],
    )


def _write_profiles(con: Any, stage: Path, out: SyncOutcome) -> None:
    """Contact details: new students' rows are inserted; known students' rows are replaced when
    this batch carries newer ones (no index on profiles: at 100k students it would cost more
    memory than the roster itself)."""
    new_ids = {st.identity for st in out.added}
    changed_ids = {st.identity for st in out.changed_agreements}
    fresh = [p for p in out.profiles if p.identity in new_ids]
    if fresh:
        staged = _stage_csv(stage / "fresh.csv", map(_profile_row, fresh))
        con.execute(f"INSERT INTO profiles {_PROFILES_FROM_CSV}", [staged])
    known = [p for p in out.profiles if p.identity in changed_ids]
    if not known:
        return
    staged = _stage_csv(stage / "known.csv", map(_profile_row, known))
    con.execute(f"CREATE OR REPLACE TEMP TABLE staged_profiles AS {_PROFILES_FROM_CSV}", [staged])
    con.execute("DELETE FROM staged_profiles s USING profiles p WHERE p.identity = s.identity AND p.updated_at > s.updated_at")
    con.execute("DELETE FROM profiles p USING staged_profiles s WHERE p.identity = s.identity")
    con.execute("INSERT INTO profiles SELECT * FROM staged_profiles")
    con.execute("DROP TABLE staged_profiles")


def _upsert_meta(con: Any, values: Mapping[str, str]) -> None:
    for k, v in sorted(values.items()):
        con.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [k, str(v)]
        )


def _insert_changes(con: Any, records: Sequence[ChangeRecord]) -> None:
    if not records:
        return
    with tempfile.TemporaryDirectory(prefix=".cdsops-") as tmp:
        staged = _stage_csv(Path(tmp) / "changes.csv", (
            (
                r.run_id,
                _us(as_utc(r.at)),
                r.kind,
                "\\N" if r.student_id is None else r.student_id,
                "\\N" if r.username is None else r.username,
                "\\N" if r.before is None else json.dumps(r.before, sort_keys=True),
                "\\N" if r.after is None else json.dumps(r.after, sort_keys=True),
            )
            for r in records
        ))
        con.execute(
            "INSERT INTO changes SELECT run_id, make_timestamp(at_us), kind, student_id, username, before, after "
            f"FROM read_csv(?, {_CSV_OPTS}, columns={{'run_id': 'VARCHAR', 'at_us': 'BIGINT', 'kind': 'VARCHAR', "
            "'student_id': 'BIGINT', 'username': 'VARCHAR', 'before': 'VARCHAR', 'after': 'VARCHAR'})",
            [staged],
        )
