"""``cdsops report``: the usage figures a course team publishes.

From the roster, the profiles (country and city only) and the events table: the funnel
(registered -> signed in -> read data -> ran code), registrations by country (countries under
``MIN_GROUP`` students folded into "other"), weekly activity as a day-of-week x hour heatmap
in the platform's zone and in each student's local zone, commands and cells per student,
home directory sizes (from the ``cdsops_home_bytes`` collector, when available) and
Prometheus uptime and alerts (when reachable). As numbers (``--json``) and as one
self-contained HTML file (inline PNG figures). Never an email or a name.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..roster import Student
from ..times import iso
from .store import EventStore
from .zones import zone_for

__all__ = ["MIN_GROUP", "DAYS", "ReportInputs", "compute_report", "fold_countries", "percentile", "distribution", "heatmaps"]

MIN_GROUP = 5
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class ReportInputs:
    students: Sequence[Student]
    places: Mapping[int, tuple[str, str]]  # student id -> (country, city)
    start: datetime | None
    end: datetime | None
    platform_zone: str = "UTC"


def _registered(students: Sequence[Student], start: datetime | None, end: datetime | None) -> list[Student]:
    if start is None and end is None:
        return list(students)
    lo = start or datetime.min.replace(tzinfo=UTC)
    hi = end or datetime.max.replace(tzinfo=UTC)
    return [s for s in students if any(lo <= t < hi for t in s.agreements)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, Any]:
    return {
        "students": len(values),
        "median": statistics.median(values) if values else None,
        "p90": percentile(values, 90),
        "max": max(values) if values else None,
    }


def fold_countries(countries: Iterable[str], min_group: int = MIN_GROUP) -> list[dict[str, Any]]:
    """Students per country, largest first; countries under ``min_group`` folded into "other" (last)."""
    counts = Counter((c or "").strip() or "unknown" for c in countries)
    kept = sorted(((c, n) for c, n in counts.items() if n >= min_group and c != "other"), key=lambda x: (-x[1], x[0]))
    other = sum(n for c, n in counts.items() if n < min_group or c == "other")
    out = [{"country": c, "students": n} for c, n in kept]
    if other:
        out.append({"country": "other", "students": other})
    return out


def _funnel(registered: Sequence[Student], counts: Sequence[tuple[int, str, int]]) -> dict[str, Any]:
    ids = {s.student_id for s in registered}
    kinds: dict[str, set[int]] = {}
    for sid, kind, _ in counts:
        if sid in ids:
            kinds.setdefault(kind, set()).add(sid)
    n = len(ids)
    funnel = {
        "registered": n,
        "signed_in": len(kinds.get("signin.allowed", set())),
        "read_data": len(kinds.get("data.read", set())),
        "ran_code": len(kinds.get("code", set()) | kinds.get("command", set())),
    }
    funnel["percent"] = {k: (round(100 * v / n, 1) if n else 0.0) for k, v in funnel.items()}
    return funnel


def heatmaps(
    buckets: Iterable[tuple[int, int, int]], zones: Mapping[int, ZoneInfo | None], platform: ZoneInfo
) -> tuple[list[list[int]], list[list[int]], int]:
    """(platform grid, local grid, events placed in the platform zone for want of a local one);
    grids are 7 days (Monday first) x 24 hours."""
    plat = [[0] * 24 for _ in range(7)]
    local = [[0] * 24 for _ in range(7)]
    cache: dict[tuple[Any, int], tuple[int, int]] = {}
    unknown = 0

    def cell(zone: ZoneInfo, h: int) -> tuple[int, int]:
        key = (zone, h)
        hit = cache.get(key)
        if hit is None:
            t = datetime.fromtimestamp(h, tz=zone)
            hit = cache[key] = (t.weekday(), t.hour)
        return hit

    for sid, h, n in buckets:
        d, hr = cell(platform, h)
        plat[d][hr] += n
        zone = zones.get(sid)
        if zone is None:
            unknown += n
            zone = platform
        d, hr = cell(zone, h)
        local[d][hr] += n
    return plat, local, unknown


def _busiest(grid: list[list[int]]) -> dict[str, Any] | None:
    best = max(((grid[d][h], d, h) for d in range(7) for h in range(24)), key=lambda x: (x[0], -x[1], -x[2]))
    if best[0] == 0:
        return None
    return {"day": DAYS[best[1]], "hour": best[2], "events": best[0]}


def compute_report(inp: ReportInputs, events: EventStore) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Every figure of the report as numbers (the ``--json`` output, less Prometheus and home
    sizes), and the per-student command and cell counts the histogram draws."""
    registered = _registered(inp.students, inp.start, inp.end)
    counts = events.per_student_counts(inp.start, inp.end)
    reg_ids = {s.student_id for s in registered}
    per_kind: dict[str, list[int]] = {"command": [], "code": []}
    for sid, kind, n in counts:
        if kind in per_kind and sid in reg_ids:
            per_kind[kind].append(int(n))
    platform = ZoneInfo(inp.platform_zone)
    zones = {s.student_id: zone_for(*inp.places.get(s.student_id, ("", ""))) for s in inp.students}
    plat, local, unknown = heatmaps(events.hour_buckets(inp.start, inp.end), zones, platform)
    report = {
        "period": {"from": iso(inp.start), "to": iso(inp.end)},
        "funnel": _funnel(registered, counts),
        "countries": fold_countries(inp.places.get(s.student_id, ("", ""))[0] for s in registered),
        "weekly": {
            "platform_zone": inp.platform_zone,
            "days": list(DAYS),
            "platform": plat,
            "local": local,
            "busiest_platform": _busiest(plat),
            "busiest_local": _busiest(local),
            "events_without_local_zone": unknown,
            "students_without_local_zone": sum(1 for s in registered if zones.get(s.student_id) is None),
        },
        "commands_per_student": distribution(per_kind["command"]),
        "cells_per_student": distribution(per_kind["code"]),
        "events": sum(int(n) for _, _, n in counts),
    }
    return report, per_kind
