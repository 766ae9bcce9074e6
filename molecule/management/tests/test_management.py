"""Behaviour of the management role in a systemd container (run by `molecule verify`)."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from podman_host import host  # noqa: E402,F401  (podman exec instead of Ansible per command)

SECRET = "SG.cdsops-molecule-fake-secret-7f3a"
PROM = "/var/lib/prometheus/node-exporter/cdsops_reconcile.prom"
DROPIN = "/run/systemd/system/cdsops-reconcile.service.d/verify.conf"


def metrics(host) -> dict[str, float]:
    out = {}
    for line in host.file(PROM).content_string.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name] = float(value)
    return out


def put(host, path: str, content: str, mode: str = "0644") -> None:
    """Write a file in the container (base64: no shell quoting in the way)."""
    b64 = base64.b64encode(content.encode()).decode()
    cmd = host.run(f"mkdir -p {Path(path).parent} && echo {b64} | base64 -d > {path} && chmod {mode} {path}")
    assert cmd.rc == 0, cmd.stderr


def run_service_with(host, command: str):
    """Run cdsops-reconcile.service once with ExecStart replaced (a runtime drop-in)."""
    put(host, DROPIN, f"[Service]\nExecStart=\nExecStart={command}\n")
    host.run("systemctl daemon-reload")
    host.run("systemctl start cdsops-reconcile.service")   # oneshot: returns when the run ended
    for _ in range(50):
        if host.run("systemctl is-active cdsops-reconcile.service").stdout.strip() in ("inactive", "failed"):
            break
        time.sleep(0.1)


@pytest.fixture(scope="module")
def timer_paused(host):
    """Stop the every-minute timer while the tests drive the service themselves."""
    assert host.service("cdsops-reconcile.timer").is_running, "the timer was not running after converge"
    host.run("systemctl stop cdsops-reconcile.timer")
    yield
    host.run(f"rm -f {DROPIN} && systemctl daemon-reload && systemctl reset-failed cdsops-reconcile.service;"
             " systemctl start cdsops-reconcile.timer")


def test_venv_has_cdsops_and_ansible_runner(host):
    cmd = host.run("/opt/cdsops/venv/bin/python -c 'import cdsops.identity, ansible_runner; "
                   "print(cdsops.identity.canonicalize(\"A.B+x@GoogleMail.com\"))'")
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.strip() == "ab@gmail.com"
    assert host.file("/opt/cdsops/venv/bin/cdsops").is_file
    assert host.file("/opt/cdsops/venv/bin/ansible-runner").is_file


def test_config_written_and_checked_by_cdsops(host):
    conf = host.file("/etc/cdsops/cdsops.yml")
    assert conf.user == "root" and conf.group == "cdsops" and conf.mode == 0o640
    load = host.run("/opt/cdsops/venv/bin/python -c 'from cdsops.config import load_config; "
                    "print(load_config(\"/etc/cdsops/cdsops.yml\").access_days)'")
    assert load.stdout.strip() == "182"
    # the validate step the role uses refuses a bad configuration
    host.run("printf 'access_days: -3\\n' > /tmp/bad-cdsops.yml")
    bad = host.run("/opt/cdsops/venv/bin/python -c 'import sys; from cdsops.config import load_config; "
                   "load_config(sys.argv[1])' /tmp/bad-cdsops.yml")
    assert bad.rc != 0 and "access_days" in bad.stderr


def test_credentials_are_0600_and_never_logged(host):
    cred = host.file("/etc/cdsops/credentials/sendgrid.key")
    assert cred.mode == 0o600 and cred.user == "cdsops"
    assert cred.content_string == SECRET
    assert host.file("/etc/cdsops/credentials").mode == 0o750
    # Ansible logs module invocations to the journal: the secret must not be there
    journal = host.run("journalctl --no-pager -o cat")
    assert journal.rc == 0
    assert "sendgrid.key" in journal.stdout or "ansible" in journal.stdout  # the journal does hold the runs
    assert SECRET not in journal.stdout


def test_service_and_timer_units(host):
    show = host.check_output("systemctl show cdsops-reconcile.service -p Type -p User -p ExecStart -p TimeoutStartUSec")
    assert "Type=oneshot" in show and "User=cdsops" in show
    assert "/opt/cdsops/venv/bin/cdsops reconcile --config /etc/cdsops/cdsops.yml" in show
    assert "TimeoutStartUSec=10min" in show
    timer = host.check_output("systemctl show cdsops-reconcile.timer -p TimersMonotonic -p UnitFileState")
    assert "OnUnitInactiveUSec=1min" in timer and "UnitFileState=enabled" in timer
    assert host.service("cdsops-reconcile.timer").is_enabled


def summaries(host) -> list[dict]:
    """The one-line JSON summaries the reconcile service printed (journal), oldest first."""
    out = host.run("journalctl -u cdsops-reconcile.service -o cat --no-pager")
    found = []
    for line in out.stdout.splitlines():
        if line.startswith("{") and '"run_id"' in line:
            found.append(json.loads(line))
    return found


def start_service(host) -> None:
    host.run("systemctl start cdsops-reconcile.service")   # oneshot: returns when the run ended
    for _ in range(100):
        if host.run("systemctl is-active cdsops-reconcile.service").stdout.strip() in ("inactive", "failed"):
            return
        time.sleep(0.2)


def test_the_config_and_inventory_point_the_reconcile_at_the_roster_and_the_hosts(host):
    conf = host.check_output("cat /etc/cdsops/cdsops.yml")
    assert "roster: /var/lib/cdsops/roster.duckdb" in conf
    assert "inventory: /etc/cdsops/inventory/cdsops.yml" in conf and "state_dir: /var/lib/cdsops" in conf
    inv = host.file("/etc/cdsops/inventory/cdsops.yml")
    assert inv.mode == 0o640 and inv.group == "cdsops"
    assert "plugin: cdsops.platform.cdsops_roster" in inv.content_string and "ansible_host: 127.0.0.1" in inv.content_string
    # the playbook and the collection come with the installed package, not a checkout
    pkg = host.run("/opt/cdsops/venv/bin/python -c 'from cdsops.runner import ansible_home; print(ansible_home())'")
    assert pkg.rc == 0 and pkg.stdout.strip().endswith("site-packages/cdsops/ansible"), pkg.stdout + pkg.stderr
    assert host.file(pkg.stdout.strip() + "/playbooks/reconcile.yml").is_file
    site = pkg.stdout.strip().rsplit("/cdsops/ansible", 1)[0]
    assert host.file(site + "/ansible_collections/cdsops/platform/plugins/modules/cdsops_accounts.py").is_file
    doc = host.run("/opt/cdsops/venv/bin/ansible-doc -j cdsops.platform.cdsops_accounts")
    assert doc.rc == 0 and site + "/ansible_collections/cdsops/platform/" in doc.stdout, doc.stderr


def test_the_service_reconciles_the_registrations_over_ssh(host, timer_paused):
    """The unit's own ExecStart: sync the form's rows, apply them to the compute host (this
    container over SSH + sudo), send the emails, record the changes; a rerun changes nothing."""
    start_service(host)   # the timer may have done the first run already: the state is what counts
    start_service(host)
    # the oneshot unit ended with its run (nothing left behind holding it in stop-sigterm)
    assert host.check_output("systemctl show -p Result --value cdsops-reconcile.service") == "success"
    runs = summaries(host)
    assert runs, host.run("journalctl -u cdsops-reconcile.service -o cat --no-pager | tail -50").stdout
    last = runs[-1]
    assert last["status"] == "successful", (last, host.run(f"tail -c 3000 {last.get('artifacts')}/stdout").stdout)
    assert last["changed"] == 0 and last["failures"] == [], last
    assert last["sync"] == {"added": 0, "renewed": 0, "unchanged": 2, "rejected": 1}, last
    # what the runs did, over all of them: one account per person (the Gmail aliases are one)
    created = sum(r["changes"].get("account.created", 0) for r in runs)
    assert created == 2 and sum(r["changes"].get("email.welcome", 0) for r in runs) == 2
    passwd = host.check_output("getent passwd s000001 s000002")
    assert "s000001:x:200001:200001::/home/s000001:/bin/bash" in passwd
    assert "s000002:x:200002:200002::" in passwd
    assert host.run("getent passwd s000003").rc == 2
    assert host.check_output("getent group cdsdata").endswith("s000001,s000002")
    home = host.file("/home/s000001")
    assert home.is_directory and home.mode == 0o700 and home.user == "s000001"
    assert host.file("/srv/cdsdata/patients.csv").group == "cdsdata"
    outbox = host.check_output("ls /var/lib/cdsops/outbox")
    assert "welcome-1-" in outbox and "welcome-2-" in outbox
    # the changes record: one JSON line per change, never an email or a name
    changes = host.run("sudo -u cdsops /opt/cdsops/venv/bin/cdsops changes --roster /var/lib/cdsops/roster.duckdb")
    assert changes.rc == 0, changes.stderr
    kinds = [json.loads(line)["kind"] for line in changes.stdout.splitlines() if line.strip()]
    assert kinds.count("account.created") == 2 and "group.member_added" in kinds
    for secret in ("alice", "Alice", "bob@", "Jones", "Leeds"):
        assert secret not in changes.stdout
    assert metrics(host)["cdsops_reconcile_last_status"] == 0


def test_a_successful_run_records_ok_metrics(host, timer_paused):
    before = time.time()
    run_service_with(host, "/bin/true")
    m = metrics(host)
    assert m["cdsops_reconcile_last_status"] == 0
    assert m["cdsops_reconcile_last_success_timestamp_seconds"] >= int(before) - 1
    assert host.file(PROM).mode == 0o644


def test_a_failed_run_records_failure_and_keeps_the_last_success(host, timer_paused):
    run_service_with(host, "/bin/true")
    success = metrics(host)["cdsops_reconcile_last_success_timestamp_seconds"]
    time.sleep(1.1)
    run_service_with(host, "/bin/false")
    m = metrics(host)
    assert m["cdsops_reconcile_last_status"] == 1
    assert m["cdsops_reconcile_last_success_timestamp_seconds"] == success
    assert m["cdsops_reconcile_last_run_timestamp_seconds"] > success


def test_the_service_runs_as_the_unprivileged_user_in_a_sandbox(host, timer_paused):
    put(host, "/usr/local/bin/cdsops-verify-whoami",
        "#!/bin/sh\nid -un > /var/lib/cdsops/whoami\ntouch /etc/cdsops/x 2>/dev/null && echo rw >> /var/lib/cdsops/whoami\nexit 0\n",
        mode="0755")
    host.run("rm -f /var/lib/cdsops/whoami /etc/cdsops/x")
    run_service_with(host, "/usr/local/bin/cdsops-verify-whoami")
    assert host.file("/var/lib/cdsops/whoami").content_string.strip() == "cdsops"
    assert not host.file("/etc/cdsops/x").exists


def test_log_retention(host):
    journald = host.file("/etc/systemd/journald.conf.d/50-cdsops.conf").content_string
    assert "SystemMaxUse=2G" in journald and "MaxRetentionSec=1year" in journald
    tmpfiles = host.file("/etc/tmpfiles.d/cdsops.conf").content_string
    assert "/var/lib/cdsops/runner/artifacts 0750 cdsops cdsops mM:30d" in tmpfiles
    # an artifact older than 30 days is removed by systemd-tmpfiles --clean, a new one kept
    host.run("mkdir -p /var/lib/cdsops/runner/artifacts/old /var/lib/cdsops/runner/artifacts/new && "
             "touch -d '40 days ago' /var/lib/cdsops/runner/artifacts/old /var/lib/cdsops/runner/artifacts && "
             "systemd-tmpfiles --clean /etc/tmpfiles.d/cdsops.conf")
    assert not host.file("/var/lib/cdsops/runner/artifacts/old").exists
    assert host.file("/var/lib/cdsops/runner/artifacts/new").exists
    assert host.run("logrotate --debug /etc/logrotate.d/cdsops").rc == 0
