"""The gate's configuration: one JSON file (``/etc/cdsops/gate.json``) naming the secrets' files.

Keys (``*`` required)::

    issuer*              OpenID Connect issuer, e.g. "https://accounts.google.com"
    client_id*           OAuth client id
    client_secret_file*  file holding the OAuth client secret
    cookie_key_file*     file holding the key that signs session cookies (>= 32 bytes)
    hash_key_file*       file holding the identity-hash key (the same key reconcile uses)
    public_url*          the IDE's external base URL, e.g. "https://rstudio.example.org";
                         the OAuth redirect URI is <public_url>/_cdsops/callback
    registration_url*    where unregistered and expired students register
    map_file             sign-in map (default /etc/cdsops/signin-map.json)
    state_dir            the gate's own state: revoked sessions, subject bindings
                         (default /var/lib/cdsops-gate; writable by the gate's user)
    listen               "127.0.0.1:9180" (loopback only)
    workers              gunicorn worker processes (default 4)
    session_hours        lifetime of a session cookie (default 8)
    course_name          shown on the pages (default "the course")
    support_contact      shown on the error pages (default "")
    cookie_secure        Secure flag on cookies (default true; only tests turn it off)
    allow_insecure_issuer  accept an http:// issuer on a loopback address (tests only)

Secret files are read as bytes with surrounding whitespace stripped.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["GateConfig", "GateConfigError", "load_gate_config", "read_secret"]

DEFAULT_MAP = "/etc/cdsops/signin-map.json"
DEFAULT_STATE_DIR = "/var/lib/cdsops-gate"


class GateConfigError(ValueError):
    """The gate's configuration is invalid; ``str()`` names the key and the problem."""


@dataclass(frozen=True, slots=True)
class GateConfig:
    issuer: str
    client_id: str
    client_secret_file: str
    cookie_key_file: str
    hash_key_file: str
    public_url: str
    registration_url: str
    map_file: str = DEFAULT_MAP
    state_dir: str = DEFAULT_STATE_DIR
    listen: str = "127.0.0.1:9180"
    workers: int = 4
    session_hours: float = 8
    course_name: str = "the course"
    support_contact: str = ""
    cookie_secure: bool = True
    allow_insecure_issuer: bool = False

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/_cdsops/callback"


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check(cfg: GateConfig) -> None:
    for key in ("issuer", "client_id", "client_secret_file", "cookie_key_file", "hash_key_file",
                "public_url", "registration_url", "map_file", "state_dir", "course_name"):
        if not isinstance(getattr(cfg, key), str) or not getattr(cfg, key):
            raise GateConfigError(f"{key} must be a non-empty string")
    if not os.path.isabs(cfg.state_dir):
        raise GateConfigError("state_dir must be an absolute path")
    issuer = urlsplit(cfg.issuer)
    if issuer.scheme != "https":  # noqa: SIM102  two separate conditions read clearer
        if not (issuer.scheme == "http" and cfg.allow_insecure_issuer and _is_loopback(issuer.hostname)):
            raise GateConfigError("issuer must be an https:// URL (http:// only on loopback with allow_insecure_issuer)")
    if issuer.query or issuer.fragment:
        raise GateConfigError("issuer must not carry a query or fragment")
    public = urlsplit(cfg.public_url)
    if public.scheme != "https" or not public.hostname or public.path not in ("", "/"):
        raise GateConfigError("public_url must be https://<host>[:port] without a path")
    reg = urlsplit(cfg.registration_url)
    if reg.scheme not in ("https", "http") or not reg.hostname:
        raise GateConfigError("registration_url must be an http(s):// URL")
    if ":" not in cfg.listen or not _is_loopback(cfg.host):
        raise GateConfigError("listen must be <loopback address>:<port>, e.g. 127.0.0.1:9180")
    try:
        port = cfg.port
    except ValueError:
        raise GateConfigError("listen must end with a port number") from None
    if not 1 <= port <= 65535:
        raise GateConfigError("listen port must be between 1 and 65535")
    if not isinstance(cfg.workers, int) or isinstance(cfg.workers, bool) or not 1 <= cfg.workers <= 64:
        raise GateConfigError("workers must be a whole number between 1 and 64")
    if not isinstance(cfg.session_hours, (int, float)) or isinstance(cfg.session_hours, bool) \
            or not 0 < cfg.session_hours <= 24 * 14:
        raise GateConfigError("session_hours must be more than 0 and at most 336 (two weeks)")
    for key in ("cookie_secure", "allow_insecure_issuer"):
        if not isinstance(getattr(cfg, key), bool):
            raise GateConfigError(f"{key} must be true or false")
    if not isinstance(cfg.support_contact, str):
        raise GateConfigError("support_contact must be a string")


def config_from_mapping(data: object) -> GateConfig:
    if not isinstance(data, dict):
        raise GateConfigError("the gate configuration must be a JSON object")
    known = set(GateConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise GateConfigError(f"unknown key(s): {', '.join(unknown)}")
    try:
        cfg = GateConfig(**data)
    except TypeError as exc:
        missing = sorted(k for k in ("issuer", "client_id", "client_secret_file", "cookie_key_file",
                                     "hash_key_file", "public_url", "registration_url") if k not in data)
        raise GateConfigError(f"missing key(s): {', '.join(missing)}" if missing else str(exc)) from None
    _check(cfg)
    return cfg


def load_gate_config(path: str | os.PathLike[str]) -> GateConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise GateConfigError(f"cannot read gate configuration {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GateConfigError(f"gate configuration {path} is not valid JSON: {exc}") from None
    try:
        return config_from_mapping(data)
    except GateConfigError as exc:
        raise GateConfigError(f"gate configuration {path}: {exc}") from None


def read_secret(path: str, what: str, min_length: int = 1) -> bytes:
    try:
        with open(path, "rb") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise GateConfigError(f"cannot read the {what} from {path}: {exc.strerror or exc}") from None
    if len(value) < min_length:
        raise GateConfigError(f"the {what} in {path} must be at least {min_length} bytes")
    return value
