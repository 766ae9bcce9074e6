"""cdsops report on a synthetic event set with known answers."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdsops.config import Config
from cdsops.events import synth
from cdsops.events.html import FIGURES
from cdsops.events.ingest import ingest
from cdsops.events.report import fold_countries, percentile
from cdsops.events.store import open_events
from cdsops.service import roster_sync
from cdsops.testing.registrations import write_registrations

NOW = datetime(2026, 3, 10, tzinfo=UTC)
REG0 = datetime(2026, 2, 1, tzinfo=UTC)
TUE20 = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)
WED01 = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
PLACES = [("Paris", "France")] * 6 + [("Tokyo", "Japan")] * 5 + [("Oslo", "Norway")] * 2 + [("Rome", "IT")]
CDSOPS = [sys.executable, "-m", "cdsops.cli"]


def _entries() -> list[dict]:
    m = timedelta(minutes=1)
    e = [synth.signin("s000001", "success", TUE20), synth.code("s000001", "1", TUE20 + m), *synth.audit_exec(200001, ["ls"], 1, TUE20 + 2 * m)]
    e += [synth.signin("s000007", "success", WED01 + 10 * m)] + [synth.code("s000007", str(i), WED01 + (11 + i) * m) for i in range(4)]
    e += [x for i in range(2) for x in synth.audit_exec(200007, ["R"], 10 + i, WED01 + (20 + i) * m)]
    e += synth.data_read(200007, "d.csv", 20, WED01 + 30 * m)
    e += [synth.signin("s000008", "success", WED01 + 20 * m)] + [x for i in range(10) for x in synth.audit_exec(200008, ["ls"], 30 + i, WED01 + (21 + i) * m)]
    e += [synth.signin("s000012", "success", TUE20 + 30 * m), *synth.data_read(200012, "d.csv", 50, TUE20 + 31 * m)]
    e += [synth.signin("s000013", "expired", TUE20)]
    return e


@pytest.fixture(scope="module")
def roster(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("report")
    rows = [(REG0 + timedelta(hours=i), f"person{i + 1}@example.org", f"Person Number{i + 1}", city, country, "yes", "yes")
            for i, (city, country) in enumerate(PLACES)]
    src = write_registrations(d / "reg.csv", rows)
    uri = str(d / "roster.duckdb")
    roster_sync(str(src), uri, Config(), NOW)
    (d / "j.json").write_text(synth.dumps(_entries()))
    names = {f"s{i:06d}": i for i in range(1, 15)}
    assert ingest(open_events(uri), names, str(d / "j.json"), Config(), now=NOW).added == 25
    return uri


def report(roster, *extra):
    out = subprocess.run(CDSOPS + ["report", "--roster", roster, "--now", NOW.isoformat(), *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def test_known_answers(roster, tmp_path):
    rep = json.loads(report(roster, "--json").stdout)
    f = rep["funnel"]
    assert (f["registered"], f["signed_in"], f["read_data"], f["ran_code"]) == (14, 4, 2, 3)
    assert f["percent"]["signed_in"] == round(100 * 4 / 14, 1)
    assert rep["countries"] == [{"country": "France", "students": 6}, {"country": "Japan", "students": 5}, {"country": "other", "students": 3}]
    assert sum(c["students"] for c in rep["countries"]) == f["registered"]
    w = rep["weekly"]
    assert w["busiest_platform"] == {"day": "Wed", "hour": 1, "events": 19}
    assert w["busiest_local"] == {"day": "Wed", "hour": 10, "events": 19}  # Tokyo, UTC+9
    assert w["platform"][1][20] == 5 and w["local"][1][21] == 5            # Paris and Oslo in March: UTC+1
    assert rep["commands_per_student"] == {"students": 3, "median": 2, "p90": 10, "max": 10}
    assert rep["cells_per_student"]["median"] == 2.5 and rep["cells_per_student"]["p90"] == 4
    assert "note" in rep["prometheus"] and "note" in rep["home_size_mb"]


def test_platform_zone_moves_the_platform_heatmap(roster):
    rep = json.loads(report(roster, "--json", "--timezone", "America/New_York").stdout)
    assert rep["weekly"]["busiest_platform"] == {"day": "Tue", "hour": 20, "events": 19}  # EST = UTC-5
    assert rep["weekly"]["busiest_local"]["hour"] == 10


def test_period_filters_registrations_and_events(roster):
    rep = json.loads(report(roster, "--json", "--from", "2026-02-01T00:00:00Z", "--to", "2026-02-01T03:00:00Z").stdout)
    assert rep["funnel"]["registered"] == 3 and rep["funnel"]["signed_in"] == 0 and rep["events"] == 0
    rep = json.loads(report(roster, "--json", "--from", "2026-03-04T00:00:00Z").stdout)
    assert rep["funnel"] == {"registered": 0, "signed_in": 0, "read_data": 0, "ran_code": 0,
                             "percent": {"registered": 0.0, "signed_in": 0.0, "read_data": 0.0, "ran_code": 0.0}}


def test_no_events_yet_is_zeros_not_an_error(tmp_path):
    src = write_registrations(tmp_path / "r.csv", [(REG0, "a@example.org", "A B", "Paris", "France", "yes", "yes")])
    uri = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), uri, Config(), NOW)
    rep = json.loads(report(uri, "--json", "--out", str(tmp_path / "r.html")).stdout)
    assert rep["funnel"]["registered"] == 1 and rep["funnel"]["signed_in"] == rep["funnel"]["ran_code"] == 0
    assert rep["weekly"]["busiest_platform"] is None
    assert rep["countries"] == [{"country": "other", "students": 1}]


def test_html_has_every_figure_and_no_email_or_name(roster, tmp_path):
    out = tmp_path / "report.html"
    report(roster, "--out", str(out), "--home-sizes", str(_home_sizes(tmp_path)))
    text = out.read_text()
    for fid in FIGURES:
        assert f"id='{fid}'" in text
    assert text.count("data:image/png;base64,") == len(FIGURES)
    assert "@" not in text and "Person" not in text and "Number" not in text and "<script" not in text
    assert "s0000" not in text  # counts only: not even usernames
    assert "<tr><td>median</td><td>15.5</td></tr>" in text and "<tr><td>p90</td><td>21.0</td></tr>" in text  # MB, textfile


def _home_sizes(tmp_path: Path) -> Path:
    p = tmp_path / "cdsops_home.prom"
    p.write_text("# TYPE cdsops_home_bytes gauge\n" + "".join(f'cdsops_home_bytes{{username="s{i:06d}"}} {i * 1e6 + 8e6}\n' for i in range(1, 15)))
    return p


def test_bad_period_and_zone_are_clear_errors(roster):
    out = subprocess.run(CDSOPS + ["report", "--roster", roster, "--from", "yesterday"], capture_output=True, text=True)
    assert out.returncode == 1 and "--from must be an ISO 8601 time" in out.stderr
    out = subprocess.run(CDSOPS + ["report", "--roster", roster, "--timezone", "Mars/Olympus"], capture_output=True, text=True)
    assert out.returncode == 1 and "unknown time zone" in out.stderr


@pytest.mark.parametrize("countries, expected", [
    (["A"] * 5 + ["B"] * 4, [{"country": "A", "students": 5}, {"country": "other", "students": 4}]),
    ([], []),
    (["A"] * 7 + ["", "other"], [{"country": "A", "students": 7}, {"country": "other", "students": 2}]),
])
def test_fold_countries(countries, expected):
    assert fold_countries(countries) == expected


def test_percentile_nearest_rank():
    assert percentile(list(range(1, 11)), 90) == 9 and percentile([5], 90) == 5 and percentile([], 90) is None
