"""The gate's pages and the sign-in flow: one Flask Blueprint under ``/_cdsops``.

``/_cdsops/auth`` is not here: :class:`cdsops.gate.app.GateApp` answers it before Flask.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from flask import Blueprint, Response, current_app, make_response, redirect, request, session

from cdsops.identity import InvalidEmail, canonicalize, identity_hash

from . import PREFIX, SESSION_COOKIE
from . import session as sessions
from .context import Gate
from .oidc import IdTokenError, check_id_token, error_code, issuers_for, safe_reason
from .pages import render
from .server_state import subject_hash
from .signin_map import decide

__all__ = ["EXTENSION", "MAX_PENDING_LOGINS", "LOGIN_URL", "LOGOUT_URL", "blueprint", "safe_return_path"]

EXTENSION = "cdsops_gate"  # key of the Gate in app.extensions
LOGIN_URL = PREFIX + "/login"
LOGOUT_URL = PREFIX + "/logout"  # the one sign-out URL: Workbench's and the hub's sign-out end here
MAX_PENDING_LOGINS = 4  # sign-ins under way in one browser (each ~350 bytes of the login cookie)
_SAFE_PATH_RE = re.compile(r"/(?![/\\])[\x21-\x7e]*\Z")
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

blueprint = Blueprint("gate", __name__, url_prefix=PREFIX)


class SigninRefused(Exception):
    """The callback cannot continue: ``outcome`` page, audited with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def safe_return_path(value: str | None) -> str:
    """Where to send the browser after sign-in: a local path only (no open redirect)."""
    if value and len(value) <= 2048 and _SAFE_PATH_RE.match(value) and not value.startswith(PREFIX + "/"):
        return value
    return "/"


def _gate() -> Gate:
    return current_app.extensions[EXTENSION]


def _page(outcome: str, *, email: str | None = None, ready_at: float | None = None) -> Response:
    cfg = _gate().cfg
    ready_text = None
    if ready_at is not None:
        ready_text = datetime.fromtimestamp(ready_at, UTC).strftime("%H:%M UTC")
    status, html = render(outcome, course=cfg.course_name, registration_url=cfg.registration_url,
                          login_url=LOGIN_URL, signed_in_as=email, ready_at_text=ready_text,
                          support_contact=cfg.support_contact)
    resp = make_response(html, status)
    resp.headers.update(_PAGE_HEADERS)
    resp.mimetype = "text/html"
    return resp


def _clear_session_cookie(resp: Response) -> Response:
    resp.delete_cookie(SESSION_COOKIE, path="/", secure=_gate().cfg.cookie_secure, httponly=True, samesite="Lax")
    return resp


