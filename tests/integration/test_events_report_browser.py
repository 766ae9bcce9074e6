"""The usage report's HTML opened in headless Chromium (Debian's chromium + chromium-driver,
scripts/apt/browser.txt) through Selenium: every figure is present and rendered (an image
that decoded, with a size), and the page asks for nothing from the network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from cdsops.config import Config
from cdsops.events import synth
from cdsops.events.html import FIGURES
from cdsops.events.ingest import ingest
from cdsops.events.store import open_events
from cdsops.service import roster_sync
from cdsops.testing.registrations import write_registrations

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 10, tzinfo=UTC)


@pytest.fixture()
def report_html(tmp_path):
    rows = [(NOW - timedelta(days=20, hours=i), f"p{i}@example.org", f"Pat Doe{i}", "Paris", "France", "yes", "yes") for i in range(6)]
    src = write_registrations(tmp_path / "reg.csv", rows)
    uri = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), uri, Config(), NOW)
    t = NOW - timedelta(days=1)
    (tmp_path / "j.json").write_text(synth.dumps([synth.signin("s000001", "success", t), synth.code("s000001", "1", t)]))
    ingest(open_events(uri), {f"s{i:06d}": i for i in range(1, 7)}, str(tmp_path / "j.json"), Config(), now=NOW)
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "cdsops.cli", "report", "--roster", uri, "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are required (scripts/apt/browser.txt)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def test_every_figure_renders_in_chromium(report_html, browser):
    browser.get(report_html.as_uri())
    assert browser.title == "cdsops usage report"
    for fid in FIGURES:
        size = browser.execute_script(
            "const i = document.querySelector('#' + arguments[0] + ' img');"
            "return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null;", fid)
        assert size and size[0] > 100 and size[1] > 100, (fid, size)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in resources if not r.startswith("data:")] == []
    body = browser.find_element("tag name", "body").text
    assert "@" not in body and "Doe" not in body
