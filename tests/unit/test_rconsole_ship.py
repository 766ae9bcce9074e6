"""The Workbench R console shipper (roles/rstudio_server/files/cdsops-rconsole-ship), run as a
program against audit files written here in Posit's documented format (CSV: session_id,
project, pid, username, timestamp in ms, type, data), printing its lines with --stdout or
sending them to a journal-like datagram socket."""

from __future__ import annotations

import json
import os
import pwd
import socket
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdsops.events import synth
from cdsops.events.parse import ParseCounts, parse_lines

SCRIPT = Path(__file__).resolve().parents[2] / "roles/rstudio_server/files/cdsops-rconsole-ship"
HEADER = "session_id,project,pid,username,timestamp,type,data\n"
ME = pwd.getpwuid(os.getuid()).pw_name


def row(kind: str, data: str, user: str = "s200001", ms: int = 1764720000123) -> str:
    return f'S1,~/proj,4242,{user},{ms},{kind},"{data.replace(chr(34), chr(34) * 2)}"\n'


@pytest.fixture()
def audit(tmp_path):
    d = tmp_path / "r-console"
    d.mkdir()
    return d


def ship(audit: Path, *extra: str, trusted: str | None = None) -> tuple[list[dict], str, int]:
    cmd = [sys.executable, str(SCRIPT), "--audit-dir", str(audit), "--state", str(audit.parent / "state.json"),
           "--trusted-user", trusted or ME, *extra]
    if "--socket" not in extra:
        cmd.append("--stdout")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in p.stdout.splitlines()], p.stderr, p.returncode


def test_input_rows_become_code_lines_with_commas_newlines_and_quotes(audit):
    (audit / "s200001.csv").write_text(
        HEADER + row("prompt", "> ") + row("input", 'x <- c(1, 2)\nprint("a,b")') + row("output", '[1] "a,b"')
        + row("error", "Error: boom") + row("input", "   ") + row("input", "summary(x)", ms=1764720001005))
    lines, err, rc = ship(audit)
    assert rc == 0, err
    assert lines == [
        {"event": "code", "ts": "2025-12-03T00:00:00.123Z", "username": "s200001", "kernel": "rstudio-console",
         "code": 'x <- c(1, 2)\nprint("a,b")', "truncated": False},
        {"event": "code", "ts": "2025-12-03T00:00:01.005Z", "username": "s200001", "kernel": "rstudio-console",
         "code": "summary(x)", "truncated": False},
    ]
    assert "2 input rows shipped, 0 bad rows" in err
    assert ship(audit)[0] == []  # a re-run ships nothing new


def test_a_partial_last_record_waits_for_its_newline(audit):
    f = audit / "s200001.csv"
    whole = row("input", 'df <- read.csv("a.csv")\nhead(df, 3)')
    f.write_text(HEADER + row("input", "1 + 1") + whole[:40])  # cut inside the quoted field
    lines, err, _ = ship(audit)
    assert [x["code"] for x in lines] == ["1 + 1"] and "0 bad rows" in err and "wait" in err
    with f.open("a") as fh:
        fh.write(whole[40:-1])  # all but the final newline
    assert ship(audit)[0] == []
    with f.open("a") as fh:
        fh.write("\n")
    assert [x["code"] for x in ship(audit)[0]] == ['df <- read.csv("a.csv")\nhead(df, 3)']
    assert ship(audit)[0] == []


def test_truncation_and_rotation_read_the_new_file_from_the_start(audit):
    f = audit / "s200001.csv"
    f.write_text(row("input", "a <- 1") + row("input", "b <- 2"))
    assert len(ship(audit)[0]) == 2
    f.write_text(row("input", "c <- 3"))  # truncated in place (shorter than the offset)
    assert [x["code"] for x in ship(audit)[0]] == ["c <- 3"]
    f.rename(audit / "s200001.csv.1")  # rotated: the old file keeps its offset under its new name
    f.write_text(row("input", "d <- 4") + row("input", "e <- 55555555555555"))  # new inode, longer
    with (audit / "s200001.csv.1").open("a") as fh:
        fh.write(row("input", "late <- TRUE"))
    assert sorted(x["code"] for x in ship(audit)[0]) == ["d <- 4", "e <- 55555555555555", "late <- TRUE"]
    assert ship(audit)[0] == []


