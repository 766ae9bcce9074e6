"""Benchmark: roster sync of 100,000 registration rows (printed figures, never asserted).

Targets (issue 6), whole process included (interpreter start and imports):
- 100,000 rows with 10% repeats and Gmail aliases into an empty embedded roster: < 3 s
- a no-op re-sync of the same rows: < 1.5 s
- peak memory < 250 MB

Run: ``.venv/bin/python benchmarks/bench_roster.py [--rows N]``
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

COLUMNS = ["submitted_at", "email", "full_name", "city", "country", "agreed_dua", "agreed_terms"]


def make_rows(n: int, seed: int = 1) -> list[list[str]]:
    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    people = int(n * 0.9)
    rows = []
    for i in range(people):
        t = base + timedelta(seconds=rng.randint(0, 150 * 86400))
        if i % 3 == 0:
            email = f"first.last{i}@gmail.com"
        else:
            email = f"user{i}@example{i % 50}.edu"
        rows.append([t.isoformat().replace("+00:00", "Z"), email, f"Invented Person {i}", "Avalon", "Nowhere", "yes", "yes"])
    for j in range(n - people):  # 10% repeats, half of them as Gmail aliases
        i = rng.randrange(people)
        src = rows[i]
        email = src[1]
        if email.endswith("@gmail.com") and j % 2 == 0:
            local = email.split("@")[0].replace(".", "")
            email = f"{local.upper()}+course@googlemail.com"
        t = datetime.fromisoformat(src[0].replace("Z", "+00:00")) + timedelta(days=rng.randint(0, 30))
        rows.append([t.isoformat().replace("+00:00", "Z"), email, src[2], src[3], src[4], "yes", "yes"])
    rng.shuffle(rows)
    return rows


def run(cmd: list[str]) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MB), output and CPU seconds (user+sys) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024, out.strip(), usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "cdsops.cli"]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "rows.csv"
        with open(src, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            w.writerows(make_rows(args.rows))
        now = "2026-07-01T00:00:00Z"
        initial, noop = [], []
        for r in range(args.repeat):
            roster = Path(d) / f"roster{r}.duckdb"
            initial.append(run(exe + ["roster", "sync", "--source", str(src), "--roster", str(roster), "--now", now, "--json"]))
            noop.append(run(exe + ["roster", "sync", "--source", str(src), "--roster", str(roster), "--now", now, "--json"]))
        startup = min(run([sys.executable, "-c", "pass"])[0] for _ in range(3))
    best_i = min(initial)
    best_n = min(noop)
    print(f"rows: {args.rows:,} (10% repeats, Gmail aliases); best of {args.repeat}; whole process (python start {startup:.3f} s)")
    rss_i, rss_n = max(x[1] for x in initial), max(x[1] for x in noop)
    print(f"  initial sync into an empty embedded roster: {best_i[0]:.2f} s wall, {best_i[3]:.2f} s CPU  (target < 3 s)   peak RSS {rss_i:.0f} MB")
    print(f"  no-op re-sync of the same rows:             {best_n[0]:.2f} s wall, {best_n[3]:.2f} s CPU  (target < 1.5 s) peak RSS {rss_n:.0f} MB")
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"  note: load average {load:.1f} on {os.cpu_count()} cores while measuring: wall times are inflated")
    print(f"  peak memory over all runs: {max(x[1] for x in initial + noop):.0f} MB (target < 250 MB)")
    print(f"  initial result: {best_i[2]}")
    print(f"  no-op result:   {best_n[2][:120]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
