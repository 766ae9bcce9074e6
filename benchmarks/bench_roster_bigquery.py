"""Benchmark: the roster sync of ``bench_roster.py`` against BigQuery (bqemulator).

Same rows (10% repeats, Gmail aliases; ``bench_roster.make_rows``), loaded into a
BigQuery registrations table (TIMESTAMP ``submitted_at``), then
``cdsops roster sync --source bigquery://... --roster bigquery://...``:
- the initial sync into an empty roster dataset;
- a no-op re-sync of the same rows with ``--full`` (reads the whole source again:
  the embedded benchmark's "no-op re-sync");
- a no-op re-sync by the watermark (the scheduled case: only the last hour is re-read);
- ``cdsops plan`` twice: the first reads the students from BigQuery (and stores the local
  copy), the second, with nothing changed, takes them from that copy.

Figures are printed, never asserted: wall time and peak RSS of the cdsops process
(interpreter start and imports included), and the emulator's peak RSS. The emulator
runs on this machine too, so its CPU competes with cdsops: a real BigQuery answers
large reads much faster than bqemulator's JSON pages. Sizes: ``--rows`` (default
100,000 and 10,000).

Run: ``.venv/bin/python benchmarks/bench_roster_bigquery.py [--rows N ...]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from bench_roster import make_rows, run  # noqa: E402  imported after the sys.path setup that runs it from a checkout

PROJECT = "bench-project"
#: query jobs of a no-change timer run in production (notifications ledger present): the sync's 4,
#: each plan's meta and ledger reads (students from the local copy), the last_applied_at MERGE
RUN_JOBS = 9


def load_source(client, dataset: str, rows: list[list[str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    client.create_dataset(f"{PROJECT}.{dataset}", exists_ok=True)
    schema = [
        bigquery.SchemaField("submitted_at", "TIMESTAMP"),
        bigquery.SchemaField("email", "STRING"),
        bigquery.SchemaField("full_name", "STRING"),
        bigquery.SchemaField("city", "STRING"),
        bigquery.SchemaField("country", "STRING"),
        bigquery.SchemaField("agreed_dua", "STRING"),
        bigquery.SchemaField("agreed_terms", "STRING"),
    ]
    client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.registrations", schema=schema))
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "submitted_at": pa.array([datetime.fromisoformat(t) for t in cols[0]], pa.timestamp("us", tz="UTC")),
            **{f.name: pa.array(list(cols[i]), pa.string()) for i, f in enumerate(schema) if i},
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    cfg = bigquery.LoadJobConfig(source_format="PARQUET", write_disposition="WRITE_APPEND")
    client.load_table_from_file(buf, f"{PROJECT}.{dataset}.registrations", job_config=cfg).result()


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench(emu, client, n: int) -> dict:
    exe = [sys.executable, "-m", "cdsops.cli"]
    src_ds, roster_ds = f"src_{n}", f"roster_{n}"
    t0 = time.perf_counter()
    load_source(client, src_ds, make_rows(n))
    load_s = time.perf_counter() - t0
    src = f"bigquery://{PROJECT}/{src_ds}/registrations"
    roster = f"bigquery://{PROJECT}/{roster_ds}"
    now = "2026-07-01T00:00:00Z"
    base = exe + ["roster", "sync", "--source", src, "--roster", roster, "--now", now, "--json"]
    initial = run(base)
    full = run(base + ["--full"])
    incremental = run(base)
    plan = exe + ["plan", "--roster", roster, "--now", now, "--json"]
    plan_full, plan_copy = run_quiet(plan), run_quiet(plan)  # the first fills the local copy, the second uses it
    return {"rows": n, "load_s": load_s, "initial": initial, "full": full, "incremental": incremental,
            "plan_full": plan_full, "plan_copy": plan_copy, "bytes": scan_bytes(client, src_ds)}


def run_quiet(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds of one child whose (large) output is dropped."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr.read() if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def scan_bytes(client, dataset: str) -> dict[str, int]:
    """Bytes BigQuery would scan for the source read, whole and by the watermark (the model of
    ``bq.estimate_scan_bytes``: bqemulator itself reports 0 bytes processed)."""
    from datetime import timedelta

    from cdsops import bq

    cols = [("submitted_at", "TIMESTAMP")] + [(c, "STRING") for c in ("email", "full_name", "city", "country", "agreed_dua", "agreed_terms")]
    _job, rows = bq.run_query(client, f"SELECT MAX(submitted_at) FROM {bq.quote_table(PROJECT, dataset, 'registrations')}")
    latest = next(iter(rows)).values()[0]
    since = latest - timedelta(hours=1)  # the watermark minus the overlap
    return {"full": bq.estimate_scan_bytes(client, PROJECT, dataset, "registrations", cols, None),
            "watermark": bq.estimate_scan_bytes(client, PROJECT, dataset, "registrations", cols, since)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args()
    from cdsops.testing import bigquery_client, running_emulator

    with running_emulator(project=PROJECT) as emu, tempfile.TemporaryDirectory() as cache:
        os.environ["CDSOPS_BIGQUERY_ENDPOINT"] = emu.endpoint
        os.environ["CDSOPS_ROSTER_CACHE_DIR"] = cache  # the plan's local copy of the students
        os.environ.setdefault("CDSOPS_BIGQUERY_TIMEOUT", "1800")
        client = bigquery_client(emu.endpoint, PROJECT)
        results = [bench(emu, client, n) for n in args.rows]
        emu_rss = peak_rss_mb(emu.pid or -1)
        client.close()
    print("roster sync against BigQuery (bqemulator 1.4 on this machine); whole cdsops process, one run each")
    for r in results:
        print(f"rows: {r['rows']:,} (10% repeats, Gmail aliases); source loaded in {r['load_s']:.1f} s")
        for key, label in (
            ("initial", "initial sync into an empty BigQuery roster"),
            ("full", "no-op re-sync, whole source (--full)      "),
            ("incremental", "no-op re-sync by the watermark           "),
        ):
            wall, rss, out, cpu = r[key]
            counts = json.loads(out)
            summary = f"added {counts['added']}, renewed {counts['renewed']}, unchanged {counts['unchanged']}, rejected {len(counts['rejected'])}"
            print(f"  {label}: {wall:6.2f} s wall, {cpu:5.2f} s CPU, peak RSS {rss:4.0f} MB  ({summary})")
        for key, label in (("plan_full", "plan, students read from BigQuery         "),
                           ("plan_copy", "plan, no change: students from the copy   ")):
            wall, rss, cpu = r[key]
            print(f"  {label}: {wall:6.2f} s wall, {cpu:5.2f} s CPU, peak RSS {rss:4.0f} MB")
        b = r["bytes"]
        print(f"  bytes the source read scans (model, table partitioned by DATE(submitted_at)): whole table {b['full']:,}, "
              f"by the watermark {b['watermark']:,}; billed per query at least 10 MiB; a no-change sync is 4 query jobs "
              f"= {4 * 10 * 1024 * 1024:,} bytes billed")
    mib = 10 * 1024 * 1024
    print(f"a no-change timer run (sync 4 + two plans 2 each + last_applied_at 1 = {RUN_JOBS} query jobs; the sync's 4 and "
          f"each plan's meta read are counted by tests/integration/test_bigquery_cost.py, the ledger reads and the "
          f"last_applied_at MERGE come from the code) bills {RUN_JOBS * mib:,} bytes; a month of them: "
          + ", ".join(f"every {m} min {43_200 // m * RUN_JOBS * mib / 2**40:.2f} TiB" for m in (1, 5)))
    print(f"  bqemulator peak RSS over all runs: {emu_rss:.0f} MB")
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"  note: load average {load:.1f} on {os.cpu_count()} cores while measuring: wall times are inflated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
