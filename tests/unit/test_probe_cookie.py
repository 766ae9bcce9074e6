"""scripts/mint-probe-cookie.py: the cookie it prints is one the gate accepts for the probe
student while the sign-in map holds them, and refuses once they are gone or it has expired."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdsops.gate import SESSION_COOKIE
from cdsops.gate.context import Gate
from cdsops.gate.server_state import RevokedSessions
from cdsops.gate.session import derive_key
from cdsops.gate.signin_map import MapWatcher
from cdsops.identity import canonicalize, identity_hash

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "mint-probe-cookie.py"
COOKIE_KEY = b"k" * 40
HASH_KEY = b"h" * 20
PROBE = "CDSOPS-Probe@Course.Example.org"


def write_map(path: Path, active: list[tuple[str, str]]) -> None:
    entries = [{"hash": h, "username": u, "ready_at": "2020-01-01T00:00:00Z"} for h, u in active]
    path.write_text(json.dumps({"format": "cdsops-signin-map/1", "active": entries, "expired": []}))


def mint(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "cookie.key").write_bytes(COOKIE_KEY + b"\n")
    (tmp_path / "hash.key").write_bytes(HASH_KEY)
    return subprocess.run([sys.executable, str(SCRIPT), "--cookie-key-file", str(tmp_path / "cookie.key"),
                           "--hash-key-file", str(tmp_path / "hash.key"), *extra],
                          capture_output=True, text=True, check=False)


def gate(map_file: Path, now: float) -> Gate:
    """The gate's own decision (no Flask or OIDC client needed for it)."""
    return Gate(cfg=None, oidc=None, cookie_key=derive_key(COOKIE_KEY, "session"), hash_key=HASH_KEY,  # type: ignore[arg-type]  # only the session check runs
                watcher=MapWatcher(str(map_file)), revoked=RevokedSessions(str(map_file.parent / "state")),
                subjects=None, audit=None, clock=lambda: now)


@pytest.fixture()
def probe_hash() -> str:
    return identity_hash(canonicalize(PROBE), HASH_KEY)


def test_the_gate_accepts_the_probe_cookie_while_the_probe_is_active(tmp_path, probe_hash):
    result = mint(tmp_path, "--identity", PROBE, "--username", "s000317", "--days", "30")
    assert result.returncode == 0, result.stderr
    cookie = f"{SESSION_COOKIE}=" + result.stdout.strip()
    map_file = tmp_path / "map.json"
    write_map(map_file, [(probe_hash, "s000317")])
    assert gate(map_file, time.time()).current_session(cookie).username == "s000317"
    assert gate(map_file, time.time() + 29 * 86400).current_session(cookie).username == "s000317"
    # expired cookie, probe gone from the map, probe mapped to another username: refused
    assert gate(map_file, time.time() + 31 * 86400).current_session(cookie) is None
    write_map(map_file, [])
    assert gate(map_file, time.time()).current_session(cookie) is None
    write_map(map_file, [(probe_hash, "s000318")])
    assert gate(map_file, time.time()).current_session(cookie) is None


def test_bad_input_is_refused_with_a_reason(tmp_path):
    result = mint(tmp_path, "--identity", "not-an-email", "--username", "s000317")
    assert result.returncode != 0 and "email" in result.stderr.lower()
    result = mint(tmp_path, "--identity", PROBE, "--username", "Bad Name")
    assert result.returncode != 0 and "username" in result.stderr
    result = mint(tmp_path, "--identity", PROBE, "--username", "s000317", "--days", "0")
    assert result.returncode != 0 and "--days" in result.stderr
    (tmp_path / "short.key").write_bytes(b"short")
    result = subprocess.run([sys.executable, str(SCRIPT), "--cookie-key-file", str(tmp_path / "short.key"),
                             "--hash-key-file", str(tmp_path / "short.key"), "--identity", PROBE, "--username", "s1"],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "at least 32 bytes" in result.stderr
