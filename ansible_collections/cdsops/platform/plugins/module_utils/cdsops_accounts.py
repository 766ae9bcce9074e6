# -*- coding: utf-8 -*-
# Copyright: cdsops contributors. Apache-2.0.
"""Target-side logic of the ``cdsops_accounts`` module (standard library only).

One read of passwd/group/shadow/gshadow, validation of the whole request (refusals happen
before anything is written), then one locked, atomic write of every file that changes and,
after that, the home directories.

Account states (what the module writes):

* every managed account: ``passwd`` ``name:x:UID:UID::HOME:SHELL`` (empty GECOS: no name ever
  lands on the host), a user-private group ``name:x:UID:``, ``gshadow`` ``name:!::`` and a
  ``shadow`` entry whose password field starts with ``!`` (no password login: students sign
  in through the gate);
* ``active``: shadow expiry field empty;
* ``expired``: shadow expiry field ``1`` (1970-01-02). pam_unix's account management
  (``pam_acct_mgmt``), which RStudio Workbench, sshd, su and cron all call, refuses an expired
  account ("account has expired"), whatever the authentication method; the password stays
  locked too. Homes are never deleted.

Interrupted-safe ordering: the files are written shadow -> gshadow -> group -> passwd, so an
account is visible (passwd) only once its locked shadow entry exists, and a lock takes effect
with the first file written. Homes are built in ``<home>.cdsops-tmp`` and renamed into
place, so a home exists only complete; a rerun completes any missing home.

Running processes: locking an account stops new logins, but a process that is already
running keeps its credentials, the data group among them (supplementary groups are fixed
when a process starts). So after the files are written, every process whose uid is an
expired account's (an R session, a job left running) gets SIGTERM, SIGKILL after a grace
period; then cdsops_kill ends, as the uid itself with kill(-1, SIGKILL), whatever a /proc
scan cannot catch (a process that forks and exits every few milliseconds). This runs on every
apply, not only when the lock is new, so a run interrupted between the lock and the kill is
completed by the next one.
"""

from __future__ import absolute_import, division, print_function

import os
import re
import shutil
import signal
import stat
import time

from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_etc as etc
from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_kill

__all__ = ["AccountsError", "plan_changes", "apply", "EXPIRED_FIELD"]

EXPIRED_FIELD = "1"  # shadow(5) expire: days since 1970-01-01; 1 is in the past
HOME_TMP_SUFFIX = ".cdsops-tmp"
STATUSES = ("active", "expired")


class AccountsError(Exception):
    """A request this module refuses; nothing was written."""


