# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""Dynamic inventory: the cdsops plan as host variables."""

from __future__ import annotations

DOCUMENTATION = r"""
name: cdsops_roster
short_description: The cdsops roster and plan as an inventory (compute hosts + the management host)
description:
  - Reads the roster store and the cdsops configuration through the cdsops package, computes the
    plan and exposes the compute hosts (C(compute_hosts) of the configuration, group I(compute_group))
    and the management host (I(management_host), local connection, group C(management)).
  - Each host gets only what it needs. A compute host gets C(cdsops_accounts) (username, uid, status
    of the students pinned to it), C(cdsops_members) (its active usernames), the sign-in map entries
    (keyed hashes, usernames, ready_at) when a hash key is configured, and the id ranges, never an
    email, an identity or a name. The management host gets the due notifications (ids and usernames)
    and, only when the group provider is Google, the active identities.
  - When the plan's guard trips (and it is not overridden), C(cdsops_guard.tripped) is true on every
    host and C(playbooks/reconcile.yml) fails at its first task, before any change.
author: cdsops contributors (@cdsops)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Token that marks this file as a cdsops_roster inventory.
    required: true
    choices: [cdsops.platform.cdsops_roster]
  store:
    description: Roster store (DuckDB path, relative to this file, or bigquery://PROJECT/DATASET). C($CDSOPS_ROSTER) overrides it.
    type: str
    env: [{name: CDSOPS_ROSTER}]
  config:
    description: cdsops configuration file (relative to this file). C($CDSOPS_CONFIG) overrides.
    type: str
    env: [{name: CDSOPS_CONFIG}]
  now:
    description: Evaluate the plan at this ISO 8601 time (tests). C($CDSOPS_NOW).
    type: str
    env: [{name: CDSOPS_NOW}]
  allow_mass_revoke:
    description: Override the revocation guard. C($CDSOPS_ALLOW_MASS_REVOKE).
    type: bool
    default: false
    env: [{name: CDSOPS_ALLOW_MASS_REVOKE}]
  signin_key:
    description: File holding the sign-in hash key (management side); without it the sign-in map step is off.
      C($CDSOPS_SIGNIN_KEY).
    type: str
    env: [{name: CDSOPS_SIGNIN_KEY}]
  compute_group:
    description: Inventory group of the compute hosts.
    type: str
    default: compute
  compute_vars:
    description: Variables given to every compute host (connection settings, e.g. C(ansible_connection)).
    type: dict
    default: {}
  host_vars:
    description: Extra variables per compute host name.
    type: dict
    default: {}
  management_host:
    description: Name of the management host (always a local connection with this Python).
    type: str
    default: localhost
  management_vars:
    description: Variables given to the management host.
    type: dict
    default: {}
"""

EXAMPLES = r"""
# inventory/local/cdsops.yml
plugin: cdsops.platform.cdsops_roster
store: ../../var/demo/roster.duckdb
config: cdsops-config.yml
compute_vars:
  ansible_connection: containers.podman.podman
"""

import os
import sys
from datetime import datetime, timezone

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable


