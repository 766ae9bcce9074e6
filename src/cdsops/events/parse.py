"""Journal entries and audit records in, events out.

Input lines, one record each, in any mix:

- ``journalctl -o json`` / journal export lines: a JSON object with ``__CURSOR``,
  ``__REALTIME_TIMESTAMP``, ``_HOSTNAME``, ``SYSLOG_IDENTIFIER`` and ``MESSAGE``:
  ``cdsops-gate`` (sign-in decisions), ``cdsops-code`` (executed cells and console
  commands), ``cdsops-session`` (session start and end), and auditd records as journald's
  audit integration stores them (``_TRANSPORT=audit``, ``_AUDIT_ID``, ``_AUDIT_TYPE_NAME``,
  ``MESSAGE`` = the record's text);
- auditd's own log lines (``[node=HOST ]type=SYSCALL msg=audit(SECONDS:SERIAL): ...``).

Only the records cdsops asks for become events: auditd records carrying the keys
``cdsops_student_exec`` (command) and ``cdsops_data_read`` (data.read), joined with the
EXECVE, CWD and PATH records of the same audit event. Everything else is counted as
skipped. A line that is not valid JSON (or a JSON object without a cursor) is malformed; one
cut short (no closing brace) is truncated; both are counted and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..times import parse_iso_lenient
from .model import DETAIL_LIMIT, USERNAME_RE, Event

__all__ = ["ParseCounts", "parse_lines", "parse_audit_fields", "AUDIT_KEYS", "SENDER_UID"]

AUDIT_KEYS = {"cdsops_student_exec": "command", "cdsops_data_read": "data.read"}
_GATE_ALLOWED = {"success"}
_AUDIT_LINE = re.compile(r"(?:node=(?P<node>\S+) )?type=(?P<type>\S+) msg=audit\((?P<sec>\d+)\.(?P<ms>\d+):(?P<serial>\d+)\): ?(?P<rest>.*)\Z")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
_HEX = re.compile(r"(?:[0-9A-F]{2})+\Z")
#: audit fields holding untrusted strings: quoted, or hex when they contain odd characters
_STRING_FIELDS = {"exe", "comm", "cwd", "name", "proctitle", "key"}
_MAX_PENDING = 10000
#: detail key carrying the journal's _UID of an application line until ingest checks it
SENDER_UID = "_sender_uid"


@dataclass
class ParseCounts:
    lines: int = 0
    malformed: int = 0
    truncated: int = 0
    skipped: int = 0
    last_cursor: str | None = None
    last_time: datetime | None = None  # audit log rows: the newest timestamp read (the watermark)
    hosts: dict[str, datetime] = field(default_factory=dict)  # host -> newest journal entry read from it

    def to_dict(self) -> dict[str, int]:
        return {"lines": self.lines, "malformed": self.malformed, "truncated": self.truncated, "skipped": self.skipped}


def _audit_value(name: str, raw: str) -> str:
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return raw[1:-1]
    if (name in _STRING_FIELDS or re.fullmatch(r"a\d+", name)) and _HEX.match(raw):
        try:
            return bytes.fromhex(raw).decode("utf-8", "replace").replace("\x00", " ").strip()
        except ValueError:
            return raw
    return raw


def parse_audit_fields(text: str) -> dict[str, str]:
    """``key=value`` pairs of one audit record's text, string values unquoted or hex-decoded."""
    return {k: _audit_value(k, v) for k, v in _FIELD.findall(text)}


