#!/usr/bin/env python3
"""Mint the long-lived gate session cookie of the monitoring probe account.

The blackbox exporter's IDE probe (monitoring role, docs/monitoring.md) signs in as a real,
registered probe student by sending this cookie. It is the same signed cookie the gate
issues after an OpenID Connect sign-in (cdsops.gate.session), with a longer lifetime; the
gate still checks it against the sign-in map on every request, so the probe works only while
the probe student is active, and removing the probe from the roster ends it.

    .venv/bin/python scripts/mint-probe-cookie.py --cookie-key-file KEYFILE --hash-key-file KEYFILE \\
        --identity cdsops-probe@course.example.org --username s000317 [--days 365]

Reads the gate's cookie key and the identity-hash key from files (never the command line);
prints the cookie value for monitoring_probe_cookie (keep it in the vault).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cdsops.gate.session import derive_key, issue  # noqa: E402  (after the path line)
from cdsops.identity import InvalidEmail, canonicalize, identity_hash  # noqa: E402  (same)


def read_key(path: str, what: str, min_length: int) -> bytes:
    value = Path(path).read_bytes().strip()
    if len(value) < min_length:
        raise SystemExit(f"mint-probe-cookie: the {what} in {path} must be at least {min_length} bytes")
    return value


def mint(cookie_key: bytes, hash_key: bytes, identity: str, username: str, expires: int) -> str:
    """The cookie value the gate accepts for username while identity maps to it."""
    return issue(derive_key(cookie_key, "session"), username, identity_hash(canonicalize(identity), hash_key), expires)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cookie-key-file", required=True, help="file holding signin_gate_cookie_key")
    parser.add_argument("--hash-key-file", required=True, help="file holding signin_gate_hash_key")
    parser.add_argument("--identity", required=True, help="the probe student's registered email")
    parser.add_argument("--username", required=True, help="the probe student's username (cdsops lookup EMAIL)")
    parser.add_argument("--days", type=int, default=365, help="lifetime of the cookie (default 365)")
    args = parser.parse_args(argv)
    if not 1 <= args.days <= 3660:
        parser.error("--days must be between 1 and 3660")
    try:
        value = mint(read_key(args.cookie_key_file, "cookie key", 32), read_key(args.hash_key_file, "identity-hash key", 16),
                     args.identity, args.username, int(time.time()) + args.days * 86400)
    except (InvalidEmail, ValueError) as exc:
        parser.error(str(exc))
    print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
