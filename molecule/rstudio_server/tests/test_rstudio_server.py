"""Behaviour of the rstudio_server role, checked from inside the container (testinfra) and
from the CI host (TLS, ports, proxying), as a student and a stranger would meet it.

The IDE at 127.0.0.1:8787 is the scenario's TEST DOUBLE (files/cdsops-test-double-ide.py):
it echoes what nginx passed on, so the tests can see headers, bodies and websockets.
"""
from __future__ import annotations

import base64
import json
import os
import shlex
import socket
import ssl
import subprocess
import uuid

import pytest
import testinfra

CONTAINER = "cdsops-rstudio"
SERVER_NAME = "cdsops-rstudio"
UPLOAD_LIMIT_MB = 2
PKI = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "pki")
CA = os.path.join(PKI, "ca.pem")


@pytest.fixture(scope="module")
def host():
    """The scenario container through `podman exec` (the Ansible backend costs ~1 s a command)."""
    return testinfra.get_host(f"podman://{CONTAINER}")


@pytest.fixture(scope="module")
def ip() -> str:
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", CONTAINER],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out, "the scenario container has no IP address"
    return out.split()[0]


def _tls(ip: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=CA)
    raw = socket.create_connection((ip, 443), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=SERVER_NAME)


def _request(ip: str, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes = b"") -> tuple[int, dict[str, list[str]], bytes]:
    """One HTTP/1.1 request over verified TLS; returns status, headers (lower-case, all values), body."""
    hdrs = {"Host": SERVER_NAME, "Connection": "close", "Content-Length": str(len(body))}
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with _tls(ip) as s:
        s.sendall(head.encode())
        try:
            s.sendall(body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # nginx may answer 413 and close before the whole body is sent
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
    head_raw, _, rest = data.partition(b"\r\n\r\n")
    lines = head_raw.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split()[1])
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        out.setdefault(k.strip().lower(), []).append(v.strip())
    return status, out, rest


# --- nginx from outside --------------------------------------------------------------

def test_https_answers_with_hsts_and_security_headers(ip):
    status, headers, body = _request(ip, "GET", "/")
    assert status == 200
    assert json.loads(body)["test_double"] is True  # proxied to 127.0.0.1:8787
    assert headers["strict-transport-security"] == ["max-age=63072000"]
    assert headers["x-content-type-options"] == ["nosniff"]
    # the upstream's own X-Frame-Options (ALLOWALL) is replaced, not duplicated
    assert headers["x-frame-options"] == ["SAMEORIGIN"]
    assert headers["content-security-policy"] == ["frame-ancestors 'self'"]
    assert headers["referrer-policy"] == ["no-referrer"]
    assert "server" not in headers or "1." not in headers["server"][0]  # server_tokens off


def test_client_sent_username_header_never_reaches_the_ide(ip):
    status, _, body = _request(ip, "GET", "/whoami", {"X-RStudio-Username": "s000002"})
    assert status == 200
    seen = json.loads(body)["headers"]
    assert "x-rstudio-username" not in seen
    assert seen["x-forwarded-proto"] == "https"
    assert seen["host"] == SERVER_NAME


def test_upload_over_the_limit_is_refused_and_under_it_passes(ip):
    over = b"x" * (UPLOAD_LIMIT_MB * 1024 * 1024 + 1)
    status, headers, _ = _request(ip, "POST", "/upload", {"Content-Type": "application/octet-stream"}, over)
    assert status == 413
    under = b"y" * (UPLOAD_LIMIT_MB * 1024 * 1024 - 1024)
    status, _, body = _request(ip, "POST", "/upload", {"Content-Type": "application/octet-stream"}, under)
    assert status == 200
    assert json.loads(body)["body_length"] == len(under)


def test_websocket_is_proxied_to_the_ide(ip):
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /ws HTTP/1.1\r\nHost: {SERVER_NAME}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with _tls(ip) as s:
        s.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            assert chunk, "connection closed during the websocket handshake"
            head += chunk
        assert head.split(b"\r\n")[0].split()[1] == b"101"
        payload, mask = b"hello", os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        frame = s.recv(2)
        data = s.recv(frame[1] & 0x7F)
        assert frame[0] == 0x81 and data == b"echo:hello"


@pytest.mark.parametrize("port", [80, 8787])
def test_ports_80_and_8787_are_closed_from_outside(ip, port):
    with pytest.raises(OSError):
        socket.create_connection((ip, port), timeout=5).close()


