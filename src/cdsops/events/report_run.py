"""Gathering the report's inputs from the stores and writing its outputs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..store import open_store
from ..times import parse_iso, utcnow
from .html import render_html
from .observe import home_sizes, home_summary, prometheus_summary
from .report import ReportInputs, compute_report
from .store import open_events

__all__ = ["run_report"]


def run_report(roster: str, section: Mapping[str, Any], start: datetime | None, end: datetime | None, args: argparse.Namespace) -> dict[str, Any]:
    zone = args.timezone or section.get("timezone") or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r}") from None
    store = open_store(roster)
    students = store.load_existing().students
    profiles = store.profiles([s.student_id for s in students])
    places = {sid: (p.country, p.city) for sid, p in profiles.items()}
    inputs = ReportInputs(students, places, start, end, zone)
    report, per_student = compute_report(inputs, open_events(roster))
    prom = args.prometheus or section.get("prometheus_url")
    sizes, source = home_sizes(prom, args.home_sizes or section.get("home_sizes"))
    report["home_size_mb"] = home_summary(sizes, {s.username for s in students}, source)
    now = parse_iso(args.now) if args.now else utcnow()
    report["prometheus"] = prometheus_summary(prom, start, end, now)
    if args.out:
        tmp = f"{args.out}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(render_html(report, per_student))
        os.replace(tmp, args.out)
    return report
