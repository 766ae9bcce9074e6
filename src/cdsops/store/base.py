"""The roster store interface, shared by the DuckDB file and BigQuery stores.

A store holds the management-side record: ``students`` (the roster), ``profiles``
(contact details: names and emails, management store only), ``meta`` (watermarks and
the times of the last sync and the last apply) and ``changes`` (one JSON line per
change). Writes are atomic: a sync reads, computes and writes under one lock or one
compare-and-swap, so two racing syncs can never give one person two ids or two
people one id.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config import Config
from ..errors import CdsopsError
from ..registrations import Registration
from ..roster import Profile, Student, SyncOutcome
from ..times import UTC, as_utc, format_iso, parse_iso_or_none

__all__ = ["StoreError", "Snapshot", "RosterStore", "ChangeRecord", "Notified", "student_from_row", "change_from_row"]

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


class StoreError(CdsopsError, RuntimeError):
    """The store could not be read or written; nothing was changed."""


@dataclass(frozen=True)
class Snapshot:
    students: tuple[Student, ...]
    meta: Mapping[str, str] = field(default_factory=dict)
    revision: int = 0
    # False when the store has no roster at all (no DuckDB file, no dataset or no students
    # table), as opposed to a roster with no students in it
    present: bool = True

    def meta_time(self, key: str) -> datetime | None:
        return parse_iso_or_none(self.meta.get(key))

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
                "at": format_iso(self.at),
                "kind": self.kind,
                "student_id": self.student_id,
                "username": self.username,
                "before": self.before,
                "after": self.after,
            },
            sort_keys=True,
        )


# (student_id, admission, kind) of a notification the email ledger marks as sent
Notified = tuple[int, int, str]


class RosterStore(abc.ABC):
    """What the service layer, the runner and the inventory need of a roster store."""

    uri: str

    @abc.abstractmethod
    def load(self) -> Snapshot:
        """The whole roster and the meta values (an empty snapshot, ``present`` False, for a
        store that does not exist yet)."""

    def load_existing(self) -> Snapshot:
        """:meth:`load`, refusing a store that does not exist. Every reader but ``roster sync``
        uses this: a mistyped path or dataset must never read as an empty roster, because an
        empty plan would take every student out of the data group and the sign-in map."""
        snapshot = self.load()
        if not snapshot.present:
            raise StoreError(
                f"roster store {self.uri} does not exist (no roster has been synced there); nothing was "
                f"read or changed. Check the path, or create it with `cdsops roster sync --source SOURCE "
                f"--roster {self.uri}`"
            )
        return snapshot

    @abc.abstractmethod
    def load_meta(self) -> dict[str, str]:
        """The meta values alone (watermarks, ``last_synced_at``, ``last_applied_at``)."""

    @abc.abstractmethod
    def sent_notifications(self) -> frozenset[Notified]:
        """The notifications the email ledger marks as sent (empty without a ledger)."""

    @abc.abstractmethod
    def profiles(self, student_ids: Sequence[int]) -> dict[int, Profile]:
        """Contact details of these students (management side only)."""

    @abc.abstractmethod
    def changes(self, *, student_id: int | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict]:
        """The changes record, oldest first, as dicts (``at`` ISO 8601 UTC)."""

    @abc.abstractmethod
    def sync_registrations(
        self,
        registrations: Sequence[Registration],
        config: Config,
        *,
        run_id: str,
        now: datetime,
        meta: Mapping[str, str] | None = None,
    ) -> SyncOutcome:
        """Fold the batch into the roster atomically (what :func:`cdsops.roster.sync` gives over
        the whole roster), record the changes and set ``meta`` plus ``last_synced_at``."""

    @abc.abstractmethod
    def set_meta(self, values: Mapping[str, str]) -> None:
        """Set meta values (one transaction)."""

    @abc.abstractmethod
    def record_changes(self, records: Iterable[ChangeRecord]) -> None:
        """Append to the changes record."""

    def close(self) -> None:  # noqa: B027 - a store holding no connection has nothing to close
        """Release what the store holds."""


def student_from_row(row: Sequence[Any]) -> Student:
    """A Student from a stored row (naive UTC timestamps, or aware ones)."""
    (sid, identity, username, host, agreements, first, last, expires, admission, admitted) = row
    if expires.tzinfo is None:
        ag = tuple([t.replace(tzinfo=UTC) for t in agreements])
        expires = expires.replace(tzinfo=UTC)
        admitted = admitted.replace(tzinfo=UTC)
    else:
        ag = tuple([as_utc(t) for t in agreements])
        expires = as_utc(expires)
        admitted = as_utc(admitted)
    return Student(sid, identity, username, host, ag, ag[0], ag[-1], expires, int(admission), admitted)


def change_from_row(r: Sequence[Any]) -> dict:
    """One changes-record row (run_id, changed_at, kind, student_id, username, before, after) as a dict."""
    return {
        "run_id": r[0],
        "at": format_iso(r[1]),
        "kind": r[2],
        "student_id": r[3],
        "username": r[4],
        "before": json.loads(r[5]) if r[5] else None,
        "after": json.loads(r[6]) if r[6] else None,
    }
