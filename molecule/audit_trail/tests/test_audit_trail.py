"""Verify roles/audit_trail: the journal travels sender -> receiver over HTTPS with client
certificates, nothing is lost or duplicated while the receiver is stopped, ingest reads what
arrived, the alert rules pass promtool, the data rule and home-size collector are in place."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import testinfra

RECV = testinfra.get_host("podman://cdsops-audit-receiver")
SEND = testinfra.get_host("podman://cdsops-audit-sender")
REMOTE = "/var/log/journal/remote"
HERE = Path(__file__).resolve().parent


def _emit(marker: str, n: int) -> list[str]:
    """n lines in the contract formats on the sender's journal (one exec); their sequence tags."""
    tags, script = [], []
    for i in range(n):
        tag = f"{marker}-{i}"
        ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if i % 3 == 0:
            outcome = "success" if i % 2 else "expired"
            ident, msg = "cdsops-gate", {"ts": ts, "event": "signin", "outcome": outcome, "username": "s000001", "reason": tag}
        elif i % 3 == 1:
            code = f"print('{tag}')"
            ident, msg = "cdsops-code", {"event": "code", "ts": ts, "username": "s000001", "kernel": "ir", "code": code, "truncated": False}
        else:
            ident, msg = "cdsops-session", {"event": "session.start", "ts": ts, "username": "s000001", "profile": f"jupyter-{tag}"}
        line = json.dumps(msg).replace("'", "'\\''")
        script.append(f"printf '%s\\n' '{line}' | systemd-cat -t {ident}")
        tags.append(tag)
    SEND.check_output("\n".join(script))
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
    assert RECV.service("cdsops-journal-remote-tls.service").is_running
    assert RECV.service("systemd-journal-remote.socket").is_running
    assert SEND.service("systemd-journal-upload.service").is_running
    key = SEND.file("/etc/cdsops/audit-trail/host.key")
    assert key.mode == 0o640 and key.user == "root" and key.group == "systemd-journal"
    rkey = RECV.file("/etc/cdsops/audit-trail/host.key")
    assert rkey.mode == 0o600 and rkey.user == "root"
    tls = RECV.file("/etc/cdsops/audit-trail/journal-remote-tls.conf").content_string
    assert "requireCert = yes" in tls and "verifyChain = yes" in tls and "accept = :::19532" in tls
    assert "URL=https://localhost:19532" in SEND.file("/etc/systemd/journal-upload.conf").content_string
    # journal-remote is not on the network: only its local socket, which only the front may open
    sock = RECV.file("/run/cdsops-journal-remote.sock")
    assert sock.is_socket and sock.mode == 0o660 and sock.group == "stunnel4"
    assert ":19532" in RECV.check_output("ss -Hltn")
    assert "--listen-http=-3" in RECV.check_output("systemctl show -p ExecStart systemd-journal-remote.service")


# POSTs one journal entry (export format) to the receiver as journal-upload does, with the
# client certificate given (or none); prints the HTTP status, or "refused <error>".
PROBE = r"""
import http.client, ssl, sys, time
mode, marker = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile="/etc/cdsops/audit-trail/ca.crt")
if mode == "good":
    ctx.load_cert_chain("/etc/cdsops/audit-trail/host.crt", "/etc/cdsops/audit-trail/host.key")
elif mode == "foreign":
    ctx.load_cert_chain("/tmp/foreign.crt", "/tmp/foreign.key")
boot = open("/proc/sys/kernel/random/boot_id").read().strip().replace("-", "")
body = ("__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\nMESSAGE=%s\nSYSLOG_IDENTIFIER=cdsops-probe\n"
        "_HOSTNAME=probe-%s\n\n" % (time.time_ns() // 1000, time.monotonic_ns() // 1000, boot, marker, mode)).encode()
try:
    c = http.client.HTTPSConnection("localhost", 19532, context=ctx, timeout=10)
    c.request("POST", "/upload", body=body, headers={"Content-Type": "application/vnd.fdo.journal"})
    print(c.getresponse().status)
except (ssl.SSLError, OSError, http.client.HTTPException) as exc:
    print("refused", type(exc).__name__)
"""


def _probe(mode: str, marker: str) -> str:
    script = PROBE.replace("'", "'\\''")
    return SEND.check_output(f"python3 -c '{script}' {mode} {marker}").strip()


def test_only_clients_with_a_certificate_from_the_ca_are_accepted():
    """No client certificate, or one from another CA: the upload is refused and nothing is
    written. The same probe with the host's certificate is accepted and its entry arrives,
    so the probe itself can succeed (this test fails if the receiver accepts anyone)."""
    SEND.check_output(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=cdsops-audit-sender"
        " -addext subjectAltName=DNS:cdsops-audit-sender -addext extendedKeyUsage=clientAuth"
        " -keyout /tmp/foreign.key -out /tmp/foreign.crt 2>/dev/null"
    )
    marker = f"cdsops-probe-{uuid.uuid4().hex[:8]}"
    results = {mode: _probe(mode, f"{marker}-{mode}") for mode in ("none", "foreign", "good")}
    assert results["none"].startswith("refused"), results
    assert results["foreign"].startswith("refused"), results
    assert results["good"] == "202", results
    got = _wait_for(f"{marker}-good", 1)
    assert [e["MESSAGE"] for e in got] == [f"{marker}-good"]
    assert _received(f"{marker}-none") == [] and _received(f"{marker}-foreign") == []
    log = RECV.check_output("journalctl -u cdsops-journal-remote-tls --no-pager -n 200")
    assert "CN=cdsops-audit-sender" in log


