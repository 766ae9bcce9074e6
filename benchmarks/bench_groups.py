"""Benchmark: Google Group sync against the local emulator (printed figures, never asserted).

Targets (issue 2):
- API calls per sync grow with the number of changes, not with the number of members;
- a no-change sync of a 20,000-member group costs only the list pages (100 calls);
- 20,000 additions complete against the emulator in under 60 s with batching.
Also: the cost of an access-grant pass (IAM policy + BigQuery datasets) with nothing to do.

Run: ``.venv/bin/python benchmarks/bench_groups.py [--members 20000]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cdsops.emulator import Emulator
from cdsops.providers.google import (
    GoogleAccessProvider,
    GoogleGroupProvider,
    build_service,
)
from cdsops.providers.retry import Backoff

G = "data@example.org"


def people(n: int, start: int = 0) -> list[str]:
    return [f"student{i:06d}@example.org" for i in range(start, start + n)]


def bench_local(n: int) -> dict[str, float]:
    """The embedded default: the Linux group in a temp /etc with 100,000 other groups."""
    import tempfile

    from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_etc as etc

    root = Path(tempfile.mkdtemp(prefix="cdsops-bench-"))
    (root / "etc").mkdir()
    other = "".join(f"g{i:06d}:x:{300000 + i}:\n" for i in range(100_000))
    (root / "etc" / "group").write_text(other + "cdsdata:x:199999:\n")
    (root / "etc" / "gshadow").write_text("".join(f"g{i:06d}:!::\n" for i in range(100_000)) + "cdsdata:!::\n")
    users = [f"s{i:06d}" for i in range(n)]
    out = {}
    changed = users[n // 100 :] + [f"s{i:06d}" for i in range(900000, 900000 + n // 100)]
    for label, members in (("add_all", users), ("no_change", users), ("one_percent", changed)):
        t0 = time.perf_counter()
        etc.set_group_members(str(root), "cdsdata", members)
        out[label] = round(time.perf_counter() - t0, 3)
    import shutil

    shutil.rmtree(root)
    print(f"local group ({n} members, /etc/group with 100,000 other groups): add all {out['add_all']} s, "
          f"no change {out['no_change']} s, 1% change {out['one_percent']} s")
    return out


def bench_access(emu: Emulator) -> dict[str, float]:
    emu.create_project("proj", [{"role": "roles/owner", "members": ["user:admin@example.org"]}])
    for d in ("mimic", "notes", "labs"):
        emu.create_dataset("proj", d)
    a = GoogleAccessProvider(G, "proj", project_roles=["roles/bigquery.jobUser"], datasets=["mimic", "notes", "labs"],
                             crm=build_service("crm", emulator=emu.url), bigquery=build_service("bigquery", emulator=emu.url))
    a.ensure()
    t0 = time.perf_counter()
    rep = a.ensure()
    dt = time.perf_counter() - t0
    print(f"access pass with nothing to do:  {dt:7.3f} s  {rep.api_calls} API calls (1 policy + 3 datasets, reads only)")
    return {"seconds": round(dt, 3), "api_calls": rep.api_calls}


def bench_batch_sizes(n: int) -> list[dict[str, object]]:
    """Additions of ``n`` members per member-write batch size, against an emulator that refuses the
    writes of a batch beyond 50 with quotaExceeded (retried with backoff; sleeps not taken here,
    so the printed time excludes the backoff a real run would wait)."""
    out: list[dict[str, object]] = []
    print(f"member-write batch size ({n} additions; emulator budget 50 writes per batch):")
    for size in (25, 50, 100, 200, 1000):
        with Emulator() as emu:
            emu.create_group(G)
            slept: list[float] = []
            p = GoogleGroupProvider(G, build_service("directory", emulator=emu.url), batch_size=size,
                                    backoff=Backoff(sleep=slept.append, max_attempts=50))
            t0 = time.perf_counter()
            rep = p.sync(people(n))
            dt = time.perf_counter() - t0
            row = {"batch_size": size, "seconds": round(dt, 2), "http_requests": rep.http_requests,
                   "api_calls": emu.calls("directory"), "backoff_waits": len(slept), "backoff_seconds": round(sum(slept), 1)}
            out.append(row)
            print(f"  {size:5d}: {dt:6.2f} s, {rep.http_requests} HTTP requests, {row['api_calls']} calls counted, "
                  f"{len(slept)} backoff waits ({row['backoff_seconds']} s a real run would sleep)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=20000)
    args = ap.parse_args()
    n = args.members
    results: dict[str, object] = {"members": n}
    with Emulator() as emu:
        emu.create_group(G)
        p = GoogleGroupProvider(G, build_service("directory", emulator=emu.url), backoff=Backoff(sleep=lambda s: None))
        t0 = time.perf_counter()
        rep = p.sync(people(n))
        dt = time.perf_counter() - t0
        results["add_all_seconds"] = round(dt, 2)
        print(f"{n} additions from empty:        {dt:7.2f} s  {rep.api_calls} API calls in {rep.http_requests} HTTP requests "
              f"({n / dt:,.0f} members/s)  [target < 60 s]")

        t0 = time.perf_counter()
        rep = p.sync(people(n))
        dt = time.perf_counter() - t0
        pages = math.ceil(n / 200)
        results["no_change"] = {"seconds": round(dt, 2), "api_calls": rep.api_calls, "list_pages": pages}
        print(f"no-change sync:                  {dt:7.2f} s  {rep.api_calls} API calls (list pages: {pages})  [target: pages only]")

        print("changes vs API calls (group stays at", n, "members):")
        results["changes"] = []
        for k in (1, 10, 100, 1000, 5000):
            if 2 * k > n:
                break
            # k leave, k join
            desired = people(n - k, k) + people(k, 10_000_000)
            t0 = time.perf_counter()
            rep = p.sync(desired)
            dt = time.perf_counter() - t0
            p.sync(people(n))  # back to the baseline (not timed)
            calls_beyond_list = rep.api_calls - pages
            results["changes"].append({"changes": 2 * k, "api_calls": rep.api_calls, "http_requests": rep.http_requests, "seconds": round(dt, 2)})
            print(f"  {2 * k:6d} changes: {rep.api_calls:6d} API calls = {pages} list pages + {calls_beyond_list} changes, "
                  f"{rep.http_requests} HTTP requests, {dt:6.2f} s")

        results["access_no_change"] = bench_access(emu)
    results["batch_sizes"] = bench_batch_sizes(min(n, 5000))
    results["local"] = bench_local(n)
    print(json.dumps({"bench_groups": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
