"""Local providers for the embedded default (no cloud).

* :class:`LocalGroupProvider` - the data-access group is a Linux group on the compute host;
  its members are usernames (``s000042``), never addresses. Built on
  the collection's ``module_utils/cdsops_etc.py`` (shadow-utils compatible lock, atomic writes).
* :class:`LocalDatasetAccess` - the course data (the invented MIMIC-like demo by default)
  lives in ``/srv/cdsdata`` owned ``root:<group>``, directories 0750, files 0640: readable
  only by members of the group.
"""

from __future__ import annotations

import grp
import hashlib
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from cdsops.providers.base import AccessChange, AccessReport, ProviderError, SyncReport

__all__ = ["load_etc", "LocalGroupProvider", "LocalDatasetAccess", "MIMIC_DEMO_DIR", "DEMO_FILES"]

MIMIC_DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "mimic_demo"
DEMO_FILES = (
    "patients.csv", "admissions.csv", "diagnoses_icd.csv", "d_icd_diagnoses.csv", "d_labitems.csv",
    "labevents.csv", "discharge.csv", "mimic_demo.duckdb",
)


def load_etc():
    """``cdsops_etc``: the stdlib-only module_utils of the collection cdsops.platform, shared with
    the Ansible modules (importable wherever the collection is installed: the venv of a checkout
    after ``make deps``, the management host's venv from the wheel)."""
    try:
        from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_etc
    except ImportError as exc:
        raise ProviderError(f"cannot import the collection cdsops.platform ({exc}); run `make deps` in a checkout "
                            "or install the cdsops wheel") from exc
    return cdsops_etc


class LocalGroupProvider:
    """Members of a Linux group (usernames), written in one locked, atomic pass."""

    def __init__(self, group: str, root: str = "/", lock_timeout: float = 15.0):
        etc = load_etc()
        if not etc.valid_name(group):
            raise ValueError(f"invalid Linux group name {group!r}")
        self.group, self.root, self.lock_timeout = group, root, lock_timeout
        self._etc = etc

    def list_members(self) -> list[str]:
        entry = self._etc.read(self.root, "group").get(self.group)
        if entry is None:
            raise ProviderError(f"group {self.group} does not exist on this host")
        return sorted({m for m in entry[3].split(",") if m})

    def sync(self, desired: Iterable[str], dry_run: bool = False) -> SyncReport:
        want = sorted(set(desired))
        try:
            res = self._etc.set_group_members(self.root, self.group, want, check_mode=dry_run, lock_timeout=self.lock_timeout)
        except self._etc.EtcError as exc:
            raise ProviderError(str(exc)) from None
        before, after = set(res["before"]), set(res["after"])
        return SyncReport(
            group=self.group,
            added=tuple(sorted(after - before)),
            removed=tuple(sorted(before - after)),
            unchanged=len(before & after),
            dry_run=dry_run,
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _describe(path: Path) -> str:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "absent"
    try:
        gname = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        gname = str(st.st_gid)
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return f"{kind} {st.st_uid}:{gname} {stat.S_IMODE(st.st_mode):04o}"


class LocalDatasetAccess:
    """Install the course data under ``data_dir`` readable only by ``group``.

    ``ensure()`` copies each source file when missing or different (atomically), then sets
    owner ``root``, group ``group``, directories 0750, files 0640 on the whole tree (files a
    teacher added are included). Other bits (setuid, world access) are removed.
    """

    DIR_MODE = 0o750
    FILE_MODE = 0o640

    def __init__(self, data_dir: str | Path = "/srv/cdsdata", group: str = "cdsdata", source: str | Path | None = MIMIC_DEMO_DIR,
                 files: Iterable[str] | None = None, subdir: str = "", owner_uid: int = 0):
        self.data_dir = Path(data_dir)
        self.group = group
        self.source = Path(source) if source is not None else None
        self.files = tuple(files) if files is not None else (DEMO_FILES if self.source == MIMIC_DEMO_DIR else None)
        self.subdir = subdir
        self.owner_uid = owner_uid

    def _gid(self) -> int:
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise ProviderError(f"group {self.group} does not exist on this host; create it before granting data access") from None

    def _source_files(self) -> list[str]:
        if self.source is None:
            return []
        if self.files is not None:
            names = list(self.files)
        else:
            names = sorted(p.name for p in self.source.iterdir() if p.is_file() and not p.name.endswith((".py", ".tmp")))
        missing = [n for n in names if not (self.source / n).is_file()]
        if missing:
            raise ProviderError(f"dataset source {self.source} lacks {', '.join(missing)}")
        return names

    def ensure(self, dry_run: bool = False) -> AccessReport:
        gid = self._gid()
        changes: list[AccessChange] = []
        target_dir = self.data_dir / self.subdir if self.subdir else self.data_dir
        names = self._source_files()

        def want_meta(path: Path, is_dir: bool) -> str:
            mode = self.DIR_MODE if is_dir else self.FILE_MODE
            return f"{'dir' if is_dir else 'file'} {self.owner_uid}:{self.group} {mode:04o}"

        # 1. directories
        for d in [self.data_dir] + ([target_dir] if target_dir != self.data_dir else []):
            before = _describe(d)
            after = want_meta(d, True)
            if before != after:
                changes.append(AccessChange(str(d), (before,), (after,)))
                if not dry_run:
                    d.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.chown(d, self.owner_uid, gid)
                    os.chmod(d, self.DIR_MODE)
        # 2. the dataset files: copy when missing or different
        for name in names:
            src, dst = self.source / name, target_dir / name
            before = _describe(dst)
            differs = before == "absent" or _sha256(src) != _sha256(dst)
            if differs:
                changes.append(AccessChange(str(dst), (before, "content differs" if before != "absent" else ""), (want_meta(dst, False), "")))
                if not dry_run:
                    tmp = dst.with_name(f".{name}.cdsops-tmp")
                    with open(src, "rb") as fin, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
                        fout.flush()
                        os.fsync(fout.fileno())
                    os.chown(tmp, self.owner_uid, gid)
                    os.chmod(tmp, self.FILE_MODE)
                    os.replace(tmp, dst)
        # 3. everything under data_dir: owner, group, modes
        if self.data_dir.exists():
            for dirpath, dirnames, filenames in os.walk(self.data_dir):
                for n in dirnames + filenames:
                    p = Path(dirpath) / n
                    if p.is_symlink():
                        continue  # never follow links out of the data tree
                    is_dir = p.is_dir()
                    before, after = _describe(p), want_meta(p, is_dir)
                    if before != after and not any(c.resource == str(p) for c in changes):
                        changes.append(AccessChange(str(p), (before,), (after,)))
                        if not dry_run:
                            os.chown(p, self.owner_uid, gid, follow_symlinks=False)
                            os.chmod(p, self.DIR_MODE if is_dir else self.FILE_MODE)
        return AccessReport(tuple(changes), 0, 0, dry_run)
