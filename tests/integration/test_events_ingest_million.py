"""Ingest of a 1,000,000-event journal file (issue 12's test): every event lands once, with
its student id, and the malformed and truncated lines planted in it are counted, not fatal.
Timing is the benchmark's job (benchmarks/bench_events.py); this checks the result."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from cdsops.config import Config
from cdsops.events.store import events_path
from cdsops.service import roster_sync
from cdsops.testing.registrations import write_registrations

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N = 1_000_000
STUDENTS = 100
NOW = datetime(2026, 3, 10, tzinfo=UTC)


def _write(path, n: int) -> None:
    """n cells of STUDENTS students, written with a string template (fast), plus 3 bad lines."""
    t0 = int((NOW - timedelta(days=7)).timestamp() * 1e6)
    tpl = ('{{"__CURSOR":"s=m;i={i:x}","__REALTIME_TIMESTAMP":"{us}","_HOSTNAME":"compute","SYSLOG_IDENTIFIER":"cdsops-code",'
           '"MESSAGE":"{{\\"event\\":\\"code\\",\\"username\\":\\"s{sid:06d}\\",\\"kernel\\":\\"ir\\",\\"code\\":\\"x <- {i}\\"}}"}}\n')
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(tpl.format(i=i, us=t0 + i * 500, sid=i % STUDENTS + 1))
            if i == n // 2:
                fh.write("garbage\n")
                fh.write('{"__CURSOR":"s=m;i=cut","MESSAGE":"{\\"event\\":\n')
        fh.write('{"__CURSOR":"s=m;i=last","__REALTIME_TIMESTAMP":"1"')  # truncated at the end


def test_a_million_events(tmp_path):
    src = write_registrations(tmp_path / "reg.csv", [
        (NOW - timedelta(days=30, seconds=i), f"p{i}@example.org", "P Q", "Paris", "France", "yes", "yes") for i in range(STUDENTS)
    ])
    roster = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), roster, Config(), NOW)
    journal = tmp_path / "million.json"
    _write(journal, N)
    out = subprocess.run([sys.executable, "-m", "cdsops.cli", "events", "ingest", "--roster", roster, "--source", str(journal)],
                         capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)
    assert (s["added"], s["malformed"], s["truncated"], s["unknown_users"]) == (N, 1, 2, 0)
    con = duckdb.connect(str(events_path(roster)), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT event_key), count(student_id) FROM events").fetchone() == (N, N, N)
        assert con.execute("SELECT count(*) FROM events WHERE student_id = 7").fetchone()[0] == N // STUDENTS
    finally:
        con.close()
