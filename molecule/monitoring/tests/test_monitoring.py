"""Behaviour of the monitoring role (management host profile) in a systemd container."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from podman_host import host  # noqa: E402,F401  (podman exec instead of Ansible per command)

HERE = Path(__file__).resolve().parent
ALERTS = {
    "CpuAvailableLow", "MemoryFreeLow", "DiskFreeLow", "TargetDown",
    "ReconcileFailing", "ReconcileStale", "IdeLicenceInvalid", "IdeLicenceExpiring",
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
    assert ALERTS <= loaded
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
