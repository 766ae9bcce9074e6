"""Signed, expiring session cookies: ``v2.<username>.<hash>.<expires>.<sid>.<signature>``.

The signature is HMAC-SHA256 (base64url, unpadded) over everything before it, with a
key derived from the deployment's cookie key. Verifying costs one HMAC, so the auth
subrequest stays cheap. The cookie carries the username and the keyed identity hash
(never the email): the gate re-checks both against the current sign-in map on every
request, so a student removed from the map loses access at once. ``sid`` is a random
session id: signing out records it as revoked on the server (:mod:`.revocation`), so a
copy of the cookie stops working too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["Session", "SessionError", "issue", "verify", "derive_key", "new_session_id", "SID_RE"]

_VERSION = "v2"
_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
_HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
SID_RE = re.compile(r"[A-Za-z0-9_-]{22}\Z")  # 16 random bytes, base64url without padding
MAX_COOKIE_LENGTH = 256


class SessionError(ValueError):
    """The cookie is missing, malformed, tampered with or expired; ``str()`` says which."""


@dataclass(frozen=True, slots=True)
class Session:
    username: str
    hash: str
    expires: int
    sid: str


def derive_key(master: bytes, purpose: str) -> bytes:
    """A sub-key of ``master`` for one purpose, so one secret file can serve several."""
    if len(master) < 32:
        raise ValueError("the cookie key must be at least 32 bytes")
    return hmac.new(master, f"cdsops-gate/{purpose}".encode(), hashlib.sha256).digest()


def new_session_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def _sign(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def issue(key: bytes, username: str, identity_hash: str, expires: int, sid: str | None = None) -> str:
    """A signed cookie value; a new random session id unless ``sid`` is given."""
    if not _USERNAME_RE.match(username):
        raise ValueError(f"not a valid username: {username!r}")
    if not _HASH_RE.match(identity_hash):
        raise ValueError("identity hash must be 64 lower-case hex digits")
    sid = new_session_id() if sid is None else sid
    if not SID_RE.match(sid):
        raise ValueError("session id must be 22 base64url characters")
    payload = f"{_VERSION}.{username}.{identity_hash}.{int(expires)}.{sid}"
    return f"{payload}.{_sign(key, payload)}"


def verify(key: bytes, value: str | None, now: float) -> Session:
    """The session in a cookie value: signature, format and expiry checked (not revocation)."""
    if not value:
        raise SessionError("no session cookie")
    if len(value) > MAX_COOKIE_LENGTH:
        raise SessionError("session cookie too long")
    payload, _, signature = value.rpartition(".")
    if not payload or not hmac.compare_digest(_sign(key, payload), signature):
        raise SessionError("session cookie signature does not match")
    parts = payload.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        raise SessionError("session cookie has an unknown format")
    _, username, identity_hash, expires_text, sid = parts
    if not (_USERNAME_RE.match(username) and _HASH_RE.match(identity_hash) and expires_text.isdigit()
            and SID_RE.match(sid)):
        raise SessionError("session cookie has an unknown format")
    expires = int(expires_text)
    if expires <= now:
        raise SessionError("session cookie has expired")
    return Session(username, identity_hash, expires, sid)
