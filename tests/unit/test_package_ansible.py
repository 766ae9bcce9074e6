"""The installed package carries the reconcile playbook (``cdsops/ansible``) and the collection
cdsops.platform (``ansible_collections/cdsops/platform``), so a
management host with only the wheel runs ``cdsops reconcile``; the Molecule management scenario
runs it for real from the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    return next(out.glob("cdsops-*.whl"))


COLLECTION = "ansible_collections/cdsops/platform"


def test_the_wheel_ships_the_reconcile_playbook_and_the_collection(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cdsops/ansible/playbooks/reconcile.yml" in names and "cdsops/ansible/ansible.cfg" in names
    # the collection installs as site-packages/ansible_collections/cdsops/platform, where
    # ansible-core finds it on sys.path (no plugin path to set on the management host)
    assert {f"{COLLECTION}/galaxy.yml", f"{COLLECTION}/meta/runtime.yml", f"{COLLECTION}/README.md"} <= names
    for kind in ("modules", "module_utils", "inventory"):
        shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith(f"{COLLECTION}/plugins/{kind}/")}
        in_repo = {p.name for p in (REPO / COLLECTION / "plugins" / kind).glob("*.py")}
        assert in_repo and shipped == in_repo, kind
    assert not any(n.startswith(f"{COLLECTION}/tests/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names if n.startswith(("cdsops/ansible/", COLLECTION)))
    # the packaged files are the checkout's (symlinks followed), byte for byte
    z = zipfile.ZipFile(wheel)
    assert z.read("cdsops/ansible/playbooks/reconcile.yml") == (REPO / "playbooks" / "reconcile.yml").read_bytes()
    path = f"{COLLECTION}/plugins/modules/cdsops_accounts.py"
    assert z.read(path) == (REPO / path).read_bytes()


def test_the_checkout_collection_is_what_ansible_finds() -> None:
    """`make deps` links the checkout's collection into the venv: ansible-doc renders its modules."""
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-j", "cdsops.platform.cdsops_accounts"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["cdsops.platform.cdsops_accounts"]["doc"]
    assert Path(doc["filename"]).resolve() == REPO / COLLECTION / "plugins" / "modules" / "cdsops_accounts.py"
    assert {"check_mode", "diff_mode", "platform"} <= set(doc["attributes"])


def test_ansible_home_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cdsops import runner

    monkeypatch.setenv("CDSOPS_ANSIBLE_HOME", str(tmp_path))
    assert runner.ansible_home() == tmp_path
    monkeypatch.delenv("CDSOPS_ANSIBLE_HOME")
    assert runner.ansible_home() == REPO  # an editable install: the checkout
    assert (runner.PACKAGED_ANSIBLE_HOME / "playbooks" / "reconcile.yml").resolve() == (REPO / "playbooks" / "reconcile.yml")


def test_a_missing_inventory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cdsops.config import Config
    from cdsops.runner import reconcile

    with pytest.raises(FileNotFoundError, match="reconcile.inventory"):
        reconcile(Config(), config_path=None, store_uri=str(tmp_path / "r.duckdb"), state_dir=tmp_path,
                  inventory=tmp_path / "nope" / "cdsops.yml", textfile_dir=None)
