"""One audit event: what the events table holds per row."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..times import format_iso

__all__ = ["KINDS", "Event", "USERNAME_RE", "DETAIL_LIMIT"]

KINDS = (
    "signin.allowed",
    "signin.refused",
    "command",
    "code",
    "data.read",
    "session.start",
    "session.end",
)

#: a Linux username as cdsops makes them; anything else (an email above all) is refused
USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
#: longest text kept in one detail field (code cells are cut at 4096 by the IDE already)
DETAIL_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Event:
    key: str  # unique: the journal cursor, or the log entry's insert id
    at: datetime  # aware, UTC
    host: str
    kind: str
    username: str | None
    student_id: int | None
    detail: dict[str, Any]

    def detail_json(self) -> str:
        return json.dumps(self.detail, sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": format_iso(self.at),
            "host": self.host,
            "kind": self.kind,
            "username": self.username,
            "student_id": self.student_id,
            "detail": self.detail,
        }


# The kinds that count as a student's activity (the report's and whois' queries).
ACTIVITY_KINDS = ("signin.allowed", "command", "code", "data.read", "session.start")
