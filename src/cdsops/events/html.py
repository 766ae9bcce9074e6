"""The report as one self-contained HTML file: figures are inline PNGs drawn by matplotlib
(no script, no external resource), tables hold the numbers. Only counts, usernames never."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

__all__ = ["render_html", "FIGURES"]

#: figure id -> caption; every one is in the HTML (a figure with no data says so inside it)
FIGURES = {
    "fig-funnel": "Funnel: registered, signed in, read data, ran code",
    "fig-countries": "Registrations by country (under 5 folded into other)",
    "fig-weekly-platform": "Weekly activity, platform time zone",
    "fig-weekly-local": "Weekly activity, each student's local time",
    "fig-commands": "Commands and cells per student",
}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bar(labels: list[str], values: list[float], title: str, horizontal: bool = False) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    if horizontal:
        ax.barh(labels[::-1], values[::-1], color="#3b6ea5")
    else:
        ax.bar(labels, values, color="#3b6ea5")
    ax.set_title(title)
    return _png(fig)


def _heatmap(grid: list[list[int]], days: list[str], title: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(7), days)
    ax.set_xticks(range(0, 24, 3), [f"{h:02d}" for h in range(0, 24, 3)])
    ax.set_xlabel("hour")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="events")
    return _png(fig)


def _hist(cmd: list[int], cells: list[int]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    if cmd or cells:
        ax.hist([cmd, cells], bins=20, label=["commands", "cells"])
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no commands or cells in this period", ha="center", va="center")
    ax.set_xlabel("per student")
    ax.set_ylabel("students")
    return _png(fig)


def _figures(rep: dict[str, Any], per_student: dict[str, list[int]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    f = rep["funnel"]
    stages = ["registered", "signed_in", "read_data", "ran_code"]
    w = rep["weekly"]
    return {
        "fig-funnel": _bar(stages, [f[k] for k in stages], "students"),
        "fig-countries": _bar([c["country"] for c in rep["countries"]] or ["(none)"], [c["students"] for c in rep["countries"]] or [0], "students", True),
        "fig-weekly-platform": _heatmap(w["platform"], w["days"], f"events by hour ({w['platform_zone']})"),
        "fig-weekly-local": _heatmap(w["local"], w["days"], "events by hour (student's local time)"),
        "fig-commands": _hist(per_student.get("command", []), per_student.get("code", [])),
    }


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _mapping(d: dict[str, Any]) -> str:
    """A note as a paragraph, figures as a two-column table."""
    if "note" in d:
        return f"<p class='note'>{html.escape(str(d['note']))}</p>"
    return _table([(k, json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in d.items()], ("", "value"))


def render_html(rep: dict[str, Any], per_student: dict[str, list[int]]) -> str:
    figs = _figures(rep, per_student)
    f = rep["funnel"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cdsops usage report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em}figure{margin:1em 0}</style></head><body>",
        "<h1>Usage report</h1>",
        f"<p>Period: {html.escape(str(rep['period']['from'] or 'start'))} to {html.escape(str(rep['period']['to'] or 'now'))}; "
        f"{rep['events']} events.</p>",
        "<h2>Funnel</h2>",
        _table([(k, f[k], f"{f['percent'][k]}%") for k in ("registered", "signed_in", "read_data", "ran_code")], ("stage", "students", "share")),
        "<h2>Countries</h2>",
        _table([(c["country"], c["students"]) for c in rep["countries"]], ("country", "students")),
        "<h2>Weekly activity</h2>",
        f"<p>Busiest hour, platform zone: {html.escape(json.dumps(rep['weekly']['busiest_platform']))}; local: "
        f"{html.escape(json.dumps(rep['weekly']['busiest_local']))}; students without a known local zone (platform zone used): "
        f"{rep['weekly']['students_without_local_zone']}.</p>",
        "<h2>Commands and cells per student</h2>",
        _table([(k, v["students"], v["median"], v["p90"]) for k, v in (("commands", rep["commands_per_student"]), ("cells", rep["cells_per_student"]))], ("", "students", "median", "p90")),  # noqa: E501  a literal line kept whole for grep
        "<h2>Home directory size</h2>",
        _mapping(rep.get("home_size_mb", {"note": "not computed"})),
        "<h2>Uptime and alerts</h2>",
        _mapping(rep.get("prometheus", {"note": "not computed"})),
        "<h2>Figures</h2>",
    ]
    for fid, caption in FIGURES.items():
        parts.append(f"<figure id='{fid}'><img alt='{html.escape(caption)}' src='data:image/png;base64,{figs[fid]}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
