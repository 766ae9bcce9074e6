"""What a newcomer does after `make demo`, in headless Chromium (Debian chromium + chromium-driver)
driven by Selenium: open the printed URL, sign in through the demo's OpenID Connect provider as
the printed student, open a notebook with the R kernel from JupyterLab's launcher, run
`read.csv('/srv/cdsdata/...')` and see the result; an unregistered address gets the
"not registered" page and the printed expired student the "expired" page.

Run after `make demo`:  .venv/bin/python scripts/demo.d/browser-check.py [--shots /tmp/demo-shots]
(or CDSOPS_DEMO_BROWSER=1 make demo). Screenshots of every step go to --shots. Exits non-zero
with the failing step's reason. Not a hook of its own (scripts/demo.sh runs only *.sh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CSV = "/srv/cdsdata/patients.csv"


class Check:
    def __init__(self, base: str, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if not (chromium and driver):
            sys.exit("browser-check: chromium and chromium-driver are required (scripts/apt/browser.txt)")
        self.base, self.shots = base, shots
        shots.mkdir(parents=True, exist_ok=True)
        self.profile = tempfile.mkdtemp(prefix="cdsops-demo-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--ignore-certificate-errors", "--window-size=1400,900", f"--user-data-dir={self.profile}"):
            opts.add_argument(flag)
        self.drv = webdriver.Chrome(service=Service(driver), options=opts)
        self.step = 0

    def quit(self) -> None:
        self.drv.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def shot(self, name: str) -> None:
        self.step += 1
        path = self.shots / f"{self.step:02d}-{name}.png"
        self.drv.save_screenshot(str(path))
        print(f"   screenshot {path}")

    def wait(self, what: str, cond, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = cond()
                if got:
                    return got
            except Exception:  # noqa: BLE001 - the page is still changing; try again
                pass
            if time.monotonic() > deadline:
                self.shot("FAILED-" + what.replace(" ", "-")[:40])
                raise SystemExit(f"browser-check: {what}: not seen within {timeout:.0f} s (at {self.drv.current_url})")
            time.sleep(0.3)

    def text(self) -> str:
        return self.drv.find_element("tag name", "body").text

    def sign_in(self, subject: str) -> None:
        """Open the URL in a fresh session and type the subject into the provider's form."""
        self.drv.get(self.base + "/_cdsops/logout")
        self.drv.delete_all_cookies()
        self.drv.get(self.base + "/")
        field = self.wait("the OpenID Connect provider's sign-in form",
                          lambda: self.drv.find_element("css selector", "input[name=sub]"))
        self.shot("provider-form-" + subject.split("@")[0])
        field.send_keys(subject)
        self.drv.find_element("css selector", "form button[type=submit]:not([name])").click()

    def student(self, email: str, username: str) -> None:
        print(f"-- {email}: sign in, JupyterLab, a notebook with the R kernel, read.csv('{CSV}')")
        t0 = time.monotonic()
        self.sign_in(email)
        card = self.wait("JupyterLab's launcher with an R notebook tile",
                         lambda: self.drv.find_element("css selector", ".jp-LauncherCard[data-category='Notebook'][title='R']"),
                         timeout=120)
        print(f"   signed in and in JupyterLab as {username} after {time.monotonic() - t0:.1f} s ({self.drv.current_url})")
        if f"/user/{username}/" not in self.drv.current_url:
            raise SystemExit(f"browser-check: JupyterLab opened at {self.drv.current_url}, not /user/{username}/")
        terminals = self.drv.find_elements("css selector", ".jp-LauncherCard[data-category='Other'][title*='Terminal']")
        if terminals:
            raise SystemExit("browser-check: the launcher offers a terminal")
        self.shot("lab-launcher")
        card.click()
        self.wait("the R kernel idle in the new notebook", lambda: self.drv.find_elements(
            "css selector", ".jp-Notebook-ExecutionIndicator[data-status='idle']"), timeout=90)
        def clicked():
            cell = self.drv.find_element("css selector", ".jp-Cell .cm-content")
            cell.click()  # raises until the editor can take input
            return cell

        editor = self.wait("a code cell that takes input", clicked)
        code = f"d <- read.csv('{CSV}'); cat('rows:', nrow(d), '\\n'); head(d, 3)"
        editor.send_keys(code)
        from selenium.webdriver.common.keys import Keys

        # Lab shows the kernel idle a moment before its websocket carries requests: a cell run
        # then stays unnumbered; run it again (as a person would) until it has an answer
        out = None
        for attempt in range(4):
            self.wait("a code cell that takes input", clicked).send_keys(Keys.CONTROL, Keys.ENTER)
            deadline = time.monotonic() + 20 * (attempt + 1)
            while time.monotonic() < deadline and not out:
                out = [e.text for e in self.drv.find_elements("css selector", ".jp-OutputArea-output") if "rows:" in e.text]
                time.sleep(0.5)
            if out:
                break
        if not out:
            self.shot("FAILED-no-output")
            raise SystemExit("browser-check: the R cell gave no output after 4 runs")
        print("   output: " + " | ".join(out[0].splitlines()[:3]))
        self.shot("r-notebook-read-csv")

    def refused(self, subject: str, expect: str, name: str) -> None:
        print(f"-- {subject}: expects the '{expect}' page")
        self.sign_in(subject)
        body = self.wait(f"the '{expect}' page", lambda: expect.lower() in self.text().lower() and self.text(), timeout=30)
        print("   page: " + " ".join(body.split())[:160])
        self.shot(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", default=str(REPO / "var" / "demo"))
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--shots", default="/tmp/demo-shots")
    args = ap.parse_args()
    students = json.loads((Path(args.demo_dir) / "students.json").read_text())
    active, expired = students["active"][0], students["expired"][0]
    check = Check(f"https://127.0.0.1:{args.port}", Path(args.shots))
    try:
        check.student(active["email"], active["username"])
        check.refused("nobody@example.org", "No registration found", "not-registered")
        check.refused(expired["email"], "Your access has expired", "expired")
    finally:
        check.quit()
    print("browser-check: all seen")


if __name__ == "__main__":
    main()
