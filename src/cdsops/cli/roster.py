"""``cdsops roster sync`` and ``cdsops roster show``."""

from __future__ import annotations

import argparse
import json

from ..plan import render_table
from ..roster import status_of
from ..service import roster_students, roster_sync
from ..times import iso
from .common import add_group, add_store_options, config_of, now_of

__all__ = ["register"]

SHOW_COLUMNS = ["id", "username", "identity", "status", "expires_at", "first_registered", "last_registered", "adm", "host"]


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_group(subparsers, "roster", "sync and show the roster")
    sync = group.add_parser("sync", help="fold registration rows into the roster")
    sync.add_argument("--source", required=True, metavar="SRC", help="CSV path, duckdb:PATH#TABLE or bigquery://PROJECT/DATASET/TABLE")
    add_store_options(sync)
    sync.add_argument("--allow-empty", action="store_true", help="accept a source with no rows (guard override)")
    sync.add_argument("--full", action="store_true", help="read the whole source, ignoring the watermark")
    sync.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sync.set_defaults(func=run_sync)
    show = group.add_parser("show", help="print the roster")
    add_store_options(show)
    show.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    show.set_defaults(func=run_show)


def run_sync(args: argparse.Namespace) -> int:
    now = now_of(args)
    report = roster_sync(args.source, args.roster, config_of(args), now, allow_empty=args.allow_empty, full=args.full)
    d = report.to_dict()
    if args.json:
        print(json.dumps(d, sort_keys=True))
        return 0
    print(
        f"synced {report.rows} rows from {args.source}: {d['added']} added, {d['renewed']} renewed, "
        f"{d['unchanged']} unchanged, {len(d['rejected'])} rejected (run {report.run_id})"
    )
    if report.rejected:
        print(render_table([(r.row, r.reason) for r in report.rejected], ["row", "reason"]))
    return 0


def run_show(args: argparse.Namespace) -> int:
    now = now_of(args)
    students = roster_students(args.roster)
    if args.json:
        items = [
            {
                "student_id": s.student_id,
                "username": s.username,
                "identity": s.identity,
                "status": status_of(s, now),
                "expires_at": iso(s.expires_at),
                "first_registered_at": iso(s.first_registered_at),
                "last_registered_at": iso(s.last_registered_at),
            }
            for s in students
        ]
        print(json.dumps({"students": items}, sort_keys=True))
        return 0
    rows = [
        (s.student_id, s.username, s.identity, status_of(s, now), iso(s.expires_at), iso(s.first_registered_at),
         iso(s.last_registered_at), s.admission, s.host)
        for s in students
    ]
    active = sum(1 for r in rows if r[3] == "active")
    print(f"roster {args.roster} at {iso(now)}: {len(rows)} students, {active} active")
    print(render_table(rows, SHOW_COLUMNS))
    return 0
