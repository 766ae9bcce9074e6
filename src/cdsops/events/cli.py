"""The audit trail's commands: ``cdsops events ingest``, ``cdsops whois``, ``cdsops report``.

``register(subparsers)`` adds them to the ``cdsops`` parser; each handler returns the exit
status (0 ok, 1 failed with a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from ..times import utcnow

__all__ = ["register", "cmd_events_ingest", "cmd_whois", "cmd_report"]


def _fail(msg: str) -> int:
    sys.stderr.write(f"cdsops: error: {' '.join(msg.split())}\n")
    return 1


def _time(value: str | None, flag: str) -> datetime | None:
    if not value:
        return None
    from ..times import parse_iso as parse_iso_time

    try:
        return parse_iso_time(value)
    except ValueError:
        raise ValueError(f"{flag} must be an ISO 8601 time, got {value!r}") from None


def _settings(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str]:
    """(Config, the ``events:`` section of the configuration, the roster store)."""
    from ..config import load_config

    cfg = load_config(getattr(args, "config", None))
    section = cfg.extra.get("events") or {}
    if not isinstance(section, dict):
        raise ValueError("events (in the configuration) must be a mapping")
    roster = args.roster or cfg.extra.get("roster") or os.environ.get("CDSOPS_ROSTER")
    if not roster:
        raise ValueError("no roster store: pass --roster or set roster: in the configuration")
    return cfg, section, roster


def cmd_events_ingest(args: argparse.Namespace) -> int:
    from ..store import open_store
    from .ingest import DEFAULT_RETENTION_DAYS, ingest, write_textfile
    from .store import open_events

    now = utcnow()
    textfile = args.textfile_dir
    try:
        cfg, section, roster = _settings(args)
        textfile = textfile or section.get("textfile_dir")
        days = args.retention_days or int(section.get("retention_days", DEFAULT_RETENTION_DAYS))
        students = open_store(roster).load_existing().students
        usernames = {s.username: s.student_id for s in students}
        identities = {s.identity: (s.student_id, s.username) for s in students} if args.source.startswith("bigquery-audit://") else None
        events = open_events(roster)
        summary = ingest(events, usernames, args.source, cfg, now=now, retention_days=days, host=args.host, identities=identities)
    except Exception as exc:  # noqa: BLE001 - every failure is one line on stderr and exit 1, as cdsops.cli.main does
        if textfile:
            write_textfile(textfile, None, now, None)
        return _fail(str(exc))
    print(json.dumps(summary.to_dict(), sort_keys=True), flush=True)
    if textfile:
        write_textfile(textfile, summary, now, events.stats()["newest"])
    return 0


def cmd_whois(args: argparse.Namespace) -> int:
    from ..store import open_store
    from .store import open_events
    from .whois import find_student, render_text, whois

    try:
        _, _, roster = _settings(args)
        now = _time(args.now, "--now") or utcnow()
        store = open_store(roster)
        student = find_student(store.load_existing().students, args.who)
        if student is None:
            sys.stderr.write("cdsops: no student matches (not registered, or every registration row was rejected)\n")
            if args.json:
                print(json.dumps({"found": False}))
            return 1
        info = whois(student, store.changes(student_id=student.student_id), open_events(roster), now, limit=args.limit)
    except Exception as exc:  # noqa: BLE001 - every failure is one line on stderr and exit 1, as cdsops.cli.main does
        return _fail(str(exc))
    print(json.dumps(info, sort_keys=True) if args.json else render_text(info))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report_run import run_report

    try:
        _, section, roster = _settings(args)
        start, end = _time(args.start, "--from"), _time(args.end, "--to")
        if start and end and start >= end:
            raise ValueError("--from must be before --to")
        report = run_report(roster, section, start, end, args)
    except Exception as exc:  # noqa: BLE001 - every failure is one line on stderr and exit 1, as cdsops.cli.main does
        return _fail(str(exc))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    elif args.out:
        print(f"report written to {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add ``events``, ``whois`` and ``report`` to the ``cdsops`` subcommands."""
    hidden = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    ev = sub.add_parser("events", help="the audit trail's events table")
    esub = ev.add_subparsers(dest="events_command", metavar="SUBCOMMAND", parser_class=type(ev))
    esub.required = True
    ing = esub.add_parser("ingest", help="fold journal entries and audit records into the events table")
    ing.add_argument("--roster", metavar="STORE", help="roster store (default: roster: in the configuration)")
    ing.add_argument("--source", required=True, help="FILE, DIR, '-', journal, journal:DIR or bigquery-audit://PROJECT/DATASET[/TABLE]")
    ing.add_argument("--retention-days", type=int, help="delete events older than this (default events.retention_days or 400)")
    ing.add_argument("--textfile-dir", help="write cdsops_events.prom here for node-exporter")
    ing.add_argument("--host", help="host name for auditd log lines without node= (default: this host)")
    ing.add_argument("--config", **hidden)
    ing.set_defaults(func=cmd_events_ingest)

    wh = sub.add_parser("whois", help="one person's registration, access and activity (email, username or id)")
    wh.add_argument("who")
    wh.add_argument("--roster", metavar="STORE")
    wh.add_argument("--json", action="store_true")
    wh.add_argument("--now", metavar="ISO8601")
    wh.add_argument("--limit", type=int, default=10, help="events listed per section (default 10)")
    wh.add_argument("--config", **hidden)
    wh.set_defaults(func=cmd_whois)

    rp = sub.add_parser("report", help="usage figures: funnel, countries, weekly activity (HTML and JSON)")
    rp.add_argument("--roster", metavar="STORE")
    rp.add_argument("--from", dest="start", metavar="ISO8601")
    rp.add_argument("--to", dest="end", metavar="ISO8601")
    rp.add_argument("--out", metavar="FILE.html", help="write the self-contained HTML report here")
    rp.add_argument("--json", action="store_true", help="print the figures as JSON")
    rp.add_argument("--timezone", help="the platform's time zone (default events.timezone or UTC)")
    rp.add_argument("--prometheus", metavar="URL", help="Prometheus for uptime, alerts and home sizes (default events.prometheus_url)")
    rp.add_argument("--home-sizes", metavar="FILE", help="a cdsops_home.prom textfile (when Prometheus has none)")
    rp.add_argument("--now", metavar="ISO8601")
    rp.add_argument("--config", **hidden)
    rp.set_defaults(func=cmd_report)