def _today():
    return str(int(time.time() // 86400))


def validate(accounts, uid_min, uid_max, name_pattern):
    """Return the request as a list of (username, uid, status), sorted by uid; raise on bad input."""
    if not isinstance(uid_min, int) or not isinstance(uid_max, int) or uid_min < 1000 or uid_max < uid_min:
        raise AccountsError("uid_min/uid_max must be whole numbers with 1000 <= uid_min <= uid_max (got %r, %r)" % (uid_min, uid_max))
    try:
        pat = re.compile(name_pattern)
    except re.error as exc:
        raise AccountsError("username_pattern %r is not a valid regular expression: %s" % (name_pattern, exc)) from exc
    out, names, uids = [], {}, {}
    for i, a in enumerate(accounts or []):
        if not isinstance(a, dict):
            raise AccountsError("accounts[%d] must be a mapping with username, uid and status" % i)
        name, uid, status = a.get("username"), a.get("uid"), a.get("status", "active")
        if isinstance(uid, str) and uid.isdigit():
            uid = int(uid)
        if not isinstance(name, str) or not pat.match(name) or not etc.valid_name(name):
            raise AccountsError("accounts[%d]: username %r does not match the managed pattern %s" % (i, name, name_pattern))
        if not isinstance(uid, int) or isinstance(uid, bool) or not uid_min <= uid <= uid_max:
            raise AccountsError("accounts[%d] (%s): uid %r is outside the managed range %d-%d" % (i, name, uid, uid_min, uid_max))
        if status not in STATUSES:
            raise AccountsError("accounts[%d] (%s): status must be active or expired, not %r" % (i, name, status))
        if name in names:
            raise AccountsError("username %s appears twice in the request" % name)
        if uid in uids:
            raise AccountsError("uid %d is requested for both %s and %s" % (uid, uids[uid], name))
        names[name] = uid
        uids[uid] = name
        out.append((name, uid, status))
    out.sort(key=lambda t: t[1])
    return out


def _state(shadow_fields):
    if shadow_fields is None:
        return "absent"
    return "expired" if shadow_fields[7] == EXPIRED_FIELD else "active"


def _ids_in_use(entries):
    """{numeric id: the first name holding it} of passwd (uids) or group (gids) entries."""
    out = {}
    for f in entries:
        try:
            out.setdefault(int(f[2]), f[0])
        except ValueError:
            pass
    return out


def _refuse_conflicts(request, pw, gr, uid_min, uid_max, pat):
    """Every refusal, before anything is changed: nothing may be written when any account is wrong."""
    by_uid, by_gid = _ids_in_use(pw.entries()), _ids_in_use(gr.entries())
    for name, uid, _status in request:
        cur = pw.get(name)
        if cur is not None:
            try:
                cur_uid = int(cur[2])
            except ValueError:
                cur_uid = -1
            if cur_uid != uid:
                what = "a system account" if cur_uid < uid_min or cur_uid > uid_max else "an account"
                raise AccountsError("refusing to touch %s: %s with uid %s exists, the plan wants uid %d" % (name, what, cur[2], uid))
        other = by_uid.get(uid)
        if other is not None and other != name:
            raise AccountsError("refusing to create %s: uid %d already belongs to %s" % (name, uid, other))
        g = gr.get(name)
        if g is not None and g[2] != str(uid):
            raise AccountsError("refusing to touch %s: group %s exists with gid %s, the plan wants gid %d" % (name, name, g[2], uid))
        og = by_gid.get(uid)
        if og is not None and og != name:
            raise AccountsError("refusing to create %s: gid %d already belongs to group %s" % (name, uid, og))
        if cur is not None and not pat.match(cur[0]):
            raise AccountsError("refusing to touch %s: outside the managed username pattern" % name)


def _wanted_shadow(name, cur_sh, status, today):
    """The shadow entry of the request: no password login (a ``!`` prefix), expired or not."""
    if cur_sh is None:
        new_sh = [name, "!", today, "0", "99999", "7", "", "", ""]
    else:
        new_sh = list(cur_sh)
        if not new_sh[1].startswith("!"):
            new_sh[1] = "!" + new_sh[1]
    new_sh[7] = EXPIRED_FIELD if status == "expired" else ""
    return new_sh


def _account_change(files, name, uid, status, shell, home_base, today, dirty):
    """Bring one account's four entries to the request in memory; its change dict, or None."""
    pw, gr, sh, gs = files["passwd"], files["group"], files["shadow"], files["gshadow"]
    want_pw = [name, "x", str(uid), str(uid), "", os.path.join(home_base, name), shell]
    cur_pw = pw.get(name)
    before = _state(sh.get(name)) if cur_pw is not None else "absent"
    if cur_pw is not None and cur_pw[5]:
        want_pw[5] = cur_pw[5]  # never move an existing home
    touched = []
    for kind, changed in (
        ("shadow", sh.set(_wanted_shadow(name, sh.get(name), status, today))),
        ("gshadow", gs.get(name) is None and gs.set([name, "!", "", ""])),  # created, never rewritten
        ("group", gr.get(name) is None and gr.set([name, "x", str(uid), ""])),  # members are cdsops_group's
        ("passwd", pw.set(want_pw)),
    ):
        if changed:
            dirty.add(kind)
            touched.append(kind)
    if not touched:
        return None
    if before == "absent":
        kind = "account.created"
    elif before != status:
        kind = "account.locked" if status == "expired" else "account.unlocked"
    else:
        kind = "account.updated"
    return {
        "kind": kind,
        "username": name,
        "uid": uid,
        "before": None if before == "absent" else {"state": before},
        "after": {"state": status, "uid": uid, "files": touched} if kind != "account.created" else {"state": status, "uid": uid},
    }


def plan_changes(root, request, uid_min, uid_max, name_pattern, shell="/bin/bash", home_base="/home", files=None):
    """Compute what must change. Returns (files, changes, dirty) where ``files`` maps kind ->
    EtcFile (already modified in memory), ``changes`` is a list of change dicts and ``dirty``
    the set of kinds to write. Raises :class:`AccountsError` for every refusal."""
    files = files or dict((k, etc.read(root, k)) for k in ("passwd", "group", "shadow", "gshadow"))
    _refuse_conflicts(request, files["passwd"], files["group"], uid_min, uid_max, re.compile(name_pattern))
    changes, dirty = [], set()
    today = _today()
    for name, uid, status in request:
        change = _account_change(files, name, uid, status, shell, home_base, today, dirty)
        if change is not None:
            changes.append(change)
    return files, changes, dirty


WRITE_ORDER = ("shadow", "gshadow", "group", "passwd")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _copy_file(src, dst, mode, uid, gid):
    """Copy one regular file; never follows a symlink at either end, never overwrites."""
    sfd = os.open(src, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(sfd, "rb") as inp:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        with os.fdopen(dfd, "wb") as out:
            shutil.copyfileobj(inp, out)
            os.fchown(dfd, uid, gid)
            os.fchmod(dfd, mode)


def _fix_dir(path, mode, uid, gid):
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _copy_tree(src, dst, uid, gid):
    """Copy ``src`` (a skeleton) into existing ``dst``, owned by uid:gid, no symlink following."""
    for entry in sorted(os.listdir(src)):
        s = os.path.join(src, entry)
        d = os.path.join(dst, entry)
        st = os.lstat(s)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
            os.lchown(d, uid, gid)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(d, 0o700)
            _copy_tree(s, d, uid, gid)
            _fix_dir(d, stat.S_IMODE(st.st_mode) & 0o755, uid, gid)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(s, d, stat.S_IMODE(st.st_mode) & 0o755, uid, gid)


def homes_to_fix(root, request, home_base="/home"):
    """(username, uid, path, problem) for homes that are missing or not uid:uid 0700."""
    out = []
    for name, uid, _status in request:
        path = os.path.join(root, home_base.lstrip("/"), name)
        try:
            st = os.lstat(path)
        except OSError:
            out.append((name, uid, path, "missing"))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise AccountsError("home of %s (%s) exists and is not a directory; refusing to touch it" % (name, path))
        if st.st_uid != uid or st.st_gid != uid or stat.S_IMODE(st.st_mode) != 0o700:
            out.append((name, uid, path, "owner/mode"))
    return out


def make_home(path, uid, skeletons, materials=None):
    """Build the home in ``<path>.cdsops-tmp`` (root's, mode 0700: nobody else can enter it),
    with the skeletons and the course materials (as ``course``), and hand it to the student
    (chown, rename) only once it is complete: the student never owns a directory that root is
    still writing into, so no symlink they plant can redirect the copy."""
    tmp = path + HOME_TMP_SUFFIX
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)  # left by an interrupted run: ours, never a real home
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkdir(tmp, 0o700)
    for skel in skeletons:
        if skel and os.path.isdir(skel):
            _copy_tree(skel, tmp, uid, uid)
    if materials and os.path.isdir(materials):
        course = os.path.join(tmp, "course")
        os.mkdir(course, 0o700)
        _copy_tree(materials, course, uid, uid)
        _fix_dir(course, 0o700, uid, uid)
    _fix_dir(tmp, 0o700, uid, uid)
    os.rename(tmp, path)


def processes_of(uids, proc="/proc"):
    """{pid: uid} of the processes whose real, effective, saved or file-system uid is in ``uids``
    (read from ``/proc/<pid>/status``; zombies and processes that end while we look are skipped)."""
    uids = set(uids)
    found = {}
    if not uids:
        return found
    me = os.getpid()
    try:
        names = os.listdir(proc)
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(os.path.join(proc, name, "status"), "r") as fh:
                for line in fh:
                    if line.startswith("State:") and line.split()[1:2] in (["Z"], ["X"]):
                        break  # a zombie: already ended, holds no credentials any more
                    if line.startswith("Uid:"):
                        ids = set(int(x) for x in line.split()[1:5])
                        hit = ids & uids
                        if hit:
                            found[int(name)] = min(hit)
                        break
        except (OSError, ValueError):
            continue
    return found


def terminate(uids, grace=5.0, proc="/proc", rounds=3):
    """End every process of ``uids``: SIGTERM, then SIGKILL for what is left after ``grace``
    seconds; repeated (``rounds``) for processes forked meanwhile. Returns {uid: count}."""
    ended = {}
    for _round in range(rounds):
        victims = processes_of(uids, proc)
        if not victims:
            break
        for pid, uid in victims.items():
            ended.setdefault(uid, set()).add(pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + max(0.0, grace)
        while time.monotonic() < deadline and processes_of(uids, proc):
            time.sleep(0.05)
        for pid in processes_of(uids, proc):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        grace = 0.2  # later rounds: only processes forked during the first one
    # SIGKILL is asynchronous: wait (briefly) until the kernel has reaped them
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and processes_of(uids, proc):
        time.sleep(0.05)
    return dict((uid, len(pids)) for uid, pids in ended.items())


def apply(root, accounts, uid_min, uid_max, name_pattern, shell="/bin/bash", home_base="/home",
          skeleton="/etc/skel", materials=None, check_mode=False, lock_timeout=etc.LOCK_TIMEOUT,
          terminate_expired=True, terminate_grace=5.0, proc=None):
    """Bring the accounts to the request. Returns a dict: changed, changes, counts, diff."""
    root = root or "/"
    request = validate(accounts, uid_min, uid_max, name_pattern)
    if not shell.startswith("/"):
        raise AccountsError("shell must be an absolute path, not %r" % shell)
    if not home_base.startswith("/"):
        raise AccountsError("home_base must be an absolute path, not %r" % home_base)
    if check_mode:
        _files, changes, _dirty = plan_changes(root, request, uid_min, uid_max, name_pattern, shell, home_base)
    else:
        with etc.lock(root, timeout=lock_timeout):
            files, changes, dirty = plan_changes(root, request, uid_min, uid_max, name_pattern, shell, home_base)
            for kind in WRITE_ORDER:
                if kind in dirty:
                    etc.write(root, files[kind])
    # homes after the files (a rerun completes what an interrupted run left)
    created = set(c["username"] for c in changes if c["kind"] == "account.created")
    home_changes = _fix_homes(root, request, home_base, (skeleton, materials), created, check_mode)
    session_changes = []
    if terminate_expired:
        proc = proc if proc is not None else os.path.join(root, "proc")  # none in a test tree
        session_changes = _end_expired_sessions(root, request, proc, terminate_grace, check_mode)
    return _result(request, changes + home_changes + session_changes, session_changes)


def _fix_homes(root, request, home_base, sources, created, check_mode):
    """Make missing homes (skeleton, then course materials) and fix wrong ones; the changes,
    except for the homes of accounts created in this run (their creation says it)."""
    skeleton, materials = [os.path.join(root, s.lstrip("/")) if root != "/" and s else s for s in sources]
    skel_dirs = [skeleton] if skeleton else []
    changes = []
    for name, uid, path, problem in homes_to_fix(root, request, home_base):
        if name not in created:
            changes.append({"kind": "home.created" if problem == "missing" else "home.fixed", "username": name,
                            "uid": uid, "before": None if problem == "missing" else {"problem": problem},
                            "after": {"mode": "0700"}})
        if check_mode:
            continue
        if problem == "missing":
            make_home(path, uid, skel_dirs, materials or None)
        else:
            os.chown(path, uid, uid, follow_symlinks=False)
            os.chmod(path, 0o700)
    return changes


def _end_expired_sessions(root, request, proc, grace, check_mode):
    """End every process of the expired accounts (check mode: count them); one
    ``session.terminated`` change per account that had any."""
    expired = dict((uid, name) for name, uid, status in request if status == "expired")
    if check_mode:
        running = {}
        for _pid, uid in processes_of(expired, proc).items():
            running[uid] = running.get(uid, 0) + 1
    else:
        running = terminate(expired, grace=grace, proc=proc)
        if root == "/" and expired:  # the managed system itself: what a /proc scan cannot catch
            for uid, count in cdsops_kill.kill_uid_processes(expired).items():
                running.setdefault(uid, count)
    return [{"kind": "session.terminated", "username": expired[uid], "uid": uid,
             "before": {"processes": running[uid]}, "after": {"processes": 0}} for uid in sorted(running)]


def _result(request, changes, session_changes):
    """The module's answer: changes, counts per kind and state, and the diff."""
    counts = {}
    for c in changes:
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    state = dict((s, 0) for s in STATUSES)
    for _n, _u, s in request:
        state[s] += 1
    before_lines = "".join("%s %s\n" % (c["username"], (c["before"] or {}).get("state", "absent")) for c in changes if c["kind"].startswith("account."))
    after_lines = "".join("%s %s\n" % (c["username"], c["after"].get("state", "")) for c in changes if c["kind"].startswith("account."))
    before_lines += "".join("%s processes: %d\n" % (c["username"], c["before"]["processes"]) for c in session_changes)
    after_lines += "".join("%s processes: 0 (terminated)\n" % c["username"] for c in session_changes)
    return {
        "changed": bool(changes),
        "changes": changes,
        "counts": counts,
        "accounts": len(request),
        "active": state["active"],
        "expired": state["expired"],
        "diff": {"before": before_lines, "after": after_lines, "before_header": "accounts", "after_header": "accounts"},
    }
