"""Contract test of cdsops_etc against a real, temporary Linux group on this machine.

The group is created with shadow-utils' groupadd, edited by our writer, checked with getent
(NSS) and gpasswd/groupmems, then removed with groupdel.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest

from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_etc as etc

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a temporary Linux group"),
]


def _getent_members(name: str) -> list[str]:
    out = subprocess.run(["getent", "group", name], capture_output=True, text=True, check=True).stdout
    field = out.strip().split(":")[3]
    return sorted(m for m in field.split(",") if m)


@pytest.fixture()
def temp_group():
    name = "cdst" + secrets.token_hex(3)
    users = [f"{name}u{i}" for i in range(3)]
    subprocess.run(["groupadd", "--system", name], check=True)
    for u in users:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", u], check=True)
    try:
        yield name, users
    finally:
        for u in users:
            subprocess.run(["userdel", u], check=False)
        subprocess.run(["groupdel", name], check=False)
        assert subprocess.run(["getent", "group", name], capture_output=True).returncode == 2


def test_set_members_on_a_real_group(temp_group) -> None:
    name, users = temp_group
    group_before = Path("/etc/group").read_text()
    res = etc.set_group_members("/", name, users[:2])
    assert res == {"changed": True, "before": [], "after": sorted(users[:2])}
    assert _getent_members(name) == sorted(users[:2])
    # shadow-utils sees the same thing, in gshadow too
    gm = subprocess.run(["groupmems", "-g", name, "-l"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(gm) == sorted(users[:2])
    assert subprocess.run(["grpck", "-r"], capture_output=True).returncode in (0, 2)  # 2 = pre-existing warnings only
    # every other line of /etc/group is untouched
    others = lambda text: [ln for ln in text.splitlines() if not ln.startswith(name + ":")]  # noqa: E731
    assert others(Path("/etc/group").read_text()) == others(group_before)
    # idempotent
    assert etc.set_group_members("/", name, list(reversed(users[:2])))["changed"] is False
    # shadow-utils and our writer interleave: gpasswd adds, we converge again
    subprocess.run(["gpasswd", "-a", users[2], name], check=True, capture_output=True)
    assert _getent_members(name) == sorted(users)
    res = etc.set_group_members("/", name, [users[0]])
    assert res["before"] == sorted(users) and res["after"] == [users[0]]
    assert _getent_members(name) == [users[0]]
    assert etc.set_group_members("/", name, [])["after"] == []
    assert _getent_members(name) == []
    # no lock files left behind for shadow-utils to trip over
    assert not Path("/etc/group.lock").exists() and not Path("/etc/gshadow.lock").exists()


def test_groupadd_waits_for_our_lock(temp_group) -> None:
    name, _users = temp_group
    other = name + "x"
    with etc.lock("/"):
        proc = subprocess.Popen(["groupadd", "--system", other], stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=1.0)
            finished_early = True
        except subprocess.TimeoutExpired:
            finished_early = False
    try:
        if finished_early:
            # Some shadow-utils builds give up at once instead of waiting: they must then fail.
            assert proc.returncode != 0, "groupadd wrote /etc/group while we held the lock"
        else:
            assert proc.wait(timeout=30) == 0
            assert subprocess.run(["getent", "group", other], capture_output=True).returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["groupdel", other], check=False, capture_output=True)


def test_local_providers_on_a_real_group(temp_group, tmp_path_factory) -> None:
    """The local group provider manages the real group; the data is readable by members only."""
    import shutil
    import tempfile

    from cdsops.providers.local import LocalDatasetAccess, LocalGroupProvider

    name, users = temp_group
    member, outsider = users[0], users[1]
    grp_provider = LocalGroupProvider(name)
    rep = grp_provider.sync([member])
    assert rep.added == (member,) and _getent_members(name) == [member]
    assert not grp_provider.sync([member]).changed

    base = Path(tempfile.mkdtemp(prefix="cdsops-data-"))
    os.chmod(base, 0o755)  # traversable, like /srv
    try:
        data = base / "cdsdata"
        access = LocalDatasetAccess(data, group=name)
        assert access.ensure().changed and not access.ensure().changed
        target = data / "patients.csv"

        def read_as(user: str) -> int:
            gid = str(pwd.getpwnam(user).pw_gid)  # own primary group: access comes from the supplementary group only
            return subprocess.run(["setpriv", "--reuid", user, "--regid", gid, "--init-groups",
                                   "head", "-c", "10", str(target)], capture_output=True).returncode

        assert read_as(member) == 0
        assert read_as(outsider) != 0
        # the DuckDB file is readable by the member too (students query it read-only)
        assert subprocess.run(["setpriv", "--reuid", member, "--regid", str(pwd.getpwnam(member).pw_gid), "--init-groups", "test", "-r",
                               str(data / "mimic_demo.duckdb")]).returncode == 0
        # leaving the group removes access
        grp_provider.sync([])
        assert read_as(member) != 0
    finally:
        shutil.rmtree(base)