def _parse_now(value):
    if not value:
        return datetime.now(timezone.utc)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _rel(base, path):
    if not path or "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def build(store_uri, config_path, now, *, allow_mass_revoke=False, signin_key=None):
    """Compute the per-host variables. Returns (config, compute: {host: vars}, management: vars, common: vars)."""
    from cdsops.config import load_config
    from cdsops.identity import identity_hash
    from cdsops.plan import make_plan
    from cdsops.roster import iso
    from cdsops.store import open_store

    cfg = load_config(config_path)
    store = open_store(store_uri)
    snap = store.load()
    sent = store.sent_notifications() if hasattr(store, "sent_notifications") else frozenset()
    plan = make_plan(snap.students, cfg, now, since=snap.since, sent=sent)
    key = None
    if not signin_key and cfg.extra.get("signin_key_file"):
        signin_key = _rel(os.path.dirname(os.path.abspath(config_path)), cfg.extra["signin_key_file"])
    if signin_key:
        with open(signin_key, "rb") as fh:
            key = fh.read().strip()
        if len(key) < 16:
            raise AnsibleParserError("sign-in key %s is shorter than 16 bytes" % signin_key)
    providers = cfg.extra.get("providers") or {}
    group_kind = ((providers.get("group") or {}).get("kind")) or "local"
    access_kind = ((providers.get("access") or {}).get("kind")) or "local"
    data_dir = ((providers.get("access") or {}).get("data_dir")) or "/srv/cdsdata"
    tripped = plan.guard.tripped and not allow_mass_revoke
    guard = {"tripped": tripped, "message": plan.guard.message() if plan.guard.tripped else "",
             "overridden": plan.guard.tripped and allow_mass_revoke, **plan.guard.to_dict()}
    guard["tripped"] = tripped
    common = {
        "cdsops_guard": guard,
        "cdsops_plan_now": iso(plan.now),
        "cdsops_group_provider": group_kind,
        "cdsops_access_provider": access_kind,
        "cdsops_signin_map_enabled": key is not None,
    }
    compute = {h: {"cdsops_accounts": [], "cdsops_members": [], "cdsops_signin_entries": [], "cdsops_signin_expired": [],
                   "cdsops_revoking": 0}
               for h in cfg.compute_hosts}
    for a in plan.revocations:
        if a.host in compute:
            compute[a.host]["cdsops_revoking"] += 1
    identities = {s.student_id: s.identity for s in snap.students}
    unplaced = 0
    active_ids = set()
    for m in plan.members:
        active_ids.add(m.student_id)
        hv = compute.get(m.host)
        if hv is None:
            continue
        hv["cdsops_members"].append(m.username)
        if key is not None:
            hv["cdsops_signin_entries"].append({"hash": identity_hash(m.identity, key), "username": m.username, "ready_at": iso(m.ready_at)})
    for a in plan.accounts:
        hv = compute.get(a.host)
        if hv is None:
            unplaced += 1
            continue
        hv["cdsops_accounts"].append({"username": a.username, "uid": a.uid, "status": a.status})
        if key is not None and a.student_id not in active_ids:
            hv["cdsops_signin_expired"].append(identity_hash(identities[a.student_id], key))
    for hv in compute.values():
        hv.update({
            "cdsops_uid_min": cfg.min_uid,
            "cdsops_uid_max": cfg.max_uid,
            "cdsops_username_pattern": "^%s[0-9]{%d}$" % (cfg.username_prefix, cfg.username_width),
            "cdsops_data_group": cfg.data_group,
            "cdsops_data_group_gid": cfg.data_group_gid,
            "cdsops_data_dir": data_dir,
        })
    mgmt = {
        "cdsops_store": store_uri,
        "cdsops_config_file": config_path or "",
        "cdsops_notifications": [n.to_dict() for n in plan.notifications],
        "cdsops_revoking": len(plan.revocations),
        "cdsops_username_prefix": cfg.username_prefix,
        "cdsops_unplaced_accounts": unplaced,
        "cdsops_email_outbox": os.environ.get("CDSOPS_EMAIL_OUTBOX")
        or _rel(os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd(), cfg.extra.get("email_outbox") or ""),
    }
    if group_kind == "google":
        mgmt["cdsops_google_identities"] = [m.identity for m in plan.members]
        mgmt["cdsops_google_usernames"] = [m.username for m in plan.members]
    return cfg, compute, mgmt, common


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "cdsops.platform.cdsops_roster"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("cdsops.yml", "cdsops.yaml", ".cdsops.yml", ".cdsops.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        base = os.path.dirname(os.path.abspath(path))
        env = os.environ
        # the environment wins over the file: `cdsops reconcile` passes the run's store and config
        store = env.get("CDSOPS_ROSTER") or _rel(base, self.get_option("store"))
        if not store:
            raise AnsibleParserError("cdsops_roster: no store configured (option store or $CDSOPS_ROSTER)")
        config = env.get("CDSOPS_CONFIG") or _rel(base, self.get_option("config"))
        signin_key = env.get("CDSOPS_SIGNIN_KEY") or _rel(base, self.get_option("signin_key"))
        now = env.get("CDSOPS_NOW") or self.get_option("now")
        allow = env.get("CDSOPS_ALLOW_MASS_REVOKE", "").lower() in ("1", "true", "yes") or bool(self.get_option("allow_mass_revoke"))
        cache_key = self.get_cache_key(path) + "-" + "|".join(str(x) for x in (store, config, signin_key, now, allow))
        use_cache = self.get_option("cache") and cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                data = None
        if data is None:
            try:
                _cfg, compute, mgmt, common = build(store, config, _parse_now(now), allow_mass_revoke=allow, signin_key=signin_key)
            except AnsibleParserError:
                raise
            except Exception as exc:
                raise AnsibleParserError("cdsops_roster: %s: %s" % (exc.__class__.__name__, exc)) from exc
            data = {"compute": compute, "management": mgmt, "common": common}
            if self.get_option("cache"):
                self._cache[cache_key] = data
        self._populate(data)

    def _populate(self, data):
        inv = self.inventory
        cgroup = self.get_option("compute_group")
        inv.add_group(cgroup)
        inv.add_group("management")
        for k, v in data["common"].items():
            inv.set_variable("all", k, v)
        extra = self.get_option("host_vars") or {}
        strict = self.get_option("strict")
        for host, hv in data["compute"].items():
            inv.add_host(host, group=cgroup)
            for k, v in (self.get_option("compute_vars") or {}).items():
                inv.set_variable(host, k, v)
            for k, v in (extra.get(host) or {}).items():
                inv.set_variable(host, k, v)
            for k, v in hv.items():
                inv.set_variable(host, k, v)
            allvars = inv.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), allvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), allvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), allvars, host, strict=strict)
        m = self.get_option("management_host")
        inv.add_host(m, group="management")
        inv.set_variable(m, "ansible_connection", "local")
        inv.set_variable(m, "ansible_python_interpreter", sys.executable)
        for k, v in (self.get_option("management_vars") or {}).items():
            inv.set_variable(m, k, v)
        for k, v in data["management"].items():
            inv.set_variable(m, k, v)