@blueprint.route("/start", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def start() -> Response:
    """nginx's 401 handler: send the browser to the login page, remembering where it was."""
    rd = safe_return_path(request.headers.get("X-Cdsops-Original-Uri"))
    resp = redirect(LOGIN_URL + "?rd=" + quote(rd, safe="/"), 302)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@blueprint.get("/login")
def login() -> Response:
    """Back to the page asked for with a live session; else a new sign-in with the issuer.

    A signed-out (revoked) cookie is not a session: the browser goes to the issuer, which
    is asked to show its account chooser (``prompt=select_account``), so nobody is let
    back in silently as the last person who used this browser.
    """
    gate = _gate()
    rd = safe_return_path(request.args.get("rd"))
    cookie_header = request.headers.get("Cookie", "")
    if gate.current_session(cookie_header):
        return redirect(rd, 303)
    # Several sign-ins may be under way in one browser (tabs, or the IDE's background
    # requests bouncing here when a session ends): each keeps its own state (Authlib keys
    # them by state), return path and nonce; past MAX_PENDING_LOGINS all are dropped.
    if sum(1 for k in session if k.startswith("rd_")) >= MAX_PENDING_LOGINS:
        session.clear()
    nonce = secrets.token_urlsafe(24)
    try:
        resp = gate.oidc.authorize_redirect(gate.cfg.redirect_uri, nonce=nonce, prompt="select_account")
    except Exception as exc:  # noqa: BLE001 - the issuer is unreachable or misbehaves
        print(f"cannot start a sign-in with {gate.cfg.issuer}: {type(exc).__name__}", file=sys.stderr, flush=True)
        resp = _page("error")
        resp.status_code = 502
        return resp
    state = parse_qs(urlsplit(resp.headers.get("Location", "")).query).get("state", [""])[0]
    session["rd_" + state] = {"rd": rd, "nonce": nonce}
    resp.headers["Cache-Control"] = "no-store"
    if SESSION_COOKIE + "=" in cookie_header:
        _clear_session_cookie(resp)  # expired, signed out or no longer valid: drop it
    return resp


@blueprint.get("/callback")
def callback() -> Response:
    gate = _gate()
    flow = session.pop("rd_" + str(request.args.get("state", "")), None)
    if not isinstance(flow, dict):
        flow = {}
    try:
        claims = _id_token_claims(gate, flow.get("nonce"))
    except SigninRefused as exc:
        gate.audit.signin("error", reason=exc.reason)
        return _page("error")
    return _decide(gate, claims, safe_return_path(flow.get("rd")))


def _id_token_claims(gate: Gate, nonce: str | None) -> dict[str, Any]:
    """The ID token's claims after every check, or :class:`SigninRefused`."""
    if "error" in request.args:
        raise SigninRefused(f"oidc: {error_code(request.args.get('error'))}")
    try:
        token = gate.oidc.authorize_access_token(claims_options={
            "iss": {"essential": True, "values": issuers_for(gate.cfg.issuer)},
            "aud": {"essential": True, "values": [gate.cfg.client_id]},
        })
        claims = token.get("userinfo")
        if not claims:
            raise IdTokenError("no_id_token")
        check_id_token(claims, client_id=gate.cfg.client_id, nonce=nonce)
    except Exception as exc:  # noqa: BLE001 - every failure is one audited "error" page
        if os.environ.get("CDSOPS_GATE_DEBUG") == "1":  # tracebacks may quote tokens: never in production
            import traceback

            traceback.print_exc(file=sys.stderr)
        raise SigninRefused(f"oidc: {safe_reason(getattr(exc, 'error', None) or type(exc).__name__)}") from None
    return dict(claims)


def _decide(gate: Gate, claims: dict[str, Any], rd: str) -> Response:
    """The outcome for a validated ID token: a session, or the page that says why not."""
    email = claims.get("email")
    try:
        h = identity_hash(canonicalize(email), gate.hash_key)
    except InvalidEmail as exc:
        gate.audit.signin("error", reason=f"email: {exc}")
        return _page("error")
    if claims.get("email_verified") is not True and str(claims.get("email_verified")).lower() != "true":
        gate.audit.signin("unverified", identity_hash=h)
        return _page("unverified", email=email)
    now = gate.clock()
    outcome, entry = decide(gate.watcher.get(), h, now)
    if outcome != "success":
        gate.audit.signin(outcome, identity_hash=h, username=entry.username if entry else None)
        return _page(outcome, email=email, ready_at=entry.ready_at if entry else None)
    mismatch = gate.subjects.check_or_bind(
        entry.username, subject_hash(gate.hash_key, gate.cfg.issuer.rstrip("/"), str(claims.get("sub", ""))), now)
    if mismatch:
        gate.audit.signin("subject_mismatch", username=entry.username, identity_hash=h, reason=mismatch)
        return _page("subject_mismatch", email=email)
    return _signed_in(gate, entry.username, h, now, rd)


def _signed_in(gate: Gate, username: str, h: str, now: float, rd: str) -> Response:
    lifetime = int(gate.cfg.session_hours * 3600)
    value = sessions.issue(gate.cookie_key, username, h, int(now) + lifetime)
    gate.audit.signin("success", username=username, identity_hash=h)
    resp = redirect(rd, 303)
    resp.headers["Cache-Control"] = "no-store"
    resp.set_cookie(SESSION_COOKIE, value, max_age=lifetime, path="/",
                    secure=gate.cfg.cookie_secure, httponly=True, samesite="Lax")
    return resp


@blueprint.route("/logout", methods=["GET", "POST"])
def logout() -> Response:
    """Sign out: the session is revoked on the server (every copy of the cookie stops
    working), the browser's cookies are cleared, and the signed-out page is shown."""
    gate = _gate()
    sess = gate.signed_session(request.headers.get("Cookie", ""))
    session.clear()
    if sess is not None:
        try:
            gate.revoked.revoke(sess.sid, sess.expires, gate.clock())
        except OSError as exc:
            print(f"cannot record a sign-out in {gate.revoked.directory}: {exc}", file=sys.stderr, flush=True)
            gate.audit.signin("error", username=sess.username, identity_hash=sess.hash,
                              reason=f"signout: {safe_reason(type(exc).__name__)}")
            resp = _page("error")
            resp.status_code = 500
            return _clear_session_cookie(resp)
        gate.audit.signin("signout", username=sess.username, identity_hash=sess.hash)
    return _clear_session_cookie(_page("signed_out"))


@blueprint.get("/healthz")
def healthz() -> Response:
    resp = make_response("ok\n", 200)
    resp.mimetype = "text/plain"
    return resp
