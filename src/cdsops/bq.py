"""BigQuery edge of cdsops: the client and small query and staging helpers.

The registration source (``sources``) and the roster store (``store.bigquery_store``) use
this module; it uses neither.

Only the official ``google-cloud-bigquery`` client is used.

Credentials and endpoint:
- production: Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` pointing
  at a service-account key file, the metadata server of a VM, or ``gcloud auth
  application-default login``);
- emulator: when ``CDSOPS_BIGQUERY_ENDPOINT=http://127.0.0.1:PORT`` is set, the client
  talks to that endpoint with anonymous credentials (``bqemulator`` in the tests).

Other settings (environment):
- ``CDSOPS_BIGQUERY_TIMEOUT`` (seconds, default 120): how long API calls are retried and
  how long a query may run before the read or write is given up with a clear error;
- ``CDSOPS_BIGQUERY_LOCATION``: the location of the datasets (e.g. ``EU``), if not the default;
- ``CDSOPS_BIGQUERY_MAX_BYTES_BILLED`` (bytes, default 1 GB): every query job carries it as
  ``maximum_bytes_billed``; a query that would bill more fails without being billed.

Every query is parameterized; identifiers are checked with :data:`PROJECT_RE` /
:data:`IDENT_RE` (``sources.parse_source``, ``store.open_store``, :func:`quote_table`) and are quoted with backticks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ENDPOINT_ENV",
    "IDENT_RE",
    "PROJECT_RE",
    "BigQueryUnavailable",
    "make_client",
    "quote_table",
    "run_query",
]

ENDPOINT_ENV = "CDSOPS_BIGQUERY_ENDPOINT"
TIMEOUT_ENV = "CDSOPS_BIGQUERY_TIMEOUT"
DEFAULT_TIMEOUT = 120.0
PAGE_SIZE = 10_000
MAX_BYTES_ENV = "CDSOPS_BIGQUERY_MAX_BYTES_BILLED"
#: 1 GB: a whole-table read of 100,000 registrations or students bills about 20-30 MB
DEFAULT_MAX_BYTES_BILLED = 1_000_000_000

#: BigQuery project ids (real ones: 6-30 characters; emulators accept more), the one rule
PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9.:_-]{0,99}\Z")
#: dataset and table names (BigQuery allows up to 1,024 letters, digits and underscores)
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}\Z")


class BigQueryUnavailable(RuntimeError):
    """BigQuery (or the emulator) could not be reached or refused the request."""


# -- client ---------------------------------------------------------------------------
def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise BigQueryUnavailable(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise BigQueryUnavailable(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def endpoint() -> str | None:
    raw = os.environ.get(ENDPOINT_ENV, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise BigQueryUnavailable(f"{ENDPOINT_ENV} must look like http://127.0.0.1:9050, got {raw!r}")
    return raw.rstrip("/")


def max_bytes_billed() -> int:
    """The cap every query job carries (``maximum_bytes_billed``): BigQuery fails a query that
    would bill more, before it runs, instead of billing it."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES_BILLED
    try:
        value = int(raw)
    except ValueError:
        raise BigQueryUnavailable(f"{MAX_BYTES_ENV} must be a whole number of bytes, got {raw!r}") from None
    if value <= 0:
        raise BigQueryUnavailable(f"{MAX_BYTES_ENV} must be positive, got {raw!r}")
    return value


BIGQUERY_SCOPE = "https://www.googleapis.com/auth/bigquery"
#: querying a table backed by a Google Sheet reads the sheet through Drive
#: (https://cloud.google.com/bigquery/docs/external-data-drive#python)
DRIVE_READONLY_SCOPE = "https://www.googleapis.com/auth/drive.readonly"


def needs_drive_scope(table: Any) -> bool:
    """True for an external table whose data is a Google Sheet (``sourceFormat GOOGLE_SHEETS``)."""
    config = getattr(table, "external_data_configuration", None)
    return getattr(table, "table_type", "") == "EXTERNAL" and getattr(config, "source_format", "") == "GOOGLE_SHEETS"


