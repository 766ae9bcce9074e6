"""The roster store interface, shared by the DuckDB file and BigQuery stores.

A store holds the management-side record: ``students`` (the roster), ``profiles``
(contact details: names and emails, management store only), ``meta`` (watermarks and
the times of the last sync and the last apply) and ``changes`` (one JSON line per
change). Writes are atomic: a sync reads, computes and writes under one lock or one
compare-and-swap, so two racing syncs can never give one person two ids or two
people one id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..roster import Profile, Student, SyncOutcome

__all__ = ["StoreError", "Snapshot", "RosterStore", "ChangeRecord", "utc", "naive_utc", "parse_meta_time"]

STUDENT_COLUMNS = (
    "student_id",
    "identity",
    "username",
    "host",
    "agreements",
    "first_registered_at",
    "last_registered_at",
    "expires_at",
    "admission",
    "admitted_at",
)


class StoreError(RuntimeError):
    """The store could not be read or written; nothing was changed."""


@dataclass(frozen=True)
class Snapshot:
    students: tuple[Student, ...]
    meta: Mapping[str, str] = field(default_factory=dict)
    revision: int = 0

    def meta_time(self, key: str) -> datetime | None:
        return parse_meta_time(self.meta.get(key))

    @property
    def since(self) -> datetime | None:
        """When access was last applied; before any apply, the last sync."""
        return self.meta_time("last_applied_at") or self.meta_time("last_synced_at")


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    run_id: str
    at: datetime
    kind: str
    student_id: int | None
    username: str | None
    before: Any
    after: Any

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "at": self.at.isoformat().replace("+00:00", "Z"),
                "kind": self.kind,
                "student_id": self.student_id,
                "username": self.username,
                "before": self.before,
                "after": self.after,
            },
            sort_keys=True,
        )


SyncFn = Callable[[Snapshot], SyncOutcome]


class RosterStore(Protocol):
    uri: str

    def load(self) -> Snapshot: ...

    def sync(self, compute: SyncFn, *, run_id: str, now: datetime, meta: Mapping[str, str] | None = None) -> SyncOutcome: ...

    def set_meta(self, values: Mapping[str, str]) -> None: ...

    def record_changes(self, records: Iterable[ChangeRecord]) -> None: ...

    def changes(self, *, student_id: int | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict]: ...

    def profiles(self, student_ids: Sequence[int]) -> dict[int, Profile]: ...

    def close(self) -> None: ...


def utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def parse_meta_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def format_meta_time(dt: datetime) -> str:
    return utc(dt).isoformat().replace("+00:00", "Z")


_UTC = timezone.utc


def student_from_row(row: Sequence[Any]) -> Student:
    """A Student from a stored row (naive UTC timestamps, or aware ones)."""
    (sid, identity, username, host, agreements, first, last, expires, admission, admitted) = row
    if expires.tzinfo is None:
        ag = tuple([t.replace(tzinfo=_UTC) for t in agreements])
        expires = expires.replace(tzinfo=_UTC)
        admitted = admitted.replace(tzinfo=_UTC)
    else:
        ag = tuple([utc(t) for t in agreements])
        expires = utc(expires)
        admitted = utc(admitted)
    return Student(sid, identity, username, host, ag, ag[0], ag[-1], expires, int(admission), admitted)


def change_from_row(r: Sequence[Any]) -> dict:
    """One changes-record row (run_id, changed_at, kind, student_id, username, before, after) as a dict."""
    return {
        "run_id": r[0],
        "at": format_meta_time(r[1]),
        "kind": r[2],
        "student_id": r[3],
        "username": r[4],
        "before": json.loads(r[5]) if r[5] else None,
        "after": json.loads(r[6]) if r[6] else None,
    }
