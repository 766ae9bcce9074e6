#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""Ansible module: the members of the data-access group equal the plan's active students."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cdsops_group
short_description: Make the data-access group's members equal the active students (Linux or Google group)
description:
  - C(provider=local) runs on the compute host; the group is a Linux group (default C(cdsdata)),
    members are usernames. It is created with I(gid) when missing. The group and gshadow files
    are rewritten in one locked, atomic pass (shadow-utils locks), only when the set differs.
    Members that do not match I(managed_pattern) (staff, service users) are left alone.
  - C(provider=google) runs on the management host with the cdsops package; members are the
    canonical identities of the active students (I(identities), never logged) and the group is
    the Google Group of the cdsops configuration (C(providers.group)), synced through the
    cdsops Directory API provider (batched, retried, only the differences sent).
  - Check mode and diff are supported.
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
  provider:
    description: Where the group lives.
    type: str
    choices: [local, google]
    default: local
  name:
    description: Linux group name (local).
    type: str
    default: cdsdata
  gid:
    description: gid used to create the Linux group when it is missing (local).
    type: int
  members:
    description: Usernames that must be the managed members (local).
    type: list
    elements: str
    default: []
  managed_pattern:
    description: Only members matching this regular expression are managed (local); others are kept.
    type: str
    default: '^s[0-9]{6}$'
  identities:
    description: Canonical identities of the active students (google). Never logged.
    type: list
    elements: str
    default: []
  usernames:
    description: The usernames of I(identities), in the same order (google); results name students by these.
    type: list
    elements: str
    default: []
  config:
    description: The cdsops configuration file (google).
    type: path
  revoke_only:
    description: Only remove members that are not in the list (never add, never create the group).
    type: bool
    default: false
  root:
    description: Root of the file system (tests).
    type: path
    default: /
"""

EXAMPLES = r"""
- name: Data group members on the compute host
  cdsops_group:
    name: cdsdata
    gid: 199999
    members: [s000001, s000003]

- name: Google Group members (management host)
  cdsops_group:
    provider: google
    config: /etc/cdsops/cdsops.yml
    identities: "{{ cdsops_google_identities }}"
    usernames: "{{ cdsops_google_usernames }}"
"""

RETURN = r"""
changes:
  description: One item per change (C(kind) group.member_added / group.member_removed / group.created, C(username), C(before), C(after)).
  returned: always
  type: list
  elements: dict
added:
  description: Usernames added (count only for google members whose username is unknown).
  returned: always
  type: list
removed:
  description: Usernames removed.
  returned: always
  type: list
"""

from ansible_collections.cdsops.platform.plugins.module_utils.cdsops_etc import EtcError
from ansible_collections.cdsops.platform.plugins.module_utils.cdsops_reconcile import (
    ReconcileError,
    ensure_group,
    provider_main,
)


def _local(module):
    p = module.params
    try:
        res = ensure_group(p["root"], p["name"], p["members"], gid=p["gid"], managed_pattern=p["managed_pattern"],
                           check_mode=module.check_mode, revoke_only=p["revoke_only"])
    except (ReconcileError, EtcError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    changes = []
    if res["created"]:
        changes.append({"kind": "group.created", "username": None, "before": None, "after": {"group": p["name"], "gid": p["gid"]}})
    changes += [{"kind": "group.member_added", "username": u, "before": None, "after": {"group": p["name"]}} for u in res["added"]]
    changes += [{"kind": "group.member_removed", "username": u, "before": {"group": p["name"]}, "after": None} for u in res["removed"]]
    out = dict(changed=res["changed"], changes=changes, added=res["added"], removed=res["removed"], members=len(res["after"]))
    if module._diff:
        out["diff"] = {"before": "".join(m + "\n" for m in res["before"]), "after": "".join(m + "\n" for m in res["after"]),
                       "before_header": "group %s" % p["name"], "after_header": "group %s" % p["name"]}
    module.exit_json(**out)


def _google(module):
    p = module.params
    try:
        from cdsops.config import load_config
        from cdsops.providers.base import ProviderError
        from cdsops.providers.factory import group_provider
    except ImportError as exc:
        module.fail_json(msg="provider google needs the cdsops package on this host (run on the management host "
                             "with its venv python): %s" % exc)
    ids, users = p["identities"], p["usernames"]
    if users and len(users) != len(ids):
        module.fail_json(msg="usernames must list one username per identity (%d usernames for %d identities)" % (len(users), len(ids)))
    if len(set(ids)) != len(ids):
        module.fail_json(msg="an identity is listed twice")
    names = dict(zip(ids, users or [""] * len(ids), strict=False))
    try:
        provider = group_provider(load_config(p["config"]))
        desired = set(names)
        if p["revoke_only"]:
            desired &= set(provider.list_members())
        report = provider.sync(sorted(desired), dry_run=module.check_mode)
    except ProviderError as exc:
        module.fail_json(msg="group sync stopped (a rerun resumes from the real state): %s" % exc, changed=False)
    except Exception as exc:  # ConfigError and client errors: one line, no identity in it
        module.fail_json(msg="%s: %s" % (exc.__class__.__name__, exc), changed=False)
    added = sorted(names.get(i, "") for i in report.added)
    if len([a for a in added if a]) < len(report.added):
        added = [a for a in added if a]
    removed_known = sorted(names[i] for i in report.removed if i in names)
    changes = [{"kind": "group.member_added", "username": u, "before": None, "after": {"group": report.group}} for u in added if u]
    changes += [{"kind": "group.member_removed", "username": None, "before": {"group": report.group}, "after": None}
                for _i in report.removed]
    out = dict(changed=report.changed, changes=changes, added=added, removed=removed_known, summary=report.summary())
    if module._diff:
        out["diff"] = {"before": "%d members\n" % (report.unchanged + len(report.removed)),
                       "after": "%d members (+%d -%d)\n" % (report.unchanged + len(report.added), len(report.added), len(report.removed))}
    module.exit_json(**out)


def main():
    # provider, config and root: cdsops_reconcile.PROVIDER_OPTIONS
    provider_main(dict(
        name=dict(type="str", default="cdsdata"),
        gid=dict(type="int"),
        members=dict(type="list", elements="str", default=[]),
        managed_pattern=dict(type="str", default="^s[0-9]{6}$"),
        identities=dict(type="list", elements="str", default=[], no_log=True),
        usernames=dict(type="list", elements="str", default=[]),
        revoke_only=dict(type="bool", default=False),
    ), local=_local, google=_google)


if __name__ == "__main__":
    main()
