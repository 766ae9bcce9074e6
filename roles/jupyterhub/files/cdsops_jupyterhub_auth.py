"""The hub's side of the open IDE profile: trust only the sign-in gate.

nginx asks the gate about every request (auth_request) and passes the username it vouches
for in one header, replacing any copy the client sent, plus a secret only nginx and the hub
know (so a student's code connecting to the hub's port directly cannot log in by header). ``GateHeaderAuthenticator`` reads that
header on login and re-checks it on every request (``auth_refresh_age = 1``): when it names
someone else (or nobody), the hub's own cookie stops counting. Only existing Linux accounts in
the student uid range whose shadow entry is not expired get a server; the hub creates no user.
"""

from __future__ import annotations

import hmac
import pwd
import re

from jupyterhub.auth import Authenticator
from traitlets import Integer, Unicode

from cdsops_jupyter_journal import now_iso, send

USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
SHADOW = "/etc/shadow"
PROXY_SECRET_HEADER = "X-Cdsops-Proxy-Secret"


def account_expired(username: str, shadow_path: str = SHADOW) -> bool:
    """True when the shadow entry's expiry day has passed (the reconcile writes 1 when expired)."""
    import time

    today = int(time.time() // 86400)
    with open(shadow_path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split(":")
            if fields[0] == username and len(fields) > 7:
                return fields[7] != "" and int(fields[7]) <= today
    return True  # no shadow entry: not an account the reconcile made


class GateHeaderAuthenticator(Authenticator):
    """Sign-in is the gate's: the username comes from the header nginx sets, nothing else."""

    header_name = Unicode("X-RStudio-Username", config=True, help="Header nginx fills from the gate.")
    proxy_secret = Unicode("", config=True, help="Value of X-Cdsops-Proxy-Secret nginx adds; required.")
    uid_min = Integer(200001, config=True, help="Lowest student uid.")
    uid_max = Integer(1199999, config=True, help="Highest student uid.")

    def header_user(self, handler) -> str | None:
        """The username nginx vouches for; None without nginx's secret (a direct connection to
        the hub's port, which students' servers must reach, cannot log anyone in)."""
        secret = handler.request.headers.get(PROXY_SECRET_HEADER) or ""
        if not self.proxy_secret or not hmac.compare_digest(secret.encode(), self.proxy_secret.encode()):
            return None
        name = (handler.request.headers.get(self.header_name) or "").strip()
        return name if USERNAME_RE.match(name) else None

    async def authenticate(self, handler, data=None):
        name = self.header_user(handler)
        if name is None:
            self.log.warning("cdsops: no signed-in user in %s; refused", self.header_name)
        return name

    async def refresh_user(self, user, handler=None):
        if handler is None:  # API or internal: the hub's own token checks apply
            return True
        if not handler.request.path.startswith("/hub/"):
            # /user/NAME/... when NAME's server is not running: nginx never sends the secret on
            # these paths (the server behind them runs as the student) and has already refused
            # them unless NAME is the signed-in user; the hub's pages under /hub/ re-check.
            return True
        return self.header_user(handler) == user.name

    async def check_allowed(self, username, authentication=None):
        try:
            uid = pwd.getpwnam(username).pw_uid
        except KeyError:
            self.log.warning("cdsops: %s has no account on this host; refused", username)
            return False
        if not self.uid_min <= uid <= self.uid_max:
            self.log.warning("cdsops: %s is not a student account (uid %d); refused", username, uid)
            return False
        if account_expired(username):
            self.log.warning("cdsops: the account %s is expired; refused", username)
            return False
        return True


def session_hook(event: str, profile: str = "jupyter"):
    """A spawner hook writing session.start / session.end for the spawner's user."""

    def hook(spawner) -> None:
        send("cdsops-session", {"event": event, "ts": now_iso(), "username": spawner.user.name, "profile": profile})

    return hook