def test_bad_rows_are_counted_and_skipped_never_fatal(audit):
    (audit / "s200001.csv").write_text(
        "garbage without fields\n" + row("input", "x", user="ann@example.org") + row("input", "y").replace("1764720000123", "yesterday")
        + row("shout", "z") + row("input", "ok <- 1"))
    lines, err, rc = ship(audit)
    assert rc == 0 and [x["code"] for x in lines] == ["ok <- 1"]
    assert "4 bad rows skipped" in err
    assert "@" not in "".join(json.dumps(x) for x in lines)


def test_a_stray_quote_costs_one_line_not_the_file(audit):
    (audit / "s200001.csv").write_text('S1,,1,s200001,1764720000123,input,"never closed\n' + ("#" * 1100 + "\n") * 1000
                                       + row("input", "after <- 1"))
    lines, err, _ = ship(audit)
    assert lines[-1]["code"] == "after <- 1" and "bad rows" in err and " 0 bad rows" not in err


def test_code_is_cut_at_max_chars(audit):
    (audit / "s200001.csv").write_text(row("input", "x" * 50))
    lines, _, _ = ship(audit, "--max-chars", "10")
    assert lines[0]["code"] == "x" * 10 and lines[0]["truncated"] is True


def test_a_file_from_an_untrusted_owner_ships_only_its_owners_rows(audit):
    (audit / "mine.csv").write_text(row("input", "forged <- 1", user="s200002") + row("input", "own <- 1", user=ME))
    lines, err, _ = ship(audit, trusted="nobody")
    assert [x["code"] for x in lines] == ["own <- 1"]
    assert "1 rows naming another user skipped" in err


def test_json_format_lines_are_read_too(audit):
    rec = {"session_id": "S1", "project": "", "pid": 9, "username": "s200001", "timestamp": 1764720000123,
           "type": "input", "data": 'paste("a", "b")'}
    (audit / "s200001.json").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "type": "output"}) + "\n")
    assert [x["code"] for x in ship(audit)[0]] == ['paste("a", "b")']


def test_a_broken_state_file_is_a_clear_error_and_ships_nothing(audit):
    (audit / "s200001.csv").write_text(row("input", "x"))
    (audit.parent / "state.json").write_text("{not json")
    lines, err, rc = ship(audit)
    assert rc != 0 and lines == [] and "state file" in err and "remov" in err


def test_no_audit_directory_yet_is_not_an_error(tmp_path):
    lines, err, rc = ship(tmp_path / "absent")
    assert rc == 0 and lines == [] and "nothing to ship" in err


def _fields(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: NAME=value lines, or NAME\\n<u64 length><value>\\n."""
    out, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()], i = v.decode(), nl + 1
        else:
            (n,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            out[line.decode()], i = datagram[nl + 9:nl + 9 + n].decode(), nl + 9 + n + 1
    return out


def test_journal_lines_parse_as_code_events_and_a_refusing_journal_loses_nothing(audit, tmp_path):
    (audit / "s200001.csv").write_text(row("input", "library(dplyr)\ncount(df)") + row("input", "y <- 2"))
    sock_path = str(tmp_path / "journal.sock")
    _, err, rc = ship(audit, "--socket", sock_path)  # nobody listening: nothing is marked sent
    assert rc == 1 and "cannot write to the journal" in err
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(sock_path)
        srv.settimeout(5)
        _, err, rc = ship(audit, "--socket", sock_path)
        assert rc == 0, err
        got = [_fields(srv.recv(65536)) for _ in range(2)]
    assert [g["SYSLOG_IDENTIFIER"] for g in got] == ["cdsops-code"] * 2
    at = datetime(2026, 3, 2, tzinfo=UTC)
    entries = [{**synth.app_entry("cdsops-code", {}, at, "compute"), "MESSAGE": g["MESSAGE"], "_UID": "0"} for g in got]
    counts = ParseCounts()
    evs = list(parse_lines([json.dumps(e) for e in entries], counts, default_host="mgmt"))
    assert [(e.kind, e.username, e.detail["kernel"], e.detail["code"]) for e in evs] == [
        ("code", "s200001", "rstudio-console", "library(dplyr)\ncount(df)"), ("code", "s200001", "rstudio-console", "y <- 2")]
    assert evs[0].at == datetime(2025, 12, 3, 0, 0, 0, 123000, tzinfo=UTC)
    assert counts.malformed == counts.truncated == 0
