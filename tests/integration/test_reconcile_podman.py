"""``reconcile.yml`` through ansible-runner against a podman systemd container (one per module).

Scenario (one roster, times chosen so each phase has a known effect):
1. 2,000 students admitted -> 2,000 accounts, group members, sign-in entries; rerun: zero changes.
2. 10% (200) expire -> locked and out of the group; rerun: zero changes.
3. 5% (100) re-admitted -> unlocked and back in the group; rerun: zero changes.
4. 400 new students and 100 more expiries; the run is SIGKILLed while the accounts task runs;
   invariants hold after the kill; a normal run converges; rerun: zero changes.
After that, the container's whole file system holds no email address or identity.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdsops.testing.registrations import write_registrations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/cdsops-debian12:latest"
T0 = datetime(2026, 6, 1, tzinfo=UTC)
N = 2000


def _podman_ok() -> bool:
    if not shutil.which("podman"):
        return False
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh")], check=False)
    return subprocess.run(["podman", "image", "exists", IMAGE]).returncode == 0


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def reg_rows(ids, when):
    return [[iso(when + timedelta(minutes=i % 600)), f"Student.N{i}+tag@GMail.com" if i % 3 == 0 else f"person{i}@uni{i % 7}.example.org",
             f"Name{i} Surname{i}", "Erewhon", "Utopia", "Yes", "Yes"] for i in ids]


def write_csv(path: Path, rows):
    write_registrations(path, rows)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not _podman_ok():
        pytest.skip("podman or the base image is not available")
    d = tmp_path_factory.mktemp("reconcile")
    name = f"cdsops-it-reconcile-{os.getpid()}"
    subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    subprocess.run(["podman", "run", "-d", "--name", name, "--hostname", name, "--tmpfs", "/run", "--tmpfs", "/tmp",
                    IMAGE, "/sbin/init"], check=True, capture_output=True)
    try:
        for _ in range(100):
            st = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"], capture_output=True, text=True).stdout.strip()
            if st in ("running", "degraded"):
                break
            time.sleep(0.2)
        # what the signin_gate role provides on a real host: its group and /etc/cdsops
        subprocess.run(["podman", "exec", name, "sh", "-c", "groupadd -r cdsops-gate && mkdir -p /etc/cdsops"], check=True)
        mnt = subprocess.run(["podman", "mount", name], check=True, capture_output=True, text=True).stdout.strip()
        (d / "signin.key").write_bytes(os.urandom(32).hex().encode())
        (d / "cdsops.yml").write_text(
            f"compute_hosts: [{name}]\nmax_revoke_fraction: 0.15\naccess_days: 182\nprovisioning_minutes: 0\n"
            f"signin_key_file: {d / 'signin.key'}\n"
        )
        yield {"dir": d, "name": name, "root": Path(mnt), "store": str(d / "roster.duckdb"), "config": str(d / "cdsops.yml")}
    finally:
        subprocess.run(["podman", "umount", name], capture_output=True)
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


def sync(env, rows, now):
    from cdsops.config import load_config
    from cdsops.service import roster_sync

    src = env["dir"] / f"reg-{now:%Y%m%d%H%M}.csv"
    write_csv(src, rows)
    roster_sync(str(src), env["store"], load_config(env["config"]), now)


def reconcile(env, now, **kw):
    from cdsops.config import load_config
    from cdsops.runner import reconcile as run

    s = run(load_config(env["config"]), config_path=env["config"], store_uri=env["store"], now=now,
            state_dir=env["dir"] / "state", textfile_dir=env["dir"], keep_artifacts=3,
            extravars={"cdsops_email_enabled": False}, **kw)
    assert s.status == "successful", s.to_json()
    return s


def host_state(root: Path):
    def parse(name):
        return [ln.split(":") for ln in (root / "etc" / name).read_text().splitlines() if ln and not ln.startswith("#")]

    passwd = {f[0]: int(f[2]) for f in parse("passwd")}
    shadow = {f[0]: f[7] for f in parse("shadow")}
    groups = {f[0]: f for f in parse("group")}
    members = set(filter(None, groups["cdsdata"][3].split(","))) if "cdsdata" in groups else set()
    smap = json.loads((root / "etc/cdsops/signin-map.json").read_text()) if (root / "etc/cdsops/signin-map.json").exists() else None
    return passwd, shadow, members, smap


def check_invariants(env, expired_ids, strict_members=None):
    """No expired student has access; uids follow the ids; no uid is shared."""
    passwd, shadow, members, smap = host_state(env["root"])
    students = {u: uid for u, uid in passwd.items() if u.startswith("s") and u[1:].isdigit()}
    for u, uid in students.items():
        assert uid == 200000 + int(u[1:]), f"{u} has uid {uid}"
    uids = list(passwd.values())
    assert len(uids) == len(set(uids)), "a uid is shared"
    for i in expired_ids:
        u = f"s{i:06d}"
        assert u not in members, f"expired {u} is still in the data group"
    for u in members:
        assert shadow.get(u) != "1", f"{u} is locked but in the data group"
    mapped = {e["username"] for e in (smap or {}).get("active", [])}
    for i in expired_ids:
        assert f"s{i:06d}" not in mapped, f"expired s{i:06d} still has a sign-in mapping"
    for u in mapped:
        assert shadow.get(u) != "1", f"{u} is locked but still has a sign-in mapping"
    if strict_members is not None:
        assert members == {f"s{i:06d}" for i in strict_members}
    return passwd, shadow, members, smap


def ids(a, b):
    return range(a, b + 1)


def test_full_lifecycle(env):
    # ids are given in order of first agreement: 1-200 oldest, 201-300 next, 301-2000 recent
    old = T0 - timedelta(days=100)   # expires T0+82d
    mid = T0 - timedelta(days=88)    # expires T0+94d
    rows = reg_rows(ids(1, 200), old) + reg_rows(ids(201, 300), mid) + reg_rows(ids(301, N), T0)
    now1 = T0 + timedelta(days=3)
    sync(env, rows, now1)

    t = time.monotonic()
    s1 = reconcile(env, now1)
    first_run = time.monotonic() - t
    assert s1.changes["account.created"] == N
    assert s1.changes["group.member_added"] == N
    passwd, shadow, members, smap = check_invariants(env, [], strict_members=ids(1, N))
    assert len(smap["active"]) == N and smap["expired"] == []
    assert reconcile(env, now1).changes == {}

    # 2. 10% expire; one of them has an R session running (it holds the data group until it ends)
    subprocess.run(["podman", "exec", "-d", "--user", "200007:200007", env["name"], "sleep", "600"], check=True)
    assert subprocess.run(["podman", "exec", env["name"], "pgrep", "-u", "200007"], capture_output=True).returncode == 0
    now2 = T0 + timedelta(days=90)
    s2 = reconcile(env, now2)
    assert s2.changes.get("account.locked") == 200 and s2.changes.get("group.member_removed") == 200
    assert s2.changes.get("session.terminated") == 1
    assert subprocess.run(["podman", "exec", env["name"], "pgrep", "-u", "200007"], capture_output=True).returncode == 1
    _p, shadow, _m, smap = check_invariants(env, ids(1, 200), strict_members=ids(201, N))
    assert len(smap["active"]) == N - 200 and len(smap["expired"]) == 200
    assert all(shadow[f"s{i:06d}"] == "1" for i in ids(1, 200))
    assert reconcile(env, now2).changes == {}

    # 3. 5% re-admitted
    now3 = T0 + timedelta(days=91, hours=12)
    sync(env, reg_rows(ids(1, 100), T0 + timedelta(days=91)), now3)
    s3 = reconcile(env, now3)
    assert s3.changes.get("account.unlocked") == 100 and s3.changes.get("group.member_added") == 100
    _p, shadow, _m, _s = check_invariants(env, ids(101, 200), strict_members=list(ids(1, 100)) + list(ids(201, N)))
    assert all(shadow[f"s{i:06d}"] == "" for i in ids(1, 100))
    assert reconcile(env, now3).changes == {}

    # the changes record has one line per change, with the run id
    from cdsops.store import open_store

    recs = open_store(env["store"]).changes(run_id=s3.run_id, limit=10000)
    assert sum(1 for r in recs if r["kind"] == "account.unlocked") == 100
    assert all(r["username"] and r["student_id"] for r in recs if r["kind"].startswith("account."))
    print(f"\nfirst run (2,000 accounts) {first_run:.1f} s")


def test_sigkill_mid_apply_then_converges(env):
    # 4. 400 new students (2001-2400) and 100 more expiries (201-300), killed during the accounts task
    now4 = T0 + timedelta(days=96)
    sync(env, reg_rows(range(N + 1, N + 401), T0 + timedelta(days=95)), now4)
    arts = env["dir"] / "state" / "runner" / "artifacts"
    old = set(arts.iterdir())
    cmd = [sys.executable, "-m", "cdsops.cli", "--config", env["config"], "reconcile", "--roster", env["store"],
           "--now", iso(now4), "--state-dir", str(env["dir"] / "state")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    deadline = time.monotonic() + 180
    seen = False
    module_pids: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if not seen:
            for run in set(arts.iterdir()) - old:  # this run's artifacts only
                out = run / "stdout"
                if out.exists() and "TASK [Accounts" in out.read_text(errors="replace"):
                    seen = True
        if seen:
            # the module process inside the container (visible in the host's process table)
            pg = subprocess.run(["pgrep", "-f", "AnsiballZ_cdsops_accounts"], capture_output=True, text=True)
            module_pids = [int(p) for p in pg.stdout.split()]
            if module_pids:
                break
        time.sleep(0.02)
    assert seen and module_pids, "the accounts module never started"
    # kill inside the module: once the account files are written, while the homes are being made
    passwd = env["root"] / "etc" / "passwd"
    until = time.monotonic() + 10
    while time.monotonic() < until and f"s{N + 1:06d}:" not in passwd.read_text():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the management side: cdsops, ansible-runner, ansible-playbook
    for pid in module_pids:  # and the compute side: the module itself (a host crash)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    expired = list(ids(101, 300))
    # the group and sign-in map removals ran before the accounts task: no expired student has access now
    _p, _s, members, _m = check_invariants(env, expired)
    homes = sum(1 for i in range(N + 1, N + 401) if (env["root"] / "home" / f"s{i:06d}").is_dir())
    print(f"\nafter SIGKILL: {sum(1 for i in range(N + 1, N + 401) if f's{i:06d}' in _p)} of 400 new accounts in passwd, "
          f"{homes} homes, {len(members)} group members")
    # a second run right away is not blocked by the dead run's lock
    s = reconcile(env, now4)
    passwd, shadow, members, _ = check_invariants(env, expired, strict_members=list(ids(1, 100)) + list(ids(301, N + 400)))
    assert all(f"s{i:06d}" in passwd for i in range(N + 1, N + 401))
    assert all(shadow[f"s{i:06d}"] == "1" for i in expired)
    assert all((env["root"] / "home" / f"s{i:06d}").is_dir() for i in range(N + 1, N + 401))
    assert not list((env["root"] / "home").glob("*.cdsops-tmp"))
    assert reconcile(env, now4).changes == {}
    assert s.status == "successful"


def test_no_identity_or_email_on_the_compute_host(env):
    """Issue 3's privacy check: grep the container's whole file system for every address and identity."""
    from cdsops.identity import canonicalize

    needles = set()
    for i in range(1, N + 401):
        for raw in reg_rows([i], T0)[0][1:2]:
            needles.add(raw)
            needles.add(raw.lower())
            needles.add(canonicalize(raw))
        needles.add(f"Name{i} Surname{i}")
    pat = env["dir"] / "needles.txt"
    pat.write_text("\n".join(sorted(needles)) + "\n")
    root = env["root"]
    dirs = [str(p) for p in root.iterdir() if p.name not in ("proc", "sys", "dev")]
    proc = subprocess.run(["grep", "-rIlF", "-f", str(pat), *dirs], capture_output=True, text=True)
    assert proc.returncode == 1, f"personal data found on the compute host: {proc.stdout[:2000]}"
    # binary files too (the journal): grep -a without -I
    proc = subprocess.run(["grep", "-rlaF", "-f", str(pat), str(root / "var" / "log"), str(root / "etc"), str(root / "home")],
                          capture_output=True, text=True)
    assert proc.returncode == 1, f"personal data found on the compute host: {proc.stdout[:2000]}"


def test_second_run_is_refused_while_one_holds_the_lock(env):
    from cdsops.runner import Busy, exclusive_lock

    with exclusive_lock(env["dir"] / "state" / "reconcile.lock"):
        out = subprocess.run([sys.executable, "-m", "cdsops.cli", "--config", env["config"], "reconcile", "--roster", env["store"],
                              "--state-dir", str(env["dir"] / "state")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 75
    assert "another cdsops reconcile is running" in out.stderr
    assert Busy.__doc__
