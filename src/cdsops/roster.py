"""The roster: one row per person, the only mutable record of cdsops.

Pure functions over frozen dataclasses. :func:`sync` folds a batch of valid
registrations into a roster and returns the new roster plus what changed; the stores
(:mod:`cdsops.store`) persist the result atomically.

Rules (issue 6, design step 3):
- a new canonical identity gets the next student id, exactly once, in order of first
  valid agreement (ties broken by identity); ids are never reused, never empty;
- a known identity keeps its id, username and host;
- expiry is the latest valid agreement + ``access_days``;
- an *admission* is a stretch of continuous access: an agreement signed at or after
  the current expiry starts a new one (a re-admission). Admissions are computed from
  the full set of agreement times, so the result does not depend on the order in
  which rows arrive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import Config
from .errors import CdsopsError
from .registrations import Registration
from .times import iso

__all__ = [
    "RosterBase",
    "Student",
    "Profile",
    "Change",
    "SyncOutcome",
    "RosterError",
    "admissions",
    "build_student",
    "sync",
    "status_of",
]


class RosterError(CdsopsError, RuntimeError):
    """The roster cannot be updated as asked; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Student:
    student_id: int
    identity: str
    username: str
    host: str
    agreements: tuple[datetime, ...]  # sorted, unique, aware UTC
    first_registered_at: datetime
    last_registered_at: datetime
    expires_at: datetime
    admission: int  # 1 for the first admission, 2 after the first re-admission, ...
    admitted_at: datetime  # start of the current admission

    def is_active(self, now: datetime) -> bool:
        return now < self.expires_at

    def to_dict(self, now: datetime | None = None) -> dict:
        out = {
            "student_id": self.student_id,
            "username": self.username,
            "identity": self.identity,
            "host": self.host,
            "expires_at": iso(self.expires_at),
            "first_registered_at": iso(self.first_registered_at),
            "last_registered_at": iso(self.last_registered_at),
            "admission": self.admission,
            "admitted_at": iso(self.admitted_at),
        }
        if now is not None:
            out["status"] = status_of(self, now)
        return out


@dataclass(frozen=True, slots=True)
class Profile:
    """Contact details, kept only in the management store."""

    identity: str
    email: str
    full_name: str
    city: str
    country: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the roster, recorded as one JSON line (never an email or a name)."""

    kind: str  # student.added | student.renewed | student.readmitted
    student_id: int
    username: str
    before: Mapping | None
    after: Mapping | None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "student_id": self.student_id,
            "username": self.username,
            "before": dict(self.before) if self.before is not None else None,
            "after": dict(self.after) if self.after is not None else None,
        }


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    students: tuple[Student, ...]  # the whole new roster, sorted by id
    added: tuple[Student, ...]
    renewed: tuple[Student, ...]  # known students whose expiry moved (re-admissions included)
    unchanged: int  # students seen in this batch that were neither added nor renewed
    changed_agreements: tuple[Student, ...]  # known students with new agreement times (superset of renewed)
    profiles: tuple[Registration, ...]  # the newest registration of each identity in this batch (contact details)
    renewal_changes: tuple[Change, ...]  # student.renewed / student.readmitted

    @property
    def changes(self) -> tuple[Change, ...]:
        """Every change: one ``student.added`` per new student (built on demand: a large
        first sync need not hold them all), then renewals and re-admissions."""
        added = tuple(Change("student.added", s.student_id, s.username, None, _summary(s)) for s in self.added)
        return tuple(sorted(added + self.renewal_changes, key=lambda c: (c.student_id, c.kind)))

    @property
    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "renewed": len(self.renewed), "unchanged": self.unchanged}


def status_of(student: Student, now: datetime) -> str:
    return "active" if student.is_active(now) else "expired"


def admissions(agreements: Sequence[datetime], access_days: int) -> tuple[int, datetime, datetime]:
    """Return (admission number, start of current admission, expiry) for sorted times."""
    if not agreements:
        raise RosterError("a student needs at least one agreement")
    span = timedelta(days=access_days)
    admission = 0
    admitted_at = agreements[0]
    expires = None
    for t in agreements:
        if expires is None or t >= expires:
            admission += 1
            admitted_at = t
        expires = t + span
    assert expires is not None
    return admission, admitted_at, expires


def build_student(student_id: int, identity: str, username: str, host: str, agreements: Iterable[datetime], access_days: int) -> Student:
    if isinstance(agreements, list) and len(agreements) == 1:
        times = (agreements[0],)
    else:
        times = tuple(sorted(agreements if isinstance(agreements, (set, frozenset)) else set(agreements)))
    admission, admitted_at, expires = admissions(times, access_days)
    return Student(
        student_id=student_id,
        identity=identity,
        username=username,
        host=host,
        agreements=times,
        first_registered_at=times[0],
        last_registered_at=times[-1],
        expires_at=expires,
        admission=admission,
        admitted_at=admitted_at,
    )


def _summary(s: Student) -> dict:
    return {"expires_at": iso(s.expires_at), "admission": s.admission, "host": s.host}


@dataclass(frozen=True, slots=True)
class RosterBase:
    """What a sync needs to know of the roster students it is not given.

    A store that can tell, by an index, which students a batch touches passes only those
    students to :func:`sync` plus this summary of the rest; the result is the same as
    a sync over the whole roster (its ``students`` then holds only the given ones)."""

    max_student_id: int
    host_load: Mapping[str, int]
    untouched: int  # distinct identities of the batch whose students were not passed: unchanged


def sync(
    roster: Sequence[Student], registrations: Iterable[Registration], config: Config, *, base: RosterBase | None = None
) -> SyncOutcome:
    """Fold valid registrations into the roster. Pure and deterministic."""
    by_identity = _index(roster)
    times, newest = _agreements(registrations)
    added = _admit(roster, by_identity, times, config, base)
    changed_agreements, renewed, changes = _renew(by_identity, times, config.access_days)
    if changed_agreements:
        replaced = {s.student_id: s for s in changed_agreements}
        students = tuple(replaced.get(s.student_id, s) for s in sorted(roster, key=lambda s: s.student_id)) + tuple(added)
    else:
        students = tuple(sorted(roster, key=lambda s: s.student_id)) + tuple(added)
    return SyncOutcome(
        students=students,
        added=tuple(added),
        renewed=tuple(renewed),
        unchanged=len(times) - len(added) - len(renewed) + (base.untouched if base else 0),
        changed_agreements=tuple(changed_agreements),
        profiles=tuple(newest[i] for i in sorted(newest)),
        renewal_changes=tuple(changes),
    )


def _index(roster: Sequence[Student]) -> dict[str, Student]:
    """The roster by identity; a roster that repeats an identity, id or username is corrupt."""
    by_identity: dict[str, Student] = {}
    used_ids: set[int] = set()
    used_names: set[str] = set()
    for s in roster:
        if s.identity in by_identity:
            raise RosterError(f"roster is corrupt: identity of student {s.student_id} appears twice")
        if s.student_id in used_ids or s.username in used_names:
            raise RosterError(f"roster is corrupt: student id {s.student_id} or username {s.username} appears twice")
        by_identity[s.identity] = s
        used_ids.add(s.student_id)
        used_names.add(s.username)
    return by_identity


def _agreements(registrations: Iterable[Registration]) -> tuple[dict[str, list[datetime]], dict[str, Registration]]:
    """Agreement times per identity, and each identity's newest registration (its contact details)."""
    times: dict[str, list[datetime]] = {}  # lists, not sets: a third of the memory at 100k rows
    newest: dict[str, Registration] = {}
    for r in registrations:
        ident = r.identity
        ts = times.get(ident)
        if ts is None:
            times[ident] = [r.submitted_at]
            newest[ident] = r
            continue
        ts.append(r.submitted_at)
        cur = newest[ident]
        if r.submitted_at > cur.submitted_at or (r.submitted_at == cur.submitted_at and r.row >= cur.row):
            newest[ident] = r
    return times, newest


