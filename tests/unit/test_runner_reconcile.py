"""cdsops.runner: lock, metrics, summary, guard, failure status, and the CLI wiring."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdsops.config import load_config
from cdsops.runner import Busy, RunSummary, exclusive_lock, reconcile, write_metrics
from cdsops.service import roster_sync
from cdsops.store import open_store
from cdsops.testing.registrations import write_registrations
from cdsops.times import format_iso

T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def world(tmp_path):
    cfg = tmp_path / "cdsops.yml"
    cfg.write_text("compute_hosts: [cdsops-no-such-container]\nmax_revoke_fraction: 0.1\n")
    src = tmp_path / "reg.csv"
    write_registrations(src, [[T0 + timedelta(minutes=i), f"u{i}@example.org", f"N{i}", "C", "K", "Yes", "Yes"] for i in range(1, 11)])
    store = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), store, load_config(cfg), T0 + timedelta(hours=1))
    return {"cfg": str(cfg), "store": store, "tmp": tmp_path, "src": str(src)}


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    lock = tmp_path / "reconcile.lock"
    with exclusive_lock(lock), pytest.raises(Busy, match="another cdsops reconcile is running"), exclusive_lock(lock):
        pass
    with exclusive_lock(lock):  # released
        pass


def test_metrics_success_timestamp_only_moves_on_success(tmp_path):
    assert write_metrics(tmp_path / "missing", "successful") is False
    assert write_metrics(tmp_path, "successful", now=100.0)
    text = (tmp_path / "cdsops_reconcile.prom").read_text()
    assert "cdsops_reconcile_last_status 0" in text and "cdsops_reconcile_last_success_timestamp_seconds 100.000" in text
    write_metrics(tmp_path, "failed", now=200.0)
    text = (tmp_path / "cdsops_reconcile.prom").read_text()
    assert "cdsops_reconcile_last_status 1" in text
    assert "cdsops_reconcile_last_success_timestamp_seconds 100.000" in text
    assert "cdsops_reconcile_last_run_timestamp_seconds 200.000" in text


@pytest.mark.parametrize("status, code", [("successful", 0), ("failed", 1), ("guard", 3), ("timeout", 4), ("canceled", 5), ("error", 1)])
def test_summary_is_one_json_line_with_exit_code(status, code):
    s = RunSummary("r1", status=status, changes={"b": 2, "a": 1}, duration_s=1.23456)
    line = s.to_json()
    assert "\n" not in line
    d = json.loads(line)
    assert d["run_id"] == "r1" and d["status"] == status and d["changed"] == 3 and d["duration_s"] == 1.235
    assert list(d["changes"]) == ["a", "b"]
    assert s.exit_code == code


def test_guard_stops_before_the_playbook(world):
    open_store(world["store"]).set_meta({"last_applied_at": format_iso(T0 + timedelta(hours=1))})
    s = reconcile(load_config(world["cfg"]), config_path=world["cfg"], store_uri=world["store"], now=T0 + timedelta(days=400),
                  state_dir=world["tmp"] / "state", textfile_dir=world["tmp"])
    assert s.status == "guard" and s.exit_code == 3 and "max_revoke_fraction" in s.message
    assert not (world["tmp"] / "state" / "runner").exists()  # ansible never started
    assert "cdsops_reconcile_last_status 3" in (world["tmp"] / "cdsops_reconcile.prom").read_text()


def test_unreachable_host_fails_with_the_reason_and_does_not_mark_applied(world):
    s = reconcile(load_config(world["cfg"]), config_path=world["cfg"], store_uri=world["store"], now=T0 + timedelta(days=1),
                  state_dir=world["tmp"] / "state", textfile_dir=world["tmp"], extravars={"cdsops_email_enabled": False})
    assert s.status == "failed" and s.exit_code == 1
    assert s.failures and s.failures[0]["host"] == "cdsops-no-such-container"
    assert "last_applied_at" not in open_store(world["store"]).load_meta()
    assert Path(s.artifacts, "stdout").exists()


def test_cli_reconcile_busy_and_usage(world):
    cli = [sys.executable, "-m", "cdsops.cli", "--config", world["cfg"], "reconcile"]
    out = subprocess.run(cli, capture_output=True, text=True)
    assert out.returncode == 1 and "no roster store" in out.stderr
    state = world["tmp"] / "state"
    with exclusive_lock(state / "reconcile.lock"):
        out = subprocess.run(cli + ["--roster", world["store"], "--state-dir", str(state)], capture_output=True, text=True)
    assert out.returncode == 75 and "another cdsops reconcile is running" in out.stderr and out.stdout == ""
    out = subprocess.run(cli + ["--roster", world["store"], "--state-dir", str(state), "--now", "2027-09-01T00:00:00Z",
                                "--textfile-dir", str(world["tmp"])], capture_output=True, text=True)
    # everyone expired since the sync: the guard stops the run, exit 3, one JSON line on stdout
    assert out.returncode == 3, out.stderr
    assert json.loads(out.stdout)["status"] == "guard" and "allow-mass-revoke" in out.stderr


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose command line contains ``text``, other than this one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry), cmdline))
    return found


def test_job_timeout_stops_the_run_and_artifacts_are_rotated(world):
    book = world["tmp"] / "slow.yml"
    book.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.pause: {seconds: 30}\n")
    quick = world["tmp"] / "quick.yml"
    quick.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: hi}\n")
    kw = dict(config_path=world["cfg"], store_uri=world["store"], now=T0 + timedelta(days=1), state_dir=world["tmp"] / "state",
              textfile_dir=world["tmp"], keep_artifacts=2)
    s = reconcile(load_config(world["cfg"]), playbook=book, job_timeout=3, **kw)
    assert s.status == "timeout" and s.exit_code == 4 and s.duration_s < 25
    # nothing of the timed-out run is left that could still apply changes: not ansible-playbook,
    # not its workers (they run in sessions of their own), not a module they started
    assert _processes_mentioning(str(book)) == []
    assert "cdsops_reconcile_last_status 4" in (world["tmp"] / "cdsops_reconcile.prom").read_text()
    runs = [reconcile(load_config(world["cfg"]), playbook=quick, **kw) for _ in range(3)]
    assert all(r.status == "successful" for r in runs)
    kept = sorted(p.name for p in (world["tmp"] / "state" / "runner" / "artifacts").iterdir())
    assert kept == sorted(r.run_id for r in runs[-2:])
    assert "last_applied_at" in open_store(world["store"]).load_meta()


def test_canceled_run_leaves_no_process_behind(world):
    """SIGTERM to the reconcile cancels the run (ansible-runner's handler) and kills all of it."""
    book = world["tmp"] / "slow-cancel.yml"
    book.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.pause: {seconds: 60}\n")
    script = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from cdsops.config import load_config\n"
        "from cdsops.runner import reconcile\n"
        "s = reconcile(load_config(sys.argv[1]), config_path=sys.argv[1], store_uri=sys.argv[2], playbook=sys.argv[3],\n"
        "              now=datetime(2026, 6, 2, tzinfo=timezone.utc), state_dir=sys.argv[4], textfile_dir=None)\n"
        "print(s.to_json())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, world["cfg"], world["store"], str(book), str(world["tmp"] / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # wait for the worker: ansible-playbook and a fork of it running the pause task
        while len(_processes_mentioning(str(book))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads(out.strip().splitlines()[-1])["status"] == "canceled", err
    assert _processes_mentioning(str(book)) == []


def test_source_is_synced_before_the_plan(world):
    quick = world["tmp"] / "quick.yml"
    quick.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: hi}\n")
    with open(world["src"], "a", newline="") as fh:
        csv.writer(fh).writerow([(T0 + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"), "new@example.org", "New", "C", "K", "Yes", "Yes"])
    s = reconcile(load_config(world["cfg"]), config_path=world["cfg"], store_uri=world["store"], source=world["src"],
                  now=T0 + timedelta(hours=3), state_dir=world["tmp"] / "state", textfile_dir=None, playbook=quick)
    assert s.status == "successful" and s.sync == {"added": 1, "renewed": 0, "unchanged": 10, "rejected": 0}
    assert json.loads(s.to_json())["sync"]["added"] == 1
    assert len(open_store(world["store"]).load().students) == 11


def test_the_playbook_runs_with_host_key_checking_on(world):
    """ansible-runner turns host key checking off unless told: the reconcile tells it (issue 13)."""
    book = world["tmp"] / "hostkeys.yml"
    book.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: Host key checking is on\n"
                    "      ansible.builtin.assert:\n        that: lookup('ansible.builtin.config', 'HOST_KEY_CHECKING') | bool\n")
    s = reconcile(load_config(world["cfg"]), config_path=world["cfg"], store_uri=world["store"], now=T0 + timedelta(hours=2),
                  state_dir=world["tmp"] / "state", textfile_dir=None, playbook=book)
    assert s.status == "successful", s.to_json()


def test_an_inventory_that_fixes_the_run_values_is_refused(world):
    inv = world["tmp"] / "cdsops.yml"
    inv.write_text("plugin: cdsops.platform.cdsops_roster\nstore: elsewhere.duckdb\n")
    with pytest.raises(Exception, match="sets store: the run passes them"):
        reconcile(load_config(world["cfg"]), config_path=world["cfg"], store_uri=world["store"], state_dir=world["tmp"] / "state",
                  inventory=inv, textfile_dir=None)
    assert not (world["tmp"] / "state").exists()


def test_an_inventory_that_cannot_be_parsed_fails_the_run(world):
    """Ansible only warns about an inventory source it cannot parse and then plays against no
    hosts, which would be a silent success (and would mark the plan applied). The run sets
    any_unparsed_is_failed: a plugin failure (here a sign-in key file that is not there) is a
    failed run."""
    inv = world["tmp"] / "cdsops.yml"
    inv.write_text(f"plugin: cdsops.platform.cdsops_roster\nsignin_key: {world['tmp'] / 'no-such.key'}\n")
    s = reconcile(load_config(world["cfg"]), config_path=world["cfg"], store_uri=world["store"], now=T0 + timedelta(days=1),
                  state_dir=world["tmp"] / "state", inventory=inv, textfile_dir=world["tmp"])
    assert s.status == "failed" and s.exit_code == 1, s.to_json()
    assert "last_applied_at" not in open_store(world["store"]).load_meta()
    assert "cdsops_reconcile_last_status 1" in (world["tmp"] / "cdsops_reconcile.prom").read_text()
