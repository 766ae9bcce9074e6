"""Benchmark: the audit trail at 1,000,000 events (printed figures, never asserted).

Targets (issue 12), whole process included (interpreter start and imports):
- ``cdsops events ingest`` of 1,000,000 events from a journal export file: < 60 s
- a re-run of the same file (every key already present): reported
- ``cdsops report --json --out report.html`` over 1,000,000 events: < 30 s
- ``cdsops whois`` with 1,000,000 events in the table: < 1 s
Peak memory (max RSS of the child process) is printed for each.

Run: ``.venv/bin/python benchmarks/bench_events.py [--events N] [--students N]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

CDSOPS = [sys.executable, "-m", "cdsops.cli"]
COUNTRIES = [("Paris", "France"), ("Tokyo", "Japan"), ("Seattle", "US"), ("Lagos", "Nigeria"), ("Lima", "Peru"), ("Avalon", "Nowhere")]


def write_roster(tmp: Path, students: int, now: datetime) -> str:
    src = tmp / "reg.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["submitted_at", "email", "full_name", "city", "country", "agreed_dua", "agreed_terms"])
        for i in range(students):
            city, country = COUNTRIES[i % len(COUNTRIES)]
            t = now - timedelta(days=60, seconds=students - i)
            w.writerow([t.isoformat().replace("+00:00", "Z"), f"bench{i}@example.org", f"Bench Person {i}", city, country, "yes", "yes"])
    roster = str(tmp / "roster.duckdb")
    subprocess.run(CDSOPS + ["roster", "sync", "--source", str(src), "--roster", roster, "--now", now.isoformat()], check=True, capture_output=True)
    return roster


def write_events(path: Path, n: int, students: int, now: datetime, seed: int = 7) -> None:
    """n events: 55% cells, 20% sign-ins (1 in 10 refused), 10% sessions, 15% commands (auditd:
    SYSCALL + EXECVE + CWD records each), over the last 30 days."""
    rng = random.Random(seed)
    start = int((now - timedelta(days=30)).timestamp() * 1e6)
    span = 30 * 86400 * 10**6
    with open(path, "w") as fh:
        for i in range(n):
            sid = rng.randint(1, students)
            user = f"s{sid:06d}"
            us = start + rng.randrange(span)
            ts = datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat().replace("+00:00", "Z")
            base = {"__CURSOR": f"s=bench;i={i:x}", "__REALTIME_TIMESTAMP": str(us), "_HOSTNAME": f"compute{sid % 3}"}
            r = rng.random()
            if r < 0.15:
                serial = str(i)
                rec = dict(base, _TRANSPORT="audit", _AUDIT_ID=serial, _AUDIT_TYPE_NAME="SYSCALL",
                           MESSAGE=f'SYSCALL arch=c000003e syscall=59 success=yes exit=0 uid={200000 + sid} comm="Rscript" exe="/usr/bin/Rscript" key="cdsops_student_exec"')  # noqa: E501  a literal line kept whole for grep
                fh.write(json.dumps(rec) + "\n")
                fh.write(json.dumps(dict(base, __CURSOR=base["__CURSOR"] + "e", _TRANSPORT="audit", _AUDIT_ID=serial, _AUDIT_TYPE_NAME="EXECVE",
                                         MESSAGE='EXECVE argc=2 a0="Rscript" a1="analysis.R"')) + "\n")
                fh.write(json.dumps(dict(base, __CURSOR=base["__CURSOR"] + "c", _TRANSPORT="audit", _AUDIT_ID=serial, _AUDIT_TYPE_NAME="CWD",
                                         MESSAGE=f'CWD cwd="/home/{user}"')) + "\n")
                continue
            if r < 0.70:
                ident, msg = "cdsops-code", {"event": "code", "ts": ts, "username": user, "kernel": "ir", "code": f"summary(df[{i % 97}])", "truncated": False}
            elif r < 0.90:
                outcome = "expired" if rng.random() < 0.1 else "success"
                ident, msg = "cdsops-gate", {"ts": ts, "event": "signin", "outcome": outcome, "username": user, "pid": 1}
            else:
                ident, msg = "cdsops-session", {"event": "session.start", "ts": ts, "username": user, "profile": "jupyter"}
            fh.write(json.dumps(dict(base, SYSLOG_IDENTIFIER=ident, MESSAGE=json.dumps(msg))) + "\n")


def timed(args: list[str]) -> tuple[str, float, str]:
    """("W s wall, C s CPU", peak RSS MB of the child, stdout), measured with /usr/bin/time.
    CPU time (user + system) is printed beside the wall time: on a loaded machine it is the
    figure to compare."""
    t0 = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{out.stderr[-2000:]}")
    rss_kb, user, sys_ = out.stderr.strip().splitlines()[-1].split()
    return f"{wall:.2f} s wall, {float(user) + float(sys_):.2f} s CPU", int(rss_kb) / 1024, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--students", type=int, default=2_000)
    a = ap.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="cdsops-bench-events-") as d:
        tmp = Path(d)
        roster = write_roster(tmp, a.students, now)
        src = tmp / "journal.json"
        t0 = time.perf_counter()
        write_events(src, a.events, a.students, now)
        print(f"generated {a.events:,} events ({src.stat().st_size / 1e6:.0f} MB of journal JSON) in {time.perf_counter() - t0:.1f} s")
        wall, rss, out = timed(CDSOPS + ["events", "ingest", "--roster", roster, "--source", str(src)])
        s = json.loads(out)
        print(f"ingest: {s['added']:,} events added from {s['lines']:,} lines in {wall}; peak RSS {rss:.0f} MB (target < 60 s)")
        wall, rss, out = timed(CDSOPS + ["events", "ingest", "--roster", roster, "--source", str(src)])
        print(f"ingest re-run: {json.loads(out)['added']} added, {wall}; peak RSS {rss:.0f} MB")
        wall, rss, out = timed(CDSOPS + ["report", "--roster", roster, "--json", "--out", str(tmp / "report.html")])
        rep = json.loads(out)
        print(f"report (JSON + HTML): {rep['events']:,} events, funnel {rep['funnel']['signed_in']}/{rep['funnel']['registered']} signed in, "
              f"in {wall}; peak RSS {rss:.0f} MB (target < 30 s)")
        wall, rss, out = timed(CDSOPS + ["whois", "s000042", "--roster", roster, "--json"])
        print(f"whois: {len(json.loads(out)['cells'])} cells listed, {wall} (whole process); peak RSS {rss:.0f} MB (target < 1 s)")
        print(f"events file: {os.path.getsize(str(tmp / 'roster.events.duckdb')) / 1e6:.0f} MB for {a.events:,} events")


if __name__ == "__main__":
    main()
