"""Use cases that tie the pure core to its edges (sources, stores). The CLI calls these."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from .config import Config
from .plan import GuardError, Plan, check_guard, make_plan
from .registrations import Rejection, validate_rows
from .roster import SyncOutcome, sync
from .sources import SourceError, parse_source, read_source
from .store import Snapshot, open_store
from .store.base import format_meta_time

__all__ = ["SyncReport", "new_run_id", "roster_sync", "compute_plan", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class SyncReport:
    run_id: str
    outcome: SyncOutcome
    rejected: tuple[Rejection, ...]
    rows: int
    complete: bool

    def to_dict(self) -> dict:
        return {
            "added": len(self.outcome.added),
            "renewed": len(self.outcome.renewed),
            "unchanged": self.outcome.unchanged,
            "rejected": [r.to_dict() for r in self.rejected],
        }


def _watermark_key(uri: str) -> str:
    return f"watermark:{uri}"


def roster_sync(
    source_uri: str,
    store_uri: str,
    config: Config,
    now: datetime | None = None,
    *,
    allow_empty: bool = False,
    full: bool = False,
    run_id: str | None = None,
) -> SyncReport:
    """Read the source, validate row by row, fold into the roster atomically."""
    now = now or utcnow()
    run_id = run_id or new_run_id(now)
    source = parse_source(source_uri)
    store = open_store(store_uri)
    since = None
    if source.kind == "bigquery" and not full:
        since = store.load_meta().get(_watermark_key(source.uri)) if hasattr(store, "load_meta") else None
        since = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    read = read_source(source, since=since)
    validated = validate_rows(read.rows, now)
    if read.complete and validated.rows == 0 and not allow_empty:
        raise GuardError(
            f"source {source_uri} has no registration rows; refusing to sync from an empty source "
            "(nothing was changed; pass --allow-empty if this is intended)"
        )
    meta = {}
    latest = max((r.submitted_at for r in validated.registrations), default=None)
    if source.kind == "bigquery" and latest is not None:
        meta[_watermark_key(source.uri)] = format_meta_time(latest)

    if hasattr(store, "sync_registrations"):
        outcome = store.sync_registrations(validated.registrations, config, run_id=run_id, now=now, meta=meta)
    else:

        def compute(snapshot: Snapshot) -> SyncOutcome:
            return sync(snapshot.students, validated.registrations, config)

        outcome = store.sync(compute, run_id=run_id, now=now, meta=meta)
    return SyncReport(run_id, outcome, validated.rejections, validated.rows, read.complete)


def compute_plan(
    store_uri: str,
    config: Config,
    now: datetime | None = None,
    *,
    allow_mass_revoke: bool = False,
    enforce_guard: bool = True,
) -> Plan:
    now = now or utcnow()
    store = open_store(store_uri)
    snapshot = store.load()
    sent = store.sent_notifications() if hasattr(store, "sent_notifications") else frozenset()
    plan = make_plan(snapshot.students, config, now, since=snapshot.since, sent=sent)
    if enforce_guard:
        check_guard(plan, allow_mass_revoke)
    return plan


__all__ += ["GuardError", "SourceError"]
