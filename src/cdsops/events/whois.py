"""``cdsops whois EMAIL|USERNAME|ID``: one person's registration, access and activity.

The support answer to "why can't I get in?" and the auditor's answer to "what did this
person do?": registration history, status and expiry, the last sign-ins and refused
sign-ins with their reasons, the last commands, cells and data reads, and the roster's
changes. An email is matched by its canonical identity (any alias finds the person). The
output carries the username and id, never the email or the name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..identity import InvalidEmail, canonicalize
from ..roster import Student, status_of
from ..times import iso
from .model import Event
from .store import EventStore

__all__ = ["WhoisError", "find_student", "whois", "render_text", "SECTIONS"]

#: output section -> the event kinds it lists
SECTIONS = {
    "signins": ("signin.allowed",),
    "refused_signins": ("signin.refused",),
    "sessions": ("session.start", "session.end"),
    "commands": ("command",),
    "cells": ("code",),
    "data_reads": ("data.read",),
}


class WhoisError(ValueError):
    """The argument is not a valid email, username or id."""


def find_student(students: Sequence[Student], who: str) -> Student | None:
    who = who.strip()
    if "@" in who:
        try:
            ident = canonicalize(who)
        except InvalidEmail as exc:
            raise WhoisError(f"not a valid email address: {exc}") from None
        return next((s for s in students if s.identity == ident), None)
    if who.isdigit():
        sid = int(who)
        return next((s for s in students if s.student_id == sid), None)
    return next((s for s in students if s.username == who), None)


def _event_line(e: Event) -> dict[str, Any]:
    out = {"at": iso(e.at), "host": e.host, "kind": e.kind}
    out.update(e.detail)
    return out


def whois(student: Student, changes: list[dict], events: EventStore, now: datetime, *, limit: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {
        "found": True,
        "student_id": student.student_id,
        "username": student.username,
        "host": student.host,
        "status": status_of(student, now),
        "expires_at": iso(student.expires_at),
        "registration": {
            "first_registered_at": iso(student.first_registered_at),
            "last_registered_at": iso(student.last_registered_at),
            "admission": student.admission,
            "admitted_at": iso(student.admitted_at),
            "agreements": [iso(t) for t in student.agreements],
        },
    }
    for name, kinds in SECTIONS.items():
        out[name] = [_event_line(e) for e in events.recent(student.student_id, kinds, limit)]
    out["changes"] = changes
    return out


def render_text(info: dict[str, Any]) -> str:
    reg = info["registration"]
    lines = [
        f"{info['username']} (student {info['student_id']}) on {info['host']}: {info['status']}, access until {info['expires_at']}",
        f"registered {reg['first_registered_at']}, last {reg['last_registered_at']} (admission {reg['admission']}, "
        f"{len(reg['agreements'])} agreement(s))",
    ]
    for name in SECTIONS:
        rows = info[name]
        lines.append(f"{name.replace('_', ' ')} (last {len(rows)}):" if rows else f"{name.replace('_', ' ')}: none")
        for r in rows:
            extra = {k: v for k, v in r.items() if k not in ("at", "host", "kind")}
            lines.append(f"  {r['at']} {r['host']} {r['kind']} {json.dumps(extra, sort_keys=True)}")
    lines.append(f"roster changes ({len(info['changes'])}):" if info["changes"] else "roster changes: none")
    for c in info["changes"]:
        lines.append(f"  {c['at']} {c['kind']} run {c['run_id']} {json.dumps(c.get('after'), sort_keys=True)}")
    return "\n".join(lines)
