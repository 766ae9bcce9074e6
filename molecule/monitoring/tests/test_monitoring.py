"""Behaviour of the monitoring role (management host profile) in a systemd container."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from podman_host import host  # noqa: E402,F401  (podman exec instead of Ansible per command)

HERE = Path(__file__).resolve().parent
ALERTS = {
    "CpuAvailableLow", "MemoryFreeLow", "DiskFreeLow", "TargetDown",
    "ReconcileFailing", "ReconcileStale", "IdeLicenceInvalid", "IdeLicenceExpiring",
    "CdsopsIdeGuardMissing", "CdsopsBackupFailed", "CdsopsBackupStale", "CdsopsPublicUrlDown",
    "CdsopsHstsMissing", "CdsopsTlsCertificateExpiring", "CdsopsSigninPageDown", "CdsopsIdeProbeFailed",
    "Watchdog",
}


def http_get(host, url: str) -> tuple[int, str]:
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen({url!r}, timeout=5); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    cmd = host.run(f"python3 -c {shlex.quote(script)}")
    assert cmd.rc == 0, cmd.stderr
    status, _, body = cmd.stdout.partition("\n")
    return int(status), body


def wait_for(predicate, timeout: float = 60.0, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_node_exporter_serves_metrics_and_textfiles(host):
    host.run("printf '# TYPE cdsops_verify_probe gauge\\ncdsops_verify_probe 42\\n' "
             "> /var/lib/prometheus/node-exporter/verify.prom.tmp && "
             "mv /var/lib/prometheus/node-exporter/verify.prom.tmp /var/lib/prometheus/node-exporter/verify.prom")
    try:
        status, body = http_get(host, "http://127.0.0.1:9100/metrics")
        assert status == 200
        assert "node_cpu_seconds_total" in body
        assert "node_memory_MemAvailable_bytes" in body
        assert "cdsops_verify_probe 42" in body
    finally:
        host.run("rm -f /var/lib/prometheus/node-exporter/verify.prom")


def test_prometheus_loaded_the_cdsops_rules(host):
    def rules():
        status, body = http_get(host, "http://127.0.0.1:9090/api/v1/rules")
        return status == 200 and json.loads(body)["data"]["groups"]
    groups = wait_for(rules)
    assert groups, "Prometheus did not answer /api/v1/rules"
    names = {g["name"] for g in groups}
    assert {"cdsops-hosts", "cdsops-reconcile", "cdsops-ide-licence"} <= names
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded >= ALERTS
    assert all(r["health"] != "err" for g in groups for r in g["rules"])


def test_prometheus_scrapes_the_node_exporter(host):
    def node_up():
        status, body = http_get(host, "http://127.0.0.1:9090/api/v1/targets")
        targets = json.loads(body)["data"]["activeTargets"] if status == 200 else []
        return [t for t in targets if t["labels"].get("job") == "node" and t["health"] == "up"]
    assert wait_for(node_up, timeout=60), "the node target never came up"


def test_alertmanager_ready_and_known_to_prometheus(host):
    status, _ = http_get(host, "http://127.0.0.1:9093/-/ready")
    assert status == 200

    def active():
        status, body = http_get(host, "http://127.0.0.1:9090/api/v1/alertmanagers")
        return status == 200 and json.loads(body)["data"]["activeAlertmanagers"]
    assert wait_for(active, timeout=30)


def test_web_interfaces_listen_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:9090").is_listening
    assert not host.socket("tcp://0.0.0.0:9090").is_listening
    assert host.socket("tcp://127.0.0.1:9093").is_listening
    assert not host.socket("tcp://0.0.0.0:9093").is_listening


def test_promtool_unit_tests_of_the_installed_rules(host):
    name = host.backend.name
    subprocess.run(["podman", "cp", str(HERE / "cdsops-rules.test.yml"), f"{name}:/tmp/cdsops-rules.test.yml"], check=True)
    cmd = host.run("cd /tmp && promtool test rules cdsops-rules.test.yml")
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    assert "SUCCESS" in cmd.stdout + cmd.stderr


def test_promtool_rejects_a_broken_rules_file(host):
    """The role's validate: step really guards: a broken expression does not pass the check."""
    host.run("printf 'groups:\\n  - name: x\\n    rules:\\n      - alert: Broken\\n        expr: up ==\\n' > /tmp/broken.rules.yml")
    assert host.run("promtool check rules /tmp/broken.rules.yml").rc != 0


