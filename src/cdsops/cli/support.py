"""Support's commands: ``cdsops lookup`` ("why can't I get in?") and ``cdsops changes``."""

from __future__ import annotations

import argparse
import json

from ..service import changes, lookup
from .common import add_command, add_store_options, now_of

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    lk = add_command(subparsers, "lookup", "why can't this person get in? (email, username or id)")
    lk.add_argument("who")
    add_store_options(lk)
    lk.set_defaults(func=run_lookup)
    ch = add_command(subparsers, "changes", "print the changes record as JSON lines")
    ch.add_argument("--roster", required=True, metavar="STORE")
    ch.add_argument("--student-id", type=int)
    ch.add_argument("--run-id")
    ch.add_argument("--limit", type=int, default=1000)
    ch.set_defaults(func=run_changes)


def run_lookup(args: argparse.Namespace) -> int:
    out = lookup(args.roster, args.who, now_of(args))
    print(json.dumps(out, sort_keys=True, indent=None if args.json else 2))
    return 0


def run_changes(args: argparse.Namespace) -> int:
    for rec in changes(args.roster, student_id=args.student_id, run_id=args.run_id, limit=args.limit):
        print(json.dumps(rec, sort_keys=True))
    return 0
