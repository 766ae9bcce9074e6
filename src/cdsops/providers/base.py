"""Small interfaces every data-access and notification provider implements.

* :class:`GroupProvider` - the members of the data-access group (Google Group or Linux group).
* :class:`AccessProvider` - the group holds the configured roles on the project and datasets.
* :class:`EmailProvider` - send one rendered message.
* :class:`NotificationLedger` - what was sent, keyed by (student_id, admission, kind).

Reports are frozen dataclasses; they carry identities only in ``added``/``removed`` so the
caller can record each change exactly once. Providers never log addresses or names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ProviderError",
    "QuotaExceeded",
    "LimitExceeded",
    "VerificationFailed",
    "SyncReport",
    "AccessChange",
    "AccessReport",
    "EmailMessage",
    "NotificationKey",
    "GroupProvider",
    "AccessProvider",
    "EmailProvider",
    "NotificationLedger",
]


class ProviderError(RuntimeError):
    """A provider could not finish; ``str()`` says what and whether a rerun will resume."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report  # what was done before the error (partial progress)


class QuotaExceeded(ProviderError):
    """The API quota is used up: stop now; the next run resumes from the real state."""


class LimitExceeded(ProviderError):
    """The change would exceed a documented limit; nothing was sent."""


class VerificationFailed(ProviderError):
    """The state read back after writing is not the state written."""


@dataclass(frozen=True)
class SyncReport:
    """Outcome of a group sync. ``added``/``removed`` list the members changed (sorted)."""

    group: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    api_calls: int = 0
    http_requests: int = 0
    dry_run: bool = False
    unmanaged: int = 0  # owners, managers, nested groups: never touched

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def summary(self) -> dict[str, Any]:
        """Counts only: safe to log."""
        return {
            "group_changes": {"added": len(self.added), "removed": len(self.removed), "unchanged": self.unchanged},
            "api_calls": self.api_calls,
            "http_requests": self.http_requests,
            "dry_run": self.dry_run,
            "unmanaged": self.unmanaged,
        }


@dataclass(frozen=True)
class AccessChange:
    """Roles the group holds on one resource, before and after."""

    resource: str  # "projects/P" or "datasets/P/D" or a local path
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class AccessReport:
    changes: tuple[AccessChange, ...] = ()
    api_calls: int = 0
    conflicts_retried: int = 0
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.changes)

    def diff(self) -> dict[str, Any]:
        """Ansible-style diff: before/after per resource."""
        return {
            "before": {c.resource: list(c.before) for c in self.changes},
            "after": {c.resource: list(c.after) for c in self.changes},
        }


@dataclass(frozen=True)
class NotificationKey:
    student_id: int
    admission: str  # e.g. the agreement time that opened this admission, ISO-8601
    kind: str  # welcome | readmission | expiry

    def __post_init__(self) -> None:
        if not isinstance(self.student_id, int) or self.student_id < 0:
            raise ValueError("student_id must be a non-negative whole number")
        if not isinstance(self.admission, str) or not self.admission:
            raise ValueError("admission must be a non-empty string")
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("kind must be a non-empty string")

    def __str__(self) -> str:  # safe to log: no address, no name
        return f"{self.kind}/{self.student_id}/{self.admission}"


@dataclass(frozen=True)
class EmailMessage:
    to: str = field(repr=False)
    subject: str = field(repr=False)
    text: str = field(repr=False)
    key: NotificationKey | None = None
    html: str | None = field(default=None, repr=False)


@runtime_checkable
class GroupProvider(Protocol):
    def list_members(self) -> list[str]:
        """Current managed members, canonical and sorted."""

    def sync(self, desired: Iterable[str], dry_run: bool = False) -> SyncReport:
        """Make the members equal ``desired``, sending only the differences."""


@runtime_checkable
class AccessProvider(Protocol):
    def ensure(self, dry_run: bool = False) -> AccessReport:
        """Bind the configured roles to the group on every configured resource."""


@runtime_checkable
class EmailProvider(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Send one message or raise :class:`ProviderError`."""


@runtime_checkable
class NotificationLedger(Protocol):
    def claim(self, key: NotificationKey) -> bool:
        """Record the intent to send; False when ``key`` was already sent or is in flight."""

    def mark_sent(self, key: NotificationKey) -> None:
        """Record that the message for ``key`` was accepted by the mail service."""

    def mark_failed(self, key: NotificationKey, error: str) -> None:
        """Record a definite failure: the next run may try again."""

    def status(self, key: NotificationKey) -> str | None:
        """``sending``, ``sent``, ``failed`` or None."""
