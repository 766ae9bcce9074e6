"""Registration sources: a CSV export, a DuckDB table, a BigQuery table.

``SRC`` forms (CLI contract):
- ``PATH`` (or ``csv:PATH``): the form's CSV export;
- ``duckdb:PATH#TABLE``;
- ``bigquery://PROJECT/DATASET/TABLE``.

A source read either succeeds with every row (valid or not: validation happens row by
row afterwards) or fails as a whole with :class:`SourceError`. A source that cannot be
read, or a whole-table read with no rows, must never lead to anyone losing access: the
caller stops (see the guards).
"""

from __future__ import annotations

import csv
import operator
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import bq
from .bq import IDENT_RE, PROJECT_RE
from .registrations import COLUMNS, REQUIRED_COLUMNS, normalize_header

__all__ = ["Source", "SourceError", "SourceRead", "check_columns", "parse_source", "read_bigquery_registrations", "read_source"]

# Types a registration column may have in BigQuery (anything scalar and orderable).
BQ_SCALAR_TYPES = frozenset({
    "STRING", "TIMESTAMP", "DATETIME", "DATE", "BOOL", "BOOLEAN", "INT64", "INTEGER",
    "FLOAT64", "FLOAT", "NUMERIC", "BIGNUMERIC",
})  # fmt: skip
BQ_INCREMENTAL_TYPES = frozenset({"TIMESTAMP", "DATETIME"})
WATERMARK_OVERLAP = timedelta(hours=1)


