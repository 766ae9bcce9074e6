"""Parsing journal lines and audit records into events (cdsops.events.parse)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cdsops.events import synth
from cdsops.events.parse import ParseCounts, parse_audit_fields, parse_lines

T = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def parse(lines):
    counts = ParseCounts()
    return list(parse_lines(lines, counts, default_host="mgmt")), counts


@pytest.mark.parametrize(
    "outcome, kind",
    [("success", "signin.allowed"), ("expired", "signin.refused"), ("unknown", "signin.refused"),
     ("subject_mismatch", "signin.refused"), ("error", "signin.refused"), ("signout", "session.end")],
)
def test_gate_outcomes_map_to_kinds(outcome, kind):
    evs, counts = parse(synth.dumps([synth.signin("s000042", outcome, T, reason="r" if outcome == "error" else None)]).splitlines())
    assert [(e.kind, e.username, e.detail["outcome"]) for e in evs] == [(kind, "s000042", outcome)]
    assert evs[0].at == T and evs[0].host == "compute"
    assert counts.malformed == counts.truncated == 0


def test_code_and_session_records():
    lines = synth.dumps([synth.session("s000001", "session.start", T), synth.code("s000001", "summary(x)", T),
                         synth.session("s000001", "session.end", T)]).splitlines()
    evs, _ = parse(lines)
    assert [e.kind for e in evs] == ["session.start", "code", "session.end"]
    assert evs[1].detail == {"kernel": "ir", "code": "summary(x)", "truncated": False}
    assert evs[0].detail == {"profile": "jupyter"}


def test_audit_records_are_joined_by_serial_and_hex_args_decoded():
    lines = synth.dumps(synth.audit_exec(200042, ["ls", "-l", "my dir"], 77, T) + synth.data_read(200042, "mimic/patients.csv", 78, T)).splitlines()
    evs, counts = parse(lines)
    assert [e.kind for e in evs] == ["command", "data.read"]
    cmd, read = evs
    assert cmd.detail["argv"] == "ls -l my dir" and cmd.detail["uid"] == 200042 and cmd.detail["exe"] == "/usr/bin/ls"
    assert cmd.key == json.loads(lines[0])["__CURSOR"]  # the SYSCALL record's cursor
    assert read.detail["path"] == "/srv/cdsdata/mimic/patients.csv"
    assert counts.skipped == 0


def test_audit_records_of_other_keys_are_skipped():
    entries = synth.audit_exec(200042, ["ls"], 5, T)
    entries[0]["MESSAGE"] = entries[0]["MESSAGE"].replace("cdsops_student_exec", "identity")
    evs, _ = parse(synth.dumps(entries).splitlines())
    assert evs == []


def test_auditd_log_file_format():
    evs, counts = parse(synth.auditd_lines(200007, ["Rscript", "a.R"], 9, T) + synth.auditd_lines(200008, ["ls"], 10, T, node=None))
    assert [(e.kind, e.host, e.detail["argv"]) for e in evs] == [("command", "compute", "Rscript a.R"), ("command", "mgmt", "ls")]
    assert evs[0].key == f"audit:compute:{int(T.timestamp())}.000:9"
    assert counts.malformed == 0


def test_malformed_and_truncated_lines_are_counted_not_fatal():
    good = synth.dumps([synth.signin("s000001", "success", T)]).strip()
    lines = [
        good,
        good[:40],                                    # truncated
        '{"MESSAGE": "no cursor"}',                   # malformed: no cursor
        "not json at all",                            # malformed
        '{"__CURSOR": "x", "__REALTIME_TIMESTAMP": "1", "SYSLOG_IDENTIFIER": "cdsops-code", "MESSAGE": "{\\"event\\": 1"}',  # bad message
        json.dumps(synth.app_entry("cdsops-gate", {"event": "signin", "outcome": "success", "username": "alice@example.org"}, T)),
        json.dumps(synth.app_entry("sshd", {"x": 1}, T)),  # another program: skipped
        "",
    ]
    evs, counts = parse(lines)
    assert len(evs) == 1
    assert (counts.lines, counts.truncated, counts.malformed, counts.skipped) == (7, 1, 4, 1)


def test_an_email_as_username_is_never_an_event():
    entry = synth.app_entry("cdsops-code", {"event": "code", "username": "bob@gmail.com", "code": "x"}, T)
    evs, counts = parse([json.dumps(entry)])
    assert evs == [] and counts.malformed == 1


def test_parse_audit_fields():
    f = parse_audit_fields('uid=200001 exe="/usr/bin/R" a1=2F746D702F612062 name=(null) key="cdsops_data_read"')
    assert f == {"uid": "200001", "exe": "/usr/bin/R", "a1": "/tmp/a b", "name": "(null)", "key": "cdsops_data_read"}
