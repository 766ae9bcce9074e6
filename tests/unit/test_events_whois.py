"""cdsops whois: an active, an expired, a never-signed-in and an unknown person."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from cdsops.config import Config
from cdsops.events import synth
from cdsops.events.ingest import ingest
from cdsops.events.store import open_events
from cdsops.service import roster_sync
from cdsops.testing.registrations import write_registrations

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CDSOPS = [sys.executable, "-m", "cdsops.cli"]


@pytest.fixture(scope="module")
def roster(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("whois")
    src = write_registrations(d / "reg.csv", [
        (NOW - timedelta(days=10), "Ada.Active@gmail.com", "Ada Active", "Lyon", "France", "yes", "yes"),      # s000002
        (NOW - timedelta(days=300), "eve.expired@example.org", "Eve Expired", "Oslo", "Norway", "yes", "yes"),  # s000001
        (NOW - timedelta(days=5), "nina.never@example.org", "Nina Never", "Rome", "Italy", "yes", "yes"),      # s000003
    ])
    uri = str(d / "roster.duckdb")
    roster_sync(str(src), uri, Config(), NOW)
    t = NOW - timedelta(days=1)
    entries = [
        synth.signin("s000002", "success", t), synth.code("s000002", "library(dplyr)", t + timedelta(minutes=1)),
        *synth.audit_exec(200002, ["Rscript", "x.R"], 11, t + timedelta(minutes=2)),
        *synth.data_read(200002, "mimic/admissions.csv", 12, t + timedelta(minutes=3)),
        synth.signin("s000001", "expired", t),
    ]
    (d / "j.json").write_text(synth.dumps(entries))
    ingest(open_events(uri), {"s000001": 1, "s000002": 2, "s000003": 3}, str(d / "j.json"), Config(), now=NOW)
    return uri


def whois(roster, who, *extra):
    return subprocess.run(CDSOPS + ["whois", who, "--roster", roster, "--now", NOW.isoformat(), *extra], capture_output=True, text=True)


def test_active_student_by_any_alias(roster):
    out = whois(roster, "adaactive+course@googlemail.com", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["username"], info["status"]) == ("s000002", "active")
    assert [e["kind"] for e in info["signins"]] == ["signin.allowed"]
    assert info["cells"][0]["code"] == "library(dplyr)"
    assert info["commands"][0]["argv"] == "Rscript x.R"
    assert info["data_reads"][0]["path"] == "/srv/cdsdata/mimic/admissions.csv"
    assert [c["kind"] for c in info["changes"]] == ["student.added"]
    assert "@" not in out.stdout and "Ada" not in out.stdout


def test_expired_student_shows_the_refused_signin_and_reason(roster):
    out = whois(roster, "s000001", "--json")
    info = json.loads(out.stdout)
    assert info["status"] == "expired" and info["refused_signins"][0]["outcome"] == "expired"
    assert info["signins"] == [] and info["cells"] == []


def test_never_signed_in_student_by_id_text(roster):
    out = whois(roster, "3")
    assert out.returncode == 0
    assert "s000003 (student 3)" in out.stdout and "signins: none" in out.stdout and "active" in out.stdout
    assert "nina" not in out.stdout.lower()


def test_unknown_person_exits_non_zero_and_names_no_one(roster):
    out = whois(roster, "someone.else@example.org", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout) == {"found": False}
    assert "s0000" not in out.stdout + out.stderr and "someone" not in out.stderr


def test_invalid_email_is_a_clear_error(roster):
    out = whois(roster, "not@an@email")
    assert out.returncode == 1 and "not a valid email address" in out.stderr