def probe(host, module: str, target: str) -> dict[str, float]:
    """Ask the blackbox exporter to probe target with module; its metrics by name."""
    from urllib.parse import urlencode
    status, body = http_get(host, "http://127.0.0.1:9115/probe?" + urlencode({"module": module, "target": target}))
    assert status == 200, body
    metrics = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    return metrics


def test_public_url_probe_checks_status_tls_and_hsts(host):
    ok = probe(host, "cdsops_https", "https://localhost/healthz")
    assert ok["probe_success"] == 1
    assert ok["probe_http_status_code"] == 200
    assert ok["probe_http_ssl"] == 1
    # the fixture's certificate is valid for 7 days: the expiry gauge says so
    days_left = (ok["probe_ssl_earliest_cert_expiry"] - time.time()) / 86400
    assert 6 < days_left <= 7
    nohsts = probe(host, "cdsops_https", "https://localhost/nohsts")
    assert nohsts["probe_success"] == 0
    assert nohsts["probe_failed_due_to_regex"] == 1
    assert nohsts["probe_http_status_code"] == 200


def test_probes_verify_the_certificate(host):
    """A certificate the configured CA does not vouch for fails (127.0.0.2 is not in its SAN)."""
    assert probe(host, "cdsops_https", "https://127.0.0.2/healthz")["probe_success"] == 0


def test_signin_probe_wants_a_redirect_to_an_https_issuer(host):
    assert probe(host, "cdsops_signin", "https://localhost/_cdsops/login")["probe_success"] == 1
    # the public health page answers 200, not a redirect to sign-in: the sign-in module fails it
    assert probe(host, "cdsops_signin", "https://localhost/healthz")["probe_success"] == 0


def test_ide_probe_signs_in_with_the_probe_cookie(host):
    assert probe(host, "cdsops_ide", "https://localhost/")["probe_success"] == 1
    # without the cookie (the public module sends none) the gate fixture redirects to sign-in
    anonymous = probe(host, "cdsops_https", "https://localhost/")
    assert anonymous["probe_success"] == 0
    assert anonymous["probe_http_status_code"] == 302


def test_blackbox_config_keeps_the_cookie_private(host):
    config = host.file("/etc/prometheus/blackbox.yml")
    assert config.mode == 0o640
    assert (config.user, config.group) == ("root", "prometheus")
    assert "cdsops_session=probe-cookie-v1.s999999" in config.content_string
    assert host.socket("tcp://127.0.0.1:9115").is_listening
    assert not host.socket("tcp://0.0.0.0:9115").is_listening


def prometheus_alerts(host) -> list[dict]:
    status, body = http_get(host, "http://127.0.0.1:9090/api/v1/alerts")
    return json.loads(body)["data"]["alerts"] if status == 200 else []


def test_prometheus_alerts_on_the_probe_results(host):
    def states():
        return {(a["labels"]["alertname"], a["labels"].get("instance", "")): a["state"] for a in prometheus_alerts(host)}

    # the installed rules keep the default thresholds (the promtool tests run against them),
    # so the probe alerts are pending (for: 5m) by the time verify looks; Watchdog fires at once
    active = {"pending", "firing"}
    want = {
        ("CdsopsHstsMissing", "https://localhost/nohsts"): active,
        ("CdsopsPublicUrlDown", "https://localhost/nohsts"): active,
        ("Watchdog", ""): {"firing"},
    }
    got = wait_for(lambda: (s := states()) and all(s.get(k) in v for k, v in want.items()) and s, timeout=90, step=3)
    assert got, f"alerts never reached {want}: {states()}"
    # the 7-day certificate is under the 14-day threshold (for: 10m, so pending at first)
    assert got.get(("CdsopsTlsCertificateExpiring", "https://localhost/healthz")) in {"pending", "firing"}
    for healthy in [("CdsopsPublicUrlDown", "https://localhost/healthz"),
                    ("CdsopsSigninPageDown", "https://localhost/_cdsops/login"),
                    ("CdsopsIdeProbeFailed", "https://localhost/")]:
        assert healthy not in got, healthy


def test_watchdog_reaches_the_deadmans_switch(host):
    def posted():
        return host.run("cat /var/tmp/deadman.log").stdout
    log = wait_for(lambda: "Watchdog" in posted() and posted(), timeout=90, step=3)
    assert log, "Alertmanager never posted the Watchdog to the dead-man's switch"
    first = json.loads(log.splitlines()[0])
    assert first["receiver"] == "deadmans-switch"
    assert [a["labels"]["alertname"] for a in first["alerts"]] == ["Watchdog"]
    # the other alerts go to the admins' receiver, not to the switch
    assert "CdsopsHstsMissing" not in log
