"""The roster store on BigQuery (production): ``bigquery://PROJECT/DATASET``.

Same tables and columns as the DuckDB store: ``students`` (``agreements
ARRAY<TIMESTAMP>``), ``profiles``, ``meta``, ``changes``; created when missing.

Atomic, race-safe sync by optimistic concurrency, without locks:

1. read the roster (one query, one consistent snapshot) and derive its *revision*:
   ``COUNT(*) + SUM(ARRAY_LENGTH(agreements))``. Students are never deleted and a
   sync only ever adds students or agreement times, so every write that changes the
   roster strictly increases the revision: equal revision means the same roster;
2. compute the new roster in Python (the pure core);
3. write every new or changed student row in ONE ``MERGE`` whose source only yields
   rows while the table's revision is still the one read. A single DML statement is
   atomic in BigQuery (and in bqemulator, which serializes DML), so either all rows
   land or none; ``num_dml_affected_rows`` tells which;
4. none landed: another sync won the race. Re-read, recompute, retry (bounded);
   then :class:`StoreError` "roster changed concurrently, nothing was changed".

Then the profiles (MERGE), the change records (INSERT) and the meta values (MERGE;
the watermark and ``last_synced_at``) are written, each one statement. They depend
only on this sync's outcome, so a sync that loses the race writes none of them.

Rows travel as an inline ``ARRAY<STRUCT>`` query parameter for small batches and as
a Parquet load job into a short-lived staging table (expiring in a day, dropped
after use) for large ones; query parameters are limited in size, load jobs are free.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .. import bq
from ..config import Config
from ..registrations import Registration
from ..roster import Profile, RosterBase, Student, SyncOutcome
from ..roster import sync as roster_sync
from ..times import as_utc, format_iso
from .base import (
    STUDENT_COLUMNS,
    ChangeRecord,
    RosterStore,
    Snapshot,
    StoreError,
    change_from_row,
    student_from_row,
)
from .roster_cache import GENERATION_KEY, PENDING, RosterCache

__all__ = ["BigQueryStore", "revision_of"]

TABLES = ("students", "profiles", "meta", "changes")

STUDENT_SCHEMA: bq.Schema = (
    ("student_id", "INT64", "NULLABLE"),
    ("identity", "STRING", "NULLABLE"),
    ("username", "STRING", "NULLABLE"),
    ("host", "STRING", "NULLABLE"),
    ("agreements", "TIMESTAMP", "REPEATED"),
    ("first_registered_at", "TIMESTAMP", "NULLABLE"),
    ("last_registered_at", "TIMESTAMP", "NULLABLE"),
    ("expires_at", "TIMESTAMP", "NULLABLE"),
    ("admission", "INT64", "NULLABLE"),
    ("admitted_at", "TIMESTAMP", "NULLABLE"),
    ("updated_at", "TIMESTAMP", "NULLABLE"),
)
PROFILE_SCHEMA: bq.Schema = (
    ("identity", "STRING", "NULLABLE"),
    ("email", "STRING", "NULLABLE"),
    ("full_name", "STRING", "NULLABLE"),
    ("city", "STRING", "NULLABLE"),
    ("country", "STRING", "NULLABLE"),
    ("updated_at", "TIMESTAMP", "NULLABLE"),
)
CHANGE_SCHEMA: bq.Schema = (
    ("run_id", "STRING", "NULLABLE"),
    ("changed_at", "TIMESTAMP", "NULLABLE"),
    ("kind", "STRING", "NULLABLE"),
    ("student_id", "INT64", "NULLABLE"),
    ("username", "STRING", "NULLABLE"),
    ("before", "STRING", "NULLABLE"),
    ("after", "STRING", "NULLABLE"),
)
# Not "key"/"value": bqemulator (DuckDB) takes a STRUCT<key, value> for a MAP and fails.
META_SCHEMA: bq.Schema = (("meta_key", "STRING", "NULLABLE"), ("meta_value", "STRING", "NULLABLE"))

DDL = {
    "students": """CREATE TABLE IF NOT EXISTS {t} (
  student_id INT64 NOT NULL, identity STRING NOT NULL, username STRING NOT NULL, host STRING NOT NULL,
  agreements ARRAY<TIMESTAMP>, first_registered_at TIMESTAMP NOT NULL, last_registered_at TIMESTAMP NOT NULL,
  expires_at TIMESTAMP NOT NULL, admission INT64 NOT NULL, admitted_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL) CLUSTER BY identity""",
    "profiles": """CREATE TABLE IF NOT EXISTS {t} (
  identity STRING NOT NULL, email STRING NOT NULL, full_name STRING NOT NULL, city STRING NOT NULL,
  country STRING NOT NULL, updated_at TIMESTAMP NOT NULL) CLUSTER BY identity""",
    "meta": "CREATE TABLE IF NOT EXISTS {t} (key STRING NOT NULL, value STRING NOT NULL)",
    "changes": """CREATE TABLE IF NOT EXISTS {t} (
  run_id STRING NOT NULL, changed_at TIMESTAMP NOT NULL, kind STRING NOT NULL, student_id INT64,
  username STRING, before STRING, after STRING)""",
}

BATCH_SCHEMA: bq.Schema = (("identity", "STRING", "NULLABLE"), ("submitted_at", "TIMESTAMP", "NULLABLE"))

CONFLICT_MESSAGE = "roster changed concurrently, nothing was changed"


def revision_of(students: Sequence[Student]) -> int:
    """The roster revision: grows with every student and every agreement time added."""
    return len(students) + sum(len(s.agreements) for s in students)


class BigQueryStore(RosterStore):
    #: batches up to this many rows go inline as query parameters, larger ones are staged
    inline_limit = 500
    #: attempts of read-compute-write before giving up on a racing roster
    max_attempts = 8
    #: batches of up to this many identities read only the students they touch
    index_limit = 5000

    def __init__(self, project: str, dataset: str, *, client: Any = None) -> None:
        self.project = project
        self.dataset = dataset
        self.uri = f"bigquery://{project}/{dataset}"
        try:
            self._t = {name: bq.quote_table(project, dataset, name) for name in TABLES}
        except bq.BigQueryUnavailable as exc:
            raise StoreError(f"invalid BigQuery roster store {self.uri}: {exc}") from None
        self._client = client
        self._ready = False
        self._cache: RosterCache | None = None

    # -- plumbing --------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = bq.make_client(self.project)
            except bq.BigQueryUnavailable as exc:
                raise StoreError(f"cannot open roster store {self.uri}: {exc}") from None
        return self._client

    def _fail(self, action: str, exc: BaseException, tail: str = "nothing was changed") -> StoreError:
        return StoreError(f"cannot {action} roster store {self.uri}: {bq.describe_error(exc)}; {tail}")

    def _query(self, sql: str, params: Sequence[Any] = (), *, retry_job: bool = True) -> tuple[Any, list[tuple]]:
        job, result = bq.run_query(self.client, sql, params, retry_job=retry_job)
        return job, [tuple(r.values()) for r in result]

    def _existing_tables(self) -> set[str] | None:
        """Names of the tables in the dataset, or None when the dataset does not exist."""
        ref = f"{self.project}.{self.dataset}"
        kw = {"retry": bq.api_retry(), "timeout": bq.timeout_seconds()}
        try:
            names = {t.table_id for t in self.client.list_tables(ref, **kw)}
            if not names:  # an empty dataset, or (on some servers) a missing one
                self.client.get_dataset(ref, **kw)
            return names
        except bq.api_errors() as exc:
            if bq.is_not_found(exc):
                return None
            raise

    def _ensure(self) -> None:
        """Create the dataset and the tables when missing (once per store object)."""
        if self._ready:
            return
        try:
            existing = self._existing_tables()
            if existing is None:
                from google.cloud import bigquery

                ds = bigquery.Dataset(f"{self.project}.{self.dataset}")
                self.client.create_dataset(ds, exists_ok=True, retry=bq.api_retry(), timeout=bq.timeout_seconds())
                existing = set()
            for name in TABLES:
                if name not in existing:
                    self._query(DDL[name].format(t=self._t[name]))
        except bq.api_errors() as exc:
            raise self._fail("prepare", exc) from None
        self._ready = True

    # -- reads -----------------------------------------------------------------------
    def load(self) -> Snapshot:
        try:
            return self._load()
        except bq.api_errors() as exc:
            raise self._fail("read", exc, "nothing was read") from None

    def _load(self) -> Snapshot:
        tables = self._existing_tables()
        meta = self._load_meta(tables)  # first: the generation read here is older than the students read
        if tables is None or "students" not in tables:
            return Snapshot((), meta, 0, present=False)
        generation = meta.get(GENERATION_KEY)
        cache = self._roster_cache()
        students = cache.get(generation)
        if students is None:
            _, rows = self._query(f"SELECT {', '.join(STUDENT_COLUMNS)} FROM {self._t['students']} ORDER BY student_id")
            try:
                students = tuple(student_from_row(r) for r in rows)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"roster store {self.uri} holds a malformed students row: {exc}") from None
            cache.put(generation, students)
        return Snapshot(students, meta, revision_of(students))

    def _roster_cache(self) -> RosterCache:
        if self._cache is None:
            self._cache = RosterCache(self.uri)
        return self._cache

    def _load_meta(self, tables: set[str] | None) -> dict[str, str]:
        if tables is None or "meta" not in tables:
            return {}
        _, rows = self._query(f"SELECT key, value FROM {self._t['meta']}")
        return {str(k): str(v) for k, v in rows}

    def load_meta(self) -> dict[str, str]:
        try:
            return self._load_meta(self._existing_tables())
        except bq.api_errors() as exc:
            raise self._fail("read", exc, "nothing was read") from None

    def sent_notifications(self) -> frozenset[tuple[int, int, str]]:
        """(student_id, admission, kind) of notifications the email ledger marks as sent."""
        try:
            try:
                table = self.client.get_table(f"{self.project}.{self.dataset}.notifications", retry=bq.api_retry(), timeout=bq.timeout_seconds())
            except bq.api_errors() as exc:
                if bq.is_not_found(exc):
                    return frozenset()
                raise
            cols = {f.name for f in table.schema}
            if not {"student_id", "admission", "kind"} <= cols:
                return frozenset()
            where = " WHERE status = 'sent'" if "status" in cols else ""
            ref = bq.quote_table(self.project, self.dataset, "notifications")
            _, rows = self._query(f"SELECT student_id, admission, kind FROM {ref}{where}")
        except bq.api_errors() as exc:
            raise self._fail("read", exc, "nothing was read") from None
        return frozenset((int(a), int(b), str(c)) for a, b, c in rows)

    def profiles(self, student_ids: Sequence[int]) -> dict[int, Profile]:
        ids = sorted({int(i) for i in student_ids})
        if not ids:
            return {}
        try:
            tables = self._existing_tables() or set()
            if not {"students", "profiles"} <= tables:
                return {}
            _, rows = self._query(
                f"SELECT s.student_id, p.identity, p.email, p.full_name, p.city, p.country, p.updated_at "
                f"FROM {self._t['students']} AS s JOIN {self._t['profiles']} AS p ON p.identity = s.identity "
                "WHERE s.student_id IN UNNEST(@ids)",
                [bq.array("ids", "INT64", ids)],
            )
        except bq.api_errors() as exc:
            raise self._fail("read", exc, "nothing was read") from None
        return {int(r[0]): Profile(r[1], r[2], r[3], r[4], r[5], as_utc(r[6])) for r in rows}

    def changes(self, *, student_id: int | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict]:
        where, params = [], []
        if student_id is not None:
            where.append("student_id = @student_id")
            params.append(bq.scalar("student_id", "INT64", int(student_id)))
        if run_id is not None:
            where.append("run_id = @run_id")
            params.append(bq.scalar("run_id", "STRING", run_id))
        params.append(bq.scalar("limit", "INT64", max(0, int(limit))))
        sql = f"SELECT run_id, changed_at, kind, student_id, username, before, after FROM {self._t['changes']}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY changed_at, run_id, student_id, kind LIMIT @limit"
        try:
            tables = self._existing_tables() or set()
            if "changes" not in tables:
                return []
            _, rows = self._query(sql, params)
        except bq.api_errors() as exc:
            raise self._fail("read", exc, "nothing was read") from None
        return [change_from_row(r) for r in rows]

    # -- writes ----------------------------------------------------------------------
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
        reading only the students the batch names (the usual small incremental batch)
        instead of the whole roster; written with a MERGE guarded by the roster's revision,
        retried with backoff when another writer moved it.

        Consistency: the revision (with the highest id and the host loads) is read first,
        the named students after it. If anything was written in between, the revision
        has moved (writes only increase it), so the guarded MERGE applies nothing and the
        sync is retried; if nothing was, everything read belongs to that revision."""
        registrations = list(registrations)
        identities = sorted({r.identity for r in registrations})
        self._ensure()
        stage = None
        try:
            if len(identities) > self.index_limit:
                # a large batch: BigQuery finds the touched identities by a join with the
                # batch's (identity, time) pairs, staged once by a (free) load job
                stage = f"_cdsops_stage_batch_{secrets.token_hex(6)}"
                pairs = sorted({(r.identity, r.submitted_at) for r in registrations})
                bq.load_stage_table(self.client, self.project, self.dataset, stage, BATCH_SCHEMA, pairs)
            for attempt in range(self.max_attempts):
                revision, outcome = self._indexed_outcome(registrations, identities, stage, config)
                students = list(outcome.added) + list(outcome.changed_agreements)
                if students and not self._write_students(students, revision, now):
                    time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
                    continue
                self._write_after(outcome, run_id, now, meta or {})
                return outcome
        except bq.api_errors() as exc:
            raise self._fail("read", exc) from None
        finally:
            if stage:
                bq.drop_table(self.client, self.project, self.dataset, stage)
        raise StoreError(f"{CONFLICT_MESSAGE} (roster store {self.uri}, {self.max_attempts} attempts); try again")

    def _indexed_outcome(
        self, registrations: Sequence[Registration], identities: Sequence[str], stage: str | None, config: Config
    ) -> tuple[int, SyncOutcome]:
        """(revision read first, the sync's outcome over only the students the batch touches).

        A batch that touches nobody (the usual no-change run: the watermark overlap re-reads a
        few known rows) is settled by the named read alone: no roster summary, which would
        scan three columns of every student."""
        if stage is None:
            named = self._students_named(identities) if identities else ()
            if not _touched(registrations, {s.identity: s for s in named}):
                return 0, roster_sync((), [], config, base=RosterBase(0, {}, len(identities)))
        revision, max_id, loads = self._summary()
        if stage is None:  # read again after the revision, so both belong to one roster state
            known = self._students_named(identities)
            touched = _touched(registrations, {s.identity: s for s in known})
            known = tuple(s for s in known if s.identity in touched)
        elif revision == 0:  # an empty roster: every identity is new
            known, touched = (), set(identities)
        else:
            known, touched = self._touched_by_join(stage)
        batch = [r for r in registrations if r.identity in touched]
        base = RosterBase(max_id, loads, len(identities) - len(touched))
        return revision, roster_sync(known, batch, config, base=base)

    def _touched_by_join(self, stage: str) -> tuple[tuple[Student, ...], set[str]]:
        """(known students with new agreement times, every touched identity) of a staged batch."""
        t = self._t["students"]
        ref = bq.quote_table(self.project, self.dataset, stage)
        _, rows = self._query(
            f"WITH b AS (SELECT DISTINCT identity, submitted_at FROM {ref}), "
            f"k AS (SELECT s.identity, a FROM {t} AS s CROSS JOIN UNNEST(s.agreements) AS a "
            "WHERE s.identity IN (SELECT identity FROM b)), "
            "n AS (SELECT DISTINCT b.identity FROM b LEFT JOIN k ON k.identity = b.identity AND k.a = b.submitted_at "
            "WHERE k.identity IS NULL) "
            f"SELECT n.identity, {', '.join('s.' + c for c in STUDENT_COLUMNS)} FROM n LEFT JOIN {t} AS s "
            "ON s.identity = n.identity ORDER BY n.identity"
        )
        touched = {str(r[0]) for r in rows}
        known = tuple(sorted((student_from_row(r[1:]) for r in rows if r[1] is not None), key=lambda s: s.student_id))
        return known, touched

    def _summary(self) -> tuple[int, int, dict[str, int]]:
        """(revision, highest student id, students per host) in one query."""
        _, rows = self._query(
            f"SELECT host, COUNT(*), IFNULL(SUM(ARRAY_LENGTH(agreements)), 0), MAX(student_id) "
            f"FROM {self._t['students']} GROUP BY host"
        )
        revision = sum(int(r[1]) + int(r[2]) for r in rows)
        max_id = max((int(r[3]) for r in rows), default=0)
        return revision, max_id, {str(r[0]): int(r[1]) for r in rows}

    def _students_named(self, identities: Sequence[str]) -> tuple[Student, ...]:
        _, rows = self._query(
            f"SELECT {', '.join(STUDENT_COLUMNS)} FROM {self._t['students']} "
            "WHERE identity IN UNNEST(@identities) ORDER BY student_id",
            [bq.array("identities", "STRING", identities)],
        )
        return tuple(student_from_row(r) for r in rows)

    def _rows_source(self, name: str, schema: bq.Schema, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any], str | None]:
        """(FROM clause, parameters, staging table to drop) for ``rows``."""
        cols = ", ".join(f"r.{c}" for c, _, _ in schema)
        if len(rows) <= self.inline_limit:
            return f"(SELECT {cols} FROM UNNEST(@{name}) AS r)", [bq.struct_array_param(name, schema, rows)], None
        stage = f"_cdsops_stage_{name}_{secrets.token_hex(6)}"
        bq.load_stage_table(self.client, self.project, self.dataset, stage, schema, rows)
        ref = bq.quote_table(self.project, self.dataset, stage)
        return f"(SELECT {cols} FROM {ref} AS r)", [], stage

    def _write_students(self, students: Sequence[Student], revision: int, now: datetime) -> bool:
        """The guarded MERGE. True when every row landed, False when the roster moved."""
        stamp = as_utc(now)
        rows = [
            (
                s.student_id, s.identity, s.username, s.host, [as_utc(t) for t in s.agreements],
                as_utc(s.first_registered_at), as_utc(s.last_registered_at), as_utc(s.expires_at), s.admission,
                as_utc(s.admitted_at), stamp,
            )
            for s in students
        ]
        t = self._t["students"]
        stage = None
        try:
            # the copies of the roster (roster_cache) stop matching before the students change
            self._merge_meta({GENERATION_KEY: PENDING + secrets.token_hex(8)})
            source, params, stage = self._rows_source("students", STUDENT_SCHEMA, rows)
            params.append(bq.scalar("revision", "INT64", revision))
            sets = ", ".join(f"{c} = s.{c}" for c, _, _ in STUDENT_SCHEMA if c not in ("student_id", "identity", "username", "host"))
            cols = ", ".join(c for c, _, _ in STUDENT_SCHEMA)
            vals = ", ".join(f"s.{c}" for c, _, _ in STUDENT_SCHEMA)
            sql = (
                f"MERGE {t} AS t USING (SELECT * FROM {source} "
                f"WHERE (SELECT COUNT(*) + IFNULL(SUM(ARRAY_LENGTH(x.agreements)), 0) FROM {t} AS x) = @revision) AS s "
                "ON t.student_id = s.student_id "
                f"WHEN MATCHED AND t.identity = s.identity THEN UPDATE SET {sets} "
                f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})"
            )
            try:
                job, _ = self._query(sql, params, retry_job=False)
            except bq.api_errors() as exc:
                raise StoreError(
                    f"cannot write roster store {self.uri}: {bq.describe_error(exc)}; the students may or may not "
                    "have been written; re-running the sync is safe"
                ) from None
        except bq.api_errors() as exc:  # staging failed: nothing written to the roster
            raise self._fail("write", exc) from None
        finally:
            if stage:
                bq.drop_table(self.client, self.project, self.dataset, stage)
        affected = int(job.num_dml_affected_rows or 0)
        if affected == len(rows):
            return True
        if affected == 0:
            return False
        raise StoreError(
            f"roster store {self.uri} wrote {affected} of {len(rows)} student rows: the students table holds rows "
            "cdsops did not write (an id with another identity); inspect it before syncing again"
        )

    def _write_after(self, out: SyncOutcome, run_id: str, now: datetime, meta: Mapping[str, str]) -> None:
        touched = {s.identity for s in out.added} | {s.identity for s in out.changed_agreements}
        profiles = [p for p in out.profiles if p.identity in touched]
        records = [ChangeRecord(run_id, now, c.kind, c.student_id, c.username, c.before, c.after) for c in out.changes]
        values = dict(meta)
        values["last_synced_at"] = format_iso(now)
        if touched:  # students were written: a new final generation (roster_cache)
            values[GENERATION_KEY] = secrets.token_hex(8)
        try:
            if profiles:
                self._merge_profiles(profiles)
            self._insert_changes(records)
            self._merge_meta(values)
        except bq.api_errors() as exc:
            raise StoreError(
                f"roster store {self.uri}: the students were written but the profiles, change records or meta "
                f"were not ({bq.describe_error(exc)}); run the sync again to refresh the watermark"
            ) from None

    def _merge_profiles(self, profiles: Sequence[Profile]) -> None:
        rows = [(p.identity, p.email, p.full_name, p.city, p.country, as_utc(p.updated_at)) for p in profiles]
        stage = None
        try:
            source, params, stage = self._rows_source("profiles", PROFILE_SCHEMA, rows)
            sets = ", ".join(f"{c} = s.{c}" for c, _, _ in PROFILE_SCHEMA if c != "identity")
            cols = ", ".join(c for c, _, _ in PROFILE_SCHEMA)
            vals = ", ".join(f"s.{c}" for c, _, _ in PROFILE_SCHEMA)
            self._query(
                f"MERGE {self._t['profiles']} AS t USING {source} AS s ON t.identity = s.identity "
                f"WHEN MATCHED AND s.updated_at >= t.updated_at THEN UPDATE SET {sets} "
                f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})",
                params,
            )
        finally:
            if stage:
                bq.drop_table(self.client, self.project, self.dataset, stage)

    def _insert_changes(self, records: Sequence[ChangeRecord]) -> None:
        if not records:
            return
        rows = [
            (
                r.run_id, as_utc(r.at), r.kind, r.student_id, r.username,
                json.dumps(r.before, sort_keys=True) if r.before is not None else None,
                json.dumps(r.after, sort_keys=True) if r.after is not None else None,
            )
            for r in records
        ]
        stage = None
        try:
            source, params, stage = self._rows_source("changes", CHANGE_SCHEMA, rows)
            cols = ", ".join(c for c, _, _ in CHANGE_SCHEMA)
            self._query(f"INSERT INTO {self._t['changes']} ({cols}) SELECT * FROM {source}", params)
        finally:
            if stage:
                bq.drop_table(self.client, self.project, self.dataset, stage)

    def _merge_meta(self, values: Mapping[str, str]) -> None:
        if not values:
            return
        rows = [(str(k), str(v)) for k, v in sorted(values.items())]
        source, params, _ = self._rows_source("meta", META_SCHEMA, rows)
        self._query(
            f"MERGE {self._t['meta']} AS t USING {source} AS s ON t.key = s.meta_key "
            "WHEN MATCHED THEN UPDATE SET value = s.meta_value "
            "WHEN NOT MATCHED THEN INSERT (key, value) VALUES (s.meta_key, s.meta_value)",
            params,
        )

    def set_meta(self, values: Mapping[str, str]) -> None:
        self._ensure()
        try:
            self._merge_meta(values)
        except bq.api_errors() as exc:
            raise self._fail("write", exc) from None

    def record_changes(self, records: Iterable[ChangeRecord]) -> None:
        records = list(records)
        if not records:
            return
        self._ensure()
        try:
            self._insert_changes(records)
        except bq.api_errors() as exc:
            raise self._fail("write", exc) from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 (closing is best effort)
                pass


def _touched(registrations: Sequence[Registration], index: Mapping[str, Student]) -> set[str]:
    """Identities of the batch that are new or bring an agreement time the roster lacks."""
    seen: dict[str, bool] = {}
    for r in registrations:
        if seen.get(r.identity):
            continue
        known = index.get(r.identity)
        seen[r.identity] = known is None or r.submitted_at not in known.agreements
    return {i for i, t in seen.items() if t}
