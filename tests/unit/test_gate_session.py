"""Session cookies of the sign-in gate: signed, expiring, tamper-evident."""

from __future__ import annotations

import pytest

from cdsops.gate import session as s

KEY = s.derive_key(b"k" * 32, "session")
H = "ab" * 32


def test_round_trip():
    value = s.issue(KEY, "s000042", H, 2_000)
    sess = s.verify(KEY, value, 1_000)
    assert sess == s.Session("s000042", H, 2_000, sess.sid) and s.SID_RE.match(sess.sid)
    assert "@" not in value and len(value) < s.MAX_COOKIE_LENGTH
    # every cookie gets its own session id (so one can be signed out without the others)
    assert s.verify(KEY, s.issue(KEY, "s000042", H, 2_000), 1_000).sid != sess.sid
    assert s.verify(KEY, s.issue(KEY, "s000042", H, 2_000, sid="A" * 22), 1_000).sid == "A" * 22


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


@pytest.mark.parametrize("username, h, sid", [("S000042", H, None), ("s.1", H, None), ("s000042", "AB" * 32, None),
                                             ("s000042", "ab", None), ("s000042", H, "a.b" + "c" * 19),
                                             ("s000042", H, "short")])
def test_issue_refuses_bad_fields(username, h, sid):
    with pytest.raises(ValueError):
        s.issue(KEY, username, h, 2_000, sid=sid)


def test_a_v1_cookie_of_the_previous_format_is_refused():
    import base64
    import hashlib
    import hmac

    payload = f"v1.s000042.{H}.2000"
    mac = base64.urlsafe_b64encode(hmac.new(KEY, payload.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(s.SessionError, match="unknown format"):
        s.verify(KEY, f"{payload}.{mac}", 1_000)
