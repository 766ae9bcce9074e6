"""cdsops-gate: the sign-in gate on the compute host (issue 3).

A small WSGI service on loopback that nginx consults through ``auth_request``:

- ``/_cdsops/login`` starts an OpenID Connect code flow (state, nonce and PKCE) with the
  configured issuer (Google in production);
- ``/_cdsops/callback`` requires ``email_verified``, canonicalizes the address exactly as
  the roster does (:func:`cdsops.identity.canonicalize`), hashes it with the deployment's
  key (:func:`cdsops.identity.identity_hash`) and looks the hash up in the sign-in map;
  a known, ready student whose provider subject matches the one bound at the account's
  first sign-in gets a signed, expiring session cookie; everyone else gets a page that
  says why (not registered, expired, being prepared, unverified, another Google account);
- ``/_cdsops/auth`` is nginx's subrequest: 200 with ``X-Cdsops-Username`` for a valid
  session of a student still in the map, 401 otherwise (also for a signed-out session);
- ``/_cdsops/logout`` signs out: the session is revoked on the server, so every copy of
  the cookie stops working (Workbench's and the open IDE's sign-out end here).

No email address is stored or logged: the audit lines carry the username or the hash.
This package imports only the standard library, Flask, Authlib and
:mod:`cdsops.identity`, so it runs on the compute host from Debian packages.
"""

from __future__ import annotations

__all__ = ["USERNAME_HEADER", "SESSION_COOKIE", "LOGIN_COOKIE", "PREFIX"]

PREFIX = "/_cdsops"
USERNAME_HEADER = "X-Cdsops-Username"
SESSION_COOKIE = "__Host-cdsops_session"  # __Host-: Secure, Path=/, no Domain (host-only)
LOGIN_COOKIE = "cdsops_login"
