"""The management role's reconcile inventory: host keys checked strictly against the role's
known_hosts file, the run's store/config left to `cdsops reconcile` (issue 13, host key checking)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from cdsops.config import Config
from cdsops.service import roster_sync
from cdsops.testing.registrations import write_registrations

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "management"
BIN = Path(sys.executable).parent


def render_inventory(tmp_path: Path, extra: dict) -> dict:
    """The role's ``__management_reconcile_inventory`` as it writes it (defaults + vars + ``extra``)."""
    out = tmp_path / "cdsops.yml"
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": "Render", "ansible.builtin.copy": {
            "content": "{{ __management_reconcile_inventory | to_nice_yaml(indent=2, sort_keys=true) }}",
            "dest": str(out), "mode": "0644"}}],
    }]
    book = tmp_path / "render.yml"
    book.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    p = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(book), "-e", json.dumps(extra),
                        "-e", f"ansible_python_interpreter={sys.executable}"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return yaml.safe_load(out.read_text())


def test_compute_hosts_are_reached_with_strict_host_key_checking(tmp_path):
    inv = render_inventory(tmp_path, {"management_reconcile_compute_vars": {"ansible_user": "deploy"},
                                      "management_reconcile_known_hosts_path": "/etc/x/known_hosts"})
    args = inv["compute_vars"]["ansible_ssh_common_args"]
    assert "-o UserKnownHostsFile=/etc/x/known_hosts" in args and "-o StrictHostKeyChecking=yes" in args
    assert inv["compute_vars"]["ansible_user"] == "deploy"
    # the run passes its own store and config; the file must not fix them (the runner refuses that)
    assert inv["plugin"] == "cdsops.platform.cdsops_roster" and not {"store", "config", "now", "allow_mass_revoke"} & set(inv)


def test_the_host_key_arguments_reach_every_compute_host(tmp_path):
    (tmp_path / "inv").mkdir()
    inv = render_inventory(tmp_path / "inv", {"management_reconcile_host_vars": {"compute": {"ansible_host": "127.0.0.1"}}})
    (tmp_path / "inv" / "cdsops.yml").write_text(yaml.safe_dump(inv))
    # a roster with nobody in it (a missing one is an error: it must never read as empty)
    write_registrations(tmp_path / "reg.csv", [])
    roster_sync(str(tmp_path / "reg.csv"), str(tmp_path / "roster.duckdb"), Config(), allow_empty=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSOPS_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               CDSOPS_ROSTER=str(tmp_path / "roster.duckdb"))
    p = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(tmp_path / "inv" / "cdsops.yml"), "--list"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    hv = json.loads(p.stdout, object_hook=lambda d: d["__ansible_unsafe"] if set(d) == {"__ansible_unsafe"} else d)["_meta"]["hostvars"]
    assert "StrictHostKeyChecking=yes" in hv["compute"]["ansible_ssh_common_args"] and hv["compute"]["ansible_host"] == "127.0.0.1"
