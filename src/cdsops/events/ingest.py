"""``cdsops events ingest``: journal lines in, rows of the events table out.

Sources (``--source``):

- ``FILE``: journal export lines (``journalctl -o json``) or auditd log lines, mixed freely;
- ``DIR``: every regular file in it (sorted by name), as FILE;
- ``-``: standard input;
- ``bigquery-audit://PROJECT/DATASET[/TABLE]``: BigQuery Data Access audit log rows exported
  by a log sink (:mod:`cdsops.events.bigquery_events`), newer than the stored watermark;
- ``journal`` (this host's journal) or ``journal:DIR`` (a journal directory, e.g. the
  receiver's ``/var/log/journal/remote``): read through ``journalctl -o json``, resuming
  after the cursor the last run stored (``--after-cursor``), so a run reads only new entries.

Idempotent: an event's key is the journal entry's sender boot id, monotonic time and message
hash (its cursor when it has no boot id; auditd log lines: host, time and serial),
and a key already in the table is not added again. Malformed and truncated lines are counted
and skipped. Usernames become student ids through the roster (auditd's uid through
``uid_base``); an event of nobody in the roster keeps its username with no id.
Retention: rows older than ``retention_days`` are deleted by every run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..config import Config
from ..store import StoreError
from ..times import format_iso, from_epoch, parse_iso, parse_iso_or_none, utcnow
from .model import Event
from .parse import SENDER_UID, ParseCounts, parse_lines
from .store import EventStore

__all__ = ["IngestSummary", "ingest", "read_source", "resolve", "write_textfile", "DEFAULT_RETENTION_DAYS"]

DEFAULT_RETENTION_DAYS = 400
_CURSOR_KEY = "cursor:"
_WATERMARK_KEY = "watermark:"


def _audit_log_events(store: EventStore, source: str, identities: Mapping[str, tuple[int, str]], counts: ParseCounts) -> Iterator[Event]:
    from .bigquery_events import overlap, read_audit_log

    mark = store.get_meta(_WATERMARK_KEY + source)
    since = parse_iso_or_none(mark)
    return read_audit_log(source, identities, overlap(since), counts)


@dataclass
class IngestSummary:
    source: str
    lines: int = 0
    events: int = 0
    added: int = 0
    duplicates: int = 0
    malformed: int = 0
    truncated: int = 0
    skipped: int = 0
    unknown_users: int = 0
    forged: int = 0  # lines written by a student uid in the gate's or another student's name: skipped
    purged: int = 0
    cursor: str | None = None
    newest: str | None = None
    duration_s: float = 0.0
    status: str = "ok"
    refused: dict[str, int] = field(default_factory=dict)  # refused sign-ins read by this run, by outcome
    hosts: dict[str, str] = field(default_factory=dict)  # host -> newest journal entry ever read from it

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _journal_lines(directory: str | None, after: str | None) -> Iterator[str]:
    cmd = ["journalctl", "-o", "json", "--no-pager"]
    if directory:
        cmd += ["-D", directory]
    if after:
        cmd += ["--after-cursor", after]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError as exc:
        raise StoreError(f"cannot run journalctl: {exc.strerror or exc}") from None
    assert proc.stdout is not None
    yield from proc.stdout
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise StoreError(f"journalctl failed ({proc.returncode}): {' '.join(err.split())[:300]}")


def _file_lines(paths: Iterable[Path]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as fh:
            yield from fh


def read_source(source: str, after_cursor: str | None) -> Iterator[str]:
    """The lines of ``source`` (see the module docstring)."""
    import sys

    if source == "-":
        return iter(sys.stdin)
    if source == "journal" or source.startswith("journal:"):
        directory = source[len("journal:"):] or None if source != "journal" else None
        if directory and not os.path.isdir(directory):
            raise StoreError(f"journal directory {directory} does not exist")
        return _journal_lines(directory, after_cursor)
    p = Path(source)
    if p.is_dir():
        return _file_lines(sorted(f for f in p.iterdir() if f.is_file()))
    if p.is_file():
        return _file_lines([p])
    raise StoreError(f"events source {source} is neither a file, a directory, '-' nor journal[:DIR]")


def _forged(e: Event, usernames: Mapping[str, int], config: Config) -> bool:
    """A line a student wrote in another's name: journald records the writer's uid (_UID),
    which a student cannot choose. A sign-in line from a student uid is forged (only the gate
    writes them); a cell or session line from a student uid must be that student's own."""
    uid = e.detail.pop(SENDER_UID, None)
    if uid is None or not config.min_uid <= uid <= config.max_uid:
        return False
    if e.kind.startswith("signin."):
        return True
    sid = usernames.get(e.username or "")
    return sid is None or uid != config.uid_base + sid


def resolve(events: Iterable[Event], usernames: Mapping[str, int], config: Config, summary: IngestSummary) -> Iterator[Event]:
    """Events with their student id (and, for auditd records, their username from the uid)."""
    by_id = {sid: name for name, sid in usernames.items()}
    for e in events:
        if _forged(e, usernames, config):
            summary.forged += 1
            continue
        username, sid = e.username, None
        if username is None and "uid" in e.detail and e.detail["uid"] is not None:
            cand = int(e.detail["uid"]) - config.uid_base
            username = by_id.get(cand)
            sid = cand if username is not None else None
        elif username is not None:
            sid = usernames.get(username)
        if username is not None and sid is None:
            summary.unknown_users += 1
        yield Event(e.key, e.at, e.host, e.kind, username, sid, e.detail)


