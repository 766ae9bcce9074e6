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
import io
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

from .registrations import COLUMNS, REQUIRED_COLUMNS, normalize_header

__all__ = ["SourceError", "SourceRead", "parse_source", "read_source", "Source"]

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_PROJECT_RE = re.compile(r"[a-z][a-z0-9.:-]{2,62}[a-z0-9]\Z")
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
    rows: list[dict[str, Any]]
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
        if not _PROJECT_RE.match(project):
            raise SourceError(f"invalid BigQuery project id {project!r}")
        for what, name in (("dataset", dataset), ("table", table)):
            if not _IDENT_RE.match(name):
                raise SourceError(f"invalid BigQuery {what} name {name!r}")
        return Source("bigquery", uri, project=project, dataset=dataset, table=table)
    if uri.startswith("duckdb:"):
        rest = uri[len("duckdb:") :]
        if "#" not in rest:
            raise SourceError(f"DuckDB source must be duckdb:PATH#TABLE, got {uri!r}")
        path, table = rest.rsplit("#", 1)
        if not path:
            raise SourceError("DuckDB source has no file path")
        if not _IDENT_RE.match(table):
            raise SourceError(f"invalid DuckDB table name {table!r}")
        return Source("duckdb", uri, path=path, table=table)
    path = uri[len("csv:") :] if uri.startswith("csv:") else uri
    return Source("csv", uri, path=path)


def read_source(source: Source, *, since: datetime | None = None) -> SourceRead:
    if source.kind == "csv":
        return SourceRead(source, read_csv(source.path), True)
    if source.kind == "duckdb":
        return SourceRead(source, read_duckdb(source.path, source.table), True)
    if source.kind == "bigquery":
        from .bq import read_bigquery_registrations

        rows, complete, effective_since = read_bigquery_registrations(
            source.project, source.dataset, source.table, since=since - WATERMARK_OVERLAP if since else None
        )
        return SourceRead(source, rows, complete, effective_since)
    raise SourceError(f"unknown source kind {source.kind!r}")


def _check_columns(columns: list[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise SourceError(f"{where} lacks required column(s): {', '.join(missing)} (expected {', '.join(COLUMNS)})")


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"source file {p} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read source file {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"source file {p} is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError(f"source file {p} is empty (no header row)") from None
    except csv.Error as exc:
        raise SourceError(f"source file {p} is not valid CSV: {exc}") from None
    cols = [normalize_header(h) for h in header]
    _check_columns(cols, f"source file {p}")
    index = {c: i for i, c in reversed(list(enumerate(cols))) if c in COLUMNS}
    rows: list[dict[str, Any]] = []
    try:
        for record in reader:
            if not record or all(not f.strip() for f in record):
                continue  # blank line: not a row
            n = len(record)
            rows.append({c: (record[i] if i < n else None) for c, i in index.items()})
    except csv.Error as exc:
        raise SourceError(f"source file {p} is not valid CSV near data row {len(rows) + 1}: {exc}") from None
    return rows


def read_duckdb(path: str, table: str) -> list[dict[str, Any]]:
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
        _check_columns(list(types), f"DuckDB table {table}")
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
    return [dict(zip(wanted, r)) for r in result]


def _has_rowid(con: Any, table: str) -> bool:
    try:
        con.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
        return True
    except Exception:
        return False


def iter_rows(read: SourceRead) -> Iterator[dict[str, Any]]:
    return iter(read.rows)
