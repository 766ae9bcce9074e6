"""The events table in BigQuery (production), and the BigQuery Data Access audit logs.

:class:`BigQueryEvents` keeps ``events`` and ``events_meta`` in the roster's dataset. New rows
are loaded with one load job into a staging table (free, no row-at-a-time streaming), then
one ``INSERT ... SELECT ... WHERE NOT EXISTS`` adds the keys not yet present, so a re-run
adds nothing.

:func:`read_audit_log` reads the rows a Cloud Logging sink exports to an audit dataset
(the BigQuery export schema: ``insertId``, ``timestamp``,
``protopayload_auditlog.authenticationInfo.principalEmail``,
``protopayload_auditlog.methodName``, ``protopayload_auditlog.resourceName``, ``resource``)
and turns reads by students into ``data.read`` events keyed by ``insertId``: the principal's
email is canonicalized and matched to the roster's identity, then dropped; it never reaches
the events table. Principals that are not students (service accounts, staff) are skipped.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import bq
from ..identity import InvalidEmail, canonicalize
from ..store import StoreError
from .model import ACTIVITY_KINDS, Event

__all__ = ["BigQueryEvents", "read_audit_log", "AUDIT_TABLE", "EVENT_SCHEMA"]

#: the table a log sink with --use-partitioned-tables writes Data Access entries to
AUDIT_TABLE = "cloudaudit_googleapis_com_data_access"
EVENT_SCHEMA: bq.Schema = (
    ("event_key", "STRING", "NULLABLE"),
    ("occurred_at", "TIMESTAMP", "NULLABLE"),
    ("host", "STRING", "NULLABLE"),
    ("kind", "STRING", "NULLABLE"),
    ("student_id", "INT64", "NULLABLE"),
    ("username", "STRING", "NULLABLE"),
    ("detail", "STRING", "NULLABLE"),
    ("ingested_at", "TIMESTAMP", "NULLABLE"),
)
_COLS = ", ".join(c for c, _, _ in EVENT_SCHEMA)
_DDL = {
    "events": "CREATE TABLE IF NOT EXISTS {t} (event_key STRING NOT NULL, occurred_at TIMESTAMP NOT NULL, host STRING NOT NULL, "
    "kind STRING NOT NULL, student_id INT64, username STRING, detail STRING NOT NULL, ingested_at TIMESTAMP NOT NULL)",
    "events_meta": "CREATE TABLE IF NOT EXISTS {t} (key STRING NOT NULL, value STRING NOT NULL)",
}


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class BigQueryEvents:
    def __init__(self, project: str, dataset: str, *, client: Any = None) -> None:
        self.project, self.dataset = project, dataset
        self.uri = f"bigquery://{project}/{dataset}"
        try:
            self._t = {n: bq.quote_table(project, dataset, n) for n in _DDL}
        except bq.BigQueryUnavailable as exc:
            raise StoreError(f"invalid BigQuery events store {self.uri}: {exc}") from None
        self._client = client
        self._ready = False

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = bq.make_client(self.project)
            except bq.BigQueryUnavailable as exc:
                raise StoreError(f"cannot open events store {self.uri}: {exc}") from None
        return self._client

    def _q(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, list[tuple]]:
        self._ensure()
        try:
            job, rows = bq.run_query(self.client, sql, params)
            return job, [tuple(r.values()) for r in rows]
        except bq.api_errors() as exc:
            raise StoreError(f"events store {self.uri}: {bq.describe_error(exc)}") from None

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            from google.cloud import bigquery

            self.client.create_dataset(bigquery.Dataset(f"{self.project}.{self.dataset}"), exists_ok=True,
                                       retry=bq.api_retry(), timeout=bq.timeout_seconds())
            for name, ddl in _DDL.items():
                bq.run_query(self.client, ddl.format(t=self._t[name]))
        except bq.api_errors() as exc:
            raise StoreError(f"cannot prepare events store {self.uri}: {bq.describe_error(exc)}") from None
        self._ready = True

    def add(self, events: Iterable[Event], *, now: datetime) -> tuple[int, int]:
        unique: dict[str, tuple] = {}
        n = 0
        for e in events:
            n += 1
            unique.setdefault(e.key, (e.key, _utc(e.at), e.host, e.kind, e.student_id, e.username, e.detail_json(), _utc(now)))
        if not unique:
            return 0, 0
        self._ensure()
        stage = f"_cdsops_stage_events_{secrets.token_hex(6)}"
        try:
            bq.load_stage_table(self.client, self.project, self.dataset, stage, EVENT_SCHEMA, list(unique.values()))
            ref = bq.quote_table(self.project, self.dataset, stage)
            job, _ = self._q(f"INSERT INTO {self._t['events']} ({_COLS}) SELECT {_COLS} FROM {ref} AS s "
                             f"WHERE NOT EXISTS (SELECT 1 FROM {self._t['events']} AS e WHERE e.event_key = s.event_key)")
        except (bq.BigQueryUnavailable, *bq.api_errors()) as exc:
            raise StoreError(f"cannot write events store {self.uri}: {bq.describe_error(exc)}; nothing was changed") from None
        finally:
            bq.drop_table(self.client, self.project, self.dataset, stage)
        added = int(job.num_dml_affected_rows or 0)
        return added, n - added

    def purge(self, before: datetime) -> int:
        job, _ = self._q(f"DELETE FROM {self._t['events']} WHERE occurred_at < @before", [bq.scalar("before", "TIMESTAMP", _utc(before))])
        return int(job.num_dml_affected_rows or 0)

    def get_meta(self, key: str) -> str | None:
        _, rows = self._q(f"SELECT value FROM {self._t['events_meta']} WHERE key = @k", [bq.scalar("k", "STRING", key)])
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._q(f"MERGE {self._t['events_meta']} AS t USING (SELECT @k AS key, @v AS value) AS s ON t.key = s.key "
                "WHEN MATCHED THEN UPDATE SET value = s.value WHEN NOT MATCHED THEN INSERT (key, value) VALUES (s.key, s.value)",
                [bq.scalar("k", "STRING", key), bq.scalar("v", "STRING", value)])

    def recent(self, student_id: int, kinds: Sequence[str], limit: int) -> list[Event]:
        _, rows = self._q(
            f"SELECT event_key, occurred_at, host, kind, student_id, username, detail FROM {self._t['events']} "
            "WHERE student_id = @sid AND kind IN UNNEST(@kinds) ORDER BY occurred_at DESC, event_key DESC LIMIT @lim",
            [bq.scalar("sid", "INT64", student_id), bq.array("kinds", "STRING", list(kinds)), bq.scalar("lim", "INT64", limit)],
        )
        return [Event(r[0], _utc(r[1]), r[2], r[3], r[5], r[4], json.loads(r[6] or "{}")) for r in rows]

    def _period(self, start: datetime | None, end: datetime | None) -> tuple[str, list[Any]]:
        where, params = "", []
        if start is not None:
            where += " AND occurred_at >= @start"
            params.append(bq.scalar("start", "TIMESTAMP", _utc(start)))
        if end is not None:
            where += " AND occurred_at < @end"
            params.append(bq.scalar("end", "TIMESTAMP", _utc(end)))
        return where, params

    def per_student_counts(self, start: datetime | None, end: datetime | None) -> list[tuple[int, str, int]]:
        where, params = self._period(start, end)
        _, rows = self._q(f"SELECT student_id, kind, COUNT(*) FROM {self._t['events']} WHERE student_id IS NOT NULL{where} "
                          "GROUP BY student_id, kind ORDER BY student_id, kind", params)
        return [(int(a), str(b), int(c)) for a, b, c in rows]

    def hour_buckets(self, start: datetime | None, end: datetime | None) -> list[tuple[int, int, int]]:
        where, params = self._period(start, end)
        params.append(bq.array("kinds", "STRING", list(ACTIVITY_KINDS)))
        _, rows = self._q(
            f"SELECT student_id, DIV(UNIX_SECONDS(occurred_at), 3600) * 3600 AS h, COUNT(*) FROM {self._t['events']} "
            f"WHERE student_id IS NOT NULL AND kind IN UNNEST(@kinds){where} GROUP BY student_id, h ORDER BY student_id, h", params)
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    def stats(self) -> dict[str, Any]:
        _, rows = self._q(f"SELECT COUNT(*), MAX(occurred_at) FROM {self._t['events']}")
        n, newest = rows[0]
        return {"events": int(n), "newest": _utc(newest) if newest else None}


def _audit_sql(table: str) -> str:
    return (
        "SELECT insertId, timestamp, protopayload_auditlog.authenticationInfo.principalEmail, "
        "protopayload_auditlog.methodName, protopayload_auditlog.resourceName "
        f"FROM {table} WHERE timestamp > @since ORDER BY timestamp"
    )


def read_audit_log(
    uri: str, identities: Mapping[str, tuple[int, str]], since: datetime | None, counts: Any
) -> Iterator[Event]:
    """``data.read`` events from ``bigquery-audit://PROJECT/DATASET[/TABLE]`` newer than ``since``
    (identity -> (student id, username) resolves principals); ``counts`` gets lines/skipped."""
    parts = uri[len("bigquery-audit://"):].strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise StoreError(f"an audit log source is bigquery-audit://PROJECT/DATASET[/TABLE], got {uri!r}")
    table = bq.quote_table(parts[0], parts[1], parts[2] if len(parts) == 3 else AUDIT_TABLE)
    start = since or datetime(1970, 1, 1, tzinfo=UTC)
    try:
        client = bq.make_client(parts[0])
        _, rows = bq.run_query(client, _audit_sql(table), [bq.scalar("since", "TIMESTAMP", start)])
        for insert_id, ts, email, method, resource in (tuple(r.values()) for r in rows):
            counts.lines += 1
            yield from _audit_event(insert_id, ts, email, method, resource, identities, counts)
    except bq.api_errors() as exc:
        raise StoreError(f"cannot read the audit log {uri}: {bq.describe_error(exc)}") from None
    except bq.BigQueryUnavailable as exc:
        raise StoreError(f"cannot read the audit log {uri}: {exc}") from None


def _audit_event(insert_id: Any, ts: Any, email: Any, method: Any, resource: Any,
                 identities: Mapping[str, tuple[int, str]], counts: Any) -> Iterator[Event]:
    if not insert_id or ts is None:
        counts.malformed += 1
        return
    try:
        who = identities.get(canonicalize(email)) if email else None
    except InvalidEmail:
        who = None
    if who is None:
        counts.skipped += 1  # not a student: a service account, staff, or someone not in the roster
        return
    at = _utc(ts)
    counts.last_time = at
    detail = {"service": "bigquery", "method": str(method or ""), "resource": str(resource or "")[:1000]}
    yield Event(f"gcl:{insert_id}", at, "bigquery", "data.read", who[1], who[0], detail)


def overlap(since: datetime | None) -> datetime | None:
    """Log entries can land late: re-read a margin before the watermark (insertId dedupes)."""
    return since - timedelta(minutes=10) if since else None
