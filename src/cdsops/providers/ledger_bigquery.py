"""The notification ledger in BigQuery (production): table ``notifications`` in the roster dataset.

Same contract as :class:`cdsops.providers.email.DuckDBLedger`, same columns, so the roster
store's ``sent_notifications()`` reads either one.

``claim`` is one ``MERGE`` statement: it inserts the key as ``sending`` when it is new, or
flips a ``failed`` key back to ``sending``; the number of rows it changed says whether this
run owns the send. BigQuery runs mutating DML on one table one at a time (a concurrent
one fails with "Could not serialize access ... due to concurrent update" and is retried
here), so two runs can never both claim a key. Only DML is used (no streaming inserts), so
rows can be updated at once.
https://cloud.google.com/bigquery/docs/reference/standard-sql/dml-syntax#merge_statement
https://cloud.google.com/bigquery/docs/data-manipulation-language#dml-limitations (concurrent DML)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cdsops.providers.base import NotificationKey, ProviderError

__all__ = ["BigQueryLedger"]

_DDL = """CREATE TABLE IF NOT EXISTS {t} (
  student_id INT64 NOT NULL,
  admission STRING NOT NULL,
  kind STRING NOT NULL,
  status STRING NOT NULL,
  attempts INT64 NOT NULL,
  claimed_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL,
  error STRING
)"""

_CLAIM = """MERGE {t} T
USING (SELECT @sid AS student_id, @adm AS admission, @kind AS kind) S
ON T.student_id = S.student_id AND T.admission = S.admission AND T.kind = S.kind
WHEN MATCHED AND T.status = 'failed' THEN
  UPDATE SET status = 'sending', attempts = T.attempts + 1, claimed_at = CURRENT_TIMESTAMP(),
             updated_at = CURRENT_TIMESTAMP(), error = NULL
WHEN NOT MATCHED THEN
  INSERT (student_id, admission, kind, status, attempts, claimed_at, updated_at, error)
  VALUES (S.student_id, S.admission, S.kind, 'sending', 1, CURRENT_TIMESTAMP(), CURRENT_TIMESTAMP(), NULL)"""

_WHERE = "student_id = @sid AND admission = @adm AND kind = @kind"


class BigQueryLedger:
    """``BigQueryLedger(project, dataset)``; the client comes from :func:`cdsops.bq.make_client`
    (``CDSOPS_BIGQUERY_ENDPOINT`` points it at an emulator)."""

    def __init__(self, project: str, dataset: str, *, client: Any = None, conflict_retries: int = 5,
                 sleep: Callable[[float], None] = time.sleep):
        from cdsops import bq

        self._bq = bq
        self.table = bq.quote_table(project, dataset, "notifications")
        self.client = client if client is not None else bq.make_client(project)
        self.conflict_retries = conflict_retries
        self.sleep = sleep
        self._run(_DDL.format(t=self.table), ())

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> BigQueryLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _params(self, key: NotificationKey) -> list[Any]:
        bq = self._bq
        return [bq.scalar("sid", "INT64", key.student_id), bq.scalar("adm", "STRING", key.admission), bq.scalar("kind", "STRING", key.kind)]

    def _run(self, sql: str, params: Any) -> tuple[Any, list[Any]]:
        bq = self._bq
        attempt = 0
        while True:
            try:
                job, rows = bq.run_query(self.client, sql, list(params))
                return job, list(rows)
            except bq.api_errors() as exc:
                text = bq.describe_error(exc)
                if "concurrent update" in text.lower() and attempt < self.conflict_retries:
                    attempt += 1
                    self.sleep(0.5 * 2**attempt)
                    continue
                raise ProviderError(f"notification ledger {self.table}: {text}") from None

    def claim(self, key: NotificationKey) -> bool:
        job, _ = self._run(_CLAIM.format(t=self.table), self._params(key))
        return (job.num_dml_affected_rows or 0) == 1

    def status(self, key: NotificationKey) -> str | None:
        _, rows = self._run(f"SELECT status FROM {self.table} WHERE {_WHERE}", self._params(key))
        return rows[0][0] if rows else None

    def _set(self, key: NotificationKey, status: str, error: str | None) -> None:
        params = self._params(key) + [self._bq.scalar("status", "STRING", status), self._bq.scalar("err", "STRING", error)]
        self._run(f"UPDATE {self.table} SET status = @status, updated_at = CURRENT_TIMESTAMP(), error = @err WHERE {_WHERE}", params)

    def mark_sent(self, key: NotificationKey) -> None:
        self._set(key, "sent", None)

    def mark_failed(self, key: NotificationKey, error: str) -> None:
        self._set(key, "failed", error[:200])

    def uncertain(self) -> list[NotificationKey]:
        _, rows = self._run(f"SELECT student_id, admission, kind FROM {self.table} WHERE status = 'sending' ORDER BY 1, 2, 3", ())
        return [NotificationKey(int(s), a, k) for s, a, k in rows]

    def release(self, key: NotificationKey) -> None:
        self._set(key, "failed", "released by operator")
