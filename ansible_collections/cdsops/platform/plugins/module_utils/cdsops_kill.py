# -*- coding: utf-8 -*-
# Copyright: cdsops contributors. Apache-2.0.
"""End every process of some uids so that none can survive (standard library only).

A scan of /proc followed by kill(pid) can be escaped: a process that forks a child and exits
every few milliseconds is never at the pid the scan read. The kernel's own iteration cannot be
escaped: ``kill(-1, SIGKILL)`` signals every process the caller may signal in one pass under
the task list lock, and a fork racing with it is aborted by the pending fatal signal. So a
forked helper takes each uid in turn (real and effective; the saved uid stays 0, which grants
nothing for signals but lets the helper become root again for the next uid) and sends
``kill(-1, SIGKILL)``. Once every process of the uid has been killed that way, none can fork
any more, so a /proc scan afterwards is reliable: it must find nothing (zombies aside), or the
helper runs again. The uid's own processes can signal the helper (same real uid): a helper
that dies early is simply started again.
"""

from __future__ import absolute_import, division, print_function

import os
import signal
import time

__all__ = ["KillError", "kill_uid_processes", "uid_processes", "MIN_UID"]

MIN_UID = 1000  # never system accounts
HELPER_ATTEMPTS = 10
KILLS_PER_UID = 3
REAP_WAIT = 2.0  # seconds for the kernel to finish killing before a helper runs again


class KillError(Exception):
    """A uid whose processes could not all be ended."""


def uid_processes(uids, proc="/proc"):
    """{uid: count} of the live (not zombie) processes whose real, effective, saved or
    file-system uid is in ``uids``."""
    uids = set(uids)
    found = {}
    for name in os.listdir(proc) if uids else []:
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "status"), "r") as fh:
                status = fh.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").split()[:1] in (["Z"], ["X"]):
            continue
        hit = set(int(x) for x in fields.get("Uid", "").split()) & uids
        if hit:
            uid = min(hit)
            found[uid] = found.get(uid, 0) + 1
    return found


def _helper(uids):
    """In the forked child: kill(-1, SIGKILL) as each uid. Never returns (exit 0, or 5 when a
    uid cannot be taken)."""
    code = 5
    try:
        os.setgroups([])
        for uid in uids:
            os.setresuid(uid, uid, 0)
            for _round in range(KILLS_PER_UID):
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass  # ESRCH: nothing else runs at all
            os.setresuid(0, 0, 0)
        code = 0
    finally:
        os._exit(code)  # noqa: SLF001 - a forked child must exit without the parent's cleanup


def _run_helper(uids):
    pid = os.fork()
    if pid == 0:
        _helper(uids)
    status = os.waitpid(pid, 0)[1]
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5:
        raise KillError("cannot take uid(s) %s to end their processes (not root?)" % sorted(uids))


def kill_uid_processes(uids, proc="/proc"):
    """End every process of ``uids`` (root only). Returns {uid: processes seen before}, for the
    uids that had any. Raises KillError when that cannot be made sure of."""
    uids = sorted(set(int(u) for u in uids))
    low = [u for u in uids if u < MIN_UID]
    if low:
        raise KillError("refusing to kill the processes of system uid(s) %s" % low)
    seen = uid_processes(uids, proc)
    left = uids
    for _attempt in range(HELPER_ATTEMPTS):
        _run_helper(left)
        deadline = time.monotonic() + REAP_WAIT
        remaining = uid_processes(left, proc)
        while remaining and time.monotonic() < deadline:
            time.sleep(0.02)
            remaining = uid_processes(left, proc)
        if not remaining:
            return seen
        left = sorted(remaining)
        for uid in left:
            seen.setdefault(uid, remaining[uid])
    raise KillError("processes of uid(s) %s still running after %d attempts" % (left, HELPER_ATTEMPTS))