@dataclass
class _AuditEvent:
    key: str
    at: datetime
    host: str
    kind: str
    fields: dict[str, str]
    argv: list[str] = field(default_factory=list)
    cwd: str | None = None
    paths: list[tuple[str, str]] = field(default_factory=list)  # (name, nametype)

    def event(self) -> Event:
        f = self.fields
        detail: dict[str, Any] = {"uid": _int(f.get("uid")), "success": f.get("success") == "yes"}
        if self.kind == "command":
            detail["exe"] = f.get("exe", "")
            argv = " ".join(self.argv) if self.argv else f.get("comm", "")
            detail["argv"] = argv[:DETAIL_LIMIT]
            if len(argv) > DETAIL_LIMIT:
                detail["truncated"] = True
        else:
            detail["path"] = self._path()
            detail["exe"] = f.get("exe", "")
        if self.cwd:
            detail["cwd"] = self.cwd
        return Event(self.key, self.at, self.host, self.kind, None, None, detail)

    def _path(self) -> str:
        names = [n for n, t in self.paths if t == "NORMAL"] or [n for n, _ in self.paths]
        name = names[0] if names else ""
        if name and not name.startswith("/") and self.cwd:
            name = self.cwd.rstrip("/") + "/" + name
        return name[:DETAIL_LIMIT]


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class _Assembler:
    """Joins the records of one audit event (SYSCALL + EXECVE + CWD + PATH ...) by serial."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], _AuditEvent] = {}

    def add(self, host: str, serial: str, rtype: str, text: str, at: datetime, key: str) -> Iterator[Event]:
        ident = (host, serial)
        if rtype == "SYSCALL":
            fields = parse_audit_fields(text)
            kind = AUDIT_KEYS.get(fields.get("key", ""))
            if kind is None:
                return
            yield from self.flush_one(ident)
            self.pending[ident] = _AuditEvent(key, at, host, kind, fields)
            if len(self.pending) > _MAX_PENDING:
                yield from self.flush_one(next(iter(self.pending)))
            return
        ev = self.pending.get(ident)
        if ev is None:
            return
        if rtype == "EOE":
            yield from self.flush_one(ident)
            return
        fields = parse_audit_fields(text)
        if rtype == "EXECVE":
            argc = _int(fields.get("argc")) or 0
            ev.argv = [fields.get(f"a{i}", "") for i in range(argc)]
        elif rtype == "CWD":
            ev.cwd = fields.get("cwd")
        elif rtype == "PATH":
            ev.paths.append((fields.get("name", ""), fields.get("nametype", "")))

    def flush_one(self, ident: tuple[str, str]) -> Iterator[Event]:
        ev = self.pending.pop(ident, None)
        if ev is not None:
            yield ev.event()

    def flush(self) -> Iterator[Event]:
        for ident in list(self.pending):
            yield from self.flush_one(ident)


def parse_lines(lines: Iterable[str], counts: ParseCounts, *, default_host: str) -> Iterator[Event]:
    """Events (usernames not yet resolved to student ids) from ``lines``; ``counts`` is updated."""
    asm = _Assembler()
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        counts.lines += 1
        if line.startswith("{"):
            yield from _journal_line(line, counts, asm)
        elif "msg=audit(" in line:
            yield from _auditd_line(line, counts, asm, default_host)
        else:
            counts.malformed += 1
    yield from asm.flush()


def _journal_line(line: str, counts: ParseCounts, asm: _Assembler) -> Iterator[Event]:
    try:
        entry = json.loads(line)
    except ValueError:
        if line.endswith("}"):
            counts.malformed += 1
        else:
            counts.truncated += 1
        return
    if not isinstance(entry, dict) or not isinstance(entry.get("__CURSOR"), str):
        counts.malformed += 1
        return
    counts.last_cursor = entry["__CURSOR"]
    try:
        host = str(entry.get("_HOSTNAME") or "unknown")
        at = _entry_time(entry)
        prev = counts.hosts.get(host)
        if prev is None or at > prev:
            counts.hosts[host] = at
        events = list(_journal_entry(entry, asm, host, at))
    except (ValueError, TypeError, KeyError):
        counts.malformed += 1
        return
    if not events and not _is_audit(entry):
        counts.skipped += 1
    yield from events


def _is_audit(entry: dict) -> bool:
    return entry.get("_TRANSPORT") == "audit"


def _message(entry: dict) -> str:
    msg = entry.get("MESSAGE")
    if isinstance(msg, list):  # journald's form for non-UTF-8 messages: a byte array
        return bytes(msg).decode("utf-8", "replace")
    if not isinstance(msg, str):
        raise ValueError("MESSAGE is missing")
    return msg


def _entry_time(entry: dict) -> datetime:
    us = entry.get("_SOURCE_REALTIME_TIMESTAMP") or entry["__REALTIME_TIMESTAMP"]
    return datetime.fromtimestamp(int(us) / 1e6, tz=UTC)


def _entry_key(entry: dict) -> str:
    """The event key of a journal entry: the same for every copy of the entry. The receiver
    gives an entry that journal-upload sent twice (it resends what the receiver wrote but did not
    acknowledge before it died) two cursors, but both copies keep the sender's boot id, monotonic
    time and message. Without those fields (a local export) the cursor is the key."""
    boot, mono = entry.get("_BOOT_ID"), entry.get("__MONOTONIC_TIMESTAMP")
    if isinstance(boot, str) and isinstance(mono, str) and boot and mono:
        digest = hashlib.sha256(json.dumps(entry.get("MESSAGE")).encode()).hexdigest()[:16]
        return f"j:{entry.get('_HOSTNAME', '')}:{boot}:{mono}:{digest}"
    return entry["__CURSOR"]


def _journal_entry(entry: dict, asm: _Assembler, host: str, at: datetime) -> Iterator[Event]:
    cursor = _entry_key(entry)
    if _is_audit(entry):
        text = _message(entry)
        rtype = str(entry.get("_AUDIT_TYPE_NAME") or text.split(" ", 1)[0])
        if text.startswith(rtype + " "):
            text = text[len(rtype) + 1:]
        serial = str(entry.get("_AUDIT_ID") or "")
        yield from asm.add(host, serial, rtype, text, at, cursor)
        return
    ident = entry.get("SYSLOG_IDENTIFIER")
    if ident not in ("cdsops-gate", "cdsops-code", "cdsops-session"):
        return
    msg = _message(entry).strip()
    if not msg.startswith("{"):
        return  # the gate's other output (startup, errors): not a decision
    record = json.loads(msg)
    if not isinstance(record, dict):
        raise ValueError("not an object")
    ev = _app_event(ident, record, host, cursor, at)
    if ev is not None:
        if "_UID" in entry:  # who wrote it, as journald saw it: checked against the username (ingest.resolve)
            ev.detail[SENDER_UID] = int(entry["_UID"])
        yield ev


def _app_event(ident: str, rec: dict, host: str, key: str, fallback: datetime) -> Event | None:
    at = parse_iso_lenient(rec.get("ts")) or fallback
    username = rec.get("username")
    if username is not None and (not isinstance(username, str) or not USERNAME_RE.match(username)):
        raise ValueError("username is not a cdsops username")  # an email is never stored
    if ident == "cdsops-gate":
        if rec.get("event") != "signin":
            return None
        outcome = str(rec.get("outcome", ""))
        # a sign-out is the end of the student's session, not a refused sign-in
        kind = "session.end" if outcome == "signout" else "signin.allowed" if outcome in _GATE_ALLOWED else "signin.refused"
        detail: dict[str, Any] = {"outcome": outcome}
        if rec.get("reason"):
            detail["reason"] = str(rec["reason"])[:500]
        if rec.get("hash"):
            detail["hash"] = str(rec["hash"])[:128]
        return Event(key, at, host, kind, username, None, detail)
    if ident == "cdsops-code":
        if rec.get("event") != "code" or not username:
            raise ValueError("not a code record")
        code = str(rec.get("code", ""))
        detail = {"kernel": str(rec.get("kernel", "")), "code": code[:DETAIL_LIMIT], "truncated": bool(rec.get("truncated")) or len(code) > DETAIL_LIMIT}
        return Event(key, at, host, "code", username, None, detail)
    kind = rec.get("event")
    if kind not in ("session.start", "session.end") or not username:
        raise ValueError("not a session record")
    return Event(key, at, host, kind, username, None, {"profile": str(rec.get("profile", ""))})


def _auditd_line(line: str, counts: ParseCounts, asm: _Assembler, default_host: str) -> Iterator[Event]:
    m = _AUDIT_LINE.match(line)
    if not m:
        counts.malformed += 1
        return
    host = m["node"] or default_host
    at = datetime.fromtimestamp(int(m["sec"]) + int(m["ms"]) / 1000, tz=UTC)
    key = f"audit:{host}:{m['sec']}.{m['ms']}:{m['serial']}"
    before = len(asm.pending)
    events = list(asm.add(host, m["serial"], m["type"], m["rest"], at, key))
    if m["type"] == "SYSCALL" and len(asm.pending) <= before and not events:
        counts.skipped += 1
    yield from events
