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


def client(student: dict, action: str, *args: str) -> tuple[float, dict]:
    t0 = time.monotonic()
    out = subprocess.run(["podman", "exec", NAME, PY, "/root/hubclient.py", cookie(student), student["username"],
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
    podman("sh", "-c", "cat > /root/hubclient.py",
           stdin=(REPO / "molecule/jupyterhub/tests/hubclient.py").read_text())
    group = students(max(args.students, args.concurrent))
    print(f"{len(group)} active students from the demo roster")
    try:
        ready = []
        for s in group[:args.students]:
            took, out = client(s, "run", "1 + 1")
            ok = "[1] 2" in out.get("result", "")
            ready.append(took)
            print(f"  {s['username']}: sign-in to a ready R kernel and the first answer {took:.1f} s{'' if ok else ' FAILED ' + str(out)}")
        print(f"1. sign-in -> ready R kernel, {len(ready)} students: median {statistics.median(ready):.1f} s, "
              f"p95 {pct(ready, 0.95):.1f} s (target < 10 s)")
        rss = [int(podman("cat", f"/sys/fs/cgroup/memory/system.slice/cdsops-jupyter-{s['username']}.service/memory.usage_in_bytes"))
               for s in group[:args.students]]
        print(f"3. memory per idle server (cgroup usage, kernel stopped): median {statistics.median(rss) / 2**20:.0f} MiB, "
              f"max {max(rss) / 2**20:.0f} MiB (target < 150 MB)")
        for s in group[args.students:args.concurrent]:
            client(s, "spawn")
        with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
            results = list(pool.map(lambda s: client(s, "run", "sum(1:1e6)"), group[:args.concurrent]))
        served = [t for t, out in results if "5e+11" in out.get("result", "")]
        print(f"2. {args.concurrent} students, one cell each at once: {len(served)} served; "
              f"p50 {pct(served, 0.5):.1f} s, p95 {pct(served, 0.95):.1f} s (each: page, kernel start, cell)")
    finally:
        podman("/usr/local/sbin/cdsops-hub-stop", stdin=json.dumps([s["username"] for s in group]))


if __name__ == "__main__":
    main()
