#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""Ansible module: the data-access group holds read access to the course data (local files or Google IAM)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cdsops_access
short_description: Bind read access to the course data to the data-access group (never to individuals)
description:
  - C(provider=local) runs on the compute host; the course data tree I(path) (default
    C(/srv/cdsdata)) is owned C(root:<group>), directories 0750, files 0640, so only members of
    the group can read it. Symlinks are never followed. Nothing is written when it already is.
  - C(provider=google) runs on the management host with the cdsops package; the Google Group holds
    the configured roles on the project and BigQuery datasets of the cdsops configuration
    (C(providers.access)), through the cdsops IAM provider (read-modify-write with etags).
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
    description: Where the access is bound.
    type: str
    choices: [local, google]
    default: local
  path:
    description: The course data directory (local).
    type: path
    default: /srv/cdsdata
  group:
    description: The data-access Linux group (local).
    type: str
    default: cdsdata
  create:
    description: Create I(path) when missing (local).
    type: bool
    default: true
  config:
    description: The cdsops configuration file (google).
    type: path
  root:
    description: Root of the file system (tests).
    type: path
    default: /
"""

EXAMPLES = r"""
- name: Course data readable by the data group only
  cdsops_access:
    path: /srv/cdsdata
    group: cdsdata
"""

RETURN = r"""
changes:
  description: One item per resource changed (C(kind) access.changed, C(resource), C(before), C(after)).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.cdsops.platform.plugins.module_utils.cdsops_reconcile import (
    ReconcileError,
    ensure_data_dir,
    provider_main,
)


def _local(module):
    p = module.params
    try:
        res = ensure_data_dir(p["root"], p["path"], p["group"], check_mode=module.check_mode, create=p["create"])
    except (ReconcileError, OSError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    changes = [{"kind": "access.changed", "username": None, "before": {"resource": c["path"], "state": c["before"]},
                "after": {"resource": c["path"], "state": c["after"]}} for c in res["changes"]]
    out = dict(changed=res["changed"], changes=changes)
    if module._diff:
        out["diff"] = {"before": "".join("%s %s\n" % (c["path"], c["before"]) for c in res["changes"]),
                       "after": "".join("%s %s\n" % (c["path"], c["after"]) for c in res["changes"])}
    module.exit_json(**out)


def _google(module):
    try:
        from cdsops.config import load_config
        from cdsops.providers.factory import access_provider
    except ImportError as exc:
        module.fail_json(msg="provider google needs the cdsops package on this host (management host venv): %s" % exc)
    try:
        report = access_provider(load_config(module.params["config"])).ensure(dry_run=module.check_mode)
    except Exception as exc:
        module.fail_json(msg="%s: %s" % (exc.__class__.__name__, exc), changed=False)
    changes = [{"kind": "access.changed", "username": None, "before": {"resource": c.resource, "roles": list(c.before)},
                "after": {"resource": c.resource, "roles": list(c.after)}} for c in report.changes if c.changed]
    out = dict(changed=report.changed, changes=changes, api_calls=report.api_calls)
    if module._diff:
        out["diff"] = report.diff()
    module.exit_json(**out)


def main():
    # provider, config and root: cdsops_reconcile.PROVIDER_OPTIONS
    provider_main(dict(
        path=dict(type="path", default="/srv/cdsdata"),
        group=dict(type="str", default="cdsdata"),
        create=dict(type="bool", default=True),
    ), local=_local, google=_google)


if __name__ == "__main__":
    main()
