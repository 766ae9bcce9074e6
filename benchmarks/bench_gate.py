"""Sign-in gate benchmark (issue 3). Prints figures; asserts nothing.

1. decisions/s through nginx (TLS, keep-alive) with a warm session cookie: every request
   makes nginx ask the gate (auth_request) and then reach an upstream test double;
   driven by wrk; also the gate alone (its /_cdsops/auth on loopback, no nginx);
2. the sign-in map at 100,000 students: file size, parse time, lookup and full session
   check per second, memory;
3. map reload under load: the map (100,000 students) is rewritten atomically every
   2 s while wrk drives nginx; prints the number of failed requests (target 0; a request
   counts as failed on a non-2xx answer, a socket error or no answer within 10 s).

Run: .venv/bin/python benchmarks/bench_gate.py [--seconds 10] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/e2e"))
sys.path.insert(0, str(REPO / "src"))

from test_gate_signin import GateStack, load_map_writer  # noqa: E402

from cdsops.gate import SESSION_COOKIE  # noqa: E402
from cdsops.gate import session as gate_session  # noqa: E402
from cdsops.gate.signin_map import decide, parse_map  # noqa: E402

STUDENTS = 100_000
REWRITE_EVERY = 2.0  # seconds; reconcile rewrites the map at most once a minute in practice


def wrk(url: str, cookie: str, seconds: float, connections: int = 32, threads: int = 1) -> dict:
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "--timeout", "10s", "-d", f"{max(1, round(seconds))}s", "--latency",
         "-H", f"Cookie: {SESSION_COOKIE}={cookie}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return {
        "rps": rps,
        "requests": total,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "p99": p99.group(1) if p99 else "?",
    }


def entries(n: int, key: bytes, writer) -> list[dict]:
    import hashlib
    import hmac

    return [{"hash": hmac.new(key, f"student{i}@example.org".encode(), hashlib.sha256).hexdigest(),
             "username": f"s{i:06d}", "ready_at": "2026-01-01T00:00:00Z"} for i in range(1, n + 1)]


def bench_map(tmp: Path) -> None:
    writer = load_map_writer()
    key = os.urandom(32)
    t0 = time.perf_counter()
    rows = entries(STUDENTS, key, writer)
    doc = writer.build_document(rows, [])
    data = writer.render(doc)
    t_build = time.perf_counter() - t0
    path = tmp / "map-100k.json"
    t0 = time.perf_counter()
    writer.atomic_write(str(path), data, mode=0o640)
    t_write = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    m = parse_map(data)
    t_parse = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hashes = [r["hash"] for r in rows[:: STUDENTS // 1000]]
    now = time.time()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        for h in hashes:
            decide(m, h, now)
        n += len(hashes)
    lookups = n / (time.perf_counter() - t0)
    ckey = gate_session.derive_key(os.urandom(32), "session")
    cookies = [gate_session.issue(ckey, r["username"], r["hash"], int(now) + 3600) for r in rows[:1000]]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        for c in cookies:
            s = gate_session.verify(ckey, c, now)
            entry = m.active.get(s.hash)
            assert entry is not None and entry.username == s.username
        n += len(cookies)
    checks = n / (time.perf_counter() - t0)
    print(f"map at {STUDENTS:,} students: file {len(data) / 1e6:.1f} MB, build+validate+render {t_build:.2f} s "
          f"(module side), atomic write {t_write * 1000:.0f} ms")
    print(f"  gate parse (reload) {t_parse * 1000:.0f} ms, +{(rss1 - rss0) / 1024:.0f} MB RSS per gate worker")
    print(f"  lookup (decide) {lookups:,.0f}/s; session check (HMAC verify + lookup) {checks:,.0f}/s per core")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        print("bench_gate: needs wrk and nginx (scripts/apt/gate.txt)", file=sys.stderr)
        return 2
    print(f"== sign-in gate benchmark ({os.cpu_count()} cores, {args.workers} gunicorn workers)")
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmpdir:
        tmp = Path(tmpdir)
        bench_map(tmp)
        (tmp / "stack").mkdir()
        stack = GateStack(tmp / "stack", workers=args.workers, upstream="nginx").start()
        try:
            writer = stack.writer
            rows = entries(STUDENTS, stack.hash_key, writer)
            stack.write_map(rows)
            key = gate_session.derive_key(stack.cookie_key, "session")
            cookie = gate_session.issue(key, rows[41]["username"], rows[41]["hash"], int(time.time()) + 3600)
            wrk(stack.base_url + "/", cookie, 1)  # warm up (workers load the 100k map)
            r = wrk(stack.base_url + "/", cookie, args.seconds)
            print(f"through nginx (TLS, auth_request + upstream): {r['rps']:,.0f} decisions/s, p99 {r['p99']}, "
                  f"{r['non2xx']} non-2xx, {r['socket_errors']} socket errors (target > 1,000/s)")
            g = wrk(f"http://127.0.0.1:{stack.gate_port}/_cdsops/auth", cookie, min(args.seconds, 4))
            print(f"gate alone (/_cdsops/auth, no nginx): {g['rps']:,.0f}/s, p99 {g['p99']}")

            # map reload under load
            docs = [writer.render(writer.build_document(rows, [])),
                    writer.render(writer.build_document(rows[:-1], [rows[-1]["hash"]]))]
            stop = threading.Event()
            reloads = 0

            def rewrite():
                nonlocal reloads
                while not stop.is_set():
                    writer.atomic_write(str(stack.map_path), docs[reloads % 2], mode=0o644)
                    reloads += 1
                    stop.wait(REWRITE_EVERY)

            t = threading.Thread(target=rewrite)
            t.start()
            try:
                r = wrk(stack.base_url + "/", cookie, args.seconds)
            finally:
                stop.set()
                t.join()
            failed = r["non2xx"] + r["socket_errors"]
            print(f"reload under load: {reloads} rewrites of the {STUDENTS:,}-student map during {r['requests']:,} "
                  f"requests ({r['rps']:,.0f}/s, p99 {r['p99']}): {failed} failed requests (target 0)")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