def _admit(
    roster: Sequence[Student],
    by_identity: Mapping[str, Student],
    times: Mapping[str, list[datetime]],
    config: Config,
    base: RosterBase | None,
) -> list[Student]:
    """New students: the next ids in order of first agreement (ties by identity), each pinned to
    the least loaded compute host."""
    new_identities = sorted((min(ts), ident) for ident, ts in times.items() if ident not in by_identity)
    next_id = max(max((s.student_id for s in roster), default=0), base.max_student_id if base else 0) + 1
    if new_identities and next_id + len(new_identities) - 1 > config.max_student_id:
        raise RosterError(
            f"student id {next_id + len(new_identities) - 1} does not fit username_width={config.username_width}; "
            "nothing was changed"
        )
    hosts = config.compute_hosts
    if base is not None:
        load = Counter(base.host_load)
    else:
        load = Counter(s.host for s in roster) if len(hosts) > 1 else Counter()
    used_names = {s.username for s in roster}
    added: list[Student] = []
    for sid, (_, ident) in enumerate(new_identities, start=next_id):
        username = config.username(sid)
        if username in used_names:
            raise RosterError(f"username {username} is already taken in the roster; nothing was changed")
        if len(hosts) == 1:
            host = hosts[0]
        else:
            host = min(hosts, key=lambda h: (load[h], hosts.index(h)))
            load[host] += 1
        added.append(build_student(sid, ident, username, host, times[ident], config.access_days))
    return added


def _renew(
    by_identity: Mapping[str, Student], times: Mapping[str, list[datetime]], access_days: int
) -> tuple[list[Student], list[Student], list[Change]]:
    """Known students with new agreement times, those whose expiry moved, and their changes (sorted by id)."""
    renewed: list[Student] = []
    changed_agreements: list[Student] = []
    changes: list[Change] = []
    for ident, ts in times.items():
        old = by_identity.get(ident)
        if old is None:
            continue
        if len(ts) == 1 and ts[0] in old.agreements or set(ts).issubset(old.agreements):
            continue
        st = build_student(old.student_id, ident, old.username, old.host, set(ts).union(old.agreements), access_days)
        changed_agreements.append(st)
        if st.expires_at != old.expires_at:
            renewed.append(st)
            kind = "student.readmitted" if st.admission > old.admission else "student.renewed"
            changes.append(Change(kind, st.student_id, st.username, _summary(old), _summary(st)))
    changed_agreements.sort(key=lambda s: s.student_id)
    renewed.sort(key=lambda s: s.student_id)
    changes.sort(key=lambda c: (c.student_id, c.kind))
    return changed_agreements, renewed, changes
