"""Verify roles/audit_trail: the journal travels sender -> receiver over HTTPS with client
certificates, nothing is lost or duplicated while the receiver is stopped, ingest reads what
arrived, the alert rules pass promtool, the data rule and home-size collector are in place."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import testinfra

RECV = testinfra.get_host("podman://cdsops-audit-receiver")
SEND = testinfra.get_host("podman://cdsops-audit-sender")
REMOTE = "/var/log/journal/remote"
HERE = Path(__file__).resolve().parent


def _emit(marker: str, n: int) -> list[str]:
    """n lines in the contract formats on the sender's journal; their sequence tags."""
    tags = []
    for i in range(n):
        tag = f"{marker}-{i}"
        ts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        if i % 3 == 0:
            ident, msg = "cdsops-gate", {"ts": ts, "event": "signin", "outcome": "success" if i % 2 else "expired", "username": "s000001", "reason": tag}
        elif i % 3 == 1:
            ident, msg = "cdsops-code", {"event": "code", "ts": ts, "username": "s000001", "kernel": "ir", "code": f"print('{tag}')", "truncated": False}
        else:
            ident, msg = "cdsops-session", {"event": "session.start", "ts": ts, "username": "s000001", "profile": f"jupyter-{tag}"}
        line = json.dumps(msg).replace("'", "'\\''")
        SEND.check_output(f"printf '%s\\n' '{line}' | systemd-cat -t {ident}")
        tags.append(tag)
    return tags


def _received(marker: str) -> list[str]:
    out = RECV.check_output(f"journalctl -D {REMOTE} -o json --no-pager 2>/dev/null | grep -F '{marker}' || true")
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def _wait_for(marker: str, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while time.monotonic() < deadline:
        got = _received(marker)
        if len(got) >= n:
            time.sleep(3)  # anything duplicated would land now
            return _received(marker)
        time.sleep(2)
    return got


def test_services_and_certificates():
    assert RECV.service("systemd-journal-remote.socket").is_running
    assert SEND.service("systemd-journal-upload.service").is_enabled
    key = SEND.file("/etc/cdsops/audit-trail/host.key")
    assert key.mode == 0o640 and key.group == "systemd-journal"
    assert RECV.file("/etc/cdsops/audit-trail/host.key").group == "systemd-journal-remote"
    assert "TrustedCertificateFile=/etc/cdsops/audit-trail/ca.crt" in RECV.file("/etc/systemd/journal-remote.conf").content_string
    assert "URL=https://localhost:19532" in SEND.file("/etc/systemd/journal-upload.conf").content_string


PROBE = """
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile="/etc/cdsops/audit-trail/ca.crt")
try:
    c = http.client.HTTPSConnection("localhost", 19532, context=ctx, timeout=10)
    c.request("POST", "/upload", body=b"", headers={"Content-Type": "application/vnd.fdo.journal"})
    print(c.getresponse().status)
except (ssl.SSLError, OSError) as exc:
    print("refused", type(exc).__name__)
"""


def test_a_client_without_a_certificate_is_refused():
    """HTTPS that trusts the receiver but brings no client certificate: no upload accepted."""
    out = SEND.check_output("python3 -c '%s'" % PROBE.replace("'", "'\\''")).strip()
    assert out.startswith("refused") or not out.startswith("2"), out


def test_exactly_once_across_a_receiver_restart():
    marker = f"cdsops-at-{uuid.uuid4().hex[:8]}"
    first = _emit(marker + "a", 3)
    assert len(_wait_for(marker + "a", len(first))) == len(first)
    RECV.check_output("systemctl stop systemd-journal-remote.socket systemd-journal-remote.service")
    try:
        tags = _emit(marker + "b", 30)
        time.sleep(6)
        assert _received(marker + "b") == [], "the receiver was stopped: nothing can have arrived"
    finally:
        RECV.check_output("systemctl start systemd-journal-remote.socket")
    got = _wait_for(marker + "b", len(tags))
    seen = [next(t for t in tags if f"{t}\"" in e["MESSAGE"] or f"{t}'" in e["MESSAGE"]) for e in got]
    assert sorted(seen) == sorted(tags), "every event exactly once"
    assert {e["_HOSTNAME"] for e in got} == {"cdsops-audit-sender"}
    # one journal file per sending host, named from its client certificate's subject
    assert "cdsops-audit-sender" in RECV.check_output(f"ls {REMOTE}")


def test_ingest_reads_what_arrived(tmp_path):
    """The receiver's remote journal, exported as journalctl -o json does for the ingest timer,
    goes through `cdsops events ingest` (the controller's cdsops): every contract line is an
    event, a re-run adds nothing."""
    from cdsops.config import Config
    from cdsops.service import roster_sync
    from cdsops.testing.registrations import write_registrations

    marker = f"cdsops-in-{uuid.uuid4().hex[:8]}"
    tags = _emit(marker, 9)
    assert len(_wait_for(marker, 9)) == 9
    export = tmp_path / "remote.json"
    export.write_text(RECV.check_output(f"journalctl -D {REMOTE} -o json --no-pager"))
    now = datetime.now(timezone.utc)
    src = write_registrations(tmp_path / "reg.csv", [(now - timedelta(days=1), "a@example.org", "A B", "X", "Y", "yes", "yes")])
    roster = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), roster, Config(), now)
    cmd = [sys.executable, "-m", "cdsops.cli", "events", "ingest", "--roster", roster, "--source", str(export)]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert first["added"] >= 9 and first["malformed"] == 0
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert again["added"] == 0
    info = json.loads(subprocess.run([sys.executable, "-m", "cdsops.cli", "whois", "s000001", "--roster", roster, "--json", "--limit", "1000"],
                                     capture_output=True, text=True, check=True).stdout)
    cells = [c for c in info["cells"] if marker in c["code"]]
    assert len(cells) == 3 and {c["host"] for c in cells} == {"cdsops-audit-sender"}
    assert len(tags) == 9


def test_alert_rules_pass_promtool():
    RECV.check_output("promtool check rules /etc/prometheus/rules/cdsops-audit.rules.yml")
    test = (HERE / "cdsops-audit-rules.test.yml").read_text().replace("'", "'\\''")
    out = RECV.run(f"printf '%s' '{test}' > /tmp/cdsops-audit-rules.test.yml && cd /tmp && promtool test rules cdsops-audit-rules.test.yml")
    assert out.rc == 0, out.stdout + out.stderr


def test_data_rule_rendered_without_immutable_flag():
    text = SEND.file("/etc/audit/rules.d/60-cdsops-data.rules").content_string
    assert "-F dir=/srv/cdsdata -F perm=r -F uid>=200001 -F uid<=1199999 -k cdsops_data_read" in text
    assert "-e 2" not in text


def test_home_sizes_collector():
    SEND.check_output("mkdir -p /home/s000007 && head -c 300000 /dev/zero > /home/s000007/data.bin && /usr/local/sbin/cdsops-home-sizes")
    prom = SEND.file("/var/lib/prometheus/node-exporter/cdsops_home.prom").content_string
    line = next(x for x in prom.splitlines() if x.startswith('cdsops_home_bytes{username="s000007"}'))
    assert int(line.split()[-1]) >= 300000
    assert SEND.service("cdsops-home-sizes.timer").is_enabled


def test_ingest_timer_installed():
    assert RECV.service("cdsops-events-ingest.timer").is_enabled
    unit = RECV.file("/etc/systemd/system/cdsops-events-ingest.service").content_string
    assert f"--source journal:{REMOTE}" in unit and "User=cdsops" in unit
