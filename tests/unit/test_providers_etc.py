"""cdsops_etc: parsers keep unknown lines, atomic writes with backups, shadow-utils locks."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_etc as etc

GROUP = (
    "# local comment, kept\n"
    "root:x:0:\n"
    "+nisgroup\n"
    "cdsdata:x:199999:s000002,s000001\n"
    "broken-line-with-no-fields\n"
    "\n"
    "users:x:100:alice\n"
)
GSHADOW = "root:*::\ncdsdata:!::s000002,s000001\nusers:!::alice\n"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "group").write_text(GROUP)
    (tmp_path / "etc" / "gshadow").write_text(GSHADOW)
    os.chmod(tmp_path / "etc" / "gshadow", 0o640)
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return tmp_path


@pytest.mark.parametrize(
    "kind,text",
    [
        ("group", GROUP),
        ("gshadow", GSHADOW),
        ("passwd", "root:x:0:0:root:/root:/bin/bash\n#c\n+::::::\nodd:line\n"),
        ("shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000::::::\n"),
        ("passwd", "no-final-newline:x:1:1::/:/bin/sh"),
        ("group", ""),
        ("group", "\n\n"),
        ("group", "dos:x:1:\r\n"),
    ],
)
def test_round_trip_is_byte_exact(kind: str, text: str) -> None:
    assert etc.EtcFile.parse(kind, text).serialize() == text


def test_unknown_lines_are_not_entries_and_survive_edits() -> None:
    f = etc.EtcFile.parse("group", GROUP)
    assert f.names() == ["root", "cdsdata", "users"]
    assert f.set(["newgrp", "x", "5000", ""]) is True
    assert f.set(["newgrp", "x", "5000", ""]) is False  # idempotent
    out = f.serialize()
    assert out.startswith(GROUP)
    assert out.endswith("newgrp:x:5000:\n")
    assert f.remove("users") and "users:" not in f.serialize()
    assert "+nisgroup\ncdsdata:x:199999:s000002,s000001\nbroken-line-with-no-fields\n\nnewgrp" in f.serialize()


@pytest.mark.parametrize(
    "fields,msg",
    [
        (["a", "x", "1"], "needs 4 fields"),
        (["a:b", "x", "1", ""], "contains ':'"),
        (["a", "x", "1", "u\nv"], "line break"),
        (["-bad", "x", "1", ""], "invalid name"),
        (["", "x", "1", ""], "invalid name"),
    ],
)
def test_bad_entries_are_refused(fields: list[str], msg: str) -> None:
    with pytest.raises(etc.EtcError, match=msg):
        etc.EtcFile("group").set(fields)


def test_unknown_database_is_refused() -> None:
    with pytest.raises(etc.EtcError, match="unknown account database"):
        etc.EtcFile.parse("hosts", "")


def test_set_group_members_updates_group_and_gshadow(root: Path) -> None:
    res = etc.set_group_members(str(root), "cdsdata", ["s000003", "s000001"])
    assert res == {"changed": True, "before": ["s000001", "s000002"], "after": ["s000001", "s000003"]}
    group = (root / "etc" / "group").read_text()
    assert "cdsdata:x:199999:s000001,s000003\n" in group
    assert group.startswith("# local comment, kept\nroot:x:0:\n+nisgroup\n")
    assert "cdsdata:!::s000001,s000003\n" in (root / "etc" / "gshadow").read_text()
    # shadow-utils style backups hold the previous content
    assert (root / "etc" / "group-").read_text() == GROUP
    assert (root / "etc" / "gshadow-").read_text() == GSHADOW
    assert stat.S_IMODE((root / "etc" / "gshadow").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc" / "gshadow-").stat().st_mode) == 0o640
    # no temp or lock files left behind
    assert sorted(p.name for p in (root / "etc").iterdir()) == [".pwd.lock", "group", "group-", "gshadow", "gshadow-", "passwd"]


def test_set_group_members_is_idempotent_and_ignores_order(root: Path) -> None:
    before = (root / "etc" / "group").stat().st_mtime_ns
    res = etc.set_group_members(str(root), "cdsdata", ["s000001", "s000002", "s000001"])
    assert res["changed"] is False
    assert (root / "etc" / "group").stat().st_mtime_ns == before
    assert not (root / "etc" / "group-").exists()


def test_check_mode_writes_nothing(root: Path) -> None:
    res = etc.set_group_members(str(root), "cdsdata", [], check_mode=True)
    assert res == {"changed": True, "before": ["s000001", "s000002"], "after": []}
    assert (root / "etc" / "group").read_text() == GROUP


def test_missing_group_and_bad_names(root: Path) -> None:
    with pytest.raises(etc.GroupNotFound, match="group nosuch does not exist"):
        etc.set_group_members(str(root), "nosuch", ["s000001"])
    with pytest.raises(etc.EtcError, match="invalid user name"):
        etc.set_group_members(str(root), "cdsdata", ["ok", "bad,name"])


def _hold_lock(root: str, ready, release) -> None:
    with etc.lock(root):
        ready.set()
        release.wait(10)


def test_lock_excludes_another_process_and_times_out(root: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(root), ready, release))
    p.start()
    try:
        assert ready.wait(10)
        assert (root / "etc" / "group.lock").exists()  # shadow-utils' per-file lock
        t0 = time.monotonic()
        with pytest.raises(etc.LockTimeout, match="timed out"):
            etc.set_group_members(str(root), "cdsdata", [], lock_timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
    finally:
        release.set()
        p.join(10)
    assert not (root / "etc" / "group.lock").exists()
    assert etc.set_group_members(str(root), "cdsdata", [], lock_timeout=2)["changed"] is True


def test_stale_file_lock_of_a_dead_process_is_removed(root: Path) -> None:
    (root / "etc" / "group.lock").write_text("999999999")
    assert etc.set_group_members(str(root), "cdsdata", ["s000009"])["after"] == ["s000009"]
    assert not (root / "etc" / "group.lock").exists()


def test_atomic_write_keeps_owner_and_mode(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("old")
    os.chmod(p, 0o604)
    etc.atomic_write(str(p), "new")
    assert p.read_text() == "new" and (tmp_path / "f-").read_text() == "old"
    assert stat.S_IMODE(p.stat().st_mode) == 0o604
    etc.atomic_write(str(tmp_path / "g"), b"fresh", default_mode=0o640)
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == 0o640
    assert not (tmp_path / "g-").exists()


def test_threads_of_one_process_are_serialized(root: Path) -> None:
    import threading

    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(5):
                etc.set_group_members(str(root), "cdsdata", [f"s{i:03d}{j:03d}"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    members = etc.read(str(root), "group").get("cdsdata")[3].split(",")
    assert len(members) == 1


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_line = st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(etc.FIELDS)), lines=st.lists(_line, max_size=8), final=st.booleans())
def test_any_file_round_trips_and_survives_an_unrelated_edit(kind: str, lines: list[str], final: bool) -> None:
    text = "\n".join(lines) + ("\n" if final and lines else "")
    f = etc.EtcFile.parse(kind, text)
    assert f.serialize() == text
    name = "zzcdsopsnew"
    if name in f:
        return
    f.set([name] + ["x"] * (etc.FIELDS[kind] - 1))
    out = f.serialize()
    ends_nl = text == "" or text.endswith("\n")
    assert out.startswith(text if ends_nl else text + "\n")
    assert out.endswith(":".join([name] + ["x"] * (etc.FIELDS[kind] - 1)) + ("\n" if ends_nl else ""))
