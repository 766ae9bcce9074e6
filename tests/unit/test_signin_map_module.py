"""The cdsops_signin_map module: validation, check mode, diff, idempotency, duplicate refusal.

The pure part (the collection's module_utils/cdsops_signin_map.py) is tested directly; the module
itself runs through a real ansible-playbook on localhost (one run, many tasks).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_signin_map as mu

REPO = Path(__file__).resolve().parents[2]

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def e(h, user, ready="2026-11-26T17:00:00Z"):
    return {"hash": h, "username": user, "ready_at": ready}


def test_document_is_sorted_normalized_and_deterministic():
    doc = mu.build_document([e(B, "s000002", "2026-11-26T18:30:00+01:00"), e(A, "s000001")], [D, C])
    assert [x["username"] for x in doc["active"]] == ["s000001", "s000002"]
    assert doc["active"][1]["ready_at"] == "2026-11-26T17:30:00Z"
    assert doc["expired"] == [C, D]
    again = mu.build_document([e(A, "s000001"), e(B, "s000002", "2026-11-26T17:30:00Z")], [C, D, C])
    assert mu.render(doc) == mu.render(again)
    assert mu.render(mu.build_document([], [])) == b'{"active":[],"expired":[],"format":"cdsops-signin-map/1"}\n'


@pytest.mark.parametrize(
    "entries, expired, message",
    [
        ([e(A, "s000001"), e(A, "s000002")], [], "one identity appears twice.*s000001 and s000002"),
        ([e(A, "s000001"), e(B, "s000001")], [], "username s000001 appears twice"),
        ([e(A, "s000001")], [A], "also active"),
        ([e("A" * 64, "s000001")], [], "64 lower-case hex"),
        ([e("alice@example.org", "s000001")], [], "64 lower-case hex"),
        ([e(A, "NA")], [], "not a valid Linux user name"),
        ([e(A, "s000001", "2026-11-26T17:00:00")], [], "no time zone"),
        ([e(A, "s000001", "tomorrow")], [], "not an ISO 8601 time"),
        ([{"hash": A, "username": "s000001"}], [], "ready_at is missing"),
        ([{"hash": A, "username": "s000001", "ready_at": "2026-11-26T17:00:00Z", "email": "x"}], [], "unknown key"),
        ([e(A, "s000001")], ["nope"], "expired\\[0\\]"),
        ("not a list", [], "entries must be a list"),
    ],
)
def test_refusals(entries, expired, message):
    with pytest.raises(mu.SigninMapError, match=message):
        mu.build_document(entries, expired)


def test_refusal_messages_never_carry_a_hash():
    with pytest.raises(mu.SigninMapError) as err:
        mu.build_document([e(A, "s000001"), e(A, "s000002")], [])
    assert A not in str(err.value)


def test_compare_and_diff_name_usernames_only():
    before = mu.build_document([e(A, "s000001"), e(B, "s000002")], [])
    after = mu.build_document([e(A, "s000001", "2026-11-27T00:00:00Z"), e(C, "s000003")], [B])
    summary = mu.compare(before, after)
    assert summary["added"] == ["s000003"] and summary["removed"] == ["s000002"]
    assert summary["updated"] == ["s000001"]
    assert (summary["active_before"], summary["active_after"], summary["expired_after"]) == (2, 2, 1)
    b, a = mu.diff_text(summary)
    assert "active students: 2" in b and "added: s000003" in a and "removed: s000002" in a
    assert all(h not in a + b for h in (A, B, C))
    many = mu.compare(None, mu.build_document([e(f"{i:064x}", f"s{i:06d}") for i in range(120)], []))
    assert "... and 70 more" in mu.diff_text(many)[1]


def test_atomic_write_sets_mode_before_the_file_appears(tmp_path):
    path = tmp_path / "map.json"
    mu.atomic_write(str(path), b"one\n", mode=0o640)
    assert path.read_bytes() == b"one\n" and stat.S_IMODE(path.stat().st_mode) == 0o640
    ino = path.stat().st_ino
    mu.atomic_write(str(path), b"two\n", mode=0o600)
    assert path.read_bytes() == b"two\n" and path.stat().st_ino != ino
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["map.json"]  # no temp file left


@pytest.mark.parametrize(
    "current, requested_active, requested_expired, active_after, expired_after",
    [
        # the expired student's entry goes; a new student is NOT added (that waits for the account)
        ([e(A, "s000001"), e(B, "s000002")], [e(A, "s000001"), e(D, "s000004")], [B], ["s000001"], [B]),
        # nothing revoked: the file stays as it is (an updated ready_at is not applied either)
        ([e(A, "s000001")], [e(A, "s000001", "2026-11-27T00:00:00Z")], [], ["s000001"], []),
        # a missing or unreadable file: nothing active survives, only expired hashes are written
        (None, [e(A, "s000001")], [C], [], [C]),
    ],
    ids=["revokes-but-adds-nothing", "no-revocation-no-update", "no-current-map"],
)
def test_restrict_only_takes_access_away(current, requested_active, requested_expired, active_after, expired_after):
    cur = mu.build_document(current, []) if current is not None else None
    out = mu.restrict(cur, mu.build_document(requested_active, requested_expired))
    assert [x["username"] for x in out["active"]] == active_after and out["expired"] == expired_after
    if cur is not None and active_after:
        assert out["active"][0] == cur["active"][0]  # kept exactly as it was
    summary = mu.compare(cur, out)
    assert summary["added"] == [] and summary["updated"] == []


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    path: "{dir}/signin-map.json"
    entries:
      - {{hash: "{A}", username: s000001, ready_at: "2026-11-26T17:00:00Z"}}
      - {{hash: "{B}", username: s000002, ready_at: "2026-11-26T17:05:00Z"}}
  tasks:
    - name: check mode on a fresh host
      cdsops.platform.cdsops_signin_map: {{path: "{{{{ path }}}}", group: root, entries: "{{{{ entries }}}}", expired: ["{C}"]}}
      check_mode: true
      diff: true
      register: r_check
    - name: file after check mode
      ansible.builtin.stat: {{path: "{{{{ path }}}}"}}
      register: r_check_stat
    - name: first real run
      cdsops.platform.cdsops_signin_map: {{path: "{{{{ path }}}}", group: root, entries: "{{{{ entries }}}}", expired: ["{C}"]}}
      diff: true
      register: r_first
    - name: second run (idempotent)
      cdsops.platform.cdsops_signin_map: {{path: "{{{{ path }}}}", group: root, entries: "{{{{ entries | reverse | list }}}}", expired: ["{C}"]}}
      diff: true
      register: r_second
    - name: check mode of a change
      cdsops.platform.cdsops_signin_map: {{path: "{{{{ path }}}}", group: root, entries: "{{{{ entries[:1] }}}}", expired: ["{C}", "{B}"]}}
      check_mode: true
      diff: true
      register: r_check_change
    - name: duplicate username refused
      cdsops.platform.cdsops_signin_map:
        path: "{{{{ path }}}}"
        group: root
        entries: [{{hash: "{C}", username: s000001, ready_at: "2026-11-26T17:00:00Z"}}, {{hash: "{D}", username: s000001, ready_at: "2026-11-26T17:00:00Z"}}]
      register: r_dup_user
      ignore_errors: true
    - name: duplicate identity refused
      cdsops.platform.cdsops_signin_map:
        path: "{{{{ path }}}}"
        group: root
        entries: [{{hash: "{C}", username: s000001, ready_at: "2026-11-26T17:00:00Z"}}, {{hash: "{C}", username: s000003, ready_at: "2026-11-26T17:00:00Z"}}]
      register: r_dup_hash
      ignore_errors: true
    - name: a wrong mode is repaired
      ansible.builtin.file: {{path: "{{{{ path }}}}", mode: "0666"}}
    - name: repair run
      cdsops.platform.cdsops_signin_map: {{path: "{{{{ path }}}}", group: root, entries: "{{{{ entries }}}}", expired: ["{C}"]}}
      diff: true
      register: r_mode
    - name: missing group
      cdsops.platform.cdsops_signin_map: {{path: "{{{{ path }}}}", group: no-such-group-cdsops, entries: []}}
      register: r_group
      ignore_errors: true
    - name: missing group in check mode (a fresh host in a check run)
      cdsops.platform.cdsops_signin_map: {{path: "{dir}/new/signin-map.json", group: no-such-group-cdsops, entries: []}}
      check_mode: true
      register: r_group_check
    - name: revoke only on a host with no map yet
      cdsops.platform.cdsops_signin_map: {{path: "{dir}/none/signin-map.json", group: no-such-group-cdsops, entries: "{{{{ entries }}}}", revoke_only: true}}
      register: r_revoke_missing
    - name: a full map for the revoke tests
      cdsops.platform.cdsops_signin_map: {{path: "{dir}/revoke-map.json", group: root, entries: "{{{{ entries }}}}", expired: ["{C}"]}}
    - name: revoke only, check mode (s000002 expires, s000004 is new)
      cdsops.platform.cdsops_signin_map: &revoke
        path: "{dir}/revoke-map.json"
        group: root
        entries: [{{hash: "{A}", username: s000001, ready_at: "2026-11-26T17:00:00Z"}}, {{hash: "{D}", username: s000004, ready_at: "2026-11-26T17:00:00Z"}}]
        expired: ["{C}", "{B}"]
        revoke_only: true
      check_mode: true
      diff: true
      register: r_revoke_check
    - name: revoke only
      cdsops.platform.cdsops_signin_map: *revoke
      diff: true
      register: r_revoke
    - name: revoke only again (idempotent)
      cdsops.platform.cdsops_signin_map: *revoke
      register: r_revoke_again
    - name: save results
      ansible.builtin.copy:
        dest: "{dir}/results.json"
        content: "{{{{ dict(check=r_check, check_stat=r_check_stat, first=r_first, second=r_second,
                    check_change=r_check_change, dup_user=r_dup_user, dup_hash=r_dup_hash,
                    mode=r_mode, group=r_group, group_check=r_group_check, revoke_missing=r_revoke_missing,
                    revoke_check=r_revoke_check, revoke=r_revoke, revoke_again=r_revoke_again) | to_json }}}}"
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("signin-map-module")
    (d / "play.yml").write_text(PLAYBOOK.format(dir=d, A=A, B=B, C=C, D=D))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    ansible = Path(sys.executable).parent / "ansible-playbook"
    proc = subprocess.run([str(ansible), "-i", "localhost,", "-c", "local", str(d / "play.yml")],
                          env=env, cwd=d, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((d / "results.json").read_text())
    out["dir"] = d
    return out


def test_check_mode_reports_but_writes_nothing(results):
    assert results["check"]["changed"] is True
    assert results["check"]["added"] == ["s000001", "s000002"]
    assert results["check_stat"]["stat"]["exists"] is False
    assert "added: s000002" in results["check"]["diff"]["after"]


def test_first_run_writes_and_second_run_changes_nothing(results):
    assert results["first"]["changed"] is True
    assert results["second"]["changed"] is False and "diff" not in results["second"]
    path = results["dir"] / "signin-map.json"
    doc = json.loads(path.read_text())
    assert [x["username"] for x in doc["active"]] == ["s000001", "s000002"] and doc["expired"] == [C]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_diff_has_counts_and_usernames_never_hashes(results):
    diff = results["check_change"]["diff"]
    assert "active students: 2" in diff["before"] and "active students: 1" in diff["after"]
    assert "removed: s000002" in diff["after"] and "expired identities: 2" in diff["after"]
    assert results["check_change"]["changed"] is True
    text = json.dumps([results["first"]["diff"], diff])
    assert all(h not in text for h in (A, B, C))
    # check mode left the file alone
    assert len(json.loads((results["dir"] / "signin-map.json").read_text())["active"]) == 2


def test_duplicates_are_refused_and_nothing_is_written(results):
    assert results["dup_user"]["failed"] and "username s000001 appears twice" in results["dup_user"]["msg"]
    assert results["dup_hash"]["failed"] and "one identity appears twice" in results["dup_hash"]["msg"]
    assert C not in results["dup_hash"]["msg"]


def test_mode_is_repaired_and_missing_group_is_explained(results):
    assert results["mode"]["changed"] is True and "mode: 0666 -> 0640" in results["mode"]["diff"]["after"]
    assert results["group"]["failed"] and "group no-such-group-cdsops does not exist" in results["group"]["msg"]


def test_check_mode_on_a_fresh_host_warns_instead_of_failing(results):
    r = results["group_check"]
    assert not r.get("failed") and r["changed"] is True
    assert any("no-such-group-cdsops does not exist" in w for w in r["warnings"])
    assert not (results["dir"] / "new").exists()


def test_revoke_only_removes_the_expired_and_adds_nobody(results):
    assert results["revoke_missing"]["changed"] is False and not results["revoke_missing"].get("failed")
    assert not (results["dir"] / "none").exists()
    assert results["revoke_check"]["changed"] is True and results["revoke_check"]["removed"] == ["s000002"]
    assert results["revoke"]["removed"] == ["s000002"] and results["revoke"]["added"] == []
    assert "removed: s000002" in results["revoke"]["diff"]["after"]
    doc = json.loads((results["dir"] / "revoke-map.json").read_text())
    assert [x["username"] for x in doc["active"]] == ["s000001"]  # s000004 waits for the full run
    assert doc["expired"] == sorted([B, C])
    assert results["revoke_again"]["changed"] is False
