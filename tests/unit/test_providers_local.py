"""Local providers on a temporary tree: group members and dataset permissions; the demo data."""

from __future__ import annotations

import csv
import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cdsops.providers.base import GroupProvider, ProviderError
from cdsops.providers.local import DEMO_FILES, MIMIC_DEMO_DIR, LocalDatasetAccess, LocalGroupProvider


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "group").write_text("root:x:0:\ncdsdata:x:199999:s000001\n")
    return tmp_path


def test_local_group_provider_sync_and_dry_run(root: Path) -> None:
    p = LocalGroupProvider("cdsdata", root=str(root))
    assert isinstance(p, GroupProvider)
    assert p.list_members() == ["s000001"]
    dry = p.sync(["s000002", "s000003"], dry_run=True)
    assert (dry.added, dry.removed, dry.unchanged, dry.dry_run) == (("s000002", "s000003"), ("s000001",), 0, True)
    assert p.list_members() == ["s000001"]
    r = p.sync(["s000002", "s000003", "s000001"])
    assert (r.added, r.removed, r.unchanged) == (("s000002", "s000003"), (), 1)
    again = p.sync(["s000003", "s000002", "s000001"])
    assert not again.changed and again.unchanged == 3
    assert p.list_members() == ["s000001", "s000002", "s000003"]


def test_local_group_provider_errors(root: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        LocalGroupProvider("nosuch", root=str(root)).list_members()
    with pytest.raises(ProviderError, match="invalid user name"):
        LocalGroupProvider("cdsdata", root=str(root)).sync(["bad name"])
    with pytest.raises(ValueError, match="invalid Linux group name"):
        LocalGroupProvider("a:b", root=str(root))


def test_dataset_access_installs_with_group_only_modes(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    data = tmp_path / "srv" / "cdsdata"
    acc = LocalDatasetAccess(data, group=group, owner_uid=os.getuid())
    dry = acc.ensure(dry_run=True)
    assert dry.changed and not data.exists()
    rep = acc.ensure()
    assert rep.changed
    for name in DEMO_FILES:
        p = data / name  # flat, where the rstudio_server role puts the same files
        assert p.read_bytes() == (MIMIC_DEMO_DIR / name).read_bytes()
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert not (data / "generate.py").exists()
    # idempotent
    assert not acc.ensure().changed
    # drift is repaired and reported: a world-readable file, a changed file, a teacher's extra file
    os.chmod(data / "patients.csv", 0o644)
    (data / "admissions.csv").write_text("tampered")
    (data / "teacher").mkdir()
    (data / "teacher" / "extra.csv").write_text("a,b\n")
    os.chmod(data / "teacher" / "extra.csv", 0o666)
    fix = acc.ensure()
    changed = {Path(c.resource).name for c in fix.changes if c.changed}
    assert changed == {"patients.csv", "admissions.csv", "teacher", "extra.csv"}
    assert (data / "admissions.csv").read_bytes() == (MIMIC_DEMO_DIR / "admissions.csv").read_bytes()
    assert stat.S_IMODE((data / "teacher" / "extra.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE((data / "teacher").stat().st_mode) == 0o750
    assert not acc.ensure().changed


def test_dataset_access_needs_the_group(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="group nosuchgroup42 does not exist"):
        LocalDatasetAccess(tmp_path, group="nosuchgroup42").ensure()


def test_demo_dataset_is_generated_deterministically_and_matches_the_shipped_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(MIMIC_DEMO_DIR / "generate.py"), str(tmp_path)], check=True)
    for csv_file in sorted(MIMIC_DEMO_DIR.glob("*.csv")):
        assert (tmp_path / csv_file.name).read_bytes() == csv_file.read_bytes(), csv_file.name
    con = duckdb.connect(str(MIMIC_DEMO_DIR / "mimic_demo.duckdb"), read_only=True)
    try:
        for csv_file in sorted(MIMIC_DEMO_DIR.glob("*.csv")):
            with open(csv_file, newline="") as fh:
                n = sum(1 for _ in csv.reader(fh)) - 1
            assert con.execute(f"SELECT count(*) FROM {csv_file.stem}").fetchone()[0] == n, csv_file.stem
        # referential sanity: every admission belongs to a patient, every note to an admission
        assert con.execute("SELECT count(*) FROM admissions a ANTI JOIN patients p USING (subject_id)").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM discharge d ANTI JOIN admissions a USING (hadm_id)").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM discharge WHERE text NOT LIKE 'INVENTED DEMO NOTE%'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM patients").fetchone()[0] == 100
    finally:
        con.close()
