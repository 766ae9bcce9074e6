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
    description:
      - Roster store (DuckDB path, relative to this file, or bigquery://PROJECT/DATASET); else C($CDSOPS_ROSTER).
      - C(cdsops reconcile) passes the run's store as C($CDSOPS_ROSTER), so its inventory leaves this option out
        (the runner refuses an inventory file that sets it).
    type: str
    env: [{name: CDSOPS_ROSTER}]
  config:
    description: cdsops configuration file (relative to this file); else C($CDSOPS_CONFIG), which C(cdsops reconcile) sets.
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
    description: File holding the sign-in hash key (management side); without it (and without C(signin_key_file) in
      the configuration) the sign-in map step is off. C($CDSOPS_SIGNIN_KEY).
    type: str
    env: [{name: CDSOPS_SIGNIN_KEY}]
  email_outbox:
    description: Directory the welcome emails are written to instead of being sent (tests, the demo); else
      C(email_outbox) of the configuration. C($CDSOPS_EMAIL_OUTBOX).
    type: str
    env: [{name: CDSOPS_EMAIL_OUTBOX}]
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
# inventory/local/cdsops.yml (store and config come from $CDSOPS_ROSTER and $CDSOPS_CONFIG)
plugin: cdsops.platform.cdsops_roster
compute_vars:
  ansible_connection: containers.podman.podman
"""

import os
import sys

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "cdsops.platform.cdsops_roster"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("cdsops.yml", "cdsops.yaml", ".cdsops.yml", ".cdsops.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        query = self._query_options(os.path.dirname(os.path.abspath(path)))
        cache_key = self.get_cache_key(path) + "-" + "|".join(str(v) for v in query.values())
        use_cache = self.get_option("cache")
        data = None
        if use_cache and cache:
            data = self._cache.get(cache_key)
        if data is None:
            data = self._query(query)
            if use_cache:
                self._cache[cache_key] = data
        self._populate(data)

    def _query_options(self, base):
        """The options that decide the plan; paths relative to the inventory file."""
        from cdsops.inventory import relative_to

        store = relative_to(base, self.get_option("store"))
        if not store:
            raise AnsibleParserError("cdsops_roster: no store configured (option store or $CDSOPS_ROSTER)")
        return {
            "store": store,
            "config": relative_to(base, self.get_option("config")),
            "signin_key": relative_to(base, self.get_option("signin_key")),
            "email_outbox": self.get_option("email_outbox"),
            "now": self.get_option("now"),
            "allow_mass_revoke": bool(self.get_option("allow_mass_revoke")),
        }

    def _query(self, query):
        """Ask cdsops for the host variables (it computes the plan and shapes it)."""
        from cdsops.inventory import build
        from cdsops.times import parse_iso, utcnow

        try:
            now = parse_iso(query["now"]) if query["now"] else utcnow()
            _cfg, compute, mgmt, common = build(query["store"], query["config"], now, allow_mass_revoke=query["allow_mass_revoke"],
                                                signin_key=query["signin_key"], email_outbox=query["email_outbox"])
        except Exception as exc:
            raise AnsibleParserError("cdsops_roster: %s: %s" % (exc.__class__.__name__, exc)) from exc
        return {"compute": compute, "management": mgmt, "common": common}

    def _populate(self, data):
        inv = self.inventory
        cgroup = self.get_option("compute_group")
        inv.add_group(cgroup)
        inv.add_group("management")
        for k, v in data["common"].items():
            inv.set_variable("all", k, v)
        extra = self.get_option("host_vars") or {}
        for host, hv in data["compute"].items():
            inv.add_host(host, group=cgroup)
            self._set_variables(host, self.get_option("compute_vars"), extra.get(host), hv)
        m = self.get_option("management_host")
        inv.add_host(m, group="management")
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        self._set_variables(m, local, self.get_option("management_vars"), data["management"])

    def _set_variables(self, host, *layers):
        """Set the variables (later layers win), then compose, groups and keyed_groups."""
        for layer in layers:
            for k, v in (layer or {}).items():
                self.inventory.set_variable(host, k, v)
        allvars = self.inventory.get_host(host).get_vars()
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), allvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), allvars, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), allvars, host, strict=strict)
