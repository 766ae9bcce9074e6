"""cdsops events ingest on the embedded store: idempotence, malformed lines, usernames and
uids to student ids, retention, the journal cursor, the summary line and the textfile."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from cdsops.config import Config
from cdsops.events import synth
from cdsops.events.ingest import ingest
from cdsops.events.store import events_path, open_events
from cdsops.service import roster_sync
from cdsops.testing.registrations import write_registrations

NOW = datetime(2026, 3, 10, tzinfo=UTC)
T = NOW - timedelta(days=2)
CDSOPS = [sys.executable, "-m", "cdsops.cli"]


@pytest.fixture()
def roster(tmp_path: Path) -> str:
    src = write_registrations(tmp_path / "reg.csv", [
        (NOW - timedelta(days=30), f"person{i}@example.org", f"Person {i}", "Paris", "France", "yes", "yes") for i in range(1, 4)
    ])
    uri = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), uri, Config(), NOW)
    return uri


def _events_file(tmp_path: Path) -> Path:
    entries = [synth.signin("s000001", "success", T), synth.signin("s000002", "expired", T), synth.signin(None, "unknown", T),
               synth.code("s000001", "1+1", T), *synth.audit_exec(200001, ["ls"], 1, T), *synth.data_read(200002, "a.csv", 2, T),
               synth.code("s999999", "x", T)]
    p = tmp_path / "journal.json"
    p.write_text(synth.dumps(entries) + '{"__CURSOR": "trunc')
    return p


def _rows(roster: str) -> list[tuple]:
    con = duckdb.connect(str(events_path(roster)), read_only=True)
    try:
        return con.execute("SELECT kind, student_id, username FROM events ORDER BY kind, username").fetchall()
    finally:
        con.close()


def test_ingest_is_idempotent_and_resolves_students(roster, tmp_path):
    src = _events_file(tmp_path)
    usernames = {"s000001": 1, "s000002": 2, "s000003": 3}
    first = ingest(open_events(roster), usernames, str(src), Config(), now=NOW)
    assert (first.added, first.duplicates, first.truncated, first.unknown_users) == (7, 0, 1, 1)
    second = ingest(open_events(roster), usernames, str(src), Config(), now=NOW)
    assert (second.added, second.duplicates) == (0, 7)
    assert _rows(roster) == [
        ("code", 1, "s000001"), ("code", None, "s999999"), ("command", 1, "s000001"), ("data.read", 2, "s000002"),
        ("signin.allowed", 1, "s000001"), ("signin.refused", 2, "s000002"), ("signin.refused", None, None),
    ]


def test_retention_deletes_older_events(roster, tmp_path):
    old = tmp_path / "old.json"
    old.write_text(synth.dumps([synth.code("s000001", "old", NOW - timedelta(days=40)), synth.code("s000001", "new", NOW - timedelta(days=1))]))
    s = ingest(open_events(roster), {"s000001": 1}, str(old), Config(), now=NOW, retention_days=30)
    assert (s.added, s.purged) == (2, 1)
    assert _rows(roster) == [("code", 1, "s000001")]


def test_cli_summary_line_and_textfile(roster, tmp_path):
    src = _events_file(tmp_path)
    prom = tmp_path / "prom"
    out = subprocess.run(CDSOPS + ["events", "ingest", "--roster", roster, "--source", str(tmp_path), "--textfile-dir", str(prom)],
                         capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["added"] == 7 and summary["truncated"] == 1 and summary["status"] == "ok"
    text = (prom / "cdsops_events.prom").read_text()
    assert "cdsops_events_ingest_last_status 1" in text and "cdsops_events_newest_event_timestamp_seconds" in text
    assert 'cdsops_signins_refused_total{outcome="expired"} 1' in text and 'cdsops_signins_refused_total{outcome="unknown"} 1' in text
    assert f'cdsops_events_host_last_entry_timestamp_seconds{{host="compute"}} {T.timestamp():.3f}' in text
    assert src.exists()


def test_cli_missing_source_fails_clearly_and_marks_the_textfile(roster, tmp_path):
    out = subprocess.run(CDSOPS + ["events", "ingest", "--roster", roster, "--source", str(tmp_path / "nope"), "--textfile-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "neither a file" in out.stderr and out.stderr.count("\n") == 1
    assert "cdsops_events_ingest_last_status 0" in (tmp_path / "cdsops_events.prom").read_text()


def test_journal_directory_source_resumes_after_its_cursor(roster, tmp_path):
    """journal:DIR reads a real journal directory through journalctl (systemd-journal-remote's
    output format) and the second run starts after the stored cursor."""
    if subprocess.run(["which", "systemd-journal-remote"], capture_output=True).returncode and not Path("/lib/systemd/systemd-journal-remote").exists():
        pytest.skip("systemd-journal-remote is not installed on this machine (scripts/apt/audit.txt)")
    jdir = tmp_path / "remote"
    jdir.mkdir()
    export = tmp_path / "a.export"
    _export_format(export, [synth.code("s000001", "1+1", T), synth.signin("s000001", "success", T)])
    subprocess.run(["/lib/systemd/systemd-journal-remote", f"--output={jdir}/remote.journal", str(export)], check=True, capture_output=True)
    s1 = ingest(open_events(roster), {"s000001": 1}, f"journal:{jdir}", Config(), now=NOW)
    assert s1.added == 2 and s1.cursor
    s2 = ingest(open_events(roster), {"s000001": 1}, f"journal:{jdir}", Config(), now=NOW)
    assert (s2.lines, s2.added) == (0, 0)


def test_an_entry_the_receiver_wrote_twice_is_one_event(roster, tmp_path):
    """journal-upload resends what a receiver wrote but did not acknowledge before it died: the
    receiver's journal then holds two copies with two cursors. Both keep the sender's boot id,
    monotonic time and message, which is the event's key: one event."""
    if not Path("/lib/systemd/systemd-journal-remote").exists():
        pytest.skip("systemd-journal-remote is not installed on this machine (scripts/apt/audit.txt)")
    jdir = tmp_path / "remote"
    jdir.mkdir()
    boot = "0123456789abcdef0123456789abcdef"
    cell = {**synth.code("s000001", "1+1", T), "_BOOT_ID": boot, "__MONOTONIC_TIMESTAMP": "123456789"}
    other = {**synth.code("s000001", "2+2", T), "_BOOT_ID": boot, "__MONOTONIC_TIMESTAMP": "123456790"}
    export = tmp_path / "a.export"
    _export_format(export, [cell, other, cell])  # the resent copy
    subprocess.run(["/lib/systemd/systemd-journal-remote", f"--output={jdir}/remote.journal", str(export)], check=True, capture_output=True)
    s1 = ingest(open_events(roster), {"s000001": 1}, f"journal:{jdir}", Config(), now=NOW)
    assert (s1.lines, s1.added) == (3, 2)


