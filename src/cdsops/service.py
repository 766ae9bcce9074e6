"""Use cases that tie the pure core to its edges (sources, stores). The CLI, the runner and the
inventory call these; each returns data (dataclasses, dicts), never prints."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .config import Config
from .errors import UsageError
from .identity import InvalidEmail, canonicalize
from .plan import GuardError, Plan, check_guard, make_plan
from .registrations import Rejection, validate_rows
from .roster import Student, SyncOutcome, status_of
from .sources import SourceError, parse_source, read_source
from .store import RosterStore, open_store
from .times import compact_stamp, format_iso, iso, parse_iso_or_none, utcnow

__all__ = [
    "SyncReport",
    "new_run_id",
    "roster_sync",
    "compute_plan",
    "plan_from_store",
    "roster_students",
    "find_student",
    "lookup",
    "changes",
    "GuardError",
    "SourceError",
]

NOT_FOUND_REASON = "no valid registration for this person (not registered, or every row was rejected)"


def new_run_id(now: datetime | None = None) -> str:
    return f"{compact_stamp(now or utcnow())}-{secrets.token_hex(3)}"


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
    incremental = source.kind == "bigquery"
    since = parse_iso_or_none(store.load_meta().get(_watermark_key(source.uri))) if incremental and not full else None
    read = read_source(source, since=since)
    validated = validate_rows(read.rows, now)
    if read.complete and validated.rows == 0 and not allow_empty:
        raise GuardError(
            f"source {source_uri} has no registration rows; refusing to sync from an empty source "
            "(nothing was changed; pass --allow-empty if this is intended)"
        )
    meta = {}
    latest = max((r.submitted_at for r in validated.registrations), default=None)
    if incremental and latest is not None:
        meta[_watermark_key(source.uri)] = format_iso(latest)
    outcome = store.sync_registrations(validated.registrations, config, run_id=run_id, now=now, meta=meta)
    return SyncReport(run_id, outcome, validated.rejections, validated.rows, read.complete)


def plan_from_store(store: RosterStore, config: Config, now: datetime) -> tuple[Plan, tuple[Student, ...]]:
    """The plan at ``now`` from the store's roster, its last apply and its email ledger (the guard
    not enforced), with the students it was computed from."""
    snapshot = store.load_existing()
    plan = make_plan(snapshot.students, config, now, since=snapshot.since, sent=store.sent_notifications())
    return plan, snapshot.students


def compute_plan(
    store_uri: str,
    config: Config,
    now: datetime | None = None,
    *,
    allow_mass_revoke: bool = False,
    enforce_guard: bool = True,
) -> Plan:
    plan, _students = plan_from_store(open_store(store_uri), config, now or utcnow())
    if enforce_guard:
        check_guard(plan, allow_mass_revoke)
    return plan


def roster_students(store_uri: str) -> tuple[Student, ...]:
    """The roster, sorted by id."""
    return open_store(store_uri).load_existing().students


def find_student(students: Sequence[Student], who: str) -> Student | None:
    """The student ``who`` names: an email address (any alias of the identity), a username or an id."""
    who = who.strip()
    if "@" in who:
        try:
            identity = canonicalize(who)
        except InvalidEmail as exc:
            raise UsageError(f"not a valid email address: {exc}") from None
        return next((s for s in students if s.identity == identity), None)
    return next((s for s in students if s.username == who or (who.isdigit() and s.student_id == int(who))), None)


def lookup(store_uri: str, who: str, now: datetime | None = None) -> dict:
    """Support's "why can't I get in?": the person's status, expiry and change history."""
    store = open_store(store_uri)
    match = find_student(store.load_existing().students, who)
    if match is None:
        return {"found": False, "reason": NOT_FOUND_REASON}
    return {
        "found": True,
        "student_id": match.student_id,
        "username": match.username,
        "status": status_of(match, now or utcnow()),
        "expires_at": iso(match.expires_at),
        "last_registered_at": iso(match.last_registered_at),
        "admission": match.admission,
        "host": match.host,
        "changes": store.changes(student_id=match.student_id),
    }


def changes(store_uri: str, *, student_id: int | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict]:
    """The changes record, one dict per change."""
    return open_store(store_uri).changes(student_id=student_id, run_id=run_id, limit=limit)