def test_only_443_is_reachable_and_ide_listens_on_loopback(host):
    assert host.socket("tcp://0.0.0.0:443").is_listening
    assert host.socket("tcp://127.0.0.1:8787").is_listening
    assert not host.socket("tcp://0.0.0.0:8787").is_listening
    assert not host.socket("tcp://0.0.0.0:80").is_listening


CONNECT_8787 = """import socket
socket.create_connection(("127.0.0.1", 8787), timeout=5).close()
print("connected")
"""


def test_students_cannot_reach_the_ide_port_directly(host):
    """With auth-proxy=1 a direct connection could forge X-RStudio-Username: only nginx may connect."""
    host.run_expect([0], "cat > /tmp/connect-8787.py <<'EOF'\n" + CONNECT_8787 + "EOF\nchmod 0644 /tmp/connect-8787.py")
    student = host.run("su -s /bin/sh s000001 -c 'python3 /tmp/connect-8787.py'")
    assert student.rc != 0 and "connected" not in student.stdout
    assert "ConnectionRefusedError" in student.stderr, student.stderr
    other = host.run("runuser -u cdsops-monitor-probe -- python3 /tmp/connect-8787.py")  # not a student uid
    assert other.stdout.strip() == "connected", other.stderr
    # the ports come from this role's drop-in in the baseline ruleset's include directory
    dropin = host.file("/etc/nftables.d/50-cdsops-rstudio-guard.nft").content_string
    assert "add element inet cdsops_ide_guard ide_ports { 8787, 5559 }" in dropin
    assert not host.file("/etc/systemd/system/cdsops-ide-guard.service").exists


def _student_connect(host) -> str:
    return host.run("su -s /bin/sh s000001 -c 'python3 /tmp/connect-8787.py'").stderr


def _guard_metric(host) -> str:
    # the tests start it many times in a row: past systemd's start limit it would refuse
    host.run_expect([0], "systemctl reset-failed cdsops-host-metrics.service; systemctl start cdsops-host-metrics.service")
    prom = host.file("/var/lib/prometheus/node-exporter/cdsops_ide_guard.prom").content_string
    return next(ln for ln in prom.splitlines() if ln.startswith("cdsops_ide_guard_present "))


@pytest.mark.parametrize("reload", ["systemctl reload nftables", "nft -f /etc/nftables.conf", "systemctl restart nftables"])
def test_the_guard_survives_every_kind_of_firewall_reload(host, reload):
    """On main, `flush ruleset` in /etc/nftables.conf removed the guard until its own unit re-ran."""
    host.run_expect([0], "cat > /tmp/connect-8787.py <<'EOF'\n" + CONNECT_8787 + "EOF\nchmod 0644 /tmp/connect-8787.py")
    host.run_expect([0], reload)
    assert "ConnectionRefusedError" in _student_connect(host)
    ports = host.check_output("nft list set inet cdsops_ide_guard ide_ports")
    assert "5559" in ports and "8787" in ports
    assert _guard_metric(host) == "cdsops_ide_guard_present 1"


def test_guard_metric_says_0_when_the_guard_is_missing(host):
    try:
        host.run_expect([0], "nft delete table inet cdsops_ide_guard")
        assert _guard_metric(host) == "cdsops_ide_guard_present 0"
        host.run_expect([0], "nft -f /etc/nftables.conf && nft delete element inet cdsops_ide_guard ide_ports '{ 8787 }'")
        assert _guard_metric(host) == "cdsops_ide_guard_present 0"  # a port the drop-in asks for is missing
    finally:
        host.run_expect([0], "systemctl reload nftables")
    assert _guard_metric(host) == "cdsops_ide_guard_present 1"


def test_expired_page_needs_no_sign_in_and_says_files_are_kept(ip):
    status, headers, body = _request(ip, "GET", "/_cdsops-pages/expired.html")
    assert status == 200
    text = body.decode()
    assert "register again" in text and "files are kept" in text
    assert "https://register.example.org/" in text
    assert headers["strict-transport-security"] == ["max-age=63072000"]


