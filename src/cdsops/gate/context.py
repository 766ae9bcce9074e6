"""What every request of the gate needs, built once per process by :func:`cdsops.gate.app.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import SESSION_COOKIE
from . import session as sessions
from .audit import AuditLog
from .config import GateConfig
from .server_state import RevokedSessions, SubjectBindings
from .signin_map import MapWatcher

__all__ = ["Gate", "cookie_value"]


def cookie_value(cookie_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header, or None."""
    prefix = name + "="
    for part in cookie_header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            return part[len(prefix):].strip('"')
    return None


@dataclass(frozen=True)
class Gate:
    cfg: GateConfig
    oidc: Any  # Authlib's Flask OAuth client for the issuer
    cookie_key: bytes
    hash_key: bytes
    watcher: MapWatcher
    revoked: RevokedSessions
    subjects: SubjectBindings
    audit: AuditLog
    clock: Callable[[], float]

    def signed_session(self, cookie_header: str) -> sessions.Session | None:
        """The session of a cookie with a valid signature, not expired and not signed out."""
        try:
            sess = sessions.verify(self.cookie_key, cookie_value(cookie_header, SESSION_COOKIE), self.clock())
        except sessions.SessionError:
            return None
        return None if self.revoked.is_revoked(sess.sid) else sess

    def current_session(self, cookie_header: str) -> sessions.Session | None:
        """:meth:`signed_session`, and the map still maps its hash to its username, ready."""
        sess = self.signed_session(cookie_header)
        if sess is None:
            return None
        entry = self.watcher.get().active.get(sess.hash)
        if entry is None or entry.username != sess.username or entry.ready_at > self.clock():
            return None
        return sess
