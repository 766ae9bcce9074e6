"""Cost bounds of the BigQuery path (issue 14 section 4), against bqemulator.

bqemulator reports ``totalBytesProcessed = 0`` (and a dry run does too) and ignores
``maximumBytesBilled``, so the byte figures here come from :func:`cdsops.bq.estimate_scan_bytes`:
BigQuery's documented data sizes of the columns the watermark query reads, over the partitions
that a table partitioned by ``DATE(submitted_at)`` keeps after pruning.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cdsops import bq
from cdsops.config import Config
from cdsops.service import roster_sync
from cdsops.testing import bigquery_client, emulator_fixture, new_dataset

pytestmark = pytest.mark.integration
PROJECT = "test-project"
bq_emulator = emulator_fixture(project=PROJECT)
SCHEMA: bq.Schema = (
    ("submitted_at", "TIMESTAMP", "NULLABLE"), ("email", "STRING", "NULLABLE"), ("full_name", "STRING", "NULLABLE"),
    ("city", "STRING", "NULLABLE"), ("country", "STRING", "NULLABLE"), ("agreed_dua", "BOOL", "NULLABLE"),
    ("agreed_terms", "STRING", "NULLABLE"),
)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def source_table(client: Any, endpoint: str, old: int, new: int) -> str:
    """``old`` rows spread over the past year, ``new`` rows in the last 30 minutes."""
    ds = new_dataset(endpoint, PROJECT, "cost")
    rows = [(NOW - timedelta(days=30 + i % 330), f"s{i}@example.org", "Invented Person", "Testville", "Nowhere", True, "yes")
            for i in range(old)]
    rows += [(NOW - timedelta(minutes=30 - i), f"n{i}@example.org", "Invented Person", "Testville", "Nowhere", True, "yes")
             for i in range(new)]
    bq.load_stage_table(client, PROJECT, ds, "reg", SCHEMA, rows)
    return ds


def test_watermark_read_scans_the_same_bytes_whatever_the_table_size(bq_emulator, monkeypatch) -> None:
    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", bq_emulator.endpoint)
    client = bigquery_client(bq_emulator.endpoint, PROJECT)
    cols = [(c, t) for c, t, _ in SCHEMA]
    since = NOW - timedelta(hours=1)  # the watermark minus the overlap
    small, large = source_table(client, bq_emulator.endpoint, 200, 5), source_table(client, bq_emulator.endpoint, 4000, 5)
    scanned = [bq.estimate_scan_bytes(client, PROJECT, ds, "reg", cols, since) for ds in (small, large)]
    full = [bq.estimate_scan_bytes(client, PROJECT, ds, "reg", cols, None) for ds in (small, large)]
    assert scanned[0] == scanned[1] > 0  # pruned to today's partition: independent of the history
    assert full[1] > 15 * full[0] // 2  # without pruning it grows with the table
    assert bq.billed_bytes(scanned[1]) == bq.MIN_BILLED_BYTES == 10 * 1024 * 1024  # the minimum dominates


def test_every_query_job_carries_maximum_bytes_billed(bq_emulator, monkeypatch, tmp_path) -> None:
    from google.cloud import bigquery

    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", bq_emulator.endpoint)
    client = bigquery_client(bq_emulator.endpoint, PROJECT)
    src = source_table(client, bq_emulator.endpoint, 20, 5)
    roster = new_dataset(bq_emulator.endpoint, PROJECT, "roster")
    seen: list[Any] = []
    real = bigquery.Client.query

    def recording(self, sql, job_config=None, **kw):
        seen.append((sql, job_config))
        return real(self, sql, job_config=job_config, **kw)

    monkeypatch.setattr(bigquery.Client, "query", recording)
    uri_src, uri_roster = f"bigquery://{PROJECT}/{src}/reg", f"bigquery://{PROJECT}/{roster}"
    roster_sync(uri_src, uri_roster, Config(), now=NOW)
    first = len(seen)
    assert first >= 5 and all(c is not None and c.maximum_bytes_billed == bq.DEFAULT_MAX_BYTES_BILLED for _, c in seen)
    monkeypatch.setenv("CDSOPS_BIGQUERY_MAX_BYTES_BILLED", "123456789")
    seen.clear()
    roster_sync(uri_src, uri_roster, Config(), now=NOW)  # a no-change run by the watermark
    assert seen and all(c.maximum_bytes_billed == 123456789 for _, c in seen)
    print(f"query jobs: first sync {first}, no-change sync {len(seen)}")
    sqls = [sql for sql, _ in seen]
    assert len(sqls) == 4, sqls  # meta, source (watermark), named students, meta write: no roster summary
    assert "WHERE `submitted_at` >= @since" in sqls[1]
    students = [q for q in sqls if ".students`" in q]
    assert students and all("WHERE identity IN UNNEST(@identities)" in q for q in students)  # no whole-table read
    monkeypatch.setenv("CDSOPS_BIGQUERY_MAX_BYTES_BILLED", "lots")
    with pytest.raises(bq.BigQueryUnavailable, match="whole number of bytes"):
        bq.max_bytes_billed()
    from cdsops.store.base import StoreError

    with pytest.raises(StoreError, match="CDSOPS_BIGQUERY_MAX_BYTES_BILLED must be a whole number"):
        roster_sync(uri_src, uri_roster, Config(), now=NOW)  # one clear line, nothing run


def test_a_google_sheet_backed_table_needs_the_drive_scope() -> None:
    from google.cloud import bigquery

    sheet = bigquery.Table.from_api_repr({
        "tableReference": {"projectId": PROJECT, "datasetId": "forms", "tableId": "reg"}, "type": "EXTERNAL",
        "externalDataConfiguration": {"sourceFormat": "GOOGLE_SHEETS", "sourceUris": ["https://docs.google.com/spreadsheets/d/x"]},
    })
    native = bigquery.Table.from_api_repr({"tableReference": {"projectId": PROJECT, "datasetId": "forms", "tableId": "reg"}, "type": "TABLE"})
    csv = bigquery.Table.from_api_repr({
        "tableReference": {"projectId": PROJECT, "datasetId": "forms", "tableId": "reg"}, "type": "EXTERNAL",
        "externalDataConfiguration": {"sourceFormat": "CSV", "sourceUris": ["gs://b/x.csv"]},
    })
    assert [bq.needs_drive_scope(t) for t in (sheet, native, csv)] == [True, False, False]


def test_a_no_change_timer_run_reads_no_table_in_full(bq_emulator, monkeypatch, tmp_path) -> None:
    """The timer's run is a sync, the runner's plan (the guard) and the inventory's plan: when nothing
    changed, the plans take the students from the local copy (roster_cache) and no query reads
    ``students`` without the identity filter. A change, a writer that died after its MERGE
    (``pending-``) and a copy older than the maximum age all mean a full read again."""
    from google.cloud import bigquery

    from cdsops.service import compute_plan
    from cdsops.store import open_store
    from cdsops.store.roster_cache import GENERATION_KEY

    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", bq_emulator.endpoint)
    monkeypatch.setenv("CDSOPS_ROSTER_CACHE_DIR", str(tmp_path / "cache"))
    client = bigquery_client(bq_emulator.endpoint, PROJECT)
    src = source_table(client, bq_emulator.endpoint, 20, 5)
    uri_src, uri_roster = f"bigquery://{PROJECT}/{src}/reg", f"bigquery://{PROJECT}/{new_dataset(bq_emulator.endpoint, PROJECT, 'roster')}"
    seen: list[str] = []
    real = bigquery.Client.query

    def recording(self, sql, job_config=None, **kw):
        seen.append(sql)
        return real(self, sql, job_config=job_config, **kw)

    monkeypatch.setattr(bigquery.Client, "query", recording)

    def full_reads() -> int:
        return sum(1 for q in seen if ".students`" in q and "ORDER BY student_id" in q and "WHERE" not in q)

    roster_sync(uri_src, uri_roster, Config(), now=NOW)
    first = compute_plan(uri_roster, Config(), NOW, enforce_guard=False)
    assert full_reads() == 1 and len(first.accounts) == 25  # the first plan fills the copy
    seen.clear()
    roster_sync(uri_src, uri_roster, Config(), now=NOW)  # the timer's no-change run
    plans = [compute_plan(uri_roster, Config(), NOW, enforce_guard=False) for _ in range(2)]  # runner + inventory
    assert full_reads() == 0, seen
    assert all(p.to_dict() == first.to_dict() for p in plans)
    print(f"query jobs of a no-change sync and two plans: {len(seen)}")
    assert len(seen) == 6, seen  # sync 4, each plan only its meta read (no notifications table here)

    late = (NOW + timedelta(minutes=1), "late@example.org", "Invented Person", "Testville", "Nowhere", True, "yes")
    client.insert_rows(client.get_table(f"{PROJECT}.{src}.reg"), [dict(zip([c for c, _, _ in SCHEMA], late, strict=True))])
    seen.clear()
    roster_sync(uri_src, uri_roster, Config(), now=NOW + timedelta(minutes=2))
    changed = compute_plan(uri_roster, Config(), NOW + timedelta(minutes=2), enforce_guard=False)
    assert full_reads() == 1 and len(changed.accounts) == 26  # the change is seen, not the old copy

    open_store(uri_roster).set_meta({GENERATION_KEY: "pending-dead-writer"})  # a writer died after its MERGE
    seen.clear()
    for _ in range(2):
        compute_plan(uri_roster, Config(), NOW, enforce_guard=False)
    assert full_reads() == 2
    open_store(uri_roster).set_meta({GENERATION_KEY: "g2"})
    monkeypatch.setenv("CDSOPS_ROSTER_CACHE_MAX_AGE", "0")  # no copy at all
    seen.clear()
    for _ in range(2):
        compute_plan(uri_roster, Config(), NOW, enforce_guard=False)
    assert full_reads() == 2
