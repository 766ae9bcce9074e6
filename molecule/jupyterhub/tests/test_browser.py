"""A real browser through the real sign-in: headless Chromium (Debian's chromium +
chromium-driver) driven by Selenium, against the scenario's host through its published ports:
nginx on https://127.0.0.1:8444, the sign-in gate, oidc-provider-mock on http://127.0.0.1:9401
(standing in for Google; the same URL inside the container and here), JupyterHub, JupyterLab
and the R kernel. Screenshots: var/artifacts/browser-ide/ (not committed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
BASE = "https://127.0.0.1:8444"
IDP = "http://127.0.0.1:9401"
ARTIFACTS = PROJECT / "var" / "artifacts" / "browser-ide"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROWS = len((PROJECT / "molecule/rstudio_server/files/course-data/hosp/patients.csv").read_text().strip().splitlines()) - 1

from selenium import webdriver  # noqa: E402 - the dev extras (make deps)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def register(email: str) -> None:
    """The provider knows the student: its subject is the address (typed into its form)."""
    body = json.dumps({"email": email, "email_verified": True}).encode()
    req = urllib.request.Request(f"{IDP}/users/{email}", data=body, method="PUT",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture
def browser(request):
    assert Path(CHROMEDRIVER).exists(), "chromium-driver is missing (scripts/apt/ide.txt)"
    profile = tempfile.mkdtemp(prefix="cdsops-chromium-")
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--ignore-certificate-errors", f"--user-data-dir={profile}", "--window-size=1400,900"):
        opts.add_argument(flag)
    opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    yield driver
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        shot(driver, f"failed-{request.node.name}")
        (ARTIFACTS / f"failed-{request.node.name}.html").write_text(driver.page_source)
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def sign_in(driver, email: str, wait_for: str) -> None:
    register(email)
    driver.get(BASE + "/")
    form = WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.NAME, "sub")))
    assert driver.current_url.startswith(IDP + "/oauth2/authorize"), driver.current_url
    form.clear()
    form.send_keys(email + Keys.ENTER)
    WebDriverWait(driver, 120).until(lambda d: wait_for in d.current_url or wait_for in d.page_source)


def lab_ready(driver, user: str) -> None:
    WebDriverWait(driver, 120).until(lambda d: f"/user/{user}/lab" in d.current_url)
    # a fresh layout (Lab restores the last one, saved in the student's home): the launcher
    driver.get(f"{BASE}/user/{user}/lab?reset")
    WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LauncherCard")))


def run_r_cell(driver, code: str) -> str:
    card = WebDriverWait(driver, 60).until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]')))
    card.click()
    editor = WebDriverWait(driver, 120).until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content")))
    # the status bar says "R | Idle" once the kernel is connected (a cell run before that is
    # dropped by Lab; the execution indicator says "idle" earlier, so it cannot tell)
    WebDriverWait(driver, 180).until(lambda d: "R | Idle" in d.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget").text
                                     or any("R | Idle" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-Item")))
    editor.click()
    editor.send_keys(code)
    editor.send_keys(Keys.SHIFT, Keys.ENTER)
    out = WebDriverWait(driver, 120).until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")))
    WebDriverWait(driver, 60).until(lambda d: out.text.strip() != "")
    return out.text


def test_student_runs_r_on_the_course_data_and_has_no_terminal(browser):
    sign_in(browser, "student1@example.org", "/user/s000001/lab")
    lab_ready(browser, "s000001")
    cards = [c.get_attribute("title") or c.text for c in browser.find_elements(By.CSS_SELECTOR, ".jp-LauncherCard")]
    assert not any("terminal" in (c or "").lower() for c in cards), cards
    shot(browser, "1-launcher-s000001")
    text = run_r_cell(browser, "nrow(read.csv('/srv/cdsdata/hosp/patients.csv'))")
    shot(browser, "2-r-cell-s000001")
    assert text.strip() in (str(ROWS), f"[1] {ROWS}"), text  # Lab renders the text/html result: "2"
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-DirListing-itemName")]
    assert "Untitled.ipynb" in names, names


def test_second_student_sees_only_their_files_and_not_the_first_ones_server(browser):
    sign_in(browser, "student2@example.org", "/user/s000002/lab")
    lab_ready(browser, "s000002")
    time.sleep(2)  # the file browser lists the home directory
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-DirListing-itemName")]
    shot(browser, "3-files-s000002")
    assert "small.bin" not in names and "Untitled.ipynb" not in names, names  # s000001's files
    browser.get(BASE + "/user/s000001/lab")
    assert "403" in browser.title or "403" in browser.page_source, browser.page_source[:500]


def test_sign_out_then_another_student_in_the_same_browser(browser):
    sign_in(browser, "student1@example.org", "/user/s000001/lab")
    browser.get(BASE + "/_cdsops/logout")
    shot(browser, "4-signed-out")
    sign_in(browser, "student2@example.org", "/user/s000002/")
    lab_ready(browser, "s000002")
    browser.get(BASE + "/user/s000001/lab")
    shot(browser, "5-s000002-tries-s000001")
    assert "/user/s000001/lab" in browser.current_url and "403" in browser.page_source
    assert "jp-LauncherCard" not in browser.page_source


def test_expired_student_lands_on_the_expired_page(browser):
    sign_in(browser, "student3@example.org", "xpired")
    shot(browser, "6-expired")
    assert "/user/" not in browser.current_url
    assert "expired" in browser.page_source.lower()
