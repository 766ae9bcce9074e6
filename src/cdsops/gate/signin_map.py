"""The sign-in map as the gate reads it, and its reload when the file changes.

File format (written by the ``cdsops_signin_map`` Ansible module, atomically)::

    {"format": "cdsops-signin-map/1",
     "active": [{"hash": "<64 hex>", "username": "s000042", "ready_at": "2026-11-26T17:00:00Z"}, ...],
     "expired": ["<64 hex>", ...]}

``hash`` is ``identity_hash(canonical identity, key)``; nothing in the file is an email.
The gate refuses a map in which a hash or a username appears twice, or a hash is both
active and expired, and keeps serving the previous good map (logging why) when a new
one is invalid.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["FORMAT", "MapError", "Entry", "SigninMap", "MapWatcher", "parse_map", "decide"]

FORMAT = "cdsops-signin-map/1"
_HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")


class MapError(ValueError):
    """The sign-in map file is unreadable or invalid; ``str()`` says where and why."""


class Entry(NamedTuple):  # a tuple: 100,000 of them are built on every reload
    username: str
    ready_at: float  # POSIX seconds, UTC


@dataclass(frozen=True, slots=True)
class SigninMap:
    active: dict[str, Entry]
    expired: frozenset[str]

    @classmethod
    def empty(cls) -> SigninMap:
        return cls({}, frozenset())

    def __len__(self) -> int:
        return len(self.active)


def _parse_time(value: object, where: str) -> float:
    if not isinstance(value, str):
        raise MapError(f"{where}: ready_at must be an ISO 8601 UTC time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MapError(f"{where}: ready_at {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None or when.utcoffset() != UTC.utcoffset(None):
        raise MapError(f"{where}: ready_at must be in UTC")
    return when.timestamp()


def parse_map(data: bytes | str) -> SigninMap:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise MapError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MapError(f"not a sign-in map (format must be {FORMAT!r})")
    active_in, expired_in = doc.get("active", []), doc.get("expired", [])
    if not isinstance(active_in, list) or not isinstance(expired_in, list):
        raise MapError("'active' and 'expired' must be lists")
    active: dict[str, Entry] = {}
    usernames: set[str] = set()
    times: dict[str, float] = {}
    hash_ok, user_ok = _HASH_RE.match, _USERNAME_RE.match
    for i, item in enumerate(active_in):
        try:
            h, user, ready = item["hash"], item["username"], item["ready_at"]
        except (TypeError, KeyError):
            raise MapError(f"active[{i}]: must be an object with hash, username and ready_at") from None
        if type(h) is not str or not hash_ok(h):
            raise MapError(f"active[{i}]: hash must be 64 lower-case hex digits")
        if type(user) is not str or not user_ok(user):
            raise MapError(f"active[{i}]: username is not a valid Linux user name")
        if h in active:
            raise MapError(f"active[{i}]: the same identity hash appears twice")
        if user in usernames:
            raise MapError(f"active[{i}]: username {user} appears twice")
        usernames.add(user)
        when = times.get(ready) if type(ready) is str else None
        if when is None:
            when = times[ready] = _parse_time(ready, f"active[{i}]")
        active[h] = Entry(user, when)
    expired: set[str] = set()
    for i, h in enumerate(expired_in):
        if not isinstance(h, str) or not _HASH_RE.match(h):
            raise MapError(f"expired[{i}]: must be 64 lower-case hex digits")
        if h in active:
            raise MapError(f"expired[{i}]: hash is also active")
        expired.add(h)
    return SigninMap(active, frozenset(expired))


def decide(signin_map: SigninMap, identity_hash: str, now: float) -> tuple[str, Entry | None]:
    """The outcome for one identity: ``success``, ``preparing``, ``expired`` or ``unknown``."""
    entry = signin_map.active.get(identity_hash)
    if entry is not None:
        return ("success" if entry.ready_at <= now else "preparing"), entry
    if identity_hash in signin_map.expired:
        return "expired", None
    return "unknown", None


class MapWatcher:
    """Serves the current map; reloads it when the file's inode, size or mtime changes.

    The check is one ``stat`` per call. A reload parses the new file completely before
    swapping one reference, so concurrent requests see either the old or the new map,
    never a half-read one, and none fails. With ``background=True`` (the gate) the parse
    runs in a thread while requests go on being answered from the previous map; the
    very first load, a vanished file and small files (under ``background_min_bytes``,
    about 7,000 students, parsed in a few milliseconds) are handled at once, so a
    revocation in a small deployment applies to the very next request. An unreadable or invalid
    file keeps the previous good map and is reported once through ``on_error``.
    """

    def __init__(self, path: str, on_error: Callable[[str], None] | None = None,
                 background: bool = False, background_min_bytes: int = 1_000_000) -> None:
        self.path = path
        self.background = background
        self.background_min_bytes = background_min_bytes
        self._on_error = on_error or (lambda message: None)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = (-1, -1, -1)  # nothing read yet
        self._failed_signature: tuple[int, int, int] | None = None
        self._loading = False
        self._loaded_once = False
        self._map = SigninMap.empty()
        self.reloads = 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self) -> SigninMap:
        sig = self._stat()
        if sig == self._signature or (sig is not None and sig == self._failed_signature):
            return self._map
        if sig is not None and self.background and self._loaded_once and sig[1] >= self.background_min_bytes:
            with self._lock:
                if self._loading:
                    return self._map
                self._loading = True
            threading.Thread(target=self._reload_in_background, name="signin-map-reload", daemon=True).start()
            return self._map
        with self._lock:
            self._reload()
        return self._map

    def _reload_in_background(self) -> None:
        try:
            with self._lock:
                pass  # a synchronous reload in progress finishes first
            self._reload()
        finally:
            self._loading = False

    def _reload(self) -> None:
        sig = self._stat()
        if sig == self._signature:
            return
        if sig is None:
            if self._failed_signature != (0, 0, 0):
                self._on_error(f"sign-in map {self.path} is missing: nobody can sign in")
            self._failed_signature = (0, 0, 0)
            self._signature = None
            self._map = SigninMap.empty()
            return
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                sig = (st.st_ino, st.st_size, st.st_mtime_ns)  # exactly the file we read
                data = fh.read()
            new = parse_map(data)
        except (OSError, MapError) as exc:
            if sig != self._failed_signature:
                self._on_error(f"sign-in map {self.path} not loaded, keeping the previous one: {exc}")
            self._failed_signature = sig
            return
        self._map = new  # one reference swap: readers see the old map or the new one
        self._signature = sig
        self._failed_signature = None
        self._loaded_once = True
        self.reloads += 1
