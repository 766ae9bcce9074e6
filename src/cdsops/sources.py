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
import operator
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

from .registrations import COLUMNS, REQUIRED_COLUMNS, normalize_header

__all__ = ["SourceError", "SourceRead", "parse_source", "read_source", "Source"]

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9.:_-]{0,99}\Z")  # real ids: 6-30 chars; emulators accept more
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
        return SourceRead(source, iter_csv(source.path), True)
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


def read_csv(path: str | os.PathLike[str]) -> list[tuple[Any, ...]]:
    """All data rows of a CSV export, as value tuples in COLUMNS order."""
    return list(iter_csv(path))


def iter_csv(path: str | os.PathLike[str]) -> Iterator[tuple[Any, ...]]:
    """Open and check the header now; yield data rows lazily (tuples in COLUMNS order).

    A BOM, stray whitespace and case in the header are tolerated; blank lines are not
    rows; a short row yields None for its missing fields (and is rejected by validation).
    """
    p = Path(path)
    try:
        fh = open(p, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise SourceError(f"source file {p} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read source file {p}: {exc.strerror or exc}") from None
    reader = csv.reader(fh)
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise SourceError(f"source file {p} is empty (no header row)") from None
    except UnicodeDecodeError as exc:
        fh.close()
        raise SourceError(f"source file {p} is not UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:
        fh.close()
        raise SourceError(f"source file {p} is not valid CSV: {exc}") from None
    cols = [normalize_header(h) for h in header]
    try:
        _check_columns(cols, f"source file {p}")
    except SourceError:
        fh.close()
        raise
    first = {}
    for i, c in enumerate(cols):
        first.setdefault(c, i)
    index = [first.get(c) for c in COLUMNS]
    width = max(i for i in index if i is not None) + 1
    if None in index:
        pick = lambda record: tuple(record[i] if i is not None else None for i in index)  # noqa: E731
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
    pos = {c: i for i, c in enumerate(wanted)}
    idx = [pos.get(c) for c in COLUMNS]
    return [tuple(r[i] if i is not None else None for i in idx) for r in result]


def _has_rowid(con: Any, table: str) -> bool:
    try:
        con.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
        return True
    except Exception:
        return False


