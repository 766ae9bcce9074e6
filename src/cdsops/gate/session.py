"""Signed, expiring session cookies: ``v1.<username>.<hash>.<expires>.<signature>``.

The signature is HMAC-SHA256 (base64url, unpadded) over everything before it, with a
key derived from the deployment's cookie key. Verifying costs one HMAC, so the auth
subrequest stays cheap. The cookie carries the username and the keyed identity hash
(never the email): the gate re-checks both against the current sign-in map on every
request, so a student removed from the map loses access at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = ["Session", "SessionError", "issue", "verify", "derive_key"]

_VERSION = "v1"
_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
_HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
MAX_COOKIE_LENGTH = 256


class SessionError(ValueError):
    """The cookie is missing, malformed, tampered with or expired; ``str()`` says which."""


@dataclass(frozen=True, slots=True)
class Session:
    username: str
    hash: str
    expires: int


def derive_key(master: bytes, purpose: str) -> bytes:
    """A sub-key of ``master`` for one purpose, so one secret file can serve several."""
    if len(master) < 32:
        raise ValueError("the cookie key must be at least 32 bytes")
    return hmac.new(master, f"cdsops-gate/{purpose}".encode(), hashlib.sha256).digest()


def _sign(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def issue(key: bytes, username: str, identity_hash: str, expires: int) -> str:
    if not _USERNAME_RE.match(username):
        raise ValueError(f"not a valid username: {username!r}")
    if not _HASH_RE.match(identity_hash):
        raise ValueError("identity hash must be 64 lower-case hex digits")
    payload = f"{_VERSION}.{username}.{identity_hash}.{int(expires)}"
    return f"{payload}.{_sign(key, payload)}"


def verify(key: bytes, value: str | None, now: float) -> Session:
    if not value:
        raise SessionError("no session cookie")
    if len(value) > MAX_COOKIE_LENGTH:
        raise SessionError("session cookie too long")
    payload, _, signature = value.rpartition(".")
    if not payload or not hmac.compare_digest(_sign(key, payload), signature):
        raise SessionError("session cookie signature does not match")
    parts = payload.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        raise SessionError("session cookie has an unknown format")
    _, username, identity_hash, expires_text = parts
    if not _USERNAME_RE.match(username) or not _HASH_RE.match(identity_hash) or not expires_text.isdigit():
        raise SessionError("session cookie has an unknown format")
    expires = int(expires_text)
    if expires <= now:
        raise SessionError("session cookie has expired")
    return Session(username, identity_hash, expires)
