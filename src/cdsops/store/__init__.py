"""Roster stores: a DuckDB file (embedded default) or a BigQuery dataset (production).

``STORE`` forms (CLI contract): a DuckDB file path (``duckdb:PATH`` also accepted) or
``bigquery://PROJECT/DATASET``.
"""

from __future__ import annotations

from .base import ChangeRecord, RosterStore, Snapshot, StoreError

__all__ = ["open_store", "RosterStore", "Snapshot", "StoreError", "ChangeRecord"]


def open_store(uri: str) -> RosterStore:
    if not uri or not uri.strip():
        raise StoreError("no roster store given")
    if uri.startswith("bigquery://"):
        parts = uri[len("bigquery://"):].strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise StoreError(f"BigQuery roster store must be bigquery://PROJECT/DATASET, got {uri!r}")
        from .bigquery_store import BigQueryStore

        return BigQueryStore(parts[0], parts[1])
    path = uri[len("duckdb:"):] if uri.startswith("duckdb:") else uri
    if "#" in path:
        raise StoreError(f"a roster store is a DuckDB file, not a table: {uri!r}")
    from .duckdb_store import DuckDBStore

    return DuckDBStore(path)
