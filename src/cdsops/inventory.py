"""The plan as Ansible host variables: what the ``cdsops_roster`` inventory plugin exposes.

The plugin only reads its options, checks its cache and populates; :func:`build` computes the
plan (the same :func:`cdsops.service.plan_from_store` as ``cdsops plan``) and the small pure
functions below shape it into variables. A compute host gets usernames, uids, statuses, keyed
hashes and id ranges, never an email, an identity or a name; the management host gets the due
notifications and, only with the Google group provider, the active identities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .config import Config, load_config
from .errors import CdsopsError
from .identity import identity_hash
from .plan import Plan
from .roster import Student
from .service import plan_from_store
from .store import open_store
from .times import iso

__all__ = ["InventoryError", "HostVars", "build", "host_vars", "relative_to", "read_signin_key", "MIN_KEY_BYTES"]

MIN_KEY_BYTES = 16


class InventoryError(CdsopsError):
    """The inventory cannot be built as configured."""


@dataclass(frozen=True)
class HostVars:
    """Variables per compute host, of the management host, and of every host (``all``)."""

    compute: dict[str, dict[str, Any]]
    management: dict[str, Any]
    common: dict[str, Any]


def relative_to(base: str, path: str | None) -> str | None:
    """``path`` relative to the directory ``base`` (absolute paths, URIs and empty values as is)."""
    if not path or "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def read_signin_key(path: str) -> bytes:
    with open(path, "rb") as fh:
        key = fh.read().strip()
    if len(key) < MIN_KEY_BYTES:
        raise InventoryError(f"sign-in key {path} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def build(
    store_uri: str,
    config_path: str | None,
    now: datetime,
    *,
    allow_mass_revoke: bool = False,
    signin_key: str | None = None,
    email_outbox: str | None = None,
) -> tuple[Config, dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Compute the per-host variables: (config, compute: {host: vars}, management vars, common vars).
    ``signin_key``: the key file (else ``signin_key_file:`` of the configuration); ``email_outbox``
    overrides ``email_outbox:`` of the configuration."""
    cfg = load_config(config_path)
    config_dir = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
    if not signin_key and cfg.extra.get("signin_key_file"):
        signin_key = relative_to(config_dir, cfg.extra["signin_key_file"])
    key = read_signin_key(signin_key) if signin_key else None
    plan, students = plan_from_store(open_store(store_uri), cfg, now)
    outbox = email_outbox or relative_to(config_dir, cfg.extra.get("email_outbox") or "")
    hv = host_vars(plan, students, cfg, key, allow_mass_revoke=allow_mass_revoke)
    hv.management.update({"cdsops_store": store_uri, "cdsops_config_file": config_path or "", "cdsops_email_outbox": outbox})
    return cfg, hv.compute, hv.management, hv.common


def host_vars(plan: Plan, students: Sequence[Student], cfg: Config, key: bytes | None, *, allow_mass_revoke: bool = False) -> HostVars:
    """The plan shaped into host variables (pure)."""
    compute, unplaced = compute_host_vars(plan, students, cfg, key)
    return HostVars(compute, management_vars(plan, cfg, unplaced), common_vars(plan, cfg, key is not None, allow_mass_revoke))


def providers_of(cfg: Config) -> tuple[str, str, str]:
    """(group provider kind, access provider kind, data directory) of the configuration."""
    providers = cfg.extra.get("providers") or {}
    group = (providers.get("group") or {}).get("kind") or "local"
    access = providers.get("access") or {}
    return group, access.get("kind") or "local", access.get("data_dir") or "/srv/cdsdata"


def guard_vars(plan: Plan, allow_mass_revoke: bool) -> dict[str, Any]:
    """``cdsops_guard``: tripped (unless overridden), why, and the counts."""
    g = plan.guard
    return {**g.to_dict(), "tripped": g.tripped and not allow_mass_revoke, "message": g.message() if g.tripped else "",
            "overridden": g.tripped and allow_mass_revoke}


def common_vars(plan: Plan, cfg: Config, signin_enabled: bool, allow_mass_revoke: bool) -> dict[str, Any]:
    group, access, _data_dir = providers_of(cfg)
    return {
        "cdsops_guard": guard_vars(plan, allow_mass_revoke),
        "cdsops_plan_now": iso(plan.now),
        "cdsops_group_provider": group,
        "cdsops_access_provider": access,
        "cdsops_signin_map_enabled": signin_enabled,
    }


def _empty_compute_vars(cfg: Config) -> dict[str, Any]:
    _group, _access, data_dir = providers_of(cfg)
    return {
        "cdsops_accounts": [], "cdsops_members": [], "cdsops_signin_entries": [], "cdsops_signin_expired": [],
        "cdsops_revoking": 0, "cdsops_uid_min": cfg.min_uid, "cdsops_uid_max": cfg.max_uid,
        "cdsops_username_pattern": f"^{cfg.username_prefix}[0-9]{{{cfg.username_width}}}$",
        "cdsops_data_group": cfg.data_group, "cdsops_data_group_gid": cfg.data_group_gid, "cdsops_data_dir": data_dir,
    }


def compute_host_vars(
    plan: Plan, students: Sequence[Student], cfg: Config, key: bytes | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """Variables of each compute host (usernames, uids, statuses, keyed hashes only), and the
    number of accounts pinned to a host the configuration no longer lists."""
    compute = {h: _empty_compute_vars(cfg) for h in cfg.compute_hosts}
    for a in plan.revocations:
        if a.host in compute:
            compute[a.host]["cdsops_revoking"] += 1
    for m in plan.members:
        hv = compute.get(m.host)
        if hv is not None:
            hv["cdsops_members"].append(m.username)
            if key is not None:
                hv["cdsops_signin_entries"].append(
                    {"hash": identity_hash(m.identity, key), "username": m.username, "ready_at": iso(m.ready_at)})
    identities = {s.student_id: s.identity for s in students}
    active = {m.student_id for m in plan.members}
    unplaced = 0
    for a in plan.accounts:
        hv = compute.get(a.host)
        if hv is None:
            unplaced += 1
            continue
        hv["cdsops_accounts"].append({"username": a.username, "uid": a.uid, "status": a.status})
        if key is not None and a.student_id not in active:
            hv["cdsops_signin_expired"].append(identity_hash(identities[a.student_id], key))
    return compute, unplaced


def management_vars(plan: Plan, cfg: Config, unplaced: int) -> dict[str, Any]:
    """Variables of the management host: due notifications (ids and usernames); the active
    identities only when the group provider is Google (it adds them to the Google Group)."""
    out: dict[str, Any] = {
        "cdsops_notifications": [n.to_dict() for n in plan.notifications],
        "cdsops_revoking": len(plan.revocations),
        "cdsops_username_prefix": cfg.username_prefix,
        "cdsops_unplaced_accounts": unplaced,
    }
    if providers_of(cfg)[0] == "google":
        out["cdsops_google_identities"] = [m.identity for m in plan.members]
        out["cdsops_google_usernames"] = [m.username for m in plan.members]
    return out

