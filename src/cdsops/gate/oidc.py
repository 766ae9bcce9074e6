"""The gate's OpenID Connect client: Authlib's Flask client plus the checks the gate adds.

Authlib validates the ID token's signature, ``iss``, ``exp`` and (usually) ``nonce``; the
gate adds, after it, what Authlib leaves to options or skips: ``aud`` must contain the
client id, ``azp`` (when present, and required with several audiences) must be the
client id (OpenID Connect Core 3.1.3.7, items 3-5), and the ``nonce`` the gate generated
for this sign-in must come back, whatever else the token says (Authlib skips its own
check for a token carrying ``nonce_supported: false``).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import GateConfig

__all__ = ["ERROR_CODES", "IdTokenError", "backport_single_key_lookup", "check_id_token",
           "error_code", "issuers_for", "register_client", "safe_reason"]

# RFC 6749 4.1.2.1 and OpenID Connect Core 1.0 3.1.2.6: the only values an authorization
# error response's `error` may take.
ERROR_CODES = frozenset({
    "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type",
    "invalid_scope", "server_error", "temporarily_unavailable",
    "interaction_required", "login_required", "account_selection_required", "consent_required",
    "invalid_request_uri", "invalid_request_object", "request_not_supported",
    "request_uri_not_supported", "registration_not_supported",
})
_GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
_REASON_RE = re.compile(r"[A-Za-z0-9_]{1,64}\Z")


class IdTokenError(ValueError):
    """The ID token fails one of the gate's own checks; ``error`` names which."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def error_code(value: object) -> str:
    """The `error` of an authorization response as it may be logged: a known code or
    ``invalid_error_code`` (never the text someone put there)."""
    return value if isinstance(value, str) and value in ERROR_CODES else "invalid_error_code"


def safe_reason(value: object) -> str:
    """An exception's error name as it may be logged (word characters only)."""
    return value if isinstance(value, str) and _REASON_RE.match(value) else "unexpected"


def check_id_token(claims: Mapping[str, Any], *, client_id: str, nonce: str | None) -> None:
    """Raise :class:`IdTokenError` unless the token was issued to us, for this sign-in."""
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise IdTokenError("invalid_audience")
    azp = claims.get("azp")
    if (azp is not None or len(audiences) > 1) and azp != client_id:
        raise IdTokenError("invalid_authorized_party")
    got = claims.get("nonce")
    if not nonce or not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise IdTokenError("invalid_nonce")


def issuers_for(issuer: str) -> list[str]:
    """The ``iss`` values accepted for the configured issuer (Google uses two forms)."""
    issuer = issuer.rstrip("/")
    return list(_GOOGLE_ISSUERS) if issuer in _GOOGLE_ISSUERS else [issuer]


def register_client(app: Flask, cfg: GateConfig, client_secret: str) -> Any:
    """Authlib's OAuth client for the configured issuer (code flow, PKCE S256)."""
    from authlib.integrations.flask_client import OAuth

    backport_single_key_lookup()
    return OAuth(app).register(
        "gate",
        client_id=cfg.client_id,
        client_secret=client_secret,
        server_metadata_url=cfg.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email", "code_challenge_method": "S256", "default_timeout": 10},
    )


def backport_single_key_lookup() -> None:
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
