"""Open IDE profile benchmark (issue 11). Prints figures; asserts nothing.

Runs against the compute host `make demo` builds (podman container cdsops-compute: nginx,
the sign-in gate, JupyterHub, JupyterLab, R). Each student is a client inside the container
(molecule/jupyterhub/tests/hubclient.py, the hub's venv python) whose only credential is the
gate's session cookie, signed with the demo's cookie key as the gate signs it after a sign-in.

1. from a finished sign-in to a ready R kernel: a student's first request with the gate's
   cookie, the hub's login, the spawn, JupyterLab's page, a kernel and the first cell's answer;
   median and p95 over --students (20) students, one after another;
2. --concurrent (50) signed-in students, each running one R cell at the same moment
   (their servers already running): all served?, p50/p95 per cell;
3. resident memory per idle student server (its systemd unit's cgroup, kernels stopped).

Run: make demo, then .venv/bin/python benchmarks/bench_ide.py [--students 20] [--concurrent 50]
Stops every server it started at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from cdsops.gate import session as gate_session  # noqa: E402
from cdsops.identity import identity_hash  # noqa: E402

NAME = "cdsops-compute"
DEMO = REPO / "var" / "demo"
PY = "/opt/cdsops-jupyterhub/bin/python"


def podman(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["podman", "exec", "-i", NAME, *args], input=stdin, capture_output=True, text=True,
                          check=True).stdout


def students(n: int) -> list[dict]:
    roster = json.loads(subprocess.run([str(REPO / ".venv/bin/cdsops"), "roster", "show", "--roster",
                                        str(DEMO / "roster.duckdb"), "--json"], capture_output=True, text=True,
                                       check=True).stdout)
    return [s for s in roster["students"] if s["status"] == "active"][:n]


def cookie(student: dict) -> str:
    key = gate_session.derive_key((DEMO / "gate-cookie.key").read_bytes().strip(), "session")
    h = identity_hash(student["identity"], (DEMO / "signin.key").read_bytes().strip())
    return gate_session.issue(key, student["username"], h, int(time.time() + 3600))


HUBCLIENT = (REPO / "molecule/jupyterhub/tests/hubclient.py").read_text()
# hubclient.py takes the gate's cookie as NAME=VALUE; an older copy took the bare value and named
# it cdsops_session, while the gate's cookie is __Host-cdsops_session: give that copy the right name
NEW_CLIENT = "NAME=VALUE" in HUBCLIENT
if not NEW_CLIENT:
    HUBCLIENT = HUBCLIENT.replace('"cdsops_session", gate_cookie', '"__Host-cdsops_session", gate_cookie')


def client(student: dict, action: str, *args: str) -> tuple[float, dict]:
    value = cookie(student)
    t0 = time.monotonic()
    out = subprocess.run(["podman", "exec", NAME, PY, "/root/hubclient.py",
                          f"__Host-cdsops_session={value}" if NEW_CLIENT else value, student["username"],
                          action, *args], capture_output=True, text=True)
    took = time.monotonic() - t0
    try:
        return took, json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return took, {"error": out.stderr[-300:]}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=50)
    args = ap.parse_args()
    podman("sh", "-c", "cat > /root/hubclient.py", stdin=HUBCLIENT)
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])} ({os.cpu_count()} cores)")
    group = students(max(args.students, args.concurrent))
    print(f"{len(group)} active students from the demo roster")
    podman("/usr/local/sbin/cdsops-hub-stop", stdin=json.dumps([s["username"] for s in group]))  # start cold
    try:
        ready = []
        for s in group[:args.students]:
            took, out = client(s, "run", "1 + 1")
            ok = "[1] 2" in out.get("result", "")
            ready.append(took)
            print(f"  {s['username']}: sign-in to a ready R kernel and the first answer {took:.1f} s{'' if ok else ' FAILED ' + str(out)}")
        print(f"1. sign-in -> ready R kernel, {len(ready)} students: median {statistics.median(ready):.1f} s, "
              f"p95 {pct(ready, 0.95):.1f} s (target < 10 s)")
        rss, usage = [], []
        for s in group[:args.students]:
            unit = f"/sys/fs/cgroup/memory/system.slice/cdsops-jupyter-{s['username']}.service"
            stat = dict(line.split() for line in podman("cat", f"{unit}/memory.stat").splitlines())
            rss.append(int(stat["rss"]) + int(stat["mapped_file"]))
            usage.append(int(podman("cat", f"{unit}/memory.usage_in_bytes")))
        print(f"3. memory per idle server (its unit's cgroup, kernel stopped): resident (rss + mapped files) "
              f"median {statistics.median(rss) / 2**20:.0f} MiB, max {max(rss) / 2**20:.0f} MiB; with page cache "
              f"median {statistics.median(usage) / 2**20:.0f} MiB (target < 150 MB)")
        for s in group[args.students:args.concurrent]:
            client(s, "spawn")
        with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
            results = list(pool.map(lambda s: client(s, "run", "sum(as.numeric(1:1e6))"), group[:args.concurrent]))
        served = [t for t, out in results if "500000500000" in out.get("result", "")]
        for t, out in results:
            if "500000500000" not in out.get("result", ""):
                print(f"  not served after {t:.1f} s: {str(out)[:200]}")
        print(f"2. {args.concurrent} students, one cell each at once: {len(served)} served; "
              + (f"p50 {pct(served, 0.5):.1f} s, p95 {pct(served, 0.95):.1f} s (each: page, kernel start, cell)" if served else ""))
        print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    finally:
        podman("/usr/local/sbin/cdsops-hub-stop", stdin=json.dumps([s["username"] for s in group]))


if __name__ == "__main__":
    main()