def test_tls_meets_mozilla_intermediate_with_sslyze(ip, tmp_path):
    out = tmp_path / "sslyze.json"
    res = subprocess.run(
        ["sslyze", "--mozilla_config=intermediate", f"--certinfo_ca_file={CA}", f"--json_out={out}",
         f"{SERVER_NAME}:443{{{ip}}}"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert f"{SERVER_NAME}:443: OK - Compliant." in res.stdout
    result = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]
    assert result["ssl_2_0_cipher_suites"]["result"]["accepted_cipher_suites"] == []
    for old in ("ssl_3_0", "tls_1_0", "tls_1_1"):
        assert result[f"{old}_cipher_suites"]["result"]["accepted_cipher_suites"] == []
    assert result["tls_1_3_cipher_suites"]["result"]["accepted_cipher_suites"]


# --- IDE configuration ------------------------------------------------------------

def _conf(host, path: str) -> dict[str, str]:
    out = {}
    for line in host.file(path).content_string.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_session_config_has_shell_and_terminal_off(host):
    rs = _conf(host, "/etc/rstudio/rsession.conf")
    assert rs["allow-shell"] == "0"
    assert rs["allow-terminal-websockets"] == "0"
    assert rs["allow-file-downloads"] == "0"
    assert rs["limit-file-upload-size-mb"] == str(UPLOAD_LIMIT_MB)
    srv = _conf(host, "/etc/rstudio/rserver.conf")
    assert srv["www-address"] == "127.0.0.1" and srv["www-port"] == "8787"
    assert srv["auth-proxy"] == "1"
    assert srv["audit-r-console"] == "all"
    # Posit's hardening guide: origin check in rserver.conf, publishing and system directories in rsession.conf
    assert srv["www-enable-origin-check"] == "1"
    assert rs["allow-external-publish"] == "0" and rs["restrict-directory-view"] == "1"
    prof = _conf(host, "/etc/rstudio/profiles")
    assert prof["max-memory-mb"] == "4096" and prof["max-processes"] == "200"


def test_config_checker_refuses_unknown_options(host):
    host.run_expect([0], "printf 'allow-shell=0\\n' > /tmp/ok.conf")
    assert host.run("/usr/local/sbin/cdsops-rstudio-conf-check rsession /tmp/ok.conf").rc == 0
    host.run_expect([0], "printf 'allow-shel=0\\n' > /tmp/bad.conf")
    bad = host.run("/usr/local/sbin/cdsops-rstudio-conf-check rsession /tmp/bad.conf")
    assert bad.rc == 1 and "unknown rsession option 'allow-shel'" in bad.stderr


def test_nginx_site_checker_refuses_a_broken_site(host):
    host.run_expect([0], "printf 'server { listen 443 ssl; bogus_directive on; }\\n' > /tmp/bad-site.conf")
    assert host.run("/usr/local/sbin/cdsops-nginx-check-site /tmp/bad-site.conf").rc != 0
    assert host.run("/usr/local/sbin/cdsops-nginx-check-site /etc/nginx/sites-available/cdsops-rstudio.conf").rc == 0
    assert host.run("nginx -t").rc == 0


# --- students ----------------------------------------------------------------------

def test_homes_are_private_and_one_student_cannot_read_another(host):
    for u in ("s000001", "s000002"):
        home = host.file(f"/home/{u}")
        assert home.mode == 0o700, f"{u}'s home was not made private"
    assert host.run("su -s /bin/sh s000002 -c 'ls /home/s000001'").rc != 0
    assert host.run("su -s /bin/sh s000002 -c 'cat /home/s000001/notes.txt'").rc != 0
    assert host.run("su -s /bin/sh s000001 -c 'cat /home/s000001/notes.txt'").stdout.startswith("private notes")


def test_new_homes_are_created_private(host):
    host.run_expect([0], "useradd -K UID_MAX=1999999 -u 200099 -m -s /usr/sbin/nologin s000099")
    try:
        assert host.file("/home/s000099").mode == 0o700
    finally:
        host.run("userdel -r s000099")
    assert host.run("grep -E '^DIR_MODE=0700$' /etc/adduser.conf").rc == 0


def test_students_cannot_see_each_others_processes(host):
    tag = f"{uuid.uuid4().int % 10**6 + 1000}"
    host.run_expect([0], f"su -s /bin/sh s000001 -c 'nohup sleep {tag} >/dev/null 2>&1 &'")
    try:
        mine = host.run("su -s /bin/sh s000001 -c 'ps -eo args'").stdout
        other = host.run("su -s /bin/sh s000002 -c 'ps -eo args'").stdout
        monitor = host.run("runuser -u cdsops-monitor-probe -- ps -eo args").stdout
        assert f"sleep {tag}" in mine
        assert f"sleep {tag}" not in other
        assert f"sleep {tag}" in monitor  # the hidepid gid= exemption group sees everything
    finally:
        host.run(f"pkill -u s000001 -f 'sleep {tag}'")
    opts = [m for m in host.file("/proc/mounts").content_string.splitlines() if m.startswith("proc /proc ")][0]
    assert "hidepid=invisible" in opts and "gid=199998" in opts


def test_r_sessions_create_private_files(host):
    """Rprofile.site sets umask 077 for every R session, with or without a PAM session."""
    host.run("rm -f /tmp/r-umask-probe")
    out = host.run("setpriv --reuid=200001 --regid=200001 --clear-groups "
                   "Rscript -e 'invisible(file.create(\"/tmp/r-umask-probe\")); cat(format(Sys.umask()))'")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "77"
    assert host.file("/tmp/r-umask-probe").mode == 0o600


def test_student_process_limits_apply(host):
    assert host.run("su -s /bin/bash s000001 -c 'ulimit -u'").stdout.strip() == "200"
    assert host.run("su -s /bin/bash s000001 -c 'ulimit -c'").stdout.strip() == "0"
    # address space: 4x the 4096 MB session memory limit, in KiB
    assert host.run("su -s /bin/bash s000001 -c 'ulimit -v'").stdout.strip() == str(4096 * 1024 * 4)


def test_course_data_is_readable_only_by_the_data_group(host):
    d = host.file("/srv/cdsdata")
    assert (d.user, d.group, d.mode) == ("root", "cdsdata", 0o750)
    sub = host.file("/srv/cdsdata/hosp")
    assert (sub.group, sub.mode) == ("cdsdata", 0o750)
    f = host.file("/srv/cdsdata/hosp/patients.csv")
    assert (f.user, f.group, f.mode) == ("root", "cdsdata", 0o640)
    assert "subject_id" in host.run("su -s /bin/sh s000001 -c 'head -1 /srv/cdsdata/hosp/patients.csv'").stdout
    assert host.run("su -s /bin/sh s000002 -c 'cat /srv/cdsdata/hosp/patients.csv'").rc != 0


# --- R and the licence check -----------------------------------------------------------

R_CHECK = """
library(DBI)
con <- dbConnect(RSQLite::SQLite(), ":memory:")
dbWriteTable(con, "t", data.frame(x = 1:3))
cat(dbGetQuery(con, "select sum(x) as s from t")[[1]], getOption("repos")[["CRAN"]], "\\n")
"""


def test_r_runs_the_course_packages_and_points_at_the_snapshot(host):
    host.run_expect([0], "cat > /tmp/check.R <<'EOF'\n" + R_CHECK + "EOF\nchmod 0644 /tmp/check.R")
    res = host.run("su -s /bin/sh s000001 -c 'Rscript /tmp/check.R'")
    assert res.rc == 0, res.stderr
    total, repo = res.stdout.split()
    assert total == "6"
    assert repo == "file:///srv/cran-test"  # the scenario's stand-in for the dated snapshot


RMD = """---
title: "Assignment 1"
output: html_document
---

```{r}
d <- read.csv("/srv/cdsdata/hosp/patients.csv")
cat("patients:", nrow(d), "\\n")
```
"""


def test_a_student_renders_an_r_markdown_assignment(host):
    """rmarkdown + knitr (and Debian's pandoc) are in the course package set: a student knits
    an R Markdown document whose chunk reads the course data into an HTML page."""
    home = "/home/s000001"
    host.run_expect([0], f"cat > {home}/a1.Rmd <<'EOF'\n{RMD}EOF\nchown s000001: {home}/a1.Rmd")
    res = host.run(
        f"su -s /bin/sh s000001 -c \"cd {home} && Rscript -e 'rmarkdown::render(\\\"a1.Rmd\\\", quiet = TRUE)'\""
    )
    assert res.rc == 0, res.stderr
    rows = int(host.run("su -s /bin/sh s000001 -c 'tail -n +2 /srv/cdsdata/hosp/patients.csv | wc -l'").stdout)
    page = host.file(f"{home}/a1.html")
    assert page.exists and page.user == "s000001"
    assert "Assignment 1" in page.content_string
    assert f"patients: {rows}" in page.content_string


def test_course_packages_from_the_cran_snapshot_are_installed_for_every_student(host):
    """rstudio_server_cran_packages (bigrquery in production) come from the snapshot into
    the site library: here a package from the scenario's local CRAN-like repository (CRAN is
    not reachable from CI), loaded by a student's R."""
    res = host.run("su -s /bin/sh s000001 -c \"Rscript -e 'cat(cdsopsdemo::hello())'\"")
    assert res.rc == 0, res.stderr
    assert res.stdout == "hello from the CRAN snapshot"
    assert host.file("/usr/local/lib/R/site-library/cdsopsdemo/DESCRIPTION").exists


# --- R console audit shipped to the journal -----------------------------------------------
AUDIT_DIR = "/var/lib/rstudio-server/audit/r-console"


def _code_lines(host, marker: str) -> list[dict]:
    out = host.run_expect([0], "journalctl -o json -t cdsops-code --no-pager").stdout
    entries = []
    for line in out.splitlines():
        e = json.loads(line)
        msg = e["MESSAGE"] if isinstance(e["MESSAGE"], str) else bytes(e["MESSAGE"]).decode()
        if marker in msg:
            entries.append({**e, "MESSAGE": msg})
    return entries


def test_console_input_reaches_the_journal_once_as_a_code_line(host):
    """Workbench is not installable here, so the audit file is written as Workbench documents it
    (CSV: session_id, project, pid, username, timestamp in ms, type, data), then the shipper's
    own service runs (twice: a re-run ships nothing new)."""
    assert host.service("cdsops-rconsole-ship.timer").is_enabled
    marker = uuid.uuid4().hex
    csv = ("session_id,project,pid,username,timestamp,type,data\n"
           'a1b2,,4242,s200901,1764720000123,prompt,"> "\n'
           f'a1b2,,4242,s200901,1764720000124,input,"x <- c(1, 2) # {marker}\nsummary(x, digits = 3)"\n'
           f'a1b2,,4242,s200901,1764720000125,output,"{marker} output"\n')
    host.run_expect([0], f"install -d -m 0700 {AUDIT_DIR} && printf %s {shlex.quote(csv)} > {AUDIT_DIR}/s200901.csv")
    for _ in range(2):
        host.run_expect([0], "systemctl start cdsops-rconsole-ship.service")
    for _ in range(20):
        entries = _code_lines(host, marker)
        if entries:
            break
        host.run("sleep 0.25")
    assert len(entries) == 1, entries
    assert json.loads(entries[0]["MESSAGE"]) == {
        "event": "code", "ts": "2025-12-03T00:00:00.124Z", "username": "s200901", "kernel": "rstudio-console",
        "code": f"x <- c(1, 2) # {marker}\nsummary(x, digits = 3)", "truncated": False}
    assert entries[0]["_UID"] == "0" and "@" not in entries[0]["MESSAGE"]


def test_license_check_reports_zero_without_the_ide(host):
    assert host.service("cdsops-rstudio-license-check.timer").is_enabled
    assert host.service("cdsops-rstudio-license-check.timer").is_running
    host.run_expect([0], "systemctl start cdsops-rstudio-license-check.service")
    metrics = dict(
        line.split() for line in host.file("/var/lib/prometheus/node-exporter/cdsops_rstudio_license.prom")
        .content_string.splitlines() if line and not line.startswith("#")
    )
    assert metrics["cdsops_rstudio_license_valid"] == "0"
    assert metrics["cdsops_rstudio_license_expiry_timestamp_seconds"] == "0"
    assert metrics["cdsops_rstudio_installed"] == "0"
    assert int(metrics["cdsops_rstudio_license_check_timestamp_seconds"]) > 0


# The licence check's reading of a licensed Workbench, against a TEST DOUBLE of the vendor
# CLI (the real one cannot be installed here): the parsing and the expiry arithmetic.
LICENSE_DOUBLE = """set -e
d=/tmp/cdsops-license-double; rm -rf "$d"; mkdir -p "$d/lic"
printf '#!/bin/sh\\nexit 0\\n' > "$d/rserver"
printf '#!/bin/sh\\n# TEST DOUBLE of rstudio-server license-manager status\\nprintf "%%s\\\\n" "$CDSOPS_DOUBLE_STATUS"\\nexit ${CDSOPS_DOUBLE_RC:-0}\\n' > "$d/rstudio-server"
chmod 0755 "$d/rserver" "$d/rstudio-server"
"""  # noqa: E501 -- the double's script is one shell line, clearer unbroken


def _license_check(host, lic_file: str, status: str, rc: int = 0) -> dict[str, str]:
    host.run_expect([0], LICENSE_DOUBLE + (f"touch /tmp/cdsops-license-double/lic/{lic_file}" if lic_file else "true"))
    res = host.run(
        "CDSOPS_RSERVER=/tmp/cdsops-license-double/rserver "
        "CDSOPS_RSTUDIO_SERVER_CLI=/tmp/cdsops-license-double/rstudio-server "
        "CDSOPS_RSTUDIO_LICENSE_DIR=/tmp/cdsops-license-double/lic "
        f"CDSOPS_DOUBLE_STATUS='{status}' CDSOPS_DOUBLE_RC={rc} "
        "/usr/local/sbin/cdsops-rstudio-license-check /tmp/cdsops-license-double/out"
    )
    assert res.rc == 0, res.stderr
    text = host.file("/tmp/cdsops-license-double/out/cdsops_rstudio_license.prom").content_string
    return dict(line.split() for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize(
    ("lic_file", "status", "rc", "valid", "expiry"),
    [
        ("2099-12-31_RSW_Example_KEY.lic", "Status: Activated", 0, "1", "4102444800"),
        ("2020-01-01_RSW_Example_KEY.lic", "Status: Activated", 0, "0", "1577923200"),
        ("", "Status: Activated\nExpiration: 2099-12-31", 0, "1", "4102444800"),
        ("", "Status: Expired", 0, "0", "0"),
        ("", "Status: Activated", 1, "0", "0"),
    ],
    ids=["offline-file-valid", "offline-file-expired", "key-valid", "key-expired", "cli-error"],
)
def test_license_check_reads_a_licensed_workbench(host, lic_file, status, rc, valid, expiry):
    m = _license_check(host, lic_file, status, rc)
    assert m["cdsops_rstudio_installed"] == "1"
    assert (m["cdsops_rstudio_license_valid"], m["cdsops_rstudio_license_expiry_timestamp_seconds"]) == (valid, expiry)


# --- contract with the signin_gate role ---------------------------------------------------

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _render(path: str, context: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(path)), keep_trailing_newline=True)
    env.filters["bool"] = lambda v: str(v).strip().lower() in ("1", "true", "yes", "on")
    return env.get_template(os.path.basename(path)).render(ansible_managed="test render", **context)


def test_site_with_the_signin_gate_snippets_passes_nginx_t(host):
    """The IDE site with rstudio_server_signin_gate_enabled and the gate's own snippets is a
    valid nginx configuration, and the client's X-RStudio-Username is replaced in location /."""
    import yaml

    gate = os.path.join(REPO, "roles", "signin_gate")
    with open(os.path.join(REPO, "roles", "rstudio_server", "defaults", "main.yml")) as fh:
        ours = yaml.safe_load(fh)
    ours.update(rstudio_server_signin_gate_enabled=True, rstudio_server_nginx_listen_ipv6=False)
    with open(os.path.join(gate, "defaults", "main.yml")) as fh:
        theirs = yaml.safe_load(fh)
    site = _render(os.path.join(REPO, "roles", "rstudio_server", "templates", "nginx-rstudio.conf.j2"), ours)
    assert "include /etc/nginx/snippets/cdsops-gate-server.conf;" in site
    assert "include /etc/nginx/snippets/cdsops-gate-protect.conf;" in site
    files = {
        "/etc/nginx/snippets/cdsops-gate-server.conf":
            _render(os.path.join(gate, "templates", "cdsops-gate-server.conf.j2"), theirs),
        "/etc/nginx/snippets/cdsops-gate-protect.conf":
            _render(os.path.join(gate, "templates", "cdsops-gate-protect.conf.j2"), theirs),
        # the gate's rate-limit zones (http level, conf.d: the site check includes conf.d/*.conf)
        "/etc/nginx/conf.d/cdsops-gate-limits.conf":
            _render(os.path.join(gate, "templates", "cdsops-gate-limits.conf.j2"), theirs),
        "/tmp/cdsops-gate-site.conf": site,
    }
    assert "proxy_set_header X-RStudio-Username" in files["/etc/nginx/snippets/cdsops-gate-protect.conf"]
    for path in files:
        assert path.startswith("/tmp/") or not host.file(path).exists, f"{path} exists; not overwriting it"
    try:
        for path, text in files.items():
            host.run_expect([0], f"cat > {path} <<'CDSOPS_EOF'\n{text}CDSOPS_EOF")
        res = host.run("/usr/local/sbin/cdsops-nginx-check-site /tmp/cdsops-gate-site.conf")
        assert res.rc == 0, res.stderr
    finally:
        host.run("rm -f " + " ".join(files))
