"""cdsops_accounts / cdsops_group / cdsops_access: the module code against a temporary root.

The target-side logic (plugins/module_utils) is called directly for the table of cases; the
modules themselves run once through a real ansible-playbook on localhost (check mode, diff,
apply, idempotency, refusal) with ``root`` pointing at a temporary tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MU = REPO / "plugins" / "module_utils"


def _load(name):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, MU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


etc = _load("cdsops_etc")
_load("cdsops_kill")  # imported by cdsops_accounts
acc = _load("cdsops_accounts")
rec = _load("cdsops_reconcile")

UID_MIN, UID_MAX, PAT = 200001, 1199999, r"^s[0-9]{6}$"
ME = os.getuid()


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc" / "skel").mkdir(parents=True)
    (tmp_path / "etc" / "skel" / ".bashrc").write_text("# skel\n")
    (tmp_path / "etc" / "skel" / ".config").mkdir()
    (tmp_path / "etc" / "skel" / ".config" / "x").write_text("y\n")
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nrstudio-server:x:998:998::/var/lib/rstudio-server:/usr/sbin/nologin\n"
        "teacher:x:1000:1000:T:/home/teacher:/bin/bash\n"
    )
    (tmp_path / "etc" / "group").write_text("root:x:0:\nrstudio-server:x:998:\nteacher:x:1000:\ncdsdata:x:199999:teacher\n")
    (tmp_path / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\nrstudio-server:!:19000::::::\nteacher:$6$x:19000:0:99999:7:::\n")
    (tmp_path / "etc" / "gshadow").write_text("root:*::\nrstudio-server:!::\nteacher:!::\ncdsdata:!::teacher\n")
    (tmp_path / "home").mkdir()
    return tmp_path


def A(i, status="active"):
    return {"username": f"s{i:06d}", "uid": 200000 + i, "status": status}


def run(root, accounts, check=False, **kw):
    return acc.apply(str(root), accounts, UID_MIN, UID_MAX, PAT, check_mode=check, **kw)


def entry(root, kind, name):
    return etc.read(str(root), kind).get(name)


def test_creates_accounts_groups_and_private_homes_in_one_pass(root):
    before_root = (root / "etc" / "passwd").read_text().splitlines()[:3]
    res = run(root, [A(1), A(2, "expired")])
    assert res["counts"] == {"account.created": 2}
    assert entry(root, "passwd", "s000001") == ["s000001", "x", "200001", "200001", "", "/home/s000001", "/bin/bash"]
    assert entry(root, "group", "s000001") == ["s000001", "x", "200001", ""]
    assert entry(root, "gshadow", "s000001") == ["s000001", "!", "", ""]
    sh1, sh2 = entry(root, "shadow", "s000001"), entry(root, "shadow", "s000002")
    assert sh1[1] == "!" and sh1[7] == ""
    assert sh2[1] == "!" and sh2[7] == "1"  # expired: locked through the expiry field
    assert (root / "etc" / "passwd").read_text().splitlines()[:3] == before_root  # others untouched byte for byte
    for name, uid in (("s000001", 200001), ("s000002", 200002)):
        st = os.stat(root / "home" / name)
        if ME == 0:
            assert (st.st_uid, st.st_gid) == (uid, uid)
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert (root / "home" / name / ".bashrc").read_text() == "# skel\n"
        assert (root / "home" / name / ".config" / "x").exists()
    assert not any(p.name.endswith(".cdsops-tmp") for p in (root / "home").iterdir())


def test_idempotent_second_run_changes_nothing_and_writes_nothing(root):
    run(root, [A(1), A(2, "expired")])
    mtimes = {k: os.stat(root / "etc" / k).st_mtime_ns for k in ("passwd", "group", "shadow", "gshadow")}
    res = run(root, [A(1), A(2, "expired")])
    assert res["changed"] is False and res["changes"] == []
    assert {k: os.stat(root / "etc" / k).st_mtime_ns for k in mtimes} == mtimes


@pytest.mark.parametrize(
    "first, second, kind, expire",
    [
        ("active", "expired", "account.locked", "1"),
        ("expired", "active", "account.unlocked", ""),
        ("active", "active", None, ""),
        ("expired", "expired", None, "1"),
    ],
)
def test_lock_unlock_table(root, first, second, kind, expire):
    run(root, [A(7, first)])
    res = run(root, [A(7, second)])
    assert [c["kind"] for c in res["changes"]] == ([kind] if kind else [])
    assert entry(root, "shadow", "s000007")[7] == expire
    assert (root / "home" / "s000007").is_dir()  # homes are never deleted


def test_check_mode_reports_and_writes_nothing(root):
    snap = {k: (root / "etc" / k).read_bytes() for k in ("passwd", "group", "shadow", "gshadow")}
    res = run(root, [A(1), A(2)], check=True)
    assert res["changed"] and res["counts"] == {"account.created": 2}
    assert {k: (root / "etc" / k).read_bytes() for k in snap} == snap
    assert not (root / "home" / "s000001").exists()
    assert "s000001 active" in res["diff"]["after"] and "s000001 absent" in res["diff"]["before"]


def test_password_is_kept_locked_and_other_shadow_fields_kept(root):
    run(root, [A(3)])
    sh = etc.read(str(root), "shadow")
    e = sh.get("s000003")
    e[1], e[4] = "$6$hash", "123"
    sh.set(e)
    etc.write(str(root), sh)
    res = run(root, [A(3)])
    assert [c["kind"] for c in res["changes"]] == ["account.updated"]
    e = entry(root, "shadow", "s000003")
    assert e[1] == "!$6$hash" and e[4] == "123"


@pytest.mark.parametrize(
    "accounts, message",
    [
        ([{"username": "root", "uid": 200001}], "does not match the managed pattern"),
        ([{"username": "s000001", "uid": 0}], "outside the managed range"),
        ([{"username": "s000001", "uid": 1000}], "outside the managed range"),
        ([{"username": "s000001", "uid": 1200000}], "outside the managed range"),
        ([A(1), A(1)], "appears twice"),
        ([A(1), {"username": "s000002", "uid": 200001}], "requested for both"),
        ([{"username": "s000001", "uid": 200001, "status": "deleted"}], "status must be active or expired"),
        (["s000001"], "must be a mapping"),
        ([{"username": "s00001:", "uid": 200001}], "does not match"),
    ],
)
def test_refusals_write_nothing(root, accounts, message):
    snap = {k: (root / "etc" / k).read_bytes() for k in ("passwd", "group", "shadow", "gshadow")}
    with pytest.raises(acc.AccountsError, match=message):
        run(root, accounts)
    assert {k: (root / "etc" / k).read_bytes() for k in snap} == snap


def test_refuses_existing_system_account_and_foreign_uid(root):
    # a system account whose name matches the pattern but whose uid is outside the range
    with open(root / "etc" / "passwd", "a") as fh:
        fh.write("s000009:x:999:999::/nonexistent:/usr/sbin/nologin\nintruder:x:200005:200005::/home/i:/bin/sh\n")
    with pytest.raises(acc.AccountsError, match="system account"):
        run(root, [A(9)])
    with pytest.raises(acc.AccountsError, match="uid 200005 already belongs to intruder"):
        run(root, [A(5)])
    with open(root / "etc" / "group", "a") as fh:
        fh.write("other:x:200006:\n")
    with pytest.raises(acc.AccountsError, match="gid 200006 already belongs to group other"):
        run(root, [A(6)])
    assert entry(root, "passwd", "s000006") is None


def test_interrupted_home_is_completed_by_the_rerun(root):
    run(root, [A(1)], )
    # simulate a crash after the files were written but before the home was renamed into place
    import shutil

    shutil.rmtree(root / "home" / "s000001")
    (root / "home" / ("s000001" + acc.HOME_TMP_SUFFIX)).mkdir()
    (root / "home" / ("s000001" + acc.HOME_TMP_SUFFIX) / "partial").write_text("")
    res = run(root, [A(1)])
    assert [c["kind"] for c in res["changes"]] == ["home.created"]
    assert (root / "home" / "s000001" / ".bashrc").exists()
    assert not (root / "home" / "s000001" / "partial").exists()
    assert not (root / "home" / ("s000001" + acc.HOME_TMP_SUFFIX)).exists()


def test_materials_are_copied_into_new_homes(root):
    (root / "srv" / "materials").mkdir(parents=True)
    (root / "srv" / "materials" / "week1.Rmd").write_text("# week 1\n")
    run(root, [A(4)], materials="/srv/materials")
    assert (root / "home" / "s000004" / "course" / "week1.Rmd").read_text() == "# week 1\n"


def test_group_members_table(root):
    r = rec.ensure_group(str(root), "cdsdata", ["s000001", "s000002"], gid=199999, managed_pattern=PAT)
    assert r["added"] == ["s000001", "s000002"] and r["removed"] == []
    assert entry(root, "group", "cdsdata")[3] == "s000001,s000002,teacher"  # staff kept
    assert entry(root, "gshadow", "cdsdata")[3] == "s000001,s000002,teacher"
    r = rec.ensure_group(str(root), "cdsdata", ["s000001", "s000002"], gid=199999, managed_pattern=PAT)
    assert r["changed"] is False
    r = rec.ensure_group(str(root), "cdsdata", ["s000001", "s000003"], gid=199999, managed_pattern=PAT, revoke_only=True)
    assert r["removed"] == ["s000002"] and r["added"] == []  # revoke-only never adds
    assert entry(root, "group", "cdsdata")[3] == "s000001,teacher"
    r = rec.ensure_group(str(root), "cdsdata", ["s000003"], gid=199999, managed_pattern=PAT, check_mode=True)
    assert r["changed"] and entry(root, "group", "cdsdata")[3] == "s000001,teacher"


def test_group_created_when_missing_and_refusals(root):
    r = rec.ensure_group(str(root), "newgrp", ["s000001"], gid=199998, managed_pattern=PAT)
    assert r["created"] and entry(root, "group", "newgrp") == ["newgrp", "x", "199998", "s000001"]
    with pytest.raises(rec.ReconcileError, match="expected 199000"):
        rec.ensure_group(str(root), "cdsdata", [], gid=199000)
    with pytest.raises(rec.ReconcileError, match="gid 1000 already belongs to teacher"):
        rec.ensure_group(str(root), "another", [], gid=1000)
    with pytest.raises(rec.ReconcileError, match="outside the managed pattern"):
        rec.ensure_group(str(root), "cdsdata", ["teacher"], managed_pattern=PAT)
    with pytest.raises(rec.ReconcileError, match="no gid"):
        rec.ensure_group(str(root), "missing", ["s000001"])


def test_data_dir_modes(root):
    d = root / "srv" / "cdsdata"
    (d / "hosp").mkdir(parents=True)
    (d / "hosp" / "patients.csv").write_text("id\n")
    os.chmod(d / "hosp" / "patients.csv", 0o666)
    os.symlink("/etc/passwd", d / "link")
    r = rec.ensure_data_dir(str(root), "/srv/cdsdata", "cdsdata")
    assert r["changed"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(d / "hosp").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(d / "hosp" / "patients.csv").st_mode) == 0o640
    if ME == 0:
        assert os.stat(d / "hosp" / "patients.csv").st_gid == 199999
    assert rec.ensure_data_dir(str(root), "/srv/cdsdata", "cdsdata")["changed"] is False
    with pytest.raises(rec.ReconcileError, match="group nogroup-x does not exist"):
        rec.ensure_data_dir(str(root), "/srv/cdsdata", "nogroup-x")


# --------------------------------------------------------------------------- through Ansible
PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    accts: [{username: s000001, uid: 200001, status: active}, {username: s000002, uid: 200002, status: expired}]
  tasks:
    - name: check
      cdsops_accounts: {root: "%(root)s", accounts: "{{ accts }}", uid_min: 200001, uid_max: 1199999}
      check_mode: true
      diff: true
      register: check
    - name: apply
      cdsops_accounts: {root: "%(root)s", accounts: "{{ accts }}", uid_min: 200001, uid_max: 1199999}
      register: apply
    - name: again
      cdsops_accounts: {root: "%(root)s", accounts: "{{ accts }}", uid_min: 200001, uid_max: 1199999}
      register: again
    - name: refused
      cdsops_accounts: {root: "%(root)s", accounts: [{username: root, uid: 0}], uid_min: 200001, uid_max: 1199999}
      register: refused
      ignore_errors: true
    - name: group
      cdsops_group: {root: "%(root)s", name: cdsdata, gid: 199999, members: [s000001]}
      diff: true
      register: group
    - name: group again
      cdsops_group: {root: "%(root)s", name: cdsdata, gid: 199999, members: [s000001]}
      register: group_again
    - name: access check
      cdsops_access: {root: "%(root)s", path: /srv/cdsdata, group: cdsdata}
      check_mode: true
      register: access_check
    - name: dump
      ansible.builtin.copy:
        dest: "%(out)s"
        content: "{{ {'check': check, 'apply': apply, 'again': again, 'refused': refused, 'group': group,
                      'group_again': group_again, 'access_check': access_check} | to_json }}"
"""


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    d = tmp_path_factory.mktemp("play")
    r = d / "root"
    (r / "etc" / "skel").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (r / "etc" / "group").write_text("root:x:0:\ncdsdata:x:199999:\n")
    (r / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (r / "etc" / "gshadow").write_text("root:*::\ncdsdata:!::\n")
    out = d / "out.json"
    (d / "play.yml").write_text(PLAY % {"root": r, "out": out})
    env = dict(os.environ, ANSIBLE_LIBRARY=str(REPO / "plugins/modules"), ANSIBLE_MODULE_UTILS=str(REPO / "plugins/module_utils"),
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    ansible = Path(sys.executable).parent / "ansible-playbook"
    proc = subprocess.run([str(ansible), "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                           str(d / "play.yml")], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), r


def test_module_check_mode_and_diff(played):
    res, _r = played
    assert res["check"]["changed"] and res["check"]["counts"] == {"account.created": 2}
    assert "s000002 expired" in res["check"]["diff"]["after"]


def test_module_apply_then_idempotent(played):
    res, r = played
    assert res["apply"]["changed"] and res["apply"]["counts"] == {"account.created": 2}
    assert res["again"]["changed"] is False and res["again"]["changes"] == []
    assert (r / "home" / "s000001").is_dir()


def test_module_refusal_is_a_clear_failure(played):
    res, _r = played
    assert res["refused"]["failed"] and "does not match the managed pattern" in res["refused"]["msg"]


def test_group_and_access_modules(played):
    res, _r = played
    assert res["group"]["changed"] and res["group"]["added"] == ["s000001"]
    assert res["group"]["diff"]["after"] == "s000001\n"
    assert res["group_again"]["changed"] is False
    assert res["access_check"]["changed"] and res["access_check"]["changes"][0]["before"]["state"] == "absent"


def _spawn(uid, ignore_term=False):
    """A process running as ``uid`` (as an R session left running would); root can do this."""
    script = ("trap '' TERM; " if ignore_term else "") + "exec sleep 300"
    return subprocess.Popen(["/bin/sh", "-c", script], user=uid, group=uid, cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting processes under another uid needs root")
@pytest.mark.parametrize("ignore_term", [False, True], ids=["exits-on-TERM", "ignores-TERM-so-KILL"])
def test_expired_students_running_processes_are_ended(root, ignore_term):
    run(root, [A(91), A(92)])
    expired_proc, active_proc = _spawn(200091, ignore_term), _spawn(200092)
    try:
        # check mode reports the running processes and ends nothing
        res = run(root, [A(91, "expired"), A(92)], check=True, proc="/proc", terminate_grace=0.5)
        assert {"kind": "session.terminated", "username": "s000091", "uid": 200091,
                "before": {"processes": 1}, "after": {"processes": 0}} in res["changes"]
        assert expired_proc.poll() is None
        res = run(root, [A(91, "expired"), A(92)], proc="/proc", terminate_grace=0.5)
        kinds = sorted(c["kind"] for c in res["changes"])
        assert kinds == ["account.locked", "session.terminated"]
        assert expired_proc.wait(timeout=10) == (-9 if ignore_term else -15)
        assert active_proc.poll() is None  # the active student's session is left alone
        assert "s000091 processes: 1" in res["diff"]["before"]
        # the next run finds nothing left: idempotent
        assert run(root, [A(91, "expired"), A(92)], proc="/proc")["changes"] == []
        # a process started again after the lock (e.g. by cron before it was refused) goes on the next run
        again = _spawn(200091)
        res = run(root, [A(91, "expired"), A(92)], proc="/proc", terminate_grace=0.5)
        assert [c["kind"] for c in res["changes"]] == ["session.terminated"]
        assert again.wait(timeout=10) == -15
    finally:
        for p in (expired_proc, active_proc):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_processes_are_not_looked_for_in_a_test_tree_without_proc(root):
    # root != "/" means the managed system's /proc is root/proc: here there is none
    run(root, [A(93)])
    assert run(root, [A(93, "expired")])["counts"] == {"account.locked": 1}
