"""The signin_gate role on a systemd host (testinfra through podman exec).

Session cookies are signed here with the scenario's throwaway cookie key, exactly as the
gate signs them after a successful sign-in (the OIDC flow itself is covered by
tests/e2e/test_gate_signin.py). The upstream on 127.0.0.1:8787 is an nginx TEST DOUBLE.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), "src"))
from cdsops.gate import SESSION_COOKIE  # noqa: E402
from cdsops.gate import session as gate_session  # noqa: E402

CONTAINER = "cdsops-signin-gate"
COOKIE_KEY = b"molecule-cookie-key-0123456789abcdef0123456789"

FETCH = r"""
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers=dict(h.split(": ", 1) for h in sys.argv[2:]))
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
try:
    r = urllib.request.build_opener(NoRedirect).open(req, timeout=20)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode()[:2000])
"""


@pytest.fixture(scope="module")
def host():
    return testinfra.get_host(f"podman://{CONTAINER}")


def fetch_h(host, url, headers):
    quoted = " ".join("'" + h.replace("'", "") + "'" for h in headers)
    cmd = host.run(f"python3 -c \"$(cat <<'PY'\n{FETCH}\nPY\n)\" '{url}' {quoted}")
    assert cmd.rc == 0, cmd.stderr
    status, _, body = cmd.stdout.partition("\n")
    return int(status), body


@pytest.fixture(scope="module")
def signin_map(host):
    return json.loads(host.file("/etc/cdsops/signin-map.json").content_string)


def cookie(username, h, expires=None):
    key = gate_session.derive_key(COOKIE_KEY, "session")
    return gate_session.issue(key, username, h, int(expires or time.time() + 600))


def test_service_runs_unprivileged_on_loopback(host):
    svc = host.service("cdsops-gate")
    assert svc.is_running and svc.is_enabled
    users = host.check_output("ps -eo user:32=,args= | grep '[c]dsops.gate'")
    assert users and all(line.split()[0] == "cdsops-gate" for line in users.splitlines())
    listening = host.check_output("ss -Htln")
    assert "127.0.0.1:9180" in listening and "0.0.0.0:9180" not in listening and "*:9180" not in listening


def test_state_directory_is_the_gates_own(host):
    for path in ("/var/lib/cdsops-gate", "/var/lib/cdsops-gate/revoked", "/var/lib/cdsops-gate/subjects"):
        d = host.file(path)
        assert d.is_directory and d.user == "cdsops-gate" and d.group == "cdsops-gate" and d.mode == 0o700, path


def test_sign_out_revokes_the_session_for_every_copy_across_a_restart(host, signin_map):
    """The sandboxed unit can write its state directory (ReadWritePaths), the revocation holds for
    every worker and after a restart, and the audit line reaches the journal as cdsops-gate."""
    value = cookie("s000001", signin_map["active"][0]["hash"])
    headers = [f"Cookie: {SESSION_COOKIE}={value}"]
    status, body = fetch_h(host, "http://127.0.0.1:8080/", headers)
    assert (status, body.strip()) == (200, "user=[s000001]")
    status, body = fetch_h(host, "http://127.0.0.1:8080/_cdsops/logout", headers)
    assert status == 200 and "Signed out" in body
    for _ in range(4):
        assert fetch_h(host, "http://127.0.0.1:8080/", headers)[0] == 302
    host.run_test("systemctl restart cdsops-gate")
    probe = "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:9180/_cdsops/healthz\", timeout=5)'"
    deadline = time.monotonic() + 60
    while host.run(probe).rc != 0:  # connection refused until gunicorn listens again
        assert time.monotonic() < deadline, "the gate did not come back after a restart"
        time.sleep(0.5)
    assert fetch_h(host, "http://127.0.0.1:8080/", headers)[0] == 302
    lines = host.check_output("journalctl -t cdsops-gate -o cat --no-pager | grep '\"outcome\":\"signout\"' || true")
    assert '"username":"s000001"' in lines


def test_support_resets_a_subject_binding_with_the_command(host):
    import shlex

    binding = '{"bound_at":"2026-01-01T00:00:00Z","format":"cdsops-gate-subject/1","key_id":"x","subject":"y"}'
    write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    host.run_test("runuser -u cdsops-gate -- python3 -c " + " ".join(
        shlex.quote(a) for a in (write, "/var/lib/cdsops-gate/subjects/s000004", binding)))
    reset = host.run("cdsops-gate --reset-subject s000004")
    assert reset.rc == 0 and "removed" in reset.stdout, reset.stderr
    assert not host.file("/var/lib/cdsops-gate/subjects/s000004").exists
    assert host.run("cdsops-gate --reset-subject s000004").rc == 1


def test_rate_limit_zones_are_loaded_at_http_level(host):
    f = host.file("/etc/nginx/conf.d/cdsops-gate-limits.conf")
    assert f.exists and "limit_req_zone" in f.content_string
    assert "limit_req zone=cdsops_gate_addr" in host.file("/etc/nginx/snippets/cdsops-gate-server.conf").content_string
    host.run_test("nginx -t -q")


@pytest.mark.parametrize("path", ["/etc/cdsops/gate-client-secret", "/etc/cdsops/gate-cookie.key",
                                  "/etc/cdsops/signin.key", "/etc/cdsops/gate.json", "/etc/cdsops/signin-map.json"])
def test_secrets_and_map_are_root_and_gate_only(host, path):
    f = host.file(path)
    assert f.user == "root" and f.group == "cdsops-gate" and f.mode == 0o640


def test_map_written_by_the_module_holds_no_email(host, signin_map):
    assert [e["username"] for e in signin_map["active"]] == ["s000001", "s000004"]
    assert len(signin_map["expired"]) == 1
    found = host.run("grep -rIlE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}' /etc/cdsops")
    assert found.rc == 1 and found.stdout == "", found.stdout
    # nothing but the installed code in the code directory (no byte-code written by root)
    assert host.check_output("find /opt/cdsops-gate -name __pycache__") == ""


def test_valid_session_reaches_the_upstream_as_its_username(host, signin_map):
    h = signin_map["active"][0]["hash"]
    status, body = fetch_h(host, "http://127.0.0.1:8080/", [f"Cookie: {SESSION_COOKIE}={cookie('s000001', h)}"])
    assert (status, body.strip()) == (200, "user=[s000001]")
    # a forged header changes nothing
    status, body = fetch_h(host, "http://127.0.0.1:8080/", [f"Cookie: {SESSION_COOKIE}={cookie('s000001', h)}",
                                                            "X-RStudio-Username: s000004"])
    assert (status, body.strip()) == (200, "user=[s000001]")


@pytest.mark.parametrize("case", ["none", "forged-only", "not-ready", "expired-cookie", "wrong-user"])
def test_refused_sessions_never_reach_the_upstream(host, signin_map, case):
    ready, preparing = signin_map["active"][0]["hash"], signin_map["active"][1]["hash"]
    headers = {
        "none": [],
        "forged-only": ["X-RStudio-Username: s000001"],
        "not-ready": [f"Cookie: {SESSION_COOKIE}={cookie('s000004', preparing)}"],
        "expired-cookie": [f"Cookie: {SESSION_COOKIE}={cookie('s000001', ready, time.time() - 5)}"],
        "wrong-user": [f"Cookie: {SESSION_COOKIE}={cookie('s000004', ready)}"],
    }[case]
    status, body = fetch_h(host, "http://127.0.0.1:8080/some/page", headers)
    assert status != 200 and "user=" not in body
    assert status == 302  # to the gate's login page
    # the login itself cannot reach an issuer here: a clear error page, not a crash
    status, body = fetch_h(host, "http://127.0.0.1:8080/_cdsops/login?rd=/some/page", headers)
    assert status == 502 and "could not be completed" in body


def test_auth_location_is_internal_and_gate_reloads(host):
    assert fetch_h(host, "http://127.0.0.1:8080/_cdsops/auth", [])[0] == 404
    host.run_test("systemctl reload cdsops-gate")
    time.sleep(1)
    assert host.service("cdsops-gate").is_running
    assert fetch_h(host, "http://127.0.0.1:9180/_cdsops/healthz", [])[0] == 200