def _outage(stop: str, start: str, marker: str, n: int) -> list[str]:
    """Stop part of the receiver, write n events on the sender, check none arrived, start it
    again and write a few more at once (the stream goes on while the sender catches up)."""
    RECV.check_output(f"systemctl stop {stop}")
    try:
        tags = _emit(marker + "b", n)
        time.sleep(6)
        assert _received(marker + "b") == [], "the receiver was stopped: nothing can have arrived"
    finally:
        RECV.check_output(f"systemctl start {start}")
    return tags + _emit(marker + "c", 6)


def _exactly_once(marker: str, tags: list[str]) -> None:
    got = _wait_for(marker, len(tags))
    seen = sorted(t for e in got for t in tags if f'{t}"' in e["MESSAGE"] or f"{t}'" in e["MESSAGE"])
    assert seen == sorted(tags), "every event exactly once"
    assert {e["_HOSTNAME"] for e in got} == {"cdsops-audit-sender"}


def test_exactly_once_across_a_receiver_restart():
    """The management host's listener goes away (connection refused), then journal-remote alone
    (the TLS front answers, the upload fails): each time journal-upload keeps its cursor, and
    every event written meanwhile arrives exactly once when the receiver is back."""
    since = SEND.check_output("date +%s")
    marker = f"cdsops-at-{uuid.uuid4().hex[:8]}"
    first = _emit(marker + "a", 3)
    assert len(_wait_for(marker + "a", len(first))) == len(first)
    units = "cdsops-journal-remote-tls.service systemd-journal-remote.socket systemd-journal-remote.service"
    tags = _outage(units, units, marker + "x", 20)
    _exactly_once(marker + "x", tags)
    tags = _outage("systemd-journal-remote.socket systemd-journal-remote.service", "systemd-journal-remote.socket", marker + "y", 20)
    _exactly_once(marker + "y", tags)
    # the outages were real: journal-upload failed and was restarted, resuming from its cursor
    log = SEND.check_output(f"journalctl -u systemd-journal-upload --since @{since} --no-pager")
    assert "failed" in log.lower(), log
    assert "LAST_CURSOR=" in SEND.check_output("cat /var/lib/systemd/journal-upload/state")


def test_ingest_reads_what_arrived(tmp_path):
    """The receiver's journal files, copied as they are, go through `cdsops events ingest
    --source journal:DIR` (the controller's cdsops and journalctl, as the ingest timer runs
    it on the management host): every contract line is an event of the sending host, a
    re-run adds nothing, whois shows the sign-ins, cells and sessions."""
    from cdsops.config import Config
    from cdsops.service import roster_sync
    from cdsops.testing.registrations import write_registrations

    marker = f"cdsops-in-{uuid.uuid4().hex[:8]}"
    tags = _emit(marker, 9)
    assert len(_wait_for(marker, 9)) == 9
    copy = tmp_path / "remote"
    subprocess.run(["podman", "cp", f"cdsops-audit-receiver:{REMOTE}", str(copy)], check=True)
    assert list(copy.glob("*.journal")), list(copy.iterdir())
    now = datetime.now(UTC)
    src = write_registrations(tmp_path / "reg.csv", [(now - timedelta(days=1), "a@example.org", "A B", "X", "Y", "yes", "yes")])
    roster = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), roster, Config(), now)
    cmd = [sys.executable, "-m", "cdsops.cli", "events", "ingest", "--roster", roster, "--source", f"journal:{copy}"]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert first["added"] >= 9 and first["malformed"] == 0, first
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert again["added"] == 0, again
    info = json.loads(subprocess.run([sys.executable, "-m", "cdsops.cli", "whois", "s000001", "--roster", roster, "--json", "--limit", "1000"],
                                     capture_output=True, text=True, check=True).stdout)
    cells = [c for c in info["cells"] if marker in c["code"]]
    assert len(cells) == 3 and {c["host"] for c in cells} == {"cdsops-audit-sender"}
    signins = [s for s in info["signins"] + info["refused_signins"] if marker in json.dumps(s)]
    assert len(signins) == 3 and {s["kind"] for s in signins} == {"signin.allowed", "signin.refused"}
    sessions = [s for s in info["sessions"] if marker in json.dumps(s)]
    assert len(sessions) == 3
    assert len(tags) == 9


EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"


def test_no_email_on_the_compute_host():
    """What the role puts on the compute host (configuration, certificates, collector output)
    names no one: no email address anywhere in it."""
    paths = " ".join([
        "/etc/cdsops", "/etc/systemd/journal-upload.conf", "/etc/systemd/system/systemd-journal-upload.service.d",
        "/etc/audit/rules.d/60-cdsops-data.rules", "/usr/local/sbin/cdsops-home-sizes", "/var/lib/prometheus/node-exporter",
    ])
    out = SEND.run(f"for p in {paths}; do [ -e $p ] && echo $p; done | xargs grep -rIEl '{EMAIL}'")
    assert out.rc == 123 and out.stdout == "", out.stdout  # xargs: grep found nothing
    subject = SEND.check_output("openssl x509 -in /etc/cdsops/audit-trail/host.crt -noout -subject -ext subjectAltName")
    assert "@" not in subject and "email" not in subject.lower(), subject


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
