"""Build the configured providers from ``cdsops.yml`` (the ``providers:`` key of ``Config.extra``).

Embedded default (no key at all)::

    providers:
      group: {kind: local}                       # Linux group = Config.data_group
      access: {kind: local, data_dir: /srv/cdsdata}
      email: {kind: smtp, host: 127.0.0.1, port: 25, sender: cds@localhost}

Production::

    providers:
      google:
        credentials_file: /etc/cdsops/sa.json   # service-account key (secret)
        subject: groups-admin@example.org        # Workspace admin for domain-wide delegation
      group: {kind: google, group: cds-data@example.org}
      access:
        kind: google
        group: cds-data@example.org
        project: course-project
        project_roles: [roles/bigquery.jobUser]
        datasets: [mimic]
        dataset_roles: [roles/bigquery.dataViewer]
      email: {kind: sendgrid, sender: cds@example.org, api_key_env: SENDGRID_API_KEY}

``CDSOPS_GOOGLE_EMULATOR`` points every Google client at the emulator instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cdsops.config import Config, ConfigError

__all__ = ["group_provider", "access_provider", "email_provider", "ledger_for_store"]

_KINDS = {"group": ("local", "google"), "access": ("local", "google"), "email": ("smtp", "sendgrid")}


def _section(cfg: Config, name: str) -> dict[str, Any]:
    providers = cfg.extra.get("providers") or {}
    if not isinstance(providers, Mapping):
        raise ConfigError("providers must be a mapping")
    sec = providers.get(name) or {}
    if not isinstance(sec, Mapping):
        raise ConfigError(f"providers.{name} must be a mapping")
    sec = dict(sec)
    default = _KINDS[name][0]
    kind = sec.setdefault("kind", default)
    if kind not in _KINDS[name]:
        raise ConfigError(f"providers.{name}.kind must be one of {', '.join(_KINDS[name])}, not {kind!r}")
    return sec


def _google(cfg: Config) -> dict[str, Any]:
    g = (cfg.extra.get("providers") or {}).get("google") or {}
    if not isinstance(g, Mapping):
        raise ConfigError("providers.google must be a mapping")
    return dict(g)


def _require(sec: Mapping[str, Any], name: str, key: str) -> Any:
    if not sec.get(key):
        raise ConfigError(f"providers.{name}.{key} is required for kind {sec['kind']}")
    return sec[key]


def group_provider(cfg: Config, *, root: str = "/"):
    from cdsops.providers import google, local

    sec = _section(cfg, "group")
    if sec["kind"] == "local":
        return local.LocalGroupProvider(sec.get("group", cfg.data_group), root=root)
    from cdsops.providers.retry import RateLimiter

    g = _google(cfg)
    qpm = sec.get("calls_per_minute", 2400)  # the Directory API's default per-user quota
    if not isinstance(qpm, int) or qpm < 0:
        raise ConfigError("providers.group.calls_per_minute must be a whole number, 0 for no pacing")
    svc = google.build_service("directory", credentials_file=g.get("credentials_file"), subject=g.get("subject"))
    try:
        return google.GoogleGroupProvider(_require(sec, "group", "group"), svc, rate_limiter=RateLimiter(qpm, 60.0) if qpm else None)
    except ValueError as exc:
        raise ConfigError(f"providers.group: {exc}") from None


def access_provider(cfg: Config):
    from cdsops.providers import google, local

    sec = _section(cfg, "access")
    if sec["kind"] == "local":
        return local.LocalDatasetAccess(sec.get("data_dir", "/srv/cdsdata"), group=sec.get("group", cfg.data_group))
    g = _google(cfg)
    project_roles = list(sec.get("project_roles", ["roles/bigquery.jobUser"]))
    datasets = list(sec.get("datasets", []))
    kw: dict[str, Any] = {"credentials_file": g.get("credentials_file")}
    try:
        return google.GoogleAccessProvider(
            _require(sec, "access", "group"),
            _require(sec, "access", "project"),
            project_roles=project_roles,
            datasets=datasets,
            dataset_roles=list(sec.get("dataset_roles", ["roles/bigquery.dataViewer"])),
            crm=google.build_service("crm", **kw) if project_roles else None,
            bigquery=google.build_service("bigquery", **kw) if datasets else None,
        )
    except ValueError as exc:
        raise ConfigError(f"providers.access: {exc}") from None


def _secret(sec: dict, name: str, default_env: str | None) -> str | None:
    """A secret of the email section: ``<name>_file`` (a path; relative paths are in
    ``$CDSOPS_CREDENTIALS_DIR``, where the management role writes the credential files, 0600)
    or else ``<name>_env`` (an environment variable). Never the YAML itself."""
    path = sec.get(f"{name}_file")
    if path:
        path = str(path)
        if not os.path.isabs(path):
            path = os.path.join(os.environ.get("CDSOPS_CREDENTIALS_DIR", "/etc/cdsops/credentials"), path)
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"providers.email.{name}_file: cannot read {path}: {exc.strerror or exc}") from None
        if not value:
            raise ConfigError(f"providers.email.{name}_file: {path} is empty")
        return value
    env = sec.get(f"{name}_env", default_env)
    return os.environ.get(env) if env else None


def email_provider(cfg: Config):
    from cdsops.providers import email

    sec = _section(cfg, "email")
    sender = sec.get("sender", "cds@localhost")
    if sec["kind"] == "smtp":
        port = sec.get("port", 25)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("providers.email.port must be a TCP port number")
        return email.SMTPEmailProvider(
            sec.get("host", "127.0.0.1"), port, sender,
            starttls=bool(sec.get("starttls", False)), use_ssl=bool(sec.get("ssl", False)),
            username=sec.get("username"),
            password=_secret(sec, "password", None),
        )
    key = _secret(sec, "api_key", "SENDGRID_API_KEY")
    if not key:
        raise ConfigError(f"providers.email: the SendGrid API key is read from ${sec.get('api_key_env', 'SENDGRID_API_KEY')}, "
                          "which is not set (or give api_key_file)")
    return email.SendGridEmailProvider(key, sender, host=sec.get("host", "https://api.sendgrid.com"))


def ledger_for_store(uri: str):
    """The notification ledger that lives next to the roster store ``uri``:
    ``bigquery://PROJECT/DATASET`` -> :class:`BigQueryLedger`, a DuckDB path -> :class:`DuckDBLedger`."""
    if not uri or not uri.strip():
        raise ConfigError("no roster store given for the notification ledger")
    if uri.startswith("bigquery://"):
        parts = uri[len("bigquery://"):].strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"a BigQuery store is bigquery://PROJECT/DATASET, got {uri!r}")
        from cdsops.providers.ledger_bigquery import BigQueryLedger

        return BigQueryLedger(parts[0], parts[1])
    from cdsops.providers.email import DuckDBLedger

    return DuckDBLedger(uri[len("duckdb:"):] if uri.startswith("duckdb:") else uri)
