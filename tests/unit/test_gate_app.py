"""The gate's WSGI app without a network: auth subrequest, pages, return paths, audit, config."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from cdsops.gate import SESSION_COOKIE, USERNAME_HEADER
from cdsops.gate import session as sessions
from cdsops.gate.app import create_app, safe_return_path
from cdsops.gate.audit import AuditLog
from cdsops.gate.config import GateConfigError, config_from_mapping, load_gate_config
from cdsops.gate.pages import PAGES, render
from cdsops.gate.signin_map import FORMAT
from cdsops.identity import identity_hash

NOW = 1_900_000_000.0
COOKIE_KEY = b"c" * 40
HASH_KEY = b"h" * 32


def base_config(tmp_path, **over):
    for name, value in (("secret", b"s3cret\n"), ("cookie.key", COOKIE_KEY + b"\n"), ("signin.key", HASH_KEY)):
        (tmp_path / name).write_bytes(value)
    cfg = {
        "issuer": "https://accounts.google.com",
        "client_id": "id",
        "client_secret_file": str(tmp_path / "secret"),
        "cookie_key_file": str(tmp_path / "cookie.key"),
        "hash_key_file": str(tmp_path / "signin.key"),
        "map_file": str(tmp_path / "map.json"),
        "state_dir": str(tmp_path / "state"),
        "public_url": "https://ide.example.org",
        "registration_url": "https://forms.example.org/r",
    }
    cfg.update(over)
    return cfg


def write_map(tmp_path, active, expired=()):
    (tmp_path / "map.json").write_text(json.dumps({"format": FORMAT, "active": active, "expired": list(expired)}))


@pytest.fixture
def gate(tmp_path):
    audit_stream = io.StringIO()
    alice = identity_hash("alice@example.org", HASH_KEY)
    write_map(tmp_path, [
        {"hash": alice, "username": "s000001", "ready_at": "2020-01-01T00:00:00Z"},
        {"hash": "b" * 64, "username": "s000002", "ready_at": "2099-01-01T00:00:00Z"},
    ])
    app = create_app(config_from_mapping(base_config(tmp_path)), audit=AuditLog(audit_stream), clock=lambda: NOW)
    app.audit_stream = audit_stream
    app.alice = alice
    return app


def cookie(username, h, expires=NOW + 60):
    return sessions.issue(sessions.derive_key(COOKIE_KEY, "session"), username, h, int(expires))


def auth(app, cookie_header=""):
    from werkzeug.test import Client

    return Client(app, use_cookies=False).get("/_cdsops/auth", headers={"Cookie": cookie_header} if cookie_header else {})


def request(app, path, cookie_header="", method="GET", **kwargs):
    """A request to the Flask part with exactly this Cookie header (no cookie jar)."""
    from werkzeug.test import Client

    headers = {"Cookie": cookie_header} if cookie_header else {}
    return Client(app.flask_app, use_cookies=False).open(path, method=method, headers=headers, **kwargs)


def test_auth_subrequest(gate):
    ok = auth(gate, f"other=1; {SESSION_COOKIE}=" + cookie("s000001", gate.alice))
    assert ok.status_code == 200 and ok.headers[USERNAME_HEADER] == "s000001"
    assert auth(gate).status_code == 401
    assert auth(gate, f"{SESSION_COOKIE}=" + cookie("s000001", gate.alice, NOW - 1)).status_code == 401
    # a valid signature for a pairing the map does not hold
    assert auth(gate, f"{SESSION_COOKIE}=" + cookie("s000002", gate.alice)).status_code == 401
    # not ready yet
    assert auth(gate, f"{SESSION_COOKIE}=" + cookie("s000002", "b" * 64)).status_code == 401
    assert USERNAME_HEADER not in auth(gate).headers


def test_revocation_takes_effect_on_the_next_request(gate, tmp_path):
    value = f"{SESSION_COOKIE}=" + cookie("s000001", gate.alice)
    assert auth(gate, value).status_code == 200
    write_map(tmp_path, [], expired=[gate.alice])
    assert auth(gate, value).status_code == 401


def test_callback_without_a_flow_is_an_audited_error(gate):
    r = gate.flask_app.test_client().get("/_cdsops/callback?code=x&state=y")
    assert r.status_code == 400 and b"could not be completed" in r.data
    assert r.headers["Cache-Control"] == "no-store" and "default-src 'none'" in r.headers["Content-Security-Policy"]
    line = json.loads(gate.audit_stream.getvalue().splitlines()[-1])
    assert line["outcome"] == "error" and line["event"] == "signin" and "@" not in json.dumps(line)


def test_logout_clears_the_cookie(gate):
    r = gate.flask_app.test_client().post("/_cdsops/logout")
    assert r.status_code == 200 and b"Signed out" in r.data
    assert any(h.startswith(f"{SESSION_COOKIE}=;") for h in r.headers.getlist("Set-Cookie"))


def test_missing_secret_fails_at_start(tmp_path):
    cfg = base_config(tmp_path)
    (tmp_path / "cookie.key").write_bytes(b"short")
    with pytest.raises(GateConfigError, match="cookie key .* at least 32 bytes"):
        create_app(config_from_mapping(cfg))
    cfg["hash_key_file"] = str(tmp_path / "nope")
    (tmp_path / "cookie.key").write_bytes(COOKIE_KEY)
    with pytest.raises(GateConfigError, match="cannot read the identity-hash key"):
        create_app(config_from_mapping(cfg))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/rstudio/p/1?a=1&b=2", "/rstudio/p/1?a=1&b=2"),
        (None, "/"),
        ("", "/"),
        ("//evil.example.org/", "/"),
        ("/\\evil.example.org", "/"),
        ("https://evil.example.org/", "/"),
        ("/a b", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
        ("/_cdsops/logout", "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_safe_return_path(value, expected):
    assert safe_return_path(value) == expected


@pytest.mark.parametrize("outcome", sorted(PAGES))
def test_pages_are_plain_escaped_html(outcome):
    status, html = render(outcome, course="<b>Course</b>", registration_url="https://r.example/?a=1&b=2",
                          login_url="/_cdsops/login", signed_in_as="x<y>@example.org",
                          ready_at_text="17:00 UTC", support_contact="help@example.org")
    assert html.startswith("<!DOCTYPE html>") and '<html lang="en">' in html
    assert "<b>" not in html and "<script" not in html.lower() and "<img" not in html.lower()
    assert "x&lt;y&gt;@example.org" in html
    assert status == (200 if outcome == "signed_out" else 400 if outcome == "error" else 403)
    if outcome in ("unknown", "expired"):
        assert "https://r.example/?a=1&amp;b=2" in html and "few minutes" in html
    if outcome == "expired":
        assert "files are kept" in html
    if outcome == "preparing":
        assert "being prepared" in html and "17:00 UTC" in html


def test_audit_lines():
    out = io.StringIO()
    log = AuditLog(out)
    log.signin("success", username="s000001", identity_hash="a" * 64)
    log.signin("unknown", identity_hash="b" * 64)
    with pytest.raises(ValueError):
        log.signin("maybe")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["outcome"] for x in lines] == ["success", "unknown"]
    assert lines[0]["username"] == "s000001" and "username" not in lines[1]
    assert lines[0]["ts"].endswith("Z")


@pytest.mark.parametrize(
    "over, message",
    [
        ({"issuer": "http://accounts.google.com"}, "https"),
        ({"issuer": "http://127.0.0.1:9"}, "https"),
        ({"public_url": "https://ide.example.org/path"}, "public_url"),
        ({"public_url": "http://ide.example.org"}, "public_url"),
        ({"listen": "0.0.0.0:9180"}, "loopback"),
        ({"listen": "127.0.0.1:99999"}, "port"),
        ({"workers": 0}, "workers"),
        ({"session_hours": 0}, "session_hours"),
        ({"registration_url": "forms"}, "registration_url"),
        ({"colour": "blue"}, "unknown key"),
        ({"cookie_secure": "yes"}, "cookie_secure"),
    ],
)
def test_config_refusals(tmp_path, over, message):
    with pytest.raises(GateConfigError, match=message):
        config_from_mapping(base_config(tmp_path, **over))


def test_config_file(tmp_path):
    cfg = base_config(tmp_path, issuer="http://127.0.0.1:9400", allow_insecure_issuer=True)
    del cfg["client_id"]
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(GateConfigError, match="missing key.*client_id"):
        load_gate_config(path)
    cfg["client_id"] = "x"
    path.write_text(json.dumps(cfg))
    loaded = load_gate_config(path)
    assert loaded.redirect_uri == "https://ide.example.org/_cdsops/callback" and loaded.port == 9180
    path.write_text("{")
    with pytest.raises(GateConfigError, match="not valid JSON"):
        load_gate_config(path)


def test_check_config_cli(tmp_path, capsys):
    from cdsops.gate.__main__ import main

    path = tmp_path / "gate.json"
    path.write_text(json.dumps(base_config(tmp_path)))
    write_map(tmp_path, [])
    assert main(["--check-config", "--config", str(path)]) == 0
    assert "0 active students" in capsys.readouterr().out
    path.write_text(json.dumps(base_config(tmp_path, workers=-1)))
    assert main(["--check-config", "--config-only", "--config", str(path)]) == 2
    assert "workers" in capsys.readouterr().err


def test_clock_is_real_by_default(tmp_path):
    write_map(tmp_path, [])
    app = create_app(config_from_mapping(base_config(tmp_path)), audit=AuditLog(io.StringIO()))
    assert abs(app.clock() - time.time()) < 5


def test_unreachable_issuer_gives_an_error_page_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # restored afterwards (create_app sets it)
    write_map(tmp_path, [])
    cfg = base_config(tmp_path, issuer="http://127.0.0.1:9", allow_insecure_issuer=True)
    app = create_app(config_from_mapping(cfg), audit=AuditLog(io.StringIO()))
    r = app.flask_app.test_client().get("/_cdsops/login?rd=/x")
    assert r.status_code == 502 and b"could not be completed" in r.data


@pytest.mark.parametrize(
    "original, location",
    [
        ("/p/1?a=1&b=2", "/_cdsops/login?rd=/p/1%3Fa%3D1%26b%3D2"),
        (None, "/_cdsops/login?rd=/"),
        ("//evil.example.org/", "/_cdsops/login?rd=/"),
    ],
)
def test_start_redirects_to_the_login_with_the_page_asked_for(gate, original, location):
    headers = {"X-Cdsops-Original-Uri": original} if original else {}
    r = gate.flask_app.test_client().post("/_cdsops/start", headers=headers)
    assert r.status_code == 302 and r.headers["Location"].endswith(location)


# --- issue 13: server-side sign-out, callback error codes, subject mismatch page ---


def test_sign_out_revokes_the_session_on_the_server_for_every_copy_and_after_a_restart(gate, tmp_path):
    value = f"{SESSION_COOKIE}=" + cookie("s000001", gate.alice)
    assert auth(gate, value).status_code == 200
    r = request(gate, "/_cdsops/logout", value, method="POST")
    assert r.status_code == 200 and b"Signed out" in r.data
    assert auth(gate, value).status_code == 401  # the copy the browser did not delete
    line = json.loads(gate.audit_stream.getvalue().splitlines()[-1])
    assert (line["outcome"], line["username"], line["hash"]) == ("signout", "s000001", gate.alice)
    # another process over the same state directory (a second worker, or the gate restarted)
    again = create_app(config_from_mapping(base_config(tmp_path)), audit=AuditLog(io.StringIO()), clock=lambda: NOW)
    assert auth(again, value).status_code == 401
    # other sessions of the same student are not touched
    assert auth(again, f"{SESSION_COOKIE}=" + cookie("s000001", gate.alice)).status_code == 200


def test_sign_out_without_a_valid_session_records_nothing(gate, tmp_path):
    for header in ("", f"{SESSION_COOKIE}=garbage", f"{SESSION_COOKIE}=" + cookie("s000001", gate.alice, NOW - 1)):
        assert request(gate, "/_cdsops/logout", header).status_code == 200
    assert os.listdir(tmp_path / "state/revoked") == []
    assert gate.audit_stream.getvalue() == ""


def test_revoked_entries_are_dropped_once_their_session_has_expired(tmp_path):
    write_map(tmp_path, [])
    now = [NOW]
    app = create_app(config_from_mapping(base_config(tmp_path)), audit=AuditLog(io.StringIO()), clock=lambda: now[0])
    for expires in (NOW + 10, NOW + 20, NOW + 30):
        request(app, "/_cdsops/logout", f"{SESSION_COOKIE}=" + cookie("s000001", "a" * 64, expires), method="POST")
    assert len(os.listdir(tmp_path / "state/revoked")) == 3
    now[0] = NOW + 25  # two of them would have expired anyway: the next sign-out sweeps them
    request(app, "/_cdsops/logout", f"{SESSION_COOKIE}=" + cookie("s000001", "a" * 64, NOW + 99), method="POST")
    assert len(os.listdir(tmp_path / "state/revoked")) == 2
    now[0] = NOW + 1000  # and a restart sweeps the rest
    create_app(config_from_mapping(base_config(tmp_path)), audit=AuditLog(io.StringIO()), clock=lambda: now[0])
    assert os.listdir(tmp_path / "state/revoked") == []


def test_unwritable_state_directory_fails_at_start(tmp_path):
    write_map(tmp_path, [])
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(GateConfigError, match="state directory"):
        create_app(config_from_mapping(base_config(tmp_path)), audit=AuditLog(io.StringIO()))


@pytest.mark.parametrize("error, reason", [
    ("access_denied", "oidc: access_denied"),
    ("temporarily_unavailable", "oidc: temporarily_unavailable"),
    ("account_selection_required", "oidc: account_selection_required"),
    ("student@example.org", "oidc: invalid_error_code"),
    ("Access_Denied", "oidc: invalid_error_code"),
    ("", "oidc: invalid_error_code"),
])
def test_callback_error_is_logged_only_as_a_known_code(gate, error, reason):
    r = gate.flask_app.test_client().get("/_cdsops/callback", query_string={"error": error, "state": "x",
                                                                            "error_description": "a@b.example"})
    assert r.status_code == 400 and b"could not be completed" in r.data
    line = json.loads(gate.audit_stream.getvalue().splitlines()[-1])
    assert (line["outcome"], line["reason"]) == ("error", reason)
    assert "@" not in gate.audit_stream.getvalue()


def test_reset_subject_cli(tmp_path, capsys):
    from cdsops.gate.__main__ import main

    path = tmp_path / "gate.json"
    path.write_text(json.dumps(base_config(tmp_path)))
    (tmp_path / "state/subjects").mkdir(parents=True)
    (tmp_path / "state/subjects/s000042").write_text("{}")
    assert main(["--config", str(path), "--reset-subject", "s000042"]) == 0
    assert "removed" in capsys.readouterr().out and not (tmp_path / "state/subjects/s000042").exists()
    assert main(["--config", str(path), "--reset-subject", "s000042"]) == 1
    assert "no subject binding" in capsys.readouterr().out
    assert main(["--config", str(path), "--reset-subject", "../../etc/passwd"]) == 2
    assert "not a valid username" in capsys.readouterr().err


def test_subject_mismatch_page_tells_the_student_to_contact_support():
    status, html = render("subject_mismatch", course="Course", registration_url="https://r.example/",
                          login_url="/_cdsops/login", support_contact="help@example.org")
    assert status == 403 and "help@example.org" in html and "cannot open this course account" in html
    _, html = render("subject_mismatch", course="Course", registration_url="https://r.example/",
                     login_url="/_cdsops/login")
    assert "support team" in html