def _counted(events: Iterable[Event], summary: IngestSummary) -> Iterator[Event]:
    newest = None
    for e in events:
        summary.events += 1
        if e.kind == "signin.refused":
            outcome = str(e.detail.get("outcome") or "unknown")
            summary.refused[outcome] = summary.refused.get(outcome, 0) + 1
        if newest is None or e.at > newest:
            newest = e.at
        yield e
    if newest is not None:
        summary.newest = format_iso(newest)


def ingest(
    events_store: EventStore,
    usernames: Mapping[str, int],
    source: str,
    config: Config,
    *,
    now: datetime | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    host: str | None = None,
    identities: Mapping[str, tuple[int, str]] | None = None,
) -> IngestSummary:
    """Read ``source``, add its events, enforce retention; returns the summary."""
    t0 = time.monotonic()
    now = now or utcnow()
    if retention_days < 1:
        raise StoreError("retention_days must be at least 1")
    summary = IngestSummary(source)
    counts = ParseCounts()
    journal = source == "journal" or source.startswith("journal:")
    cursor_key = _CURSOR_KEY + source
    if source.startswith("bigquery-audit://"):
        parsed = _audit_log_events(events_store, source, identities or {}, counts)
    else:
        lines = read_source(source, events_store.get_meta(cursor_key) if journal else None)
        parsed = parse_lines(lines, counts, default_host=host or socket.gethostname())
    summary.added, summary.duplicates = events_store.add(_counted(resolve(parsed, usernames, config, summary), summary), now=now)
    for k, v in counts.to_dict().items():
        setattr(summary, k, v)
    summary.cursor = counts.last_cursor
    if journal and counts.last_cursor:
        events_store.set_meta(cursor_key, counts.last_cursor)
    _remember(events_store, summary, counts)
    if counts.last_time is not None:
        events_store.set_meta(_WATERMARK_KEY + source, format_iso(counts.last_time))
    summary.purged = events_store.purge(now - timedelta(days=retention_days))
    summary.duration_s = round(time.monotonic() - t0, 3)
    return summary


def _remember(store: EventStore, summary: IngestSummary, counts: ParseCounts) -> None:
    """Running totals the alerts need across runs (events_meta ``totals``): refused sign-ins by
    outcome (a counter) and the newest entry seen from each host."""
    raw = store.get_meta("totals")
    totals = json.loads(raw) if raw else {"refused": {}, "hosts": {}}
    for outcome, n in summary.refused.items():
        totals["refused"][outcome] = totals["refused"].get(outcome, 0) + n
    for host, at in counts.hosts.items():
        stamp = at.timestamp()
        if stamp > totals["hosts"].get(host, 0):
            totals["hosts"][host] = stamp
    if summary.refused or counts.hosts:
        store.set_meta("totals", json.dumps(totals, sort_keys=True))
    summary.refused = dict(totals["refused"])
    summary.hosts = {h: format_iso(from_epoch(t)) for h, t in totals["hosts"].items()}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def write_textfile(directory: str, summary: IngestSummary | None, now: datetime, newest: datetime | None) -> None:
    """node-exporter textfile ``cdsops_events.prom``: last run status and time, lag of the newest event."""
    ok = summary is not None and summary.status == "ok"
    lines = [
        "# HELP cdsops_events_ingest_last_status 1 when the last events ingest succeeded, 0 when it failed.",
        "# TYPE cdsops_events_ingest_last_status gauge",
        f"cdsops_events_ingest_last_status {1 if ok else 0}",
        "# HELP cdsops_events_ingest_last_run_timestamp_seconds When the last events ingest ended.",
        "# TYPE cdsops_events_ingest_last_run_timestamp_seconds gauge",
        f"cdsops_events_ingest_last_run_timestamp_seconds {now.timestamp():.3f}",
    ]
    if newest is not None:
        lines += [
            "# HELP cdsops_events_newest_event_timestamp_seconds Time of the newest event in the events table.",
            "# TYPE cdsops_events_newest_event_timestamp_seconds gauge",
            f"cdsops_events_newest_event_timestamp_seconds {newest.timestamp():.3f}",
        ]
    if summary is not None:
        for name in ("added", "malformed", "truncated"):
            lines += [f"# TYPE cdsops_events_ingest_{name} gauge", f"cdsops_events_ingest_{name} {getattr(summary, name)}"]
        lines += ["# HELP cdsops_signins_refused_total Refused sign-ins ingested, by the gate's outcome.",
                  "# TYPE cdsops_signins_refused_total counter"]
        lines += [f'cdsops_signins_refused_total{{outcome="{_label(o)}"}} {n}' for o, n in sorted(summary.refused.items())]
        lines += ["# HELP cdsops_events_host_last_entry_timestamp_seconds Newest journal entry received from each host.",
                  "# TYPE cdsops_events_host_last_entry_timestamp_seconds gauge"]
        lines += [f'cdsops_events_host_last_entry_timestamp_seconds{{host="{_label(h)}"}} '
                  f"{parse_iso(t).timestamp():.3f}" for h, t in sorted(summary.hosts.items())]
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "cdsops_events.prom")
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
