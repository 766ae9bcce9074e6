"""Synthetic journal lines in the contract formats, for tests, the benchmark and the demo.

Each function returns journal export objects (``journalctl -o json`` shape) with a unique
``__CURSOR``; :func:`dumps` turns them into lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..times import format_iso

__all__ = ["app_entry", "signin", "code", "session", "audit_exec", "data_read", "dumps", "auditd_lines"]

_SEQ = [0]


def _cursor(host: str) -> str:
    _SEQ[0] += 1
    return f"s=synthetic;i={_SEQ[0]:x};h={host}"


def _us(at: datetime) -> str:
    return str(int(at.timestamp() * 1_000_000))



def app_entry(ident: str, message: dict[str, Any], at: datetime, host: str = "compute", cursor: str | None = None) -> dict[str, Any]:
    return {
        "__CURSOR": cursor or _cursor(host),
        "__REALTIME_TIMESTAMP": _us(at),
        "_HOSTNAME": host,
        "SYSLOG_IDENTIFIER": ident,
        "_TRANSPORT": "stdout",
        "MESSAGE": json.dumps(message, sort_keys=True, separators=(",", ":")),
    }


def signin(username: str | None, outcome: str, at: datetime, host: str = "compute", reason: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"ts": format_iso(at, "milliseconds"), "event": "signin", "outcome": outcome, "pid": 1}
    if username:
        msg["username"] = username
    else:
        msg["hash"] = "f" * 16
    if reason:
        msg["reason"] = reason
    return app_entry("cdsops-gate", msg, at, host)


def code(username: str, text: str, at: datetime, host: str = "compute", kernel: str = "ir") -> dict[str, Any]:
    msg = {"event": "code", "ts": format_iso(at, "milliseconds"), "username": username, "kernel": kernel, "code": text, "truncated": False}
    return app_entry("cdsops-code", msg, at, host)


def session(username: str, event: str, at: datetime, host: str = "compute", profile: str = "jupyter") -> dict[str, Any]:
    return app_entry("cdsops-session", {"event": event, "ts": format_iso(at, "milliseconds"), "username": username, "profile": profile}, at, host)


def _audit(rtype: str, text: str, serial: int, at: datetime, host: str) -> dict[str, Any]:
    return {
        "__CURSOR": _cursor(host),
        "__REALTIME_TIMESTAMP": _us(at),
        "_HOSTNAME": host,
        "_TRANSPORT": "audit",
        "_AUDIT_ID": str(serial),
        "_AUDIT_TYPE_NAME": rtype,
        "SYSLOG_IDENTIFIER": "audit",
        "MESSAGE": f"{rtype} {text}",
    }


def audit_exec(uid: int, argv: list[str], serial: int, at: datetime, host: str = "compute") -> list[dict[str, Any]]:
    exe = "/usr/bin/" + argv[0].rsplit("/", 1)[-1]
    args = " ".join(f'a{i}="{a}"' if " " not in a else f"a{i}={a.encode().hex().upper()}" for i, a in enumerate(argv))
    return [
        _audit("SYSCALL", f'arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=2 auid=4294967295 uid={uid} gid={uid} '
               f'euid={uid} comm="{argv[0][:15]}" exe="{exe}" key="cdsops_student_exec"', serial, at, host),
        _audit("EXECVE", f"argc={len(argv)} {args}", serial, at, host),
        _audit("CWD", f'cwd="/home/s{uid % 1000000:06d}"', serial, at, host),
        _audit("PROCTITLE", "proctitle=6C73", serial, at, host),
    ]


def data_read(uid: int, path: str, serial: int, at: datetime, host: str = "compute") -> list[dict[str, Any]]:
    return [
        _audit("SYSCALL", f'arch=c000003e syscall=257 success=yes exit=3 ppid=1 pid=2 uid={uid} gid={uid} comm="R" '
               f'exe="/usr/lib/R/bin/exec/R" key="cdsops_data_read"', serial, at, host),
        _audit("CWD", 'cwd="/srv/cdsdata"', serial, at, host),
        _audit("PATH", f'item=0 name="{path}" inode=1 dev=00:01 mode=0100640 nametype=NORMAL', serial, at, host),
    ]


def auditd_lines(uid: int, argv: list[str], serial: int, at: datetime, node: str | None = "compute") -> list[str]:
    """The same command as auditd's log file holds it (``log_format = ENRICHED`` adds node=)."""
    stamp = f"{int(at.timestamp())}.{int(at.microsecond / 1000):03d}:{serial}"
    prefix = f"node={node} " if node else ""
    args = " ".join(f'a{i}="{a}"' for i, a in enumerate(argv))
    return [
        f'{prefix}type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 uid={uid} comm="{argv[0]}" '
        f'exe="/usr/bin/{argv[0]}" key="cdsops_student_exec"',
        f"{prefix}type=EXECVE msg=audit({stamp}): argc={len(argv)} {args}",
        f'{prefix}type=CWD msg=audit({stamp}): cwd="/tmp"',
        f"{prefix}type=EOE msg=audit({stamp}): ",
    ]


def dumps(entries: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
