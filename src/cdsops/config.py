"""Configuration of a cdsops deployment (one YAML file, every key optional).

Example ``cdsops.yml``::

    access_days: 182            # access lasts this long after each signed agreement
    max_revoke_fraction: 0.1    # guard: refuse a plan revoking more than this share
    username_prefix: s          # usernames are prefix + zero-padded student id
    username_width: 6
    uid_base: 200000            # uid = uid_base + student id
    data_group: cdsdata         # the group that holds read access to the datasets
    data_group_gid: 199999
    compute_hosts: [compute]    # students are pinned to one of these, least loaded first
    provisioning_minutes: 15    # a registration younger than this is "being prepared"
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CdsopsError

__all__ = ["Config", "ConfigError", "load_config"]

_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]*\Z")
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class ConfigError(CdsopsError, ValueError):
    """The configuration is invalid; ``str()`` names the key and the problem."""


@dataclass(frozen=True, slots=True)
class Config:
    access_days: int = 182
    max_revoke_fraction: float = 0.1
    username_prefix: str = "s"
    username_width: int = 6
    uid_base: int = 200000
    data_group: str = "cdsdata"
    data_group_gid: int = 199999
    compute_hosts: tuple[str, ...] = ("compute",)
    provisioning_minutes: int = 15
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.access_days, int) or self.access_days < 1:
            raise ConfigError("access_days must be a positive whole number of days")
        if not isinstance(self.max_revoke_fraction, (int, float)) or not 0 <= self.max_revoke_fraction <= 1:
            raise ConfigError("max_revoke_fraction must be between 0 and 1")
        if not isinstance(self.username_prefix, str) or not _NAME_RE.match(self.username_prefix):
            raise ConfigError("username_prefix must start with a lower-case letter or '_' and use [a-z0-9_-]")
        if not isinstance(self.username_width, int) or not 1 <= self.username_width <= 12:
            raise ConfigError("username_width must be between 1 and 12")
        if len(self.username_prefix) + self.username_width > 32:
            raise ConfigError("username_prefix plus username_width must fit the 32-character Linux limit")
        if not isinstance(self.uid_base, int) or not 1000 <= self.uid_base <= 2**31 - 10**self.username_width:
            raise ConfigError("uid_base must be at least 1000 and leave room for every student id below 2^31")
        if not isinstance(self.data_group, str) or not _NAME_RE.match(self.data_group):
            raise ConfigError("data_group must be a valid Linux group name")
        if not isinstance(self.data_group_gid, int) or self.data_group_gid < 1000:
            raise ConfigError("data_group_gid must be at least 1000")
        if self.uid_base <= self.data_group_gid <= self.max_uid:
            raise ConfigError("data_group_gid must lie outside the student uid range")
        hosts = self.compute_hosts
        if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and _HOST_RE.match(h) for h in hosts):
            raise ConfigError("compute_hosts must be a non-empty list of host names")
        if len(set(hosts)) != len(hosts):
            raise ConfigError("compute_hosts lists a host twice")
        if not isinstance(self.provisioning_minutes, int) or self.provisioning_minutes < 0:
            raise ConfigError("provisioning_minutes must be a whole number of minutes, 0 or more")

    @property
    def max_student_id(self) -> int:
        return 10**self.username_width - 1

    @property
    def min_uid(self) -> int:
        return self.uid_base + 1

    @property
    def max_uid(self) -> int:
        return self.uid_base + self.max_student_id

    def username(self, student_id: int) -> str:
        return f"{self.username_prefix}{student_id:0{self.username_width}d}"

    def uid(self, student_id: int) -> int:
        return self.uid_base + student_id

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["compute_hosts"] = list(self.compute_hosts)
        out.update(self.extra)
        return out


_FIELDS = {f.name for f in dataclasses.fields(Config)} - {"extra"}


def config_from_mapping(data: dict[str, Any] | None) -> Config:
    data = dict(data or {})
    known = {k: v for k, v in data.items() if k in _FIELDS}
    extra = {k: v for k, v in data.items() if k not in _FIELDS}
    if "compute_hosts" in known and isinstance(known["compute_hosts"], list):
        known["compute_hosts"] = tuple(known["compute_hosts"])
    return Config(**known, extra=extra)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration from ``path`` (or ``$CDSOPS_CONFIG``); defaults when neither is set."""
    import yaml

    path = path or os.environ.get("CDSOPS_CONFIG")
    if not path:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"configuration {p} must be a mapping of keys to values")
    try:
        return config_from_mapping(data)
    except TypeError as exc:
        raise ConfigError(f"configuration {p}: {exc}") from exc
