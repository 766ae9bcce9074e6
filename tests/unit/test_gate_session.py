"""Session cookies of the sign-in gate: signed, expiring, tamper-evident."""

from __future__ import annotations

import pytest

from cdsops.gate import session as s

KEY = s.derive_key(b"k" * 32, "session")
H = "ab" * 32


def test_round_trip():
    value = s.issue(KEY, "s000042", H, 2_000)
    assert s.verify(KEY, value, 1_000) == s.Session("s000042", H, 2_000)
    assert "@" not in value


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v: None, "no session cookie"),
        (lambda v: "", "no session cookie"),
        (lambda v: v.replace("s000042", "s000043"), "signature"),
        (lambda v: v.replace(".2000.", ".9000."), "signature"),
        (lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"), "signature"),
        (lambda v: v + "x" * 300, "too long"),
        (lambda v: "garbage", "signature"),
        (lambda v: v.rpartition(".")[0], "signature"),
    ],
)
def test_refusals(mutate, message):
    with pytest.raises(s.SessionError, match=message):
        s.verify(KEY, mutate(s.issue(KEY, "s000042", H, 2_000)), 1_000)


def test_expired_and_other_key():
    value = s.issue(KEY, "s000042", H, 2_000)
    with pytest.raises(s.SessionError, match="expired"):
        s.verify(KEY, value, 2_000)
    with pytest.raises(s.SessionError, match="signature"):
        s.verify(s.derive_key(b"z" * 32, "session"), value, 1_000)


def test_purposes_give_different_keys_and_short_keys_are_refused():
    assert s.derive_key(b"k" * 32, "session") != s.derive_key(b"k" * 32, "flask-login-state")
    with pytest.raises(ValueError, match="32 bytes"):
        s.derive_key(b"short", "session")


@pytest.mark.parametrize("username, h", [("S000042", H), ("s.1", H), ("s000042", "AB" * 32), ("s000042", "ab")])
def test_issue_refuses_bad_fields(username, h):
    with pytest.raises(ValueError):
        s.issue(KEY, username, h, 2_000)
