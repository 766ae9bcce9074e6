"""The report's optional inputs: home directory sizes and Prometheus uptime and alerts.

Home sizes come from the ``cdsops_home_bytes{username="s000042"}`` metric that the
audit_trail role's collector (``du`` on a daily timer) writes as a node-exporter textfile on
each compute host: read from Prometheus when it is reachable, else from a textfile given
with ``--home-sizes`` (a copy of ``cdsops_home.prom``). Missing either way: a note.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from .report import distribution

__all__ = ["home_sizes_from_textfile", "home_sizes", "home_summary", "prometheus_summary", "PrometheusUnavailable"]

_LINE = re.compile(r'cdsops_home_bytes\{[^}]*username="([a-z_][a-z0-9_-]*)"[^}]*\}\s+([0-9.eE+]+)')


class PrometheusUnavailable(RuntimeError):
    pass


def home_sizes_from_textfile(path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = _LINE.match(line.strip())
            if m:
                out[m[1]] = float(m[2])
    return out


def _query(url: str, promql: str, at: datetime | None, timeout: float) -> list[dict[str, Any]]:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at.timestamp():.3f}"
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:  # noqa: S310 - the operator's Prometheus URL
            body = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusUnavailable(f"Prometheus at {url} is not reachable ({exc})") from None
    if body.get("status") != "success":
        raise PrometheusUnavailable(f"Prometheus at {url} answered {body.get('error', 'an error')}")
    return body["data"]["result"]


def home_sizes(prometheus: str | None, textfile: str | None, timeout: float = 3.0) -> tuple[dict[str, float], str]:
    """(username -> bytes, where from); empty with the reason when neither is available."""
    reasons = []
    if prometheus:
        try:
            rows = _query(prometheus, "max by (username) (cdsops_home_bytes)", None, timeout)
            if rows:
                return {r["metric"]["username"]: float(r["value"][1]) for r in rows}, f"Prometheus {prometheus}"
            reasons.append(f"Prometheus {prometheus} has no cdsops_home_bytes")
        except PrometheusUnavailable as exc:
            reasons.append(str(exc))
    if textfile:
        try:
            return home_sizes_from_textfile(textfile), f"textfile {textfile}"
        except OSError as exc:
            reasons.append(f"cannot read {textfile}: {exc.strerror or exc}")
    return {}, "; ".join(reasons) or "no home-size collector configured (--home-sizes or --prometheus)"


def home_summary(sizes: dict[str, float], usernames: set[str], source: str) -> dict[str, Any]:
    mb = [round(b / 1e6, 1) for u, b in sizes.items() if u in usernames]
    if not mb:
        return {"note": f"home directory sizes not available: {source}"}
    out = distribution(mb)
    out["unit"] = "MB"
    out["source"] = source
    return out


def prometheus_summary(url: str | None, start: datetime | None, end: datetime | None, now: datetime, timeout: float = 3.0) -> dict[str, Any]:
    """Uptime per scrape job and alert counts over the period, or a note when unreachable."""
    if not url:
        return {"note": "no Prometheus URL configured (--prometheus)"}
    at = end or now
    seconds = max(60, int((at - start).total_seconds())) if start else 7 * 86400
    rng = f"{seconds}s"
    try:
        up = _query(url, f"avg by (job) (avg_over_time(up[{rng}]))", at, timeout)
        alerts = _query(url, f'count by (alertname) (max_over_time(ALERTS{{alertstate="firing"}}[{rng}]))', at, timeout)
    except PrometheusUnavailable as exc:
        return {"note": f"uptime and alerts left out: {exc}"}
    return {
        "url": url,
        "uptime_percent": {r["metric"].get("job", "?"): round(100 * float(r["value"][1]), 2) for r in up},
        "alerts": {r["metric"].get("alertname", "?"): int(float(r["value"][1])) for r in alerts},
    }
