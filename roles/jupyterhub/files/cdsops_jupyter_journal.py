"""One JSON line into the systemd journal under a SYSLOG_IDENTIFIER (standard library only).

Used by the hub (session start/end, ``cdsops-session``) and by each student's server
(executed code, ``cdsops-code``). journald adds the trusted ``_UID``/``_PID`` fields itself,
so a line a student forges from their own server still names the student's uid.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import struct
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def now_iso() -> str:
    """The current time, ISO 8601 UTC with a Z."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _field(name: str, value: str) -> bytes:
    data = value.encode("utf-8")
    if b"\n" in data:  # journald's binary-safe form: NAME\n<u64 le length><value>\n
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def send(identifier: str, record: dict, socket_path: str = JOURNAL_SOCKET) -> bool:
    """Write ``record`` as one JSON MESSAGE; False (and a line on stderr) when journald is away."""
    message = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    payload = _field("SYSLOG_IDENTIFIER", identifier) + _field("PRIORITY", "6") + _field("MESSAGE", message)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, socket_path)
        return True
    except OSError as exc:
        print(f"{identifier}: cannot write to the journal ({exc}): {message}", file=sys.stderr, flush=True)
        return False
