"""The ``cdsops`` command line.

Contract (kept stable; acceptance tests depend on it):
- ``cdsops roster sync --source SRC --roster STORE [--now ISO8601] [--json]``
- ``cdsops roster show --roster STORE [--now ISO8601] --json``
- ``cdsops plan --roster STORE [--now ISO8601] [--json]``
Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Callable, Sequence

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    pass


def _now(value: str | None) -> datetime:
    """``--now``: an ISO 8601 time (``Z`` or an offset; naive is UTC), as UTC; now when absent."""
    if not value:
        return datetime.now(timezone.utc)
    from .registrations import parse_iso_time

    try:
        return parse_iso_time(value)
    except ValueError:
        raise CliError(f"--now must be an ISO 8601 time, got {value!r}") from None


def _config(args: argparse.Namespace):
    from .config import load_config

    return load_config(getattr(args, "config", None))


def _iso(dt: datetime | None) -> str | None:
    from .roster import iso

    return iso(dt)


# -- commands ------------------------------------------------------------------------
def cmd_roster_sync(args: argparse.Namespace) -> int:
    from .service import roster_sync

    now = _now(args.now)
    report = roster_sync(args.source, args.roster, _config(args), now, allow_empty=args.allow_empty, full=args.full)
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
        return 0
    d = report.to_dict()
    print(
        f"synced {report.rows} rows from {args.source}: {d['added']} added, {d['renewed']} renewed, "
        f"{d['unchanged']} unchanged, {len(d['rejected'])} rejected (run {report.run_id})"
    )
    if report.rejected:
        from .plan import render_table

        print(render_table([(r.row, r.reason) for r in report.rejected], ["row", "reason"]))
    return 0


def _students(args: argparse.Namespace):
    from .store import open_store

    return open_store(args.roster).load().students


def cmd_roster_show(args: argparse.Namespace) -> int:
    from .roster import status_of

    now = _now(args.now)
    students = _students(args)
    items = [
        {
            "student_id": s.student_id,
            "username": s.username,
            "identity": s.identity,
            "status": status_of(s, now),
            "expires_at": _iso(s.expires_at),
            "first_registered_at": _iso(s.first_registered_at),
            "last_registered_at": _iso(s.last_registered_at),
        }
        for s in students
    ]
    if args.json:
        print(json.dumps({"students": items}, sort_keys=True))
        return 0
    from .plan import render_table

    active = sum(1 for i in items if i["status"] == "active")
    print(f"roster {args.roster} at {_iso(now)}: {len(items)} students, {active} active")
    rows = [
        (
            s.student_id,
            s.username,
            s.identity,
            status_of(s, now),
            _iso(s.expires_at),
            _iso(s.first_registered_at),
            _iso(s.last_registered_at),
            s.admission,
            s.host,
        )
        for s in students
    ]
    print(
        render_table(
            rows, ["id", "username", "identity", "status", "expires_at", "first_registered", "last_registered", "adm", "host"]
        )
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import check_guard, plan_table
    from .service import compute_plan

    now = _now(args.now)
    plan = compute_plan(args.roster, _config(args), now, enforce_guard=False)
    if args.json:
        print(plan.to_json())
    else:
        print(plan_table(plan))
    check_guard(plan, args.allow_mass_revoke)
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    """Answer "why can't I get in?" for one person: status, expiry, history of changes."""
    from .identity import InvalidEmail, canonicalize
    from .roster import status_of
    from .store import open_store

    now = _now(args.now)
    store = open_store(args.roster)
    who = args.who.strip()
    students = store.load().students
    match = None
    if "@" in who:
        try:
            ident = canonicalize(who)
        except InvalidEmail as exc:
            raise CliError(f"not a valid email address: {exc}") from None
        match = next((s for s in students if s.identity == ident), None)
    else:
        match = next((s for s in students if s.username == who or (who.isdigit() and s.student_id == int(who))), None)
    if match is None:
        out = {"found": False, "reason": "no valid registration for this person (not registered, or every row was rejected)"}
    else:
        status = status_of(match, now)
        out = {
            "found": True,
            "student_id": match.student_id,
            "username": match.username,
            "status": status,
            "expires_at": _iso(match.expires_at),
            "last_registered_at": _iso(match.last_registered_at),
            "admission": match.admission,
            "host": match.host,
            "changes": store.changes(student_id=match.student_id),
        }
    print(json.dumps(out, sort_keys=True, indent=None if args.json else 2))
    return 0


def cmd_changes(args: argparse.Namespace) -> int:
    from .store import open_store

    store = open_store(args.roster)
    for rec in store.changes(student_id=args.student_id, run_id=args.run_id, limit=args.limit):
        print(json.dumps(rec, sort_keys=True))
    return 0


# -- parser --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit 2
        sys.stderr.write(f"cdsops: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cdsops", description="Registration rows in, accounts, groups and access out.")
    p.add_argument("--config", help="configuration file (YAML); default $CDSOPS_CONFIG or built-in defaults")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(sp: argparse.ArgumentParser, json_flag: bool = True) -> None:
        sp.add_argument("--roster", required=True, metavar="STORE", help="DuckDB file path or bigquery://PROJECT/DATASET")
        sp.add_argument("--now", metavar="ISO8601", help="evaluate at this time (default: now)")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    roster = sub.add_parser("roster", help="sync and show the roster")
    rsub = roster.add_subparsers(dest="roster_command", metavar="SUBCOMMAND", parser_class=_Parser)
    rsub.required = True
    s = rsub.add_parser("sync", help="fold registration rows into the roster")
    s.add_argument("--source", required=True, metavar="SRC", help="CSV path, duckdb:PATH#TABLE or bigquery://PROJECT/DATASET/TABLE")
    common(s)
    s.add_argument("--allow-empty", action="store_true", help="accept a source with no rows (guard override)")
    s.add_argument("--full", action="store_true", help="read the whole source, ignoring the watermark")
    s.set_defaults(func=cmd_roster_sync)
    sh = rsub.add_parser("show", help="print the roster")
    common(sh)
    sh.set_defaults(func=cmd_roster_show)

    pl = sub.add_parser("plan", help="print the desired state")
    common(pl)
    pl.add_argument("--allow-mass-revoke", action="store_true", help="guard override: accept revoking many students")
    pl.set_defaults(func=cmd_plan)

    lk = sub.add_parser("lookup", help="why can't this person get in? (email, username or id)")
    lk.add_argument("who")
    common(lk)
    lk.set_defaults(func=cmd_lookup)

    ch = sub.add_parser("changes", help="print the changes record as JSON lines")
    ch.add_argument("--roster", required=True, metavar="STORE")
    ch.add_argument("--student-id", type=int)
    ch.add_argument("--run-id")
    ch.add_argument("--limit", type=int, default=1000)
    ch.set_defaults(func=cmd_changes)

    _register_plugins(sub, common)
    from .events.cli import register as register_events  # audit trail (issue 12); the lead re-wires into cli/

    register_events(sub)
    return p


def _register_plugins(sub, common: Callable) -> None:
    """Commands contributed by other parts of cdsops (reconcile, gate, emulator)."""
    try:
        from . import cli_extra
    except ImportError:
        return
    cli_extra.register(sub, common)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("cdsops: interrupted; nothing further was changed\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line, no traceback, for every expected failure
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        known = {"CliError", "SourceError", "StoreError", "GuardError", "ConfigError", "RosterError"}
        if exc.__class__.__name__ not in known and not _verbose():
            msg = f"{exc.__class__.__name__}: {msg}"
        sys.stderr.write(f"cdsops: error: {msg}\n")
        if _verbose():
            import traceback

            traceback.print_exc()
        return EXIT_ERROR


def _verbose() -> bool:
    import os

    return os.environ.get("CDSOPS_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    raise SystemExit(main())
