"""The gate's own server-side state under its state directory (``/var/lib/cdsops-gate``).

Plain files, so every gunicorn worker sees the same state, it survives a restart, and
support can read or edit it with ordinary tools (no email is ever stored):

- ``revoked/<session id>``: an empty file per session signed out before its expiry, its
  mtime the session's expiry. The auth subrequest checks it with one ``stat``; entries
  are removed once their session would have expired anyway (at start and on every
  sign-out), so the directory holds at most the sessions signed out within one session
  lifetime.
- ``subjects/<username>``: the account's binding to the provider's stable subject
  (``sub``) made at its first sign-in, as a keyed hash: ``{"format", "subject",
  "key_id", "bound_at"}``. A later sign-in to the same account with a different subject
  is refused. Support removes the file (``cdsops-gate --reset-subject USERNAME``) to let
  the next sign-in bind again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import tempfile

from ..times import format_iso, from_epoch
from .session import SID_RE

__all__ = ["RevokedSessions", "SubjectBindings", "StateError", "subject_hash", "key_id"]

_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
BINDING_FORMAT = "cdsops-gate-subject/1"
_UNREADABLE: dict[str, str] = {"format": "unreadable"}


class StateError(OSError):
    """The state directory cannot be used; ``str()`` says which path and why."""


def _ensure_dir(path: str) -> str:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the gate's state directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"the gate's state directory {path} is not writable by this user")
    return path


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def subject_hash(hash_key: bytes, issuer: str, subject: str) -> str:
    """The keyed hash of an issuer's subject identifier (a sub-key of the identity-hash key)."""
    sub_key = hmac.new(hash_key, b"cdsops-gate/subject", hashlib.sha256).digest()
    return hmac.new(sub_key, f"{issuer}\n{subject}".encode(), hashlib.sha256).hexdigest()


def key_id(hash_key: bytes) -> str:
    """A short fingerprint of the identity-hash key: bindings made under another key are stale."""
    return hmac.new(hash_key, b"cdsops-gate/key-id", hashlib.sha256).hexdigest()[:16]


class RevokedSessions:
    """Session ids signed out before they expired (``<state_dir>/revoked``)."""

    def __init__(self, state_dir: str) -> None:
        self.directory = _ensure_dir(os.path.join(state_dir, "revoked"))

    def is_revoked(self, sid: str) -> bool:
        """One ``stat``; anything but "no such file" counts as revoked (fail closed)."""
        if not SID_RE.match(sid):
            return True
        try:
            os.stat(os.path.join(self.directory, sid))
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return True

    def revoke(self, sid: str, expires: int, now: float) -> None:
        if not SID_RE.match(sid):
            raise ValueError("not a session id")
        path = os.path.join(self.directory, sid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(path, (expires, expires))
        _fsync_dir(self.directory)
        self.sweep(now)

    def sweep(self, now: float) -> int:
        """Remove entries whose session has expired anyway; the number removed."""
        removed = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # another worker swept it first
                    if entry.stat(follow_symlinks=False).st_mtime <= now:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def __len__(self) -> int:
        return sum(1 for _ in os.scandir(self.directory))


class SubjectBindings:
    """Each account's provider subject, bound at its first sign-in (``<state_dir>/subjects``)."""

    def __init__(self, state_dir: str, key_fingerprint: str) -> None:
        self.directory = _ensure_dir(os.path.join(state_dir, "subjects"))
        self.key_id = key_fingerprint

    def path(self, username: str) -> str:
        if not _USERNAME_RE.match(username):
            raise ValueError(f"not a valid username: {username!r}")
        return os.path.join(self.directory, username)

    def check_or_bind(self, username: str, subject: str, now: float) -> str | None:
        """None when ``subject`` is (now) the account's subject, else why it is refused.

        The first sign-in binds; bindings made under another identity-hash key are
        replaced (after a key change no stored hash can match). Two first sign-ins racing
        each other: one binding wins (``link`` never replaces), the other is compared.
        """
        bound = self._read(username)
        if bound is None or (bound is not _UNREADABLE and bound.get("key_id") != self.key_id):
            self._write(username, subject, now, replace=bound is not None)
            bound = self._read(username)
        if bound is None or bound.get("format") != BINDING_FORMAT:
            return "the subject binding cannot be read"
        if not hmac.compare_digest(str(bound.get("subject", "")), subject):
            return f"subject differs from the one bound at the first sign-in ({bound.get('bound_at', '?')})"
        return None

    def reset(self, username: str) -> bool:
        """Remove the account's binding (support); True when there was one."""
        try:
            os.unlink(self.path(username))
        except FileNotFoundError:
            return False
        _fsync_dir(self.directory)
        return True

    def _read(self, username: str) -> dict | None:
        try:
            with open(self.path(username), "rb") as fh:
                doc = json.loads(fh.read(4096))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != BINDING_FORMAT:
            return _UNREADABLE  # never replaced by a sign-in: support looks at it
        return doc

    def _write(self, username: str, subject: str, now: float, *, replace: bool) -> None:
        when = format_iso(from_epoch(now), "seconds")
        doc = {"format": BINDING_FORMAT, "subject": subject, "key_id": self.key_id, "bound_at": when}
        fd, tmp = tempfile.mkstemp(prefix=".bind-", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, self.path(username))
            else:
                with contextlib.suppress(FileExistsError):  # a concurrent first sign-in bound it first
                    os.link(tmp, self.path(username))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(self.directory)
