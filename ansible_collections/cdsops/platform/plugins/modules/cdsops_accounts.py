#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""Ansible module: bring every student account of a host to the plan in one pass."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cdsops_accounts
short_description: Create, lock and unlock the student accounts of a host in one locked, atomic pass
description:
  - Reads C(/etc/passwd), C(group), C(shadow) and C(gshadow) once, computes every change the
    plan needs, and writes each changed file once, atomically, under the shadow-utils locks
    (never one C(useradd) per student).
  - Creates missing accounts (uid = gid = the planned uid, a user-private group, empty GECOS,
    password C(!) so there is no password login), locks expired accounts (shadow expiry field
    C(1), honoured by pam_unix account management, hence by RStudio, sshd, su and cron) and
    unlocks re-admitted ones. Homes are never deleted.
  - Ends the running processes of every expired account (SIGTERM, then SIGKILL after
    I(terminate_grace) seconds), because a process started before the lock keeps its credentials,
    the data group among them, so locking alone would leave a running R session its data
    access. This happens on every run, so an interrupted run is completed by the next.
  - Files are written shadow, gshadow, group, then passwd; homes are created afterwards, each
    built under a temporary name and renamed into place, so an interrupted run leaves no
    half-made home and a rerun completes the missing ones.
  - Refuses, before writing anything, any username outside I(username_pattern), any uid outside
    I(uid_min)-I(uid_max), a username or uid requested twice, and any existing account or group
    whose name or id collides with a different one (system accounts included).
  - Business rules (who is active) live in cdsops; this module only applies the list it is given.
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
  accounts:
    description: Every managed account of this host, each C(username), C(uid), C(status) (C(active) or C(expired)).
    type: list
    elements: dict
    required: true
  uid_min:
    description: Lowest uid this module may manage.
    type: int
    required: true
  uid_max:
    description: Highest uid this module may manage.
    type: int
    required: true
  username_pattern:
    description: Regular expression every managed username must match.
    type: str
    default: '^s[0-9]{6}$'
  shell:
    description: Login shell of new accounts.
    type: str
    default: /bin/bash
  home_base:
    description: Directory holding the homes.
    type: path
    default: /home
  skeleton:
    description: Directory copied into each new home.
    type: path
    default: /etc/skel
  materials:
    description: Optional course-materials directory copied into each new home as C(course).
    type: path
  root:
    description: Root of the file system to manage (tests use a temporary tree).
    type: path
    default: /
  lock_timeout:
    description: Seconds to wait for the account database lock.
    type: float
    default: 15
  terminate_expired:
    description: End the processes of expired accounts (reported as C(session.terminated)).
    type: bool
    default: true
  terminate_grace:
    description: Seconds between SIGTERM and SIGKILL when ending an expired account's processes.
    type: float
    default: 5
notes:
  - Runs on the managed host with the Python standard library only.
  - Check mode and diff are supported; the diff lists the usernames whose state changes.
"""

EXAMPLES = r"""
- name: Accounts follow the plan
  cdsops_accounts:
    accounts:
      - {username: s000001, uid: 200001, status: active}
      - {username: s000002, uid: 200002, status: expired}
    uid_min: 200001
    uid_max: 1199999
"""

RETURN = r"""
changes:
  description: One item per change, with C(kind) (account.created, account.locked, account.unlocked,
    account.updated, home.created, home.fixed, session.terminated), C(username), C(uid), C(before) and C(after).
  returned: always
  type: list
  elements: dict
counts:
  description: Number of changes by kind.
  returned: always
  type: dict
accounts:
  description: Number of managed accounts in the request.
  returned: always
  type: int
active:
  description: Active accounts in the request.
  returned: always
  type: int
expired:
  description: Expired (locked) accounts in the request.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cdsops.platform.plugins.module_utils.cdsops_accounts import AccountsError, apply
from ansible_collections.cdsops.platform.plugins.module_utils.cdsops_etc import EtcError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            accounts=dict(type="list", elements="dict", required=True),
            uid_min=dict(type="int", required=True),
            uid_max=dict(type="int", required=True),
            username_pattern=dict(type="str", default="^s[0-9]{6}$"),
            shell=dict(type="str", default="/bin/bash"),
            home_base=dict(type="path", default="/home"),
            skeleton=dict(type="path", default="/etc/skel"),
            materials=dict(type="path"),
            root=dict(type="path", default="/"),
            lock_timeout=dict(type="float", default=15.0),
            terminate_expired=dict(type="bool", default=True),
            terminate_grace=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        res = apply(
            p["root"], p["accounts"], p["uid_min"], p["uid_max"], p["username_pattern"],
            shell=p["shell"], home_base=p["home_base"], skeleton=p["skeleton"], materials=p["materials"],
            check_mode=module.check_mode, lock_timeout=p["lock_timeout"],
            terminate_expired=p["terminate_expired"], terminate_grace=p["terminate_grace"],
        )
    except (AccountsError, EtcError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    except OSError as exc:
        module.fail_json(msg="cannot apply accounts: %s" % exc, changed=False)
    diff = res.pop("diff")
    if module._diff:
        res["diff"] = diff
    module.exit_json(**res)


if __name__ == "__main__":
    main()
