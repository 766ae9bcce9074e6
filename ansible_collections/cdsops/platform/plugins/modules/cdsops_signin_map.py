#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""Ansible module: write the sign-in map of the compute host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cdsops_signin_map
short_description: Write the sign-in map the cdsops gate reads (keyed hashes to usernames)
description:
  - Writes C(/etc/cdsops/signin-map.json) on the compute host from the active students'
    C(hash), C(username) and C(ready_at), plus the hashes of expired students, so that the
    sign-in gate can send each Google identity to exactly its own account, show "being
    prepared" before C(ready_at), and show the "expired" page to expired students.
  - The file holds no email address; C(hash) is the keyed hash (HMAC-SHA256) of the canonical
    identity, computed by cdsops on the management side.
  - Refuses a map in which one hash (identity) or one username appears twice, or a hash is both
    active and expired; nothing is written then.
  - Writes atomically (temporary file with final owner and mode, fsync, rename), so the gate
    never reads a partial map; it picks the new file up on its next request.
  - With O(revoke_only=true) the module only takes access away; active entries whose hash is
    no longer requested as active are removed and the expired hashes are written, but no
    entry is added or changed. The reconcile playbook runs this before it locks the expired
    accounts, so revocations go group -> sign-in map -> account, the reverse of the grants.
  - Check mode and diff are supported. The diff shows counts and the usernames added, removed
    or updated, never a hash or an identity.
version_added: "0.1.0"
author: cdsops contributors (@cdsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  path:
    description: The sign-in map file.
    type: path
    default: /etc/cdsops/signin-map.json
  entries:
    description:
      - One entry per active student.
      - C(hash) is 64 lower-case hex digits; C(username) a Linux user name; C(ready_at) an
        ISO 8601 time with a time zone (stored in UTC), before which the student sees
        "your access is being prepared".
    type: list
    elements: dict
    required: true
  expired:
    description: Hashes of students whose access expired (no usernames).
    type: list
    elements: str
    default: []
  revoke_only:
    description:
      - Only remove mappings (and record expired hashes); add or update none.
      - A missing file stays missing in this mode (nothing to revoke).
    type: bool
    default: false
  owner:
    description: Owner of the file.
    type: str
    default: root
  group:
    description: Group of the file (the gate's group, which must be able to read it).
    type: str
    default: cdsops-gate
  mode:
    description: Mode of the file, as an octal string.
    type: raw
    default: "0640"
notes:
  - Runs on the managed host with the Python standard library only.
"""

EXAMPLES = r"""
- name: Remove the expired students' mappings only (before their accounts are locked)
  cdsops_signin_map:
    entries: "{{ cdsops_signin_entries }}"
    expired: "{{ cdsops_signin_expired }}"
    revoke_only: true

- name: Write the sign-in map
  cdsops_signin_map:
    entries:
      - hash: 6f1ed002ab5595859014ebf0951522d9e8f6f0a4e0a0e0b7e8f5b0e7c1d2a3b4
        username: s000042
        ready_at: "2026-11-26T17:00:00Z"
    expired:
      - 0b4f1c0d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1
"""

RETURN = r"""
path:
  description: The map file.
  returned: always
  type: str
active_before:
  description: Active students in the file before.
  returned: always
  type: int
active_after:
  description: Active students in the file after.
  returned: always
  type: int
expired_before:
  description: Expired hashes in the file before.
  returned: always
  type: int
expired_after:
  description: Expired hashes in the file after.
  returned: always
  type: int
added:
  description: Usernames that gain a sign-in mapping.
  returned: always
  type: list
  elements: str
removed:
  description: Usernames that lose their sign-in mapping.
  returned: always
  type: list
  elements: str
updated:
  description: Usernames whose hash or ready_at changes.
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cdsops.platform.plugins.module_utils.cdsops_signin_map import (
    SigninMapError,
    atomic_write,
    build_document,
    compare,
    diff_text,
    read_current,
    render,
    restrict,
)


def _mode(module, value):
    if isinstance(value, int):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            module.fail_json(msg="mode must be an octal string such as '0640', not %r" % (value,))
    if not 0 <= mode <= 0o7777:
        module.fail_json(msg="mode %r is out of range" % (value,))
    return mode


def _ownership(owner, group, path):
    """(uid, gid, problems): the owner's and group's ids, -1 and a problem for each missing one
    or for a missing directory."""
    problems = []
    uid = gid = -1
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        problems.append("owner %s does not exist on this host" % owner)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        problems.append("group %s does not exist on this host (apply the signin_gate role first)" % group)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        problems.append("directory of %s does not exist (apply the signin_gate role first)" % path)
    return uid, gid, problems


def _attr_changes(path, uid, gid, mode, owner, group):
    """What differs in the existing file's owner, group and mode, one line each."""
    st = os.stat(path)
    out = []
    if st.st_uid != uid:
        out.append("owner: %s -> %s" % (st.st_uid, owner))
    if st.st_gid != gid:
        out.append("group: %s -> %s" % (st.st_gid, group))
    if st.st_mode & 0o7777 != mode:
        out.append("mode: %04o -> %04o" % (st.st_mode & 0o7777, mode))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/cdsops/signin-map.json"),
            entries=dict(type="list", elements="dict", required=True),
            expired=dict(type="list", elements="str", default=[]),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="cdsops-gate"),
            mode=dict(type="raw", default="0640"),
            revoke_only=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    mode = _mode(module, p["mode"])
    if p["revoke_only"] and not os.path.lexists(path):
        # nothing is mapped yet, so there is nothing to take away (the full run creates the file)
        module.exit_json(changed=False, path=path, **compare(None, None))
    # In check mode on a fresh host the signin_gate role has only reported what it would
    # create: a missing owner, group or directory is then a warning, not a failure.
    uid, gid, problems = _ownership(p["owner"], p["group"], path)
    if problems and not module.check_mode:
        module.fail_json(msg="; ".join(problems))
    for problem in problems:
        module.warn(problem)

    try:
        document = build_document(p["entries"], p["expired"])
    except SigninMapError as exc:
        module.fail_json(msg="sign-in map refused: %s" % exc)
    current, current_doc = read_current(path)
    if p["revoke_only"]:
        document = restrict(current_doc, document)
    data = render(document)
    summary = compare(current_doc, document)
    content_changed = current != data
    attr_changes = _attr_changes(path, uid, gid, mode, p["owner"], p["group"]) if current is not None and not problems else []
    changed = content_changed or bool(attr_changes)

    before, after = diff_text(summary)
    if current is not None and current_doc is None:
        before = "(not a sign-in map: will be replaced)\n"
    if attr_changes:
        after += "\n".join(attr_changes) + "\n"
    result = dict(changed=changed, path=path, **summary)
    if changed and module._diff:
        result["diff"] = dict(before_header=path, after_header=path,
                              before=before if current is not None else "", after=after)

    if changed and not module.check_mode:
        try:
            if content_changed:
                atomic_write(path, data, mode=mode, uid=uid, gid=gid)
            else:
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        except OSError as exc:
            module.fail_json(msg="cannot write %s: %s" % (path, exc.strerror or exc), **summary)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
