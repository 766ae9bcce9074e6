"""Run the emulator: ``python -m cdsops.emulator --port 8089 [--fault 503:directory.members.insert:3] ...``

Then point cdsops at it with ``CDSOPS_GOOGLE_EMULATOR=http://127.0.0.1:8089``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from cdsops.emulator.server import MEMBER_WRITE_BUDGET, Emulator, Fault


def _fault(spec: str) -> Fault:
    """KIND[:MATCH[:TIMES[:SKIP]]]; latency takes KIND=latency:MATCH:TIMES:SECONDS."""
    parts = spec.split(":")
    kind = parts[0]
    kw: dict = {"kind": kind}
    if len(parts) > 1 and parts[1]:
        kw["match"] = parts[1]
    if len(parts) > 2 and parts[2]:
        kw["times"] = int(parts[2])
    if len(parts) > 3 and parts[3]:
        if kind == "latency":
            kw["seconds"] = float(parts[3])
        else:
            kw["skip"] = int(parts[3])
    try:
        return Fault(**kw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cdsops.emulator", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    ap.add_argument("--port", type=int, default=8089, help="port (0 picks a free one)")
    ap.add_argument("--fault", type=_fault, action="append", default=[], metavar="KIND[:MATCH[:TIMES[:SKIP|SECONDS]]]",
                    help="inject a fault, e.g. 503:directory.members.insert:3 or latency:*:-1:0.2 (repeatable)")
    ap.add_argument("--group", action="append", default=[], help="create an empty group (repeatable)")
    ap.add_argument("--project", action="append", default=[], help="create a project with an empty policy")
    ap.add_argument("--dataset", action="append", default=[], metavar="PROJECT:DATASET", help="create a dataset")
    ap.add_argument("--member-write-budget", type=int, default=MEMBER_WRITE_BUDGET,
                    help="member writes one batch may carry before the rest get 403 quotaExceeded (0: no budget)")
    ap.add_argument("--bigquery-role", action="append", default=[], metavar="ROLE",
                    help="the caller's role on every dataset (repeatable; default roles/bigquery.dataOwner)")
    ap.add_argument("--stale-reads", type=int, default=0, help="reads after a write that still answer the old state")
    ap.add_argument("--verbose", action="store_true", help="log request lines (never bodies or addresses)")
    args = ap.parse_args(argv)
    emu = Emulator(args.host, args.port, faults=args.fault, quiet=not args.verbose,
                   member_write_budget=args.member_write_budget or None,
                   bigquery_roles=tuple(args.bigquery_role) or ("roles/bigquery.dataOwner",), stale_reads=args.stale_reads)
    for g in args.group:
        emu.create_group(g)
    for p in args.project:
        emu.create_project(p)
    for d in args.dataset:
        p, _, ds = d.partition(":")
        if not ds:
            ap.error(f"--dataset needs PROJECT:DATASET, got {d!r}")
        emu.create_dataset(p, ds)
    emu.start()
    print(json.dumps({"emulator": emu.url}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
