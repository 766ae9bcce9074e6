"""The cdsops_roster inventory plugin: what each host gets, the guard, the real plugin via ansible-inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdsops import inventory as inv
from cdsops.config import load_config
from cdsops.identity import canonicalize, identity_hash
from cdsops.service import roster_sync
from cdsops.store import open_store
from cdsops.testing.registrations import write_registrations
from cdsops.times import format_iso

REPO = Path(__file__).resolve().parents[2]

T0 = datetime(2026, 6, 1, tzinfo=UTC)
KEY = b"k" * 32


def email(i):
    return f"Some.One{i}+x@gmail.com" if i % 2 else f"user{i}@example.org"


@pytest.fixture
def world(tmp_path):
    cfg = tmp_path / "cdsops.yml"
    cfg.write_text("compute_hosts: [c1, c2]\nmax_revoke_fraction: 0.2\n")
    rows = [[(T0 - timedelta(days=190 if i <= 3 else 0) + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"), email(i),
             f"Full Name{i}", "City", "Country", "Yes", "Yes"] for i in range(1, 21)]
    src = tmp_path / "reg.csv"
    write_registrations(src, rows)
    store = str(tmp_path / "roster.duckdb")
    roster_sync(str(src), store, load_config(cfg), T0 + timedelta(hours=1))
    key = tmp_path / "signin.key"
    key.write_bytes(KEY)
    return {"cfg": str(cfg), "store": store, "key": str(key), "tmp": tmp_path}


def test_compute_hosts_get_usernames_uids_status_and_hashes_only(world):
    cfg, compute, mgmt, common = inv.build(world["store"], world["cfg"], T0 + timedelta(days=1), signin_key=world["key"])
    assert set(compute) == {"c1", "c2"}
    blob = json.dumps(compute)
    for i in range(1, 21):
        assert email(i).lower() not in blob.lower() and canonicalize(email(i)) not in blob and f"Name{i}" not in blob
    assert "@" not in blob
    accounts = [a for hv in compute.values() for a in hv["cdsops_accounts"]]
    assert sorted(a["uid"] for a in accounts) == [200000 + i for i in range(1, 21)]
    assert {a["status"] for a in accounts if a["uid"] <= 200003} == {"expired"}
    members = [m for hv in compute.values() for m in hv["cdsops_members"]]
    assert len(members) == 17 and "s000001" not in members
    entries = {e["username"]: e["hash"] for hv in compute.values() for e in hv["cdsops_signin_entries"]}
    snap = {s.username: s.identity for s in open_store(world["store"]).load().students}
    assert all(h == identity_hash(snap[u], KEY) for u, h in entries.items())
    expired = [h for hv in compute.values() for h in hv["cdsops_signin_expired"]]
    assert sorted(expired) == sorted(identity_hash(snap[f"s{i:06d}"], KEY) for i in (1, 2, 3))
    assert compute["c1"]["cdsops_uid_min"] == 200001 and compute["c1"]["cdsops_username_pattern"] == "^s[0-9]{6}$"
    assert common["cdsops_signin_map_enabled"] is True and common["cdsops_guard"]["tripped"] is False
    # the management host gets ids and usernames of due emails, no identities with the local group provider
    assert "cdsops_google_identities" not in mgmt
    assert "@" not in json.dumps(mgmt["cdsops_notifications"])


def test_without_key_the_signin_step_is_off(world):
    _cfg, compute, _m, common = inv.build(world["store"], world["cfg"], T0)
    assert common["cdsops_signin_map_enabled"] is False
    assert all(hv["cdsops_signin_entries"] == [] for hv in compute.values())


def test_short_key_is_refused(world, tmp_path):
    (tmp_path / "short.key").write_bytes(b"abc")
    with pytest.raises(Exception, match="shorter than 16 bytes"):
        inv.build(world["store"], world["cfg"], T0, signin_key=str(tmp_path / "short.key"))


def test_guard_trips_and_can_be_overridden(world):
    store = open_store(world["store"])
    store.set_meta({"last_applied_at": format_iso(T0)})
    late = T0 + timedelta(days=400)  # everyone expired: 100% revoked
    _c, compute, mgmt, common = inv.build(world["store"], world["cfg"], late)
    assert common["cdsops_guard"]["tripped"] is True and "max_revoke_fraction" in common["cdsops_guard"]["message"]
    assert sum(hv["cdsops_revoking"] for hv in compute.values()) == 17
    _c, _compute, _m, common = inv.build(world["store"], world["cfg"], late, allow_mass_revoke=True)
    assert common["cdsops_guard"]["tripped"] is False and common["cdsops_guard"]["overridden"] is True


def test_google_group_provider_exposes_identities_to_the_management_host_only(world, tmp_path):
    cfg = tmp_path / "g.yml"
    cfg.write_text("compute_hosts: [c1, c2]\nproviders:\n  group: {kind: google, group: g@example.org}\n")
    _c, compute, mgmt, common = inv.build(world["store"], str(cfg), T0)
    assert common["cdsops_group_provider"] == "google"
    assert len(mgmt["cdsops_google_identities"]) == 17 and all("@" in i for i in mgmt["cdsops_google_identities"])
    assert mgmt["cdsops_google_usernames"][0] == "s000004"
    assert "@" not in json.dumps(compute)


def test_plugin_through_ansible_inventory(world):
    (world["tmp"] / "inv").mkdir()
    (world["tmp"] / "inv" / "cdsops.yml").write_text(
        "plugin: cdsops.platform.cdsops_roster\nstore: ../roster.duckdb\nconfig: ../cdsops.yml\n"
        "compute_vars: {ansible_connection: containers.podman.podman}\nhost_vars: {c2: {extra_var: 1}}\n"
        "keyed_groups: [{key: cdsops_data_group, prefix: data}]\n"
        "compose: {cdsops_composed: inventory_hostname ~ '-x'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSOPS_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), CDSOPS_NOW="2026-06-02T00:00:00Z")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(world["tmp"] / "inv" / "cdsops.yml"),
                          "--list"], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout, object_hook=lambda d: d["__ansible_unsafe"] if set(d) == {"__ansible_unsafe"} else d)
    hv = data["_meta"]["hostvars"]
    assert set(hv) == {"c1", "c2", "localhost"}
    assert hv["c1"]["ansible_connection"] == "containers.podman.podman" and hv["c2"]["extra_var"] == 1
    assert hv["localhost"]["ansible_connection"] == "local"
    assert sorted(data["compute"]["hosts"]) == ["c1", "c2"] and data["management"]["hosts"] == ["localhost"]
    assert sorted(data["data_cdsdata"]["hosts"]) == ["c1", "c2"]
    assert "@" not in json.dumps({h: v for h, v in hv.items() if h != "localhost"})
    # compose applies to every host, the management host too
    assert {h: v["cdsops_composed"] for h, v in hv.items()} == {"c1": "c1-x", "c2": "c2-x", "localhost": "localhost-x"}


def test_plugin_without_store_is_a_clear_error(tmp_path):
    (tmp_path / "cdsops.yml").write_text("plugin: cdsops.platform.cdsops_roster\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSOPS_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(tmp_path / "cdsops.yml"), "--list"],
                         env=env, capture_output=True, text=True, cwd=REPO)
    assert "no store configured" in (out.stdout + out.stderr)


def test_plugin_reads_the_run_values_from_the_declared_environment(world):
    """What `cdsops reconcile` relies on: an inventory without store/config gets the run's from
    $CDSOPS_ROSTER / $CDSOPS_CONFIG / $CDSOPS_NOW (the options' declared env)."""
    (world["tmp"] / "run").mkdir()
    (world["tmp"] / "run" / "cdsops.yml").write_text("plugin: cdsops.platform.cdsops_roster\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSOPS_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               CDSOPS_ROSTER=world["store"], CDSOPS_CONFIG=world["cfg"], CDSOPS_NOW="2026-06-02T00:00:00Z")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(world["tmp"] / "run" / "cdsops.yml"),
                          "--list"], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    hv = json.loads(out.stdout, object_hook=lambda d: d["__ansible_unsafe"] if set(d) == {"__ansible_unsafe"} else d)["_meta"]["hostvars"]
    assert set(hv) == {"c1", "c2", "localhost"} and hv["localhost"]["cdsops_store"] == world["store"]
    assert hv["c1"]["cdsops_plan_now"] == "2026-06-02T00:00:00Z"