def make_client(project: str, *, drive: bool = False) -> Any:
    """A ``google.cloud.bigquery.Client`` for ``project`` (jobs run and are billed there).

    Credentials: Application Default Credentials, i.e. the key file named by
    ``GOOGLE_APPLICATION_CREDENTIALS`` (the one credentials source of every cdsops client);
    ``drive=True`` adds the Drive read-only scope a Google-Sheet-backed table needs."""
    if not PROJECT_RE.match(project or ""):
        raise BigQueryUnavailable(f"invalid BigQuery project id {project!r}")
    timeout_seconds(), max_bytes_billed()  # a bad setting is a clear error here, before any job
    from google.cloud import bigquery

    location = os.environ.get("CDSOPS_BIGQUERY_LOCATION") or None
    api = endpoint()
    if api:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=api),
            location=location,
        )
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=[BIGQUERY_SCOPE] + ([DRIVE_READONLY_SCOPE] if drive else []))
    except DefaultCredentialsError as exc:
        raise BigQueryUnavailable(
            "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file "
            f"or run on a VM with a service account ({_one_line(exc)})"
        ) from None
    return bigquery.Client(project=project, credentials=credentials, location=location)


def quote_table(project: str, dataset: str, table: str) -> str:
    for what, name in (("dataset", dataset), ("table", table)):
        if not IDENT_RE.match(name or ""):
            raise BigQueryUnavailable(f"invalid BigQuery {what} name {name!r}")
    if not PROJECT_RE.match(project or ""):
        raise BigQueryUnavailable(f"invalid BigQuery project id {project!r}")
    return f"`{project}.{dataset}.{table}`"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def describe_error(exc: BaseException) -> str:
    """A one-line, human reason for a failed BigQuery call."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.RetryError):
        cause = exc.cause or exc
        return f"no answer within {timeout_seconds():g} s ({_one_line(cause)})"
    if isinstance(exc, gexc.Forbidden):
        return f"permission denied ({_one_line(exc)})"
    if isinstance(exc, gexc.GoogleAPICallError):
        return _one_line(exc)
    return _one_line(exc)


def is_not_found(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.NotFound)


def api_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the call failed" (as opposed to a bug in cdsops)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc

    return (gexc.GoogleAPIError, aexc.GoogleAuthError, requests.exceptions.RequestException, OSError)


def api_retry() -> Any:
    from google.cloud.bigquery import DEFAULT_RETRY

    return DEFAULT_RETRY.with_deadline(timeout_seconds())


def scalar(name: str, typ: str, value: Any) -> Any:
    from google.cloud import bigquery

    return bigquery.ScalarQueryParameter(name, typ, value)


def array(name: str, typ: str, values: Sequence[Any]) -> Any:
    from google.cloud import bigquery

    return bigquery.ArrayQueryParameter(name, typ, list(values))


def run_query(
    client: Any,
    sql: str,
    params: Sequence[Any] = (),
    *,
    retry_job: bool = True,
    page_size: int | None = PAGE_SIZE,
) -> tuple[Any, Any]:
    """Run one parameterized statement; returns (job, row iterator).

    ``retry_job=False`` for statements that must not be re-run blindly after an
    ambiguous failure (the guarded roster MERGE): the caller decides.
    """
    from google.cloud import bigquery
    from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

    cfg = bigquery.QueryJobConfig(query_parameters=list(params), maximum_bytes_billed=max_bytes_billed())
    deadline = timeout_seconds()
    job_retry = DEFAULT_JOB_RETRY.with_deadline(deadline) if retry_job else None
    job = client.query(sql, job_config=cfg, retry=api_retry(), job_retry=job_retry, timeout=deadline)
    rows = job.result(retry=api_retry(), timeout=deadline, page_size=page_size)
    return job, rows


# -- writing rows: inline parameters for small batches, a staged table for large ones --
Schema = Sequence[tuple[str, str, str]]  # (name, BigQuery type, mode: NULLABLE | REPEATED)


def struct_array_param(name: str, schema: Schema, rows: Iterable[Sequence[Any]]) -> Any:
    """An ``ARRAY<STRUCT<...>>`` query parameter holding ``rows`` (tuples in schema order)."""
    from google.cloud import bigquery

    structs = []
    for row in rows:
        members = []
        for (col, typ, mode), value in zip(schema, row, strict=True):
            if mode == "REPEATED":
                members.append(bigquery.ArrayQueryParameter(col, typ, list(value)))
            else:
                members.append(bigquery.ScalarQueryParameter(col, typ, value))
        structs.append(bigquery.StructQueryParameter(None, *members))
    return bigquery.ArrayQueryParameter(name, "STRUCT", structs)


def arrow_table(schema: Schema, rows: Sequence[Sequence[Any]]) -> Any:
    import pyarrow as pa

    types = {
        "INT64": pa.int64(),
        "STRING": pa.string(),
        "TIMESTAMP": pa.timestamp("us", tz="UTC"),
        "BOOL": pa.bool_(),
    }
    arrays = {}
    for i, (col, typ, mode) in enumerate(schema):
        t = types[typ]
        values = [r[i] for r in rows]
        arrays[col] = pa.array(values, pa.list_(t) if mode == "REPEATED" else t)
    return pa.table(arrays)


def load_stage_table(client: Any, project: str, dataset: str, table: str, schema: Schema, rows: Sequence[Sequence[Any]]) -> None:
    """Create ``table`` (expiring in a day, in case it is never dropped) and load ``rows``
    into it with one Parquet load job (free of charge, no size limit on parameters)."""
    import io
    from datetime import timedelta

    import pyarrow.parquet as pq
    from google.cloud import bigquery

    bq_schema = [bigquery.SchemaField(c, t, mode=m) for c, t, m in schema]
    tbl = bigquery.Table(f"{project}.{dataset}.{table}", schema=bq_schema)
    tbl.expires = datetime.now(UTC) + timedelta(days=1)
    client.create_table(tbl, retry=api_retry(), timeout=timeout_seconds())
    buf = io.BytesIO()
    pq.write_table(arrow_table(schema, rows), buf)
    buf.seek(0)
    cfg = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, write_disposition="WRITE_APPEND", schema=bq_schema)
    opts = bigquery.ParquetOptions()
    opts.enable_list_inference = True
    cfg.parquet_options = opts
    job = client.load_table_from_file(buf, f"{project}.{dataset}.{table}", job_config=cfg, timeout=timeout_seconds())
    job.result(retry=api_retry(), timeout=timeout_seconds())
    if job.output_rows is not None and int(job.output_rows) != len(rows):
        raise BigQueryUnavailable(f"staging load into {table} wrote {job.output_rows} rows, expected {len(rows)}")


def drop_table(client: Any, project: str, dataset: str, table: str) -> None:
    try:
        client.delete_table(f"{project}.{dataset}.{table}", not_found_ok=True, retry=api_retry(), timeout=timeout_seconds())
    except api_errors():
        pass  # it expires by itself within a day


# -- cost model -----------------------------------------------------------------------
#: bytes per value of a type (https://cloud.google.com/bigquery/pricing, "Data size calculation"):
#: STRING is 2 bytes + its UTF-8 length; the fixed-size types below
TYPE_BYTES = {"TIMESTAMP": 8, "DATETIME": 8, "DATE": 8, "INT64": 8, "INTEGER": 8, "FLOAT64": 8, "FLOAT": 8, "BOOL": 1, "BOOLEAN": 1}
#: on-demand queries bill at least 10 MB per table referenced (https://cloud.google.com/bigquery/pricing)
MIN_BILLED_BYTES = 10 * 1024 * 1024


def estimate_scan_bytes(client: Any, project: str, dataset: str, table: str, columns: Sequence[tuple[str, str]],
                        since: datetime | None) -> int:
    """Bytes an on-demand query of ``columns`` with ``WHERE submitted_at >= @since`` scans when the
    table is partitioned by ``DATE(submitted_at)``: the documented data sizes of those columns
    over the partitions pruning keeps (every row when ``since`` is None). A model, computed with
    SQL on the table itself, for emulators that report no bytes processed (bqemulator: 0)."""
    parts = []
    for name, typ in columns:
        if not IDENT_RE.match(name):
            raise BigQueryUnavailable(f"invalid column name {name!r}")
        if typ.upper() == "STRING":
            parts.append(f"IFNULL(2 + LENGTH(CAST(`{name}` AS BYTES)), 0)")
        else:
            parts.append(f"IF(`{name}` IS NULL, 0, {TYPE_BYTES[typ.upper()]})")
    sql = f"SELECT IFNULL(SUM({' + '.join(parts)}), 0) FROM {quote_table(project, dataset, table)}"
    params = []
    if since is not None:
        sql += " WHERE DATE(submitted_at) >= DATE(@since)"
        params.append(scalar("since", "TIMESTAMP", since.astimezone(UTC)))
    _job, rows = run_query(client, sql, params)
    return int(next(iter(rows)).values()[0])


def billed_bytes(scanned: int) -> int:
    """On-demand bytes billed for one query that scans ``scanned`` bytes (the 10 MB minimum)."""
    return max(MIN_BILLED_BYTES, scanned)
