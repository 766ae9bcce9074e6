"""The gate as a WSGI application (Flask for the sign-in flow, a bare fast path for nginx).

The auth subrequest (``/_cdsops/auth``) is answered before Flask sees the request: one
``stat`` of the map, one HMAC and a dict lookup. Everything else is Flask + Authlib.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Iterable
from urllib.parse import parse_qs, quote, urlsplit

from flask import Flask, make_response, redirect, request, session

from cdsops.identity import InvalidEmail, canonicalize, identity_hash

from . import LOGIN_COOKIE, PREFIX, SESSION_COOKIE, USERNAME_HEADER
from . import session as sessions
from .audit import AuditLog
from .config import GateConfig, read_secret
from .pages import render
from .signin_map import MapWatcher, decide

__all__ = ["GateApp", "create_app", "safe_return_path"]

_SAFE_PATH_RE = re.compile(r"/(?![/\\])[\x21-\x7e]*\Z")
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
MAX_PENDING_LOGINS = 4  # sign-ins under way in one browser (each ~300 bytes of the login cookie)


def _backport_single_key_lookup() -> None:
    """Authlib >= 1.3 takes the only key of a JWKS for an ID token without ``kid``; Debian 12's
    Authlib 1.2 refuses it. Give 1.2 the same rule (Google always sends ``kid``, so this only
    matters for issuers with one unnamed key, like the test issuer)."""
    import authlib

    if tuple(int(x) for x in re.findall(r"\d+", authlib.__version__)[:2]) >= (1, 3):
        return  # the rule is upstream
    from authlib.jose.rfc7517.key_set import KeySet

    original = KeySet.find_by_kid
    if getattr(original, "_cdsops_backport", False):
        return

    def find_by_kid(self, kid, *args, **kwargs):
        if kid is None and len(self.keys) == 1:
            return self.keys[0]
        return original(self, kid, *args, **kwargs)

    find_by_kid._cdsops_backport = True  # type: ignore[attr-defined]
    KeySet.find_by_kid = find_by_kid


def safe_return_path(value: str | None) -> str:
    """Where to send the browser after sign-in: a local path only (no open redirect)."""
    if value and len(value) <= 2048 and _SAFE_PATH_RE.match(value) and not value.startswith(PREFIX + "/"):
        return value
    return "/"


def _cookie_value(cookie_header: str, name: str) -> str | None:
    prefix = name + "="
    for part in cookie_header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            return part[len(prefix):].strip('"')
    return None


class GateApp:
    """WSGI entry point: ``/_cdsops/auth`` fast path, everything else to Flask."""

    def __init__(self, cfg: GateConfig, flask_app: Flask, watcher: MapWatcher, cookie_key: bytes,
                 clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.flask_app = flask_app
        self.watcher = watcher
        self.cookie_key = cookie_key
        self.clock = clock

    def check_session(self, cookie_header: str) -> str | None:
        """The username for a valid session cookie of a student still ready in the map, else None."""
        now = self.clock()
        try:
            sess = sessions.verify(self.cookie_key, _cookie_value(cookie_header, SESSION_COOKIE), now)
        except sessions.SessionError:
            return None
        entry = self.watcher.get().active.get(sess.hash)
        if entry is None or entry.username != sess.username or entry.ready_at > now:
            return None
        return sess.username

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PREFIX + "/auth":
            username = self.check_session(environ.get("HTTP_COOKIE", ""))
            if username is None:
                start_response("401 Unauthorized", [("Content-Length", "0"), ("Cache-Control", "no-store")])
            else:
                start_response("200 OK", [("Content-Length", "0"), (USERNAME_HEADER, username)])
            return [b""]
        return self.flask_app(environ, start_response)


def create_app(cfg: GateConfig, *, audit: AuditLog | None = None,
               clock: Callable[[], float] = time.time) -> GateApp:
    """Build the gate; reads the three secrets now so a bad deployment fails at start."""
    from authlib.integrations.flask_client import OAuth

    _backport_single_key_lookup()

    client_secret = read_secret(cfg.client_secret_file, "OAuth client secret").decode("utf-8")
    cookie_master = read_secret(cfg.cookie_key_file, "cookie key", min_length=32)
    hash_key = read_secret(cfg.hash_key_file, "identity-hash key", min_length=16)
    cookie_key = sessions.derive_key(cookie_master, "session")
    audit = audit or AuditLog()
    if cfg.allow_insecure_issuer:  # loopback http issuer, checked by the config (tests only)
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

    def map_error(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    watcher = MapWatcher(cfg.map_file, on_error=map_error, background=True)
    watcher.get()

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
    issuers = [cfg.issuer.rstrip("/")]
    if issuers[0] in _GOOGLE_ISSUERS:
        issuers = list(_GOOGLE_ISSUERS)  # Google's ID tokens use either form
    oauth = OAuth(app)
    oidc = oauth.register(
        "gate",
        client_id=cfg.client_id,
        client_secret=client_secret,
        server_metadata_url=cfg.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email", "code_challenge_method": "S256", "default_timeout": 10},
    )
    login_url = PREFIX + "/login"

    def page(outcome: str, *, email: str | None = None, ready_at: float | None = None):
        ready_text = None
        if ready_at is not None:
            ready_text = datetime.fromtimestamp(ready_at, timezone.utc).strftime("%H:%M UTC")
        status, html = render(outcome, course=cfg.course_name, registration_url=cfg.registration_url,
                              login_url=login_url, signed_in_as=email, ready_at_text=ready_text,
                              support_contact=cfg.support_contact)
        resp = make_response(html, status)
        resp.headers.update(_PAGE_HEADERS)
        resp.mimetype = "text/html"
        return resp

    @app.route(PREFIX + "/start", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def start():
        """nginx's 401 handler: send the browser to the login page, remembering where it was."""
        rd = safe_return_path(request.headers.get("X-Cdsops-Original-Uri"))
        resp = redirect(login_url + "?rd=" + quote(rd, safe="/"), 302)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get(PREFIX + "/login")
    def login():
        rd = safe_return_path(request.args.get("rd"))
        if gate.check_session(request.headers.get("Cookie", "")):
            return redirect(rd, 303)
        # Several sign-ins may be under way in one browser (tabs, or the IDE's background
        # requests bouncing here when a session ends): each keeps its own state (Authlib keys
        # them by state) and return path; past MAX_PENDING_LOGINS the oldest are dropped.
        pending = [k for k in session if k.startswith("rd_")]
        if len(pending) >= MAX_PENDING_LOGINS:
            session.clear()
        try:
            resp = oidc.authorize_redirect(cfg.redirect_uri)
        except Exception as exc:  # noqa: BLE001 - the issuer is unreachable or misbehaves
            print(f"cannot start a sign-in with {cfg.issuer}: {type(exc).__name__}", file=sys.stderr, flush=True)
            resp = page("error")
            resp.status_code = 502
            return resp
        state = parse_qs(urlsplit(resp.headers.get("Location", "")).query).get("state", [""])[0]
        session["rd_" + state] = rd
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get(PREFIX + "/callback")
    def callback():
        try:
            token = oidc.authorize_access_token(claims_options={"iss": {"essential": True, "values": issuers}})
            claims = token.get("userinfo")
            if not claims:
                raise ValueError("the issuer returned no ID token")
        except Exception as exc:  # noqa: BLE001 - every failure is one audited "error" page
            reason = getattr(exc, "error", None) or type(exc).__name__
            if os.environ.get("CDSOPS_GATE_DEBUG") == "1":  # tracebacks may quote tokens: never in production
                import traceback

                traceback.print_exc(file=sys.stderr)
            audit.signin("error", reason=f"oidc: {reason}")
            session.pop("rd_" + str(request.args.get("state", "")), None)
            return page("error")
        rd = safe_return_path(session.pop("rd_" + str(request.args.get("state", "")), None))
        email = claims.get("email")
        try:
            identity = canonicalize(email)
        except InvalidEmail as exc:
            audit.signin("error", reason=f"email: {exc}")
            return page("error")
        h = identity_hash(identity, hash_key)
        if claims.get("email_verified") is not True and str(claims.get("email_verified")).lower() != "true":
            audit.signin("unverified", identity_hash=h)
            return page("unverified", email=email)
        now = clock()
        outcome, entry = decide(watcher.get(), h, now)
        if outcome != "success":
            audit.signin(outcome, identity_hash=h, username=entry.username if entry else None)
            return page(outcome, email=email, ready_at=entry.ready_at if entry else None)
        expires = int(now + cfg.session_hours * 3600)
        value = sessions.issue(cookie_key, entry.username, h, expires)
        audit.signin("success", username=entry.username, identity_hash=h)
        resp = redirect(rd, 303)
        resp.headers["Cache-Control"] = "no-store"
        resp.set_cookie(SESSION_COOKIE, value, max_age=int(cfg.session_hours * 3600), path="/",
                        secure=cfg.cookie_secure, httponly=True, samesite="Lax")
        return resp

    @app.route(PREFIX + "/logout", methods=["GET", "POST"])
    def logout():
        session.clear()
        resp = page("signed_out")
        resp.delete_cookie(SESSION_COOKIE, path="/", secure=cfg.cookie_secure, httponly=True, samesite="Lax")
        return resp

    @app.get(PREFIX + "/healthz")
    def healthz():
        resp = make_response("ok\n", 200)
        resp.mimetype = "text/plain"
        return resp

    gate = GateApp(cfg, app, watcher, cookie_key, clock)
    return gate
