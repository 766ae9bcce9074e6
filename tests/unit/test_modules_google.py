"""cdsops_group / cdsops_access with provider google, through ansible-playbook, against the
project's Google API emulator (the official client libraries, CDSOPS_GOOGLE_EMULATOR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdsops.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
G = "cds-data@example.org"

PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    ids: %(ids)s
    users: %(users)s
  tasks:
    - name: check
      cdsops.platform.cdsops_group: {provider: google, config: "%(cfg)s", identities: "{{ ids }}", usernames: "{{ users }}"}
      check_mode: true
      diff: true
      register: check
    - name: revoke only
      cdsops.platform.cdsops_group: {provider: google, config: "%(cfg)s", identities: "{{ ids }}", usernames: "{{ users }}", revoke_only: true}
      register: revoke
    - name: sync
      cdsops.platform.cdsops_group: {provider: google, config: "%(cfg)s", identities: "{{ ids }}", usernames: "{{ users }}"}
      register: sync
    - name: again
      cdsops.platform.cdsops_group: {provider: google, config: "%(cfg)s", identities: "{{ ids }}", usernames: "{{ users }}"}
      register: again
    - name: access
      cdsops.platform.cdsops_access: {provider: google, config: "%(cfg)s"}
      diff: true
      register: access
    - name: access again
      cdsops.platform.cdsops_access: {provider: google, config: "%(cfg)s"}
      register: access_again
    - name: dump
      ansible.builtin.copy:
        dest: "%(out)s"
        content: "{{ {'check': check, 'revoke': revoke, 'sync': sync, 'again': again, 'access': access,
                      'access_again': access_again} | to_json }}"
"""


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    d = tmp_path_factory.mktemp("google")
    with Emulator() as emu:
        emu.create_group(G, ["old.one@example.org", "keep@example.org"])
        emu.create_project("proj", [{"role": "roles/owner", "members": ["user:admin@example.org"]}])
        emu.create_dataset("proj", "mimic", [{"role": "OWNER", "userByEmail": "admin@example.org"}])
        cfg = d / "cdsops.yml"
        cfg.write_text(
            "providers:\n"
            f"  group: {{kind: google, group: {G}}}\n"
            f"  access: {{kind: google, group: {G}, project: proj, datasets: [mimic]}}\n"
        )
        ids, users = ["keep@example.org", "new@gmail.com"], ["s000001", "s000002"]
        out = d / "out.json"
        (d / "play.yml").write_text(PLAY % {"ids": json.dumps(ids), "users": json.dumps(users), "cfg": cfg, "out": out})
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), CDSOPS_GOOGLE_EMULATOR=emu.url)
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               "-e", f"ansible_python_interpreter={sys.executable}", str(d / "play.yml")],
                              env=env, capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        members = emu.members(G)
        policy, dataset = emu.policy("proj"), emu.dataset("proj", "mimic")
    return json.loads(out.read_text()), members, policy, dataset, proc.stdout


def test_group_check_revoke_sync_idempotent(played):
    res, members, *_ = played
    assert res["check"]["changed"] and "+1 -1" in res["check"]["diff"]["after"]
    assert res["revoke"]["changed"] and res["revoke"]["added"] == []  # removals only
    assert res["sync"]["added"] == ["s000002"]
    assert res["again"]["changed"] is False
    assert sorted(members) == ["keep@example.org", "new@gmail.com"]


def test_access_binds_the_group_once(played):
    res, _m, policy, dataset, _out = played
    assert res["access"]["changed"] and res["access_again"]["changed"] is False
    assert any(f"group:{G}" in b.get("members", []) for b in policy["bindings"])
    assert any(e.get("groupByEmail") == G for e in dataset["access"])


def test_identities_never_reach_results_or_output(played):
    res, _m, _p, _d, stdout = played
    blob = json.dumps({k: v for k, v in res.items() if not k.startswith("access")})
    assert "new@gmail.com" not in blob and "keep@example.org" not in blob and "new@gmail.com" not in stdout
