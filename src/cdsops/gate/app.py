"""The gate as a WSGI application (Flask for the sign-in flow, a bare fast path for nginx).

The auth subrequest (``/_cdsops/auth``) is answered before Flask sees the request: one
``stat`` of the map, one HMAC, a dict lookup and one ``stat`` for a revoked session.
Everything else is the Flask Blueprint in :mod:`cdsops.gate.views`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable

from flask import Flask

from . import LOGIN_COOKIE, PREFIX, USERNAME_HEADER
from . import session as sessions
from .audit import AuditLog
from .config import GateConfig, GateConfigError, read_secret
from .context import Gate
from .oidc import register_client
from .server_state import RevokedSessions, StateError, SubjectBindings, key_id
from .signin_map import MapWatcher
from .views import EXTENSION, MAX_PENDING_LOGINS, blueprint, safe_return_path

__all__ = ["GateApp", "create_app", "safe_return_path", "MAX_PENDING_LOGINS"]


class GateApp:
    """WSGI entry point: ``/_cdsops/auth`` fast path, everything else to Flask."""

    def __init__(self, gate: Gate, flask_app: Flask) -> None:
        self.gate = gate
        self.flask_app = flask_app
        self.cfg = gate.cfg
        self.watcher = gate.watcher
        self.clock = gate.clock

    def check_session(self, cookie_header: str) -> str | None:
        """The username for a valid session cookie of a student still ready in the map, else None."""
        sess = self.gate.current_session(cookie_header)
        return sess.username if sess else None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PREFIX + "/auth":
            username = self.check_session(environ.get("HTTP_COOKIE", ""))
            if username is None:
                start_response("401 Unauthorized", [("Content-Length", "0"), ("Cache-Control", "no-store")])
            else:
                start_response("200 OK", [("Content-Length", "0"), (USERNAME_HEADER, username)])
            return [b""]
        return self.flask_app(environ, start_response)


def _flask_app(cfg: GateConfig, cookie_master: bytes) -> Flask:
    app = Flask("cdsops.gate")
    app.config.update(
        SECRET_KEY=sessions.derive_key(cookie_master, "flask-login-state"),
        SESSION_COOKIE_NAME=LOGIN_COOKIE,
        SESSION_COOKIE_SECURE=cfg.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH=PREFIX + "/",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.register_blueprint(blueprint)
    return app


def _map_watcher(cfg: GateConfig) -> MapWatcher:
    def map_error(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    watcher = MapWatcher(cfg.map_file, on_error=map_error, background=True)
    watcher.get()
    return watcher


def create_app(cfg: GateConfig, *, audit: AuditLog | None = None,
               clock: Callable[[], float] = time.time) -> GateApp:
    """Build the gate; reads the three secrets and opens the state directory now, so a bad
    deployment fails at start."""
    client_secret = read_secret(cfg.client_secret_file, "OAuth client secret").decode("utf-8")
    cookie_master = read_secret(cfg.cookie_key_file, "cookie key", min_length=32)
    hash_key = read_secret(cfg.hash_key_file, "identity-hash key", min_length=16)
    try:
        revoked = RevokedSessions(cfg.state_dir)
        subjects = SubjectBindings(cfg.state_dir, key_id(hash_key))
    except StateError as exc:
        raise GateConfigError(str(exc)) from None
    revoked.sweep(clock())
    if cfg.allow_insecure_issuer:  # loopback http issuer, checked by the config (tests only)
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    app = _flask_app(cfg, cookie_master)
    gate = Gate(cfg=cfg, oidc=register_client(app, cfg, client_secret),
                cookie_key=sessions.derive_key(cookie_master, "session"), hash_key=hash_key,
                watcher=_map_watcher(cfg), revoked=revoked, subjects=subjects,
                audit=audit or AuditLog(), clock=clock)
    app.extensions[EXTENSION] = gate
    return GateApp(gate, app)