class SourceError(RuntimeError):
    """The source could not be read; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # csv | duckdb | bigquery
    uri: str
    path: str = ""
    table: str = ""
    project: str = ""
    dataset: str = ""


@dataclass(frozen=True)
class SourceRead:
    source: Source
    rows: Iterable[Any]  # mappings or value tuples in COLUMNS order; may be lazy
    complete: bool  # False for an incremental read after a watermark
    since: datetime | None = None


def parse_source(uri: str) -> Source:
    if not uri or not uri.strip():
        raise SourceError("no source given")
    if uri.startswith("bigquery://"):
        parts = uri[len("bigquery://") :].strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise SourceError(f"BigQuery source must be bigquery://PROJECT/DATASET/TABLE, got {uri!r}")
        project, dataset, table = parts
        if not PROJECT_RE.match(project):
            raise SourceError(f"invalid BigQuery project id {project!r}")
        for what, name in (("dataset", dataset), ("table", table)):
            if not IDENT_RE.match(name):
                raise SourceError(f"invalid BigQuery {what} name {name!r}")
        return Source("bigquery", uri, project=project, dataset=dataset, table=table)
    if uri.startswith("duckdb:"):
        rest = uri[len("duckdb:") :]
        if "#" not in rest:
            raise SourceError(f"DuckDB source must be duckdb:PATH#TABLE, got {uri!r}")
        path, table = rest.rsplit("#", 1)
        if not path:
            raise SourceError("DuckDB source has no file path")
        if not IDENT_RE.match(table):
            raise SourceError(f"invalid DuckDB table name {table!r}")
        return Source("duckdb", uri, path=path, table=table)
    path = uri.removeprefix("csv:")
    return Source("csv", uri, path=path)


def read_source(source: Source, *, since: datetime | None = None) -> SourceRead:
    if source.kind == "csv":
        return SourceRead(source, iter_csv(source.path), True)
    if source.kind == "duckdb":
        return SourceRead(source, read_duckdb(source.path, source.table), True)
    if source.kind == "bigquery":
        rows, complete, effective_since = read_bigquery_registrations(
            source.project, source.dataset, source.table, since=since - WATERMARK_OVERLAP if since else None
        )
        return SourceRead(source, rows, complete, effective_since)
    raise SourceError(f"unknown source kind {source.kind!r}")


def check_columns(columns: Iterable[str], where: str) -> None:
    """Raise :class:`SourceError` naming the required columns ``columns`` lacks."""
    columns = set(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise SourceError(f"{where} lacks required column(s): {', '.join(missing)} (expected {', '.join(COLUMNS)})")


def read_csv(path: str | os.PathLike[str]) -> list[tuple[Any, ...]]:
    """All data rows of a CSV export, as value tuples in COLUMNS order."""
    return list(iter_csv(path))


def iter_csv(path: str | os.PathLike[str]) -> Iterator[tuple[Any, ...]]:
    """Open and check the header now; yield data rows lazily (tuples in COLUMNS order).

    A BOM, stray whitespace and case in the header are tolerated; blank lines are not
    rows; a short row yields None for its missing fields (and is rejected by validation).
    """
    p = Path(path)
    fh, reader, cols = _open_csv(p)
    first = {}
    for i, c in enumerate(cols):
        first.setdefault(c, i)
    index = [first.get(c) for c in COLUMNS]
    width = max(i for i in index if i is not None) + 1
    if None in index:
        pick = lambda record: tuple(record[i] if i is not None else None for i in index)  # noqa: E731 (one expression, picked once)
    else:
        pick = operator.itemgetter(*index)

    def rows() -> Iterator[tuple[Any, ...]]:
        n = 0
        try:
            with fh:
                for record in reader:
                    if len(record) < width:
                        if not record or all(not f.strip() for f in record):
                            continue  # blank line: not a row
                        record = record + [None] * (width - len(record))  # type: ignore[list-item]
                    n += 1
                    yield pick(record)
        except UnicodeDecodeError as exc:
            raise SourceError(f"source file {p} is not UTF-8 near data row {n + 1} (byte {exc.start})") from None
        except csv.Error as exc:
            raise SourceError(f"source file {p} is not valid CSV near data row {n + 1}: {exc}") from None

    return rows()


def _open_csv(p: Path) -> tuple[Any, Any, list[str]]:
    """(open file, csv reader past the header, normalized column names); closed on any error."""
    try:
        fh = open(p, encoding="utf-8-sig", newline="")  # noqa: SIM115 (the lazy row iterator closes it)
    except FileNotFoundError:
        raise SourceError(f"source file {p} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read source file {p}: {exc.strerror or exc}") from None
    reader = csv.reader(fh)
    try:
        header = next(reader)
        cols = [normalize_header(h) for h in header]
        check_columns(cols, f"source file {p}")
    except StopIteration:
        fh.close()
        raise SourceError(f"source file {p} is empty (no header row)") from None
    except UnicodeDecodeError as exc:
        fh.close()
        raise SourceError(f"source file {p} is not UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:
        fh.close()
        raise SourceError(f"source file {p} is not valid CSV: {exc}") from None
    except SourceError:
        fh.close()
        raise
    return fh, reader, cols


def read_duckdb(path: str, table: str) -> list[tuple[Any, ...]]:
    import duckdb

    if not Path(path).exists():
        raise SourceError(f"DuckDB source {path} does not exist")
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise SourceError(f"cannot open DuckDB source {path}: {exc}") from None
    try:
        try:
            described = con.execute(f'DESCRIBE "{table}"').fetchall()
        except duckdb.Error:
            raise SourceError(f"DuckDB source {path} has no table {table!r}") from None
        types = {normalize_header(r[0]): (r[0], r[1].upper()) for r in described}
        check_columns(list(types), f"DuckDB table {table}")
        select = []
        wanted = [c for c in COLUMNS if c in types]
        for c in wanted:
            name, typ = types[c]
            col = '"' + name.replace('"', '""') + '"'
            if "WITH TIME ZONE" in typ or typ == "TIMESTAMPTZ":
                col = f"CAST(timezone('UTC', {col}) AS TIMESTAMP)"
            select.append(col)
        order = "rowid" if _has_rowid(con, table) else "1"
        result = con.execute(f'SELECT {", ".join(select)} FROM "{table}" ORDER BY {order}').fetchall()
    except duckdb.Error as exc:
        raise SourceError(f"cannot read DuckDB table {table} in {path}: {exc}") from None
    finally:
        con.close()
    pos = {c: i for i, c in enumerate(wanted)}
    idx = [pos.get(c) for c in COLUMNS]
    return [tuple(r[i] if i is not None else None for i in idx) for r in result]


def _has_rowid(con: Any, table: str) -> bool:
    import duckdb

    try:
        con.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
        return True
    except duckdb.Error:
        return False




# -- BigQuery --------------------------------------------------------------------------
def read_bigquery_registrations(
    project: str,
    dataset: str,
    table: str,
    *,
    since: datetime | None = None,
    client: Any = None,
) -> tuple[list[dict[str, Any]], bool, datetime | None]:
    """Read registration rows from ``project.dataset.table``.

    Returns ``(rows, complete, effective_since)``. ``rows`` are dicts keyed by the names
    of :data:`cdsops.registrations.COLUMNS` (columns the table lacks are left out, like
    a CSV export without them), ordered by ``submitted_at`` and then the other columns
    so row numbers in rejections are stable. When ``since`` is given and
    ``submitted_at`` is a TIMESTAMP (or DATETIME, taken as UTC) column, only rows with
    ``submitted_at >= since`` are read and ``complete`` is False (an empty incremental
    read is not an empty source); a STRING ``submitted_at`` means a full read.
    """
    where = f"BigQuery table {project}.{dataset}.{table}"
    try:
        ref = bq.quote_table(project, dataset, table)
        own_client = client is None
        if client is None:
            client = bq.make_client(project)
    except bq.BigQueryUnavailable as exc:
        raise SourceError(f"cannot read {where}: {exc}") from None
    fields, sheet = _bq_fields(client, f"{project}.{dataset}.{table}", where)
    if sheet and own_client and not bq.endpoint():
        client = bq.make_client(project, drive=True)  # a Google Sheet behind the table: Drive read-only scope
    wanted = [c for c in COLUMNS if c in fields]
    sql, params = _bq_select(ref, fields, wanted, since, where)
    incremental = bool(params)
    try:
        _job, result = bq.run_query(client, sql, params)
        rows = [dict(zip(wanted, r.values(), strict=True)) for r in result]
    except bq.api_errors() as exc:
        raise _bq_failure(exc, where, "read") from None
    if (fields["submitted_at"].field_type or "").upper() == "DATETIME":
        for r in rows:
            v = r.get("submitted_at")
            if isinstance(v, datetime) and v.tzinfo is None:
                r["submitted_at"] = v.replace(tzinfo=UTC)
    return rows, not incremental, (since if incremental else None)


def _bq_failure(exc: BaseException, where: str, action: str) -> SourceError:
    if bq.is_not_found(exc):
        return SourceError(f"{where} does not exist (or its dataset does not); nothing was changed")
    return SourceError(f"cannot {action} {where}: {bq.describe_error(exc)}; nothing was changed")


def _bq_fields(client: Any, table_id: str, where: str) -> tuple[dict[str, Any], bool]:
    """(the table's schema fields by registration column name, whether a Google Sheet backs it)."""
    try:
        meta = client.get_table(table_id, retry=bq.api_retry(), timeout=bq.timeout_seconds())
    except bq.api_errors() as exc:
        raise _bq_failure(exc, where, "reach") from None
    fields: dict[str, Any] = {}
    for f in meta.schema:
        col = normalize_header(f.name)
        if col in COLUMNS and col not in fields:
            fields[col] = f
    check_columns(fields, where)
    return fields, bq.needs_drive_scope(meta)


def _bq_select(ref: str, fields: dict[str, Any], wanted: list[str], since: datetime | None, where: str) -> tuple[str, list[Any]]:
    """(SQL, parameters) of the read; parameters are empty unless the read is incremental."""
    select = []
    for col in wanted:
        f = fields[col]
        ftype = (f.field_type or "").upper()
        if f.mode == "REPEATED" or ftype not in BQ_SCALAR_TYPES:
            raise SourceError(f"{where}: column {f.name} has unsupported type {f.mode or ''} {ftype}".replace("  ", " "))
        if "`" in f.name or "\\" in f.name:
            raise SourceError(f"{where}: column name {f.name!r} cannot be quoted safely")
        select.append(f"`{f.name}` AS {col}")
    sql = f"SELECT {', '.join(select)} FROM {ref}"
    sub_type = (fields["submitted_at"].field_type or "").upper()
    params: list[Any] = []
    if since is not None and sub_type in BQ_INCREMENTAL_TYPES:
        stamp = since.astimezone(UTC)
        params.append(bq.scalar("since", sub_type, stamp if sub_type == "TIMESTAMP" else stamp.replace(tzinfo=None)))
        sql += f" WHERE `{fields['submitted_at'].name}` >= @since"
    return sql + " ORDER BY " + ", ".join(wanted), params
