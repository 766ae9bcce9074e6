# -*- coding: utf-8 -*-
# Copyright: cdsops contributors. Apache-2.0.
"""Target-side helpers of ``cdsops_group`` and ``cdsops_access`` (local providers; standard library only).

* :func:`ensure_group` - the data-access group exists (with the given gid) and its members
  are exactly the given usernames; members outside ``managed_pattern`` (staff, service
  users) are kept as they are.
* :func:`ensure_data_dir` - the course data tree is ``root:<group>``, directories 0750,
  files 0640 (setuid/setgid/sticky and world bits removed); symlinks are never followed.
* :func:`provider_main` - the ``main()`` of both modules: the shared options (``provider``,
  ``config``, ``root``) and the dispatch to the local or the google implementation.
"""

from __future__ import absolute_import, division, print_function

import grp
import os
import re
import stat

from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_etc as etc

__all__ = ["ReconcileError", "ensure_group", "ensure_data_dir", "PROVIDER_OPTIONS", "provider_main"]

# the options every provider module has (its own are added to these)
PROVIDER_OPTIONS = {
    "provider": {"type": "str", "choices": ["local", "google"], "default": "local"},
    "config": {"type": "path"},
    "root": {"type": "path", "default": "/"},
}


class ReconcileError(Exception):
    """A request these helpers refuse; nothing was written."""


def _members(field):
    return sorted(set(m for m in (field or "").split(",") if m))


def ensure_group(root, group, members, gid=None, managed_pattern=None, check_mode=False, lock_timeout=etc.LOCK_TIMEOUT,
                 revoke_only=False):
    """Returns {changed, created, before, after, added, removed}. With ``revoke_only`` members are
    only removed (never added, the group never created): the first step of a reconcile."""
    root = root or "/"
    if not etc.valid_name(group):
        raise ReconcileError("invalid group name %r" % (group,))
    bad = [m for m in members if not etc.valid_name(m)]
    if bad:
        raise ReconcileError("invalid member name(s): %s" % ", ".join(repr(b) for b in bad[:5]))
    pat = re.compile(managed_pattern) if managed_pattern else None
    if pat is not None:
        outside = [m for m in members if not pat.match(m)]
        if outside:
            raise ReconcileError("member(s) outside the managed pattern %s: %s" % (managed_pattern, ", ".join(outside[:5])))
    if check_mode:  # nothing is written: a read without the lock is enough
        return _group_plan(etc.read(root, "group"), group, members, gid, pat, revoke_only)
    # read, decide and write under one lock: a member another tool adds meanwhile is seen
    with etc.lock(root, kinds=("group", "gshadow"), timeout=lock_timeout):
        gfile = etc.read(root, "group")
        res = _group_plan(gfile, group, members, gid, pat, revoke_only)
        if not res["changed"]:
            return res
        if res["created"]:
            joined = ",".join(res["after"])
            if os.path.exists(etc.etc_path(root, "gshadow")):  # gshadow first, as gpasswd does
                gs = etc.read(root, "gshadow")
                gs.set([group, "!", "", joined])
                etc.write(root, gs)
            gfile.set([group, "x", str(gid), joined])
            etc.write(root, gfile)
        else:
            etc.write_group_members(root, gfile, gfile.get(group), res["before"], res["after"])
    return res


def _group_plan(gfile, group, members, gid, pat, revoke_only):
    """What :func:`ensure_group` changes, decided from ``gfile`` (the group file as read)."""
    entry = gfile.get(group)
    created = False
    if entry is None and revoke_only:
        return {"changed": False, "created": False, "before": [], "after": [], "added": [], "removed": []}
    if entry is None:
        if gid is None:
            raise ReconcileError("group %s does not exist and no gid was given to create it" % group)
        for f in gfile.entries():
            if f[2] == str(gid):
                raise ReconcileError("cannot create group %s: gid %d already belongs to %s" % (group, gid, f[0]))
        before = []
        created = True
    else:
        if gid is not None and entry[2] != str(gid):
            raise ReconcileError("group %s exists with gid %s, expected %d; refusing to change it" % (group, entry[2], gid))
        before = _members(entry[3])
    kept = [m for m in before if pat is not None and not pat.match(m)]
    wanted = sorted(set(members) | set(kept))
    if revoke_only:
        wanted = sorted(set(wanted) & set(before))
    return {
        "changed": created or before != wanted,
        "created": created,
        "before": before,
        "after": wanted,
        "added": sorted(set(wanted) - set(before)),
        "removed": sorted(set(before) - set(wanted)),
    }


def _describe(st):
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return "%s %d:%d %04o" % (kind, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def _gid_of(root, group):
    if root in ("/", None, ""):
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            pass
    entry = etc.read(root or "/", "group").get(group)
    if entry is None:
        raise ReconcileError("group %s does not exist on this host; create it before granting data access" % group)
    return int(entry[2])


def ensure_data_dir(root, path, group, owner_uid=0, dir_mode=0o750, file_mode=0o640, check_mode=False, create=True):
    """Returns {changed, changes: [{path, before, after}]} for the whole tree under ``path``."""
    if not path.startswith("/"):
        raise ReconcileError("path must be absolute, not %r" % path)
    gid = _gid_of(root, group)
    real = os.path.join(root or "/", path.lstrip("/"))
    changes = []
    if not os.path.lexists(real):
        if not create:
            raise ReconcileError("%s does not exist" % path)
        changes.append({"path": path, "before": "absent", "after": "dir %d:%d %04o" % (owner_uid, gid, dir_mode)})
        if not check_mode:
            os.makedirs(real, 0o700)
            os.chown(real, owner_uid, gid)
            os.chmod(real, dir_mode)
        return {"changed": True, "changes": changes}
    if os.path.islink(real) or not os.path.isdir(real):
        raise ReconcileError("%s is not a directory; refusing to touch it" % path)

    def fix(p, st, is_dir):
        want_mode = dir_mode if is_dir else file_mode
        want = "%s %d:%d %04o" % ("dir" if is_dir else "file", owner_uid, gid, want_mode)
        have = _describe(st)
        if have != want:
            changes.append({"path": "/" + os.path.relpath(p, root or "/") if root not in ("/", None, "") else p, "before": have, "after": want})
            if not check_mode:
                os.chown(p, owner_uid, gid, follow_symlinks=False)
                os.chmod(p, want_mode)

    fix(real, os.lstat(real), True)
    for dirpath, dirnames, filenames in os.walk(real):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                fix(p, st, stat.S_ISDIR(st.st_mode))
    return {"changed": bool(changes), "changes": changes}


def provider_main(argument_spec, local, google):
    """Run a module with ``provider: local|google``: build the AnsibleModule (check mode
    supported) from :data:`PROVIDER_OPTIONS` plus the module's own ``argument_spec``, then
    hand it to ``google(module)`` or ``local(module)``; each of them exits the module."""
    from ansible.module_utils.basic import AnsibleModule

    spec = dict((k, dict(v)) for k, v in PROVIDER_OPTIONS.items())
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if module.params["provider"] == "google":
        google(module)
    local(module)
