"""The collection's module_utils/cdsops_kill.py with real processes under a throwaway uid (needs root).

The escapee of issue 11: a process that forks a child and exits every few milliseconds, so
a /proc scan never finds it at the pid it read. kill_uid_processes() must leave no process
of the uid behind.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))

_spec = importlib.util.spec_from_file_location("cdsops_kill", REPO / "ansible_collections/cdsops/platform/plugins/module_utils/cdsops_kill.py")
kill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (takes a throwaway uid)")

FORKER = """
import os, time
while True:
    time.sleep(0.003)
    if os.fork() > 0:
        os._exit(0)
"""
SLEEPER = "import time\nwhile True: time.sleep(1)\n"


def uid_pids(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path("/proc", name, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").split()[:1] in (["Z"], ["X"]):
            continue
        if uid in {int(x) for x in fields.get("Uid", "").split()}:
            pids.append(int(name))
    return pids


def start_as(uid: int, code: str) -> None:
    proc = subprocess.Popen(["/usr/bin/python3", "-c", code], user=uid, group=uid, extra_groups=[],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd="/")
    if code == FORKER:
        proc.wait(timeout=5)  # the first generation exits at once; its descendants go on


@pytest.fixture
def uid():
    value = 1190000 + os.getpid() % 9000
    yield value
    kill.kill_uid_processes([value])  # never leave anything behind, whatever the test did


def test_forking_escapee_and_sleepers_all_end(uid):
    start_as(uid, FORKER)
    for _ in range(3):
        start_as(uid, SLEEPER)
    time.sleep(0.5)
    assert uid_pids(uid), "the test processes did not start"
    assert set(kill.kill_uid_processes([uid])) == {uid}
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a survivor would fork again within milliseconds
        assert uid_pids(uid) == []
        time.sleep(0.05)


def test_nothing_running_reports_nothing(uid):
    assert kill.kill_uid_processes([uid]) == {}


def test_other_uids_are_untouched(uid):
    start_as(uid + 1, SLEEPER)
    try:
        time.sleep(0.2)
        assert kill.kill_uid_processes([uid]) == {}
        assert uid_pids(uid + 1), "a process of another uid was ended"
    finally:
        kill.kill_uid_processes([uid + 1])
    assert uid_pids(uid + 1) == []


def test_system_uids_are_refused():
    with pytest.raises(kill.KillError, match=r"system uid\(s\) \[0\]"):
        kill.kill_uid_processes([0, 200001])