def _export_format(path: Path, entries: list[dict]) -> None:
    """Journal export format (what systemd-journal-remote reads)."""
    with open(path, "w") as fh:
        for e in entries:
            for k, v in e.items():
                if k == "__CURSOR":
                    continue
                fh.write(f"{k}={v}\n")
            fh.write("\n")


def test_lines_a_student_writes_in_another_name_are_skipped(roster, tmp_path):
    """journald's _UID says who wrote a line: a student (uid 200002) cannot log a sign-in or
    another student's cell; their own cell (uid 200002 as s000002) and root's lines pass."""
    def by(entry, uid):
        entry["_UID"] = str(uid)
        return entry

    p = tmp_path / "forged.json"
    p.write_text(synth.dumps([
        by(synth.signin("s000001", "success", T), 200002),       # forged sign-in
        by(synth.code("s000001", "rm -rf", T), 200002),          # a cell in s000001's name
        by(synth.code("s000002", "mine", T), 200002),            # their own cell
        by(synth.signin("s000001", "success", T), 998),          # the gate's service user
    ]))
    s = ingest(open_events(roster), {"s000001": 1, "s000002": 2}, str(p), Config(), now=NOW)
    assert (s.added, s.forged) == (2, 2)
    assert _rows(roster) == [("code", 2, "s000002"), ("signin.allowed", 1, "s000001")]
    con = duckdb.connect(str(events_path(roster)), read_only=True)
    assert all("_sender_uid" not in d for (d,) in con.execute("SELECT detail FROM events").fetchall())
    con.close()
