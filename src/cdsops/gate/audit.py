"""Audit lines: one JSON object per sign-in attempt on stdout (journald under systemd).

Fields: ``ts`` (UTC, ISO 8601), ``event`` ("signin"), ``outcome`` (success, unknown,
expired, preparing, unverified, subject_mismatch, error, and signout for a sign-out),
``username`` when known, ``hash`` (the keyed
identity hash) when the email could be canonicalized, ``reason`` for errors and refusals. Never an
email address or a name: callers pass only these fields.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO

from ..times import format_iso, utcnow

__all__ = ["OUTCOMES", "AuditLog"]

OUTCOMES = frozenset({"success", "unknown", "expired", "preparing", "unverified", "subject_mismatch", "error",
                      "signout"})


class AuditLog:
    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def signin(self, outcome: str, *, username: str | None = None, identity_hash: str | None = None,
               reason: str | None = None) -> dict[str, object]:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown audit outcome {outcome!r}")
        record: dict[str, object] = {
            "ts": format_iso(utcnow(), "milliseconds"),
            "event": "signin",
            "outcome": outcome,
            "pid": os.getpid(),
        }
        if username:
            record["username"] = username
        if identity_hash:
            record["hash"] = identity_hash
        if reason:
            record["reason"] = reason
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()
        return record
