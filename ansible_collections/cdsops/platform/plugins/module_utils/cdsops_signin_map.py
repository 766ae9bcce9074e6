# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""The sign-in map file on the compute host: validation, rendering, comparison, atomic write.

Standard library only: this runs on the managed host inside the ``cdsops_signin_map``
module. The gate (``cdsops.gate.signin_map``) reads the same format::

    {"active":[{"hash":"<64 hex>","ready_at":"2026-11-26T17:00:00Z","username":"s000042"},...],
     "expired":["<64 hex>",...],"format":"cdsops-signin-map/1"}

Active entries are sorted by username, expired hashes sorted; the file is one line of
compact JSON with sorted keys and a final newline, so equal content means equal bytes.
Nothing in it is an email address: ``hash`` is a keyed hash of the canonical identity.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import tempfile
from datetime import datetime, timezone

__metaclass__ = type

FORMAT = "cdsops-signin-map/1"
HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
MAX_LISTED = 50


class SigninMapError(ValueError):
    """The requested map is invalid; ``str()`` says which entry and why (never an identity)."""


def normalize_time(value, where):
    """ISO 8601 with an explicit offset -> ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise SigninMapError("%s: ready_at %r is not an ISO 8601 time" % (where, value)) from None
    else:
        raise SigninMapError("%s: ready_at is missing (an ISO 8601 UTC time is required)" % where)
    if when.tzinfo is None or when.utcoffset() is None:
        raise SigninMapError("%s: ready_at %r has no time zone (give it in UTC, e.g. ...Z)" % (where, value))
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_document(entries, expired):
    """Validate the requested map and return its canonical document (a dict).

    Refuses (``SigninMapError``): a malformed hash, username or time; the same hash or the
    same username twice among the active entries; an expired hash that is also active.
    """
    if not isinstance(entries, (list, tuple)):
        raise SigninMapError("entries must be a list of {hash, username, ready_at}")
    if expired is None:
        expired = []
    if not isinstance(expired, (list, tuple)):
        raise SigninMapError("expired must be a list of hashes")
    by_hash = {}
    by_user = {}
    active = []
    for i, item in enumerate(entries):
        where = "entries[%d]" % i
        if not isinstance(item, dict):
            raise SigninMapError("%s: must be a mapping with hash, username and ready_at" % where)
        unknown = sorted(set(item) - {"hash", "username", "ready_at"})
        if unknown:
            raise SigninMapError("%s: unknown key(s) %s" % (where, ", ".join(unknown)))
        h = item.get("hash")
        user = item.get("username")
        if not isinstance(user, str) or not USERNAME_RE.match(user):
            raise SigninMapError("%s: username %r is not a valid Linux user name" % (where, user))
        where = "%s (%s)" % (where, user)
        if not isinstance(h, str) or not HASH_RE.match(h):
            raise SigninMapError("%s: hash must be 64 lower-case hex digits (HMAC-SHA256)" % where)
        if h in by_hash:
            raise SigninMapError(
                "one identity appears twice: the same hash is given for %s and %s" % (by_hash[h], user))
        if user in by_user:
            raise SigninMapError("username %s appears twice (%s and entries[%d])" % (user, by_user[user], i))
        by_hash[h] = user
        by_user[user] = "entries[%d]" % i
        active.append({"hash": h, "ready_at": normalize_time(item.get("ready_at"), where), "username": user})
    seen_expired = set()
    for i, h in enumerate(expired):
        if not isinstance(h, str) or not HASH_RE.match(h):
            raise SigninMapError("expired[%d]: must be 64 lower-case hex digits (HMAC-SHA256)" % i)
        if h in by_hash:
            raise SigninMapError("expired[%d]: this hash is also active (as %s)" % (i, by_hash[h]))
        seen_expired.add(h)
    active.sort(key=lambda e: e["username"])
    return {"active": active, "expired": sorted(seen_expired), "format": FORMAT}


def restrict(current, requested):
    """The revocation-only step: ``current`` (the file's document, or None) with only what
    ``requested`` takes away, nothing it adds.

    Active entries of ``current`` stay only when ``requested`` still has the same hash
    active (the current entry is kept as it is: no new username or ready_at lands here);
    expired hashes are those of ``requested``. Used before the accounts are locked, so a
    crash at any point leaves less access, never more (new entries come in the full run
    after the accounts exist)."""
    wanted = set(e["hash"] for e in requested["active"])
    active = [e for e in (current or {}).get("active") or [] if isinstance(e, dict) and e.get("hash") in wanted]
    active.sort(key=lambda e: e.get("username") or "")
    return {"active": active, "expired": list(requested["expired"]), "format": FORMAT}


def render(document):
    return (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


def read_current(path):
    """(bytes, document) of the file at ``path``; (None, None) when missing; document None if unparsable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None, None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            doc = None
    except ValueError:
        doc = None
    return data, doc


def _index(document):
    if not document:
        return {}, set()
    active = {}
    for e in document.get("active") or []:
        if isinstance(e, dict) and isinstance(e.get("username"), str):
            active[e["username"]] = (e.get("hash"), e.get("ready_at"))
    return active, set(h for h in document.get("expired") or [] if isinstance(h, str))


def compare(before, after):
    """What changes between two documents, by username only (hashes are not listed)."""
    b_active, b_expired = _index(before)
    a_active, a_expired = _index(after)
    return {
        "active_before": len(b_active),
        "active_after": len(a_active),
        "expired_before": len(b_expired),
        "expired_after": len(a_expired),
        "added": sorted(set(a_active) - set(b_active)),
        "removed": sorted(set(b_active) - set(a_active)),
        "updated": sorted(u for u in set(a_active) & set(b_active) if a_active[u] != b_active[u]),
        "expired_added": len(a_expired - b_expired),
        "expired_removed": len(b_expired - a_expired),
    }


def _names(label, names):
    shown = ["%s %s" % (label, n) for n in names[:MAX_LISTED]]
    if len(names) > MAX_LISTED:
        shown.append("%s ... and %d more" % (label, len(names) - MAX_LISTED))
    return shown


def diff_text(summary):
    """(before, after) texts for Ansible's diff: counts, then changed usernames; never identities."""
    before = "active students: %d\nexpired identities: %d\n" % (summary["active_before"], summary["expired_before"])
    lines = ["active students: %d" % summary["active_after"], "expired identities: %d" % summary["expired_after"]]
    lines += _names("added:", summary["added"])
    lines += _names("removed:", summary["removed"])
    lines += _names("updated:", summary["updated"])
    return before, "\n".join(lines) + "\n"


def atomic_write(path, data, mode=0o640, uid=-1, gid=-1):
    """Write ``data`` to ``path`` atomically: temp file in the same directory with its final
    owner and mode, fsync, rename over the old file, fsync the directory. A reader sees the
    old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            if uid != -1 or gid != -1:
                os.fchown(fh.fileno(), uid, gid)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
