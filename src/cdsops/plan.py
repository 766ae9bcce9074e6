"""The plan: the desired state, a pure function of (roster, config, now).

- every student ever admitted has an account (files are never deleted);
- only active students have a sign-in mapping, data-access group membership and, once
  per admission, a welcome (or re-admission) email;
- expired students lose those and nothing else.

``revocations`` are the students who held access at ``since`` (the last time access
was applied, or the last sync when nothing was applied yet) and no longer should. The
guard refuses a plan that would revoke more than ``max_revoke_fraction`` of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import Config
from .errors import CdsopsError
from .roster import Student
from .times import iso

__all__ = ["Account", "Notification", "Guard", "Plan", "GuardError", "make_plan", "check_guard"]

EXPIRY_NOTICE_DAYS = 7


class GuardError(CdsopsError, RuntimeError):
    """A guard stopped the run; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Account:
    student_id: int
    username: str
    uid: int
    host: str
    status: str  # active | expired
    expires_at: datetime

    def to_dict(self) -> dict:
        return {
            "student_id": self.student_id,
            "username": self.username,
            "uid": self.uid,
            "host": self.host,
            "status": self.status,
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class Member:
    """An active student's access: on the management side only (identity is personal data)."""

    student_id: int
    username: str
    identity: str
    host: str
    ready_at: datetime  # before this, the sign-in gate says "access is being prepared"

    def to_dict(self) -> dict:
        return {
            "student_id": self.student_id,
            "username": self.username,
            "identity": self.identity,
            "host": self.host,
            "ready_at": iso(self.ready_at),
        }


@dataclass(frozen=True, slots=True)
class Notification:
    student_id: int
    username: str
    admission: int
    kind: str  # welcome | readmission | expiry

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.student_id, self.admission, self.kind)

    def to_dict(self) -> dict:
        return {"student_id": self.student_id, "username": self.username, "admission": self.admission, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Guard:
    since: datetime | None
    previously_active: int
    revoking: int
    max_fraction: float

    @property
    def fraction(self) -> float:
        return self.revoking / self.previously_active if self.previously_active else 0.0

    @property
    def tripped(self) -> bool:
        return self.revoking > 0 and self.fraction > self.max_fraction

    def message(self) -> str:
        return (
            f"plan would revoke access of {self.revoking} of {self.previously_active} active students "
            f"({self.fraction:.0%}), more than max_revoke_fraction={self.max_fraction:.0%}; nothing was changed "
            "(check the source and the clock; rerun with --allow-mass-revoke if this is intended)"
        )

    def to_dict(self) -> dict:
        return {
            "since": iso(self.since),
            "previously_active": self.previously_active,
            "revoking": self.revoking,
            "fraction": round(self.fraction, 6),
            "max_revoke_fraction": self.max_fraction,
            "tripped": self.tripped,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    now: datetime
    accounts: tuple[Account, ...]
    members: tuple[Member, ...]  # active students: sign-in map + data-access group
    notifications: tuple[Notification, ...]
    revocations: tuple[Account, ...]
    guard: Guard
    data_group: str

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(m.username for m in self.members)

    def to_dict(self) -> dict:
        return {
            "now": iso(self.now),
            "data_group": self.data_group,
            "summary": {
                "accounts": len(self.accounts),
                "active": len(self.members),
                "expired": len(self.accounts) - len(self.members),
                "notifications": len(self.notifications),
                "revocations": len(self.revocations),
            },
            "accounts": [a.to_dict() for a in self.accounts],
            "members": [m.to_dict() for m in self.members],
            "notifications": [n.to_dict() for n in self.notifications],
            "revocations": [a.to_dict() for a in self.revocations],
            "guard": self.guard.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)


def make_plan(
    students: Sequence[Student],
    config: Config,
    now: datetime,
    *,
    since: datetime | None = None,
    sent: AbstractSet[tuple[int, int, str]] = frozenset(),
) -> Plan:
    """Compute the desired state. ``sent`` holds the (student_id, admission, kind) of
    notifications already sent, so each is planned once per admission."""
    ordered = sorted(students, key=lambda s: s.student_id)
    accounts: list[Account] = []
    members: list[Member] = []
    notes: list[Notification] = []
    revocations: list[Account] = []
    previously_active = 0
    provisioning = timedelta(minutes=config.provisioning_minutes)
    expiry_window = timedelta(days=EXPIRY_NOTICE_DAYS)
    for s in ordered:
        active = s.is_active(now)
        acct = Account(s.student_id, s.username, config.uid(s.student_id), s.host, "active" if active else "expired", s.expires_at)
        accounts.append(acct)
        was_active = since is not None and s.is_active(since)
        previously_active += was_active
        if active:
            members.append(Member(s.student_id, s.username, s.identity, s.host, s.last_registered_at + provisioning))
            kind = "welcome" if s.admission == 1 else "readmission"
            if (s.student_id, s.admission, kind) not in sent:
                notes.append(Notification(s.student_id, s.username, s.admission, kind))
        else:
            if was_active:
                revocations.append(acct)
            if now - expiry_window < s.expires_at <= now and (s.student_id, s.admission, "expiry") not in sent:
                notes.append(Notification(s.student_id, s.username, s.admission, "expiry"))
    guard = Guard(since, previously_active, len(revocations), config.max_revoke_fraction)
    return Plan(now, tuple(accounts), tuple(members), tuple(notes), tuple(revocations), guard, config.data_group)


def check_guard(plan: Plan, allow_mass_revoke: bool = False) -> None:
    if plan.guard.tripped and not allow_mass_revoke:
        raise GuardError(plan.guard.message())


def render_table(rows: Iterable[Sequence[object]], header: Sequence[str]) -> str:
    data = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in header]
    for row in data:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(header)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in data]
    return "\n".join(out)


def plan_table(plan: Plan) -> str:
    members = {m.student_id: m for m in plan.members}
    due = {}
    for n in plan.notifications:
        due.setdefault(n.student_id, []).append(n.kind)
    revoked = {a.student_id for a in plan.revocations}
    rows = []
    for a in plan.accounts:
        m = members.get(a.student_id)
        rows.append(
            [
                a.username,
                a.uid,
                a.host,
                a.status,
                iso(a.expires_at),
                "yes" if m else "no",
                "revoke" if a.student_id in revoked else "",
                ",".join(due.get(a.student_id, [])),
            ]
        )
    s = plan.to_dict()["summary"]
    head = (
        f"plan at {iso(plan.now)}: {s['accounts']} accounts, {s['active']} active, {s['expired']} expired, "
        f"{s['notifications']} emails due, {s['revocations']} revocations; group {plan.data_group}"
    )
    table = render_table(rows, ["username", "uid", "host", "status", "expires_at", "access", "change", "email due"])
    g = plan.guard
    tail = f"guard: revoking {g.revoking} of {g.previously_active} previously active (limit {g.max_fraction:.0%})" + (
        " -> TRIPPED" if g.tripped else ""
    )
    return f"{head}\n{table}\n{tail}"
