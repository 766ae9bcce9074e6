"""End-to-end: browser -> nginx (TLS) -> sign-in gate -> OpenID Connect issuer -> IDE.

Real parts: the Debian nginx with the two snippets rendered from the signin_gate role's
templates, the gate run by Debian's python3 with Debian's Flask/Authlib/gunicorn (as on
the compute host), the sign-in map written by the module's own code, and the
``oidc-provider-mock`` issuer. The IDE (RStudio Workbench, not downloadable here) is
replaced by ``EchoUpstreamTestDouble``, which answers with every X-RStudio-Username
value it received.

``GateStack`` is also used by benchmarks/bench_gate.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from cdsops.gate import SESSION_COOKIE  # noqa: E402
from cdsops.gate import session as gate_session  # noqa: E402
from cdsops.identity import canonicalize, identity_hash  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
REGISTRATION_URL = "https://register.example.org/cdsops-form"
EMAIL_RE = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_map_writer():
    """The module's own map code (the collection's module_utils/cdsops_signin_map.py)."""
    from ansible_collections.cdsops.platform.plugins.module_utils import cdsops_signin_map

    return cdsops_signin_map


def render_role_template(name: str, **variables) -> str:
    """A template of the signin_gate role with the role's defaults, ``variables`` on top."""
    import jinja2
    import yaml

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "roles/signin_gate/templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["ansible_managed"] = "rendered by the e2e test"
    defaults = yaml.safe_load((REPO / "roles/signin_gate/defaults/main.yml").read_text())
    return env.get_template(name).render(**{**defaults, **variables})


def make_pki(directory: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdsops e2e throwaway CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(directory / "server.key", 0o600)


class EchoUpstreamTestDouble:
    """TEST DOUBLE standing in for RStudio Workbench (which cannot be installed here).

    Answers every request with JSON: the path it was asked for and *every* value of the
    X-RStudio-Username header it received (so a forged second header would show).
    """

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                body = json.dumps({
                    "test_double": "EchoUpstreamTestDouble",
                    "path": self.path,
                    "x_rstudio_username": self.headers.get_all("X-RStudio-Username") or [],
                }).encode()
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GateStack:
    """nginx + cdsops-gate + oidc-provider-mock + an upstream test double, on free loopback ports."""

    def __init__(self, base: Path, *, workers: int = 2, upstream: str = "python") -> None:
        self.dir = base
        self.workers = workers
        self.upstream_kind = upstream  # "python": EchoUpstreamTestDouble; "nginx": nginx echo server block
        self.procs: dict[str, subprocess.Popen] = {}
        self.echo: EchoUpstreamTestDouble | None = None
        self.nginx_port = free_port()
        self.idp_port = free_port()
        self.gate_port = free_port()
        self.echo_port = free_port()
        self.base_url = f"https://127.0.0.1:{self.nginx_port}"
        self.issuer = f"http://127.0.0.1:{self.idp_port}"
        self.map_path = self.dir / "signin-map.json"
        self.hash_key = os.urandom(32).hex().encode()
        self.cookie_key = os.urandom(48).hex().encode()
        self.writer = load_map_writer()

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> GateStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        import requests

        os.chmod(self.dir, 0o755)
        make_pki(self.dir)
        (self.dir / "client-secret").write_text("e2e-client-secret\n")
        (self.dir / "cookie.key").write_bytes(self.cookie_key + b"\n")
        (self.dir / "signin.key").write_bytes(self.hash_key + b"\n")
        for name in ("client-secret", "cookie.key", "signin.key"):
            os.chmod(self.dir / name, 0o640)
        self.write_map([])
        cfg = {
            "issuer": self.issuer,
            "client_id": "cdsops-e2e",
            "client_secret_file": str(self.dir / "client-secret"),
            "cookie_key_file": str(self.dir / "cookie.key"),
            "hash_key_file": str(self.dir / "signin.key"),
            "map_file": str(self.map_path),
            "state_dir": str(self.dir / "state"),
            "public_url": self.base_url,
            "registration_url": REGISTRATION_URL,
            "listen": f"127.0.0.1:{self.gate_port}",
            "workers": self.workers,
            "session_hours": 8,
            "course_name": "Clinical Data Science 101",
            "allow_insecure_issuer": True,
        }
        (self.dir / "gate.json").write_text(json.dumps(cfg, indent=2))

        self._spawn("idp", [sys.executable, "-m", "oidc_provider_mock", "-p", str(self.idp_port),
                            "-H", "127.0.0.1"], env={"NO_COLOR": "1", "PYTHONWARNINGS": "ignore"})
        self._spawn_gate()
        if self.upstream_kind == "python":
            self.echo = EchoUpstreamTestDouble()
            self.echo.start()
            self.echo_port = self.echo.port
        self._write_nginx_conf()
        self._spawn("nginx", ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                              "-e", str(self.dir / "nginx-error.log"), "-g", "daemon off;"])
        self._wait(lambda: requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok, "idp")
        self._wait(lambda: requests.get(f"http://127.0.0.1:{self.gate_port}/_cdsops/healthz", timeout=2).ok, "gate")
        self._wait(lambda: requests.get(f"{self.base_url}/_cdsops/healthz", verify=self.ca, timeout=2).ok, "nginx")

    GATE_ENV = {"PYTHONPATH": str(REPO / "src"), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}

    def _spawn_gate(self) -> None:
        self._spawn("gate", [SYSTEM_PYTHON, "-m", "cdsops.gate", "--config", str(self.dir / "gate.json")],
                    env=self.GATE_ENV)

    def restart_gate(self) -> None:
        """Stop the gate (all its workers) and start it again, as a restart of its unit does."""
        import requests

        self._stop_proc("gate")
        self._spawn_gate()
        self._wait(lambda: requests.get(f"http://127.0.0.1:{self.gate_port}/_cdsops/healthz", timeout=2).ok, "gate")

    def gate_command(self, *args: str) -> subprocess.CompletedProcess:
        """``cdsops-gate --config gate.json ARGS`` as support runs it on the host."""
        return subprocess.run([SYSTEM_PYTHON, "-m", "cdsops.gate", "--config", str(self.dir / "gate.json"), *args],
                              env={**os.environ, **self.GATE_ENV}, capture_output=True, text=True, timeout=30)

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        out = open(self.dir / f"{name}.out", "ab")  # appended: a restarted gate keeps its earlier lines  # noqa: SIM115  the handle must outlive this statement (held lock or stream)
        err = open(self.dir / f"{name}.err", "ab")  # noqa: SIM115  the handle must outlive this statement (held lock or stream)
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=self.dir,
                                            start_new_session=True)
        out.close()
        err.close()

    def _wait(self, probe, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(self.dir / f'{name}.err').read_text()[-2000:]}")
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come up: {(self.dir / f'{name}.err').read_text()[-2000:]}")
            time.sleep(0.1)

    def _write_nginx_conf(self) -> None:
        snippets = self.dir / "snippets"
        snippets.mkdir(exist_ok=True)
        variables = {"signin_gate_listen_address": "127.0.0.1", "signin_gate_port": self.gate_port}
        for name in ("cdsops-gate-limits.conf", "cdsops-gate-server.conf", "cdsops-gate-protect.conf"):
            (snippets / name).write_text(render_role_template(name + ".j2", **variables))
        echo_server = ""
        if self.upstream_kind == "nginx":
            echo_server = f"""
  # TEST DOUBLE standing in for RStudio Workbench: echoes the username header it got.
  server {{
    listen 127.0.0.1:{self.echo_port};
    access_log off;
    location / {{ default_type text/plain; return 200 "$http_x_rstudio_username"; }}
  }}"""
        d = self.dir
        (d / "nginx.conf").write_text(f"""
worker_processes 2;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log {d}/nginx-access.log;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fastcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
  include {snippets}/cdsops-gate-limits.conf;  # where Debian's conf.d/*.conf is included
  server {{
    listen 127.0.0.1:{self.nginx_port} ssl;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    include {snippets}/cdsops-gate-server.conf;
    location / {{
      include {snippets}/cdsops-gate-protect.conf;
      proxy_pass http://127.0.0.1:{self.echo_port};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
    }}
  }}{echo_server}
}}
""")

    def _stop_proc(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        for name in ("nginx", "gate", "idp"):
            self._stop_proc(name)
        if self.echo is not None:
            self.echo.stop()
            self.echo = None

    # --- state -------------------------------------------------------------------
    def hash(self, email: str) -> str:
        return identity_hash(canonicalize(email), self.hash_key)

    def write_map(self, entries: list[dict], expired: list[str] = ()) -> None:
        doc = self.writer.build_document(entries, list(expired))
        self.writer.atomic_write(str(self.map_path), self.writer.render(doc), mode=0o644)

    def set_user(self, sub: str, claims: dict) -> None:
        import requests

        r = requests.put(f"{self.issuer}/users/{quote(sub, safe='')}", json=claims, timeout=5)
        assert r.status_code == 204, r.text

    def browser(self):
        import requests

        s = requests.Session()
        s.trust_env = False  # no proxy or CA bundle from the environment: loopback + our CA
        s.verify = self.ca
        return s

    def sign_in(self, email: str, *, verified: object = True, path: str = "/", browser=None,
                sub: str | None = None, extra: dict | None = None):
        """Walk the whole code flow like a browser; return (browser, final response).

        ``sub`` is the provider's subject: by default one per person (the canonical identity),
        as Google gives one account the same ``sub`` whichever alias of its address is used.
        ``extra`` claims go into the ID token as they are (the issuer lets them override its own).
        """
        sub = sub or "sub-" + canonicalize(email)
        self.set_user(sub, {"email": email, "email_verified": verified, **(extra or {})})
        s = browser or self.browser()
        form = s.get(self.base_url + path, timeout=10)
        assert form.url.startswith(self.issuer + "/oauth2/authorize"), (form.status_code, form.url)
        final = s.post(form.url, data={"sub": sub}, timeout=10)
        return s, final

    def audit(self) -> list[dict]:
        lines = (self.dir / "gate.out").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def _ready(minutes_ago: float = 60) -> str:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not shutil.which("nginx") or not os.path.exists(SYSTEM_PYTHON):
        pytest.fail("nginx and Debian's python3 are required (scripts/apt/gate.txt)")
    s = GateStack(tmp_path_factory.mktemp("gate-e2e")).start()
    s.write_map(
        [
            {"hash": s.hash("alicesmith@gmail.com"), "username": "s000001", "ready_at": _ready()},
            {"hash": s.hash("eve@example.org"), "username": "s000005", "ready_at": _ready()},
            {"hash": s.hash("dave@example.org"), "username": "s000004", "ready_at": _ready(-10)},
            {"hash": s.hash("frank@example.org"), "username": "s000006", "ready_at": _ready()},
            {"hash": s.hash("grace@example.org"), "username": "s000007", "ready_at": _ready()},
        ],
        expired=[s.hash("carol@example.org")],
    )
    yield s
    s.stop()


def echo(resp) -> dict:
    assert resp.status_code == 200, (resp.status_code, resp.text[:500])
    data = resp.json()
    assert data["test_double"] == "EchoUpstreamTestDouble"
    return data


def test_registered_student_reaches_the_ide_as_their_username(stack):
    s, final = stack.sign_in("alicesmith@gmail.com", path="/rstudio/p/1?a=1&b=two")
    data = echo(final)
    assert data["x_rstudio_username"] == ["s000001"]
    assert data["path"] == "/rstudio/p/1?a=1&b=two"  # back where the student started
    # the session carries on without the issuer
    assert echo(s.get(stack.base_url + "/another", timeout=5))["x_rstudio_username"] == ["s000001"]


def test_session_cookie_is_secure_httponly_samesite_and_host_only(stack):
    _, final = stack.sign_in("alicesmith@gmail.com")
    callback = [r for r in final.history if "/_cdsops/callback" in r.url]
    assert callback and callback[0].status_code == 303
    set_cookie = callback[0].headers["Set-Cookie"]
    # __Host-: browsers accept it only with Secure, Path=/ and no Domain (a sibling host can
    # neither set nor overwrite it)
    assert set_cookie.startswith("__Host-cdsops_session=")
    attributes = [a.strip().lower() for a in set_cookie.split(";")[1:]]
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attributes)
    assert not [a for a in attributes if a.startswith("domain")]
    assert "@" not in set_cookie


def test_googlemail_alias_reaches_the_same_account(stack):
    _, final = stack.sign_in("Alice.Smith@googlemail.com")
    assert echo(final)["x_rstudio_username"] == ["s000001"]


def test_unregistered_identity_gets_the_registration_page(stack):
    _, final = stack.sign_in("bob@example.org")
    assert final.status_code == 403
    assert "No registration found" in final.text
    assert REGISTRATION_URL in final.text
    assert "few minutes" in final.text
    assert SESSION_COOKIE not in final.cookies


def test_expired_student_is_told_to_register_again_and_files_are_kept(stack):
    _, final = stack.sign_in("carol@example.org")
    assert final.status_code == 403
    assert "Your access has expired" in final.text
    assert "files are kept" in final.text
    assert REGISTRATION_URL in final.text


def test_recent_registration_sees_being_prepared(stack):
    _, final = stack.sign_in("dave@example.org")
    assert final.status_code == 403
    assert "being prepared" in final.text
    assert SESSION_COOKIE not in final.cookies


@pytest.mark.parametrize("verified", [False, None, "false"])
def test_unverified_email_is_refused_even_when_registered(stack, verified):
    _, final = stack.sign_in("eve@example.org", verified=verified)
    assert final.status_code == 403
    assert "not verified" in final.text
    assert SESSION_COOKIE not in final.cookies


def test_forged_username_header_is_ignored(stack):
    s, final = stack.sign_in("alicesmith@gmail.com")
    echo(final)
    forged = s.get(stack.base_url + "/", headers={"X-RStudio-Username": "s000006"}, timeout=5)
    assert echo(forged)["x_rstudio_username"] == ["s000001"]
    # without a session the forged header gets the student nowhere near the IDE
    anon = stack.browser().get(stack.base_url + "/x?a=1&b=2", headers={"X-RStudio-Username": "s000006"},
                               allow_redirects=False, timeout=5)
    assert to_login(anon, "/x?a=1&b=2")
    # nor does sending it to the gate's own pages
    gate_page = stack.browser().get(stack.base_url + "/_cdsops/healthz",
                                    headers={"X-RStudio-Username": "s000006"}, timeout=5)
    assert gate_page.status_code == 200


def to_login(resp, rd: str = "/") -> bool:
    """nginx answered a refused request with the redirect to the gate's login page."""
    from urllib.parse import parse_qs, urlsplit

    loc = urlsplit(resp.headers.get("Location", ""))
    return (resp.status_code == 302 and loc.path == "/_cdsops/login"
            and parse_qs(loc.query).get("rd") == [rd])


def _refused(stack, cookie_value: str):
    b = stack.browser()
    b.cookies.set(SESSION_COOKIE, cookie_value, domain="127.0.0.1", path="/")
    r = b.get(stack.base_url + "/", allow_redirects=False, timeout=5)
    assert to_login(r), (r.status_code, r.headers.get("Location"))


def test_tampered_cookie_is_refused(stack):
    s, final = stack.sign_in("alicesmith@gmail.com")
    echo(final)
    good = s.cookies.get(SESSION_COOKIE)
    parts = good.split(".")
    # another student's username under Alice's signature
    _refused(stack, ".".join([parts[0], "s000006", *parts[2:]]))
    # a later expiry under the old signature
    _refused(stack, ".".join([*parts[:3], str(int(parts[3]) + 86400), *parts[4:]]))
    # another session id (e.g. to dodge a sign-out) under the old signature
    _refused(stack, ".".join([*parts[:4], "A" * 22, parts[5]]))
    # a flipped signature character
    sig = parts[5]
    _refused(stack, ".".join([*parts[:5], ("A" if sig[0] != "A" else "B") + sig[1:]]))
    _refused(stack, "garbage")


def test_expired_cookie_is_refused(stack):
    key = gate_session.derive_key(stack.cookie_key, "session")
    h = stack.hash("alicesmith@gmail.com")
    _refused(stack, gate_session.issue(key, "s000001", h, int(time.time()) - 5))
    # the same cookie, still valid, gets in (so the refusal above is the expiry's doing)
    b = stack.browser()
    b.cookies.set(SESSION_COOKIE, gate_session.issue(key, "s000001", h, int(time.time()) + 60),
                  domain="127.0.0.1", path="/")
    assert echo(b.get(stack.base_url + "/", timeout=5))["x_rstudio_username"] == ["s000001"]


def test_cookie_signed_with_another_key_is_refused(stack):
    key = gate_session.derive_key(os.urandom(32), "session")
    _refused(stack, gate_session.issue(key, "s000001", stack.hash("alicesmith@gmail.com"), int(time.time()) + 600))


def test_map_change_is_picked_up_without_restart(stack):
    s, final = stack.sign_in("frank@example.org")
    assert echo(final)["x_rstudio_username"] == ["s000006"]
    entries = json.loads(stack.map_path.read_text())["active"]
    frank = stack.hash("frank@example.org")
    # frank expires: his live session stops working at once, his next sign-in shows "expired"
    stack.write_map([e for e in entries if e["hash"] != frank],
                    expired=json.loads(stack.map_path.read_text())["expired"] + [frank])
    r = s.get(stack.base_url + "/", allow_redirects=False, timeout=5)
    assert to_login(r)
    _, again = stack.sign_in("frank@example.org")
    assert again.status_code == 403 and "expired" in again.text
    # frank registers again: same username, allowed again
    stack.write_map(entries, expired=[e for e in json.loads(stack.map_path.read_text())["expired"] if e != frank])
    _, back = stack.sign_in("frank@example.org")
    assert echo(back)["x_rstudio_username"] == ["s000006"]


def test_logout_ends_the_session(stack):
    s, final = stack.sign_in("alicesmith@gmail.com")
    echo(final)
    out = s.get(stack.base_url + "/_cdsops/logout", timeout=5)
    assert out.status_code == 200 and "Signed out" in out.text
    r = s.get(stack.base_url + "/", allow_redirects=False, timeout=5)
    assert to_login(r)


def test_no_open_redirect_after_sign_in(stack):
    b = stack.browser()
    b.get(stack.base_url + "/_cdsops/logout", timeout=5)
    stack.set_user("sub-alicesmith@gmail.com", {"email": "alicesmith@gmail.com", "email_verified": True})
    form = b.get(stack.base_url + "/_cdsops/login?rd=//evil.example.org/x", timeout=10)
    final = b.post(form.url, data={"sub": "sub-alicesmith@gmail.com"}, timeout=10)
    assert echo(final)["path"] == "/"


def test_callback_with_forged_state_is_refused(stack):
    b = stack.browser()
    b.get(stack.base_url + "/", timeout=10)  # starts a flow: the browser holds a real state
    r = b.get(stack.base_url + "/_cdsops/callback?code=forged&state=forged", timeout=10)
    assert r.status_code == 400 and "could not be completed" in r.text
    assert SESSION_COOKIE not in b.cookies
    assert stack.audit()[-1]["outcome"] == "error"


def test_auth_subrequest_location_is_internal(stack):
    r = stack.browser().get(stack.base_url + "/_cdsops/auth", timeout=5)
    assert r.status_code == 404


def test_audit_has_one_line_per_attempt_and_no_email_anywhere(stack):
    for email, verified in (("alicesmith@gmail.com", True), ("bob@example.org", True), ("carol@example.org", True),
                            ("dave@example.org", True), ("eve@example.org", False)):
        stack.sign_in(email, verified=verified)
    stack.browser().get(stack.base_url + "/_cdsops/callback?code=x&state=y", timeout=10)
    records = stack.audit()
    outcomes = {r["outcome"] for r in records}
    assert {"success", "unknown", "expired", "preparing", "unverified", "error"} <= outcomes
    for r in records:
        assert r["event"] == "signin"
        assert set(r) <= {"ts", "event", "outcome", "username", "hash", "reason", "pid"}
    success = [r for r in records if r["outcome"] == "success"][-1]
    assert success["username"] == "s000001" and success["hash"] == stack.hash("alicesmith@gmail.com")
    assert [r for r in records if r["outcome"] == "unknown"][-1]["hash"] == stack.hash("bob@example.org")
    # privacy: nothing the gate or nginx wrote (logs, map) holds an email address
    for name in ("gate.out", "gate.err", "nginx-access.log", "nginx-error.log", "signin-map.json"):
        path = stack.dir / name
        if path.exists():
            assert not EMAIL_RE.search(path.read_bytes()), f"email address found in {name}"


def test_two_sign_ins_under_way_in_one_browser_both_work(stack):
    stack.set_user("sub-alicesmith@gmail.com", {"email": "alicesmith@gmail.com", "email_verified": True})
    b = stack.browser()
    first = b.get(stack.base_url + "/tab/one", timeout=10)   # e.g. two tabs, or background requests
    second = b.get(stack.base_url + "/tab/two", timeout=10)
    assert first.url != second.url  # two states
    done = b.post(first.url, data={"sub": "sub-alicesmith@gmail.com"}, timeout=10)
    assert echo(done)["path"] == "/tab/one"  # the older flow still completes, to its own page
    b.cookies.clear(domain="127.0.0.1", path="/", name=SESSION_COOKIE)
    done = b.post(second.url, data={"sub": "sub-alicesmith@gmail.com"}, timeout=10)
    assert echo(done)["path"] == "/tab/two"


# --- issue 13: sign-out, ID token audience and nonce, callback errors, rate limits, subject ---


def _audit_since(stack, before: int) -> list[dict]:
    return stack.audit()[before:]


def test_a_copy_of_the_cookie_is_refused_after_sign_out_even_after_a_restart(stack):
    s, final = stack.sign_in("alicesmith@gmail.com")
    echo(final)
    copy = s.cookies.get(SESSION_COOKIE)
    thief = stack.browser()
    thief.cookies.set(SESSION_COOKIE, copy, domain="127.0.0.1", path="/")
    assert echo(thief.get(stack.base_url + "/", timeout=5))["x_rstudio_username"] == ["s000001"]
    before = len(stack.audit())
    out = s.get(stack.base_url + "/_cdsops/logout", timeout=5)
    assert out.status_code == 200 and "Signed out" in out.text
    # every worker refuses the copy (the revocation is on disk, not in one worker's memory)
    for _ in range(8):
        assert to_login(thief.get(stack.base_url + "/", allow_redirects=False, timeout=5))
    signout = [r for r in _audit_since(stack, before) if r["outcome"] == "signout"]
    assert len(signout) == 1 and signout[0]["username"] == "s000001" and signout[0]["event"] == "signin"
    stack.restart_gate()
    assert to_login(thief.get(stack.base_url + "/", allow_redirects=False, timeout=5))
    # another session of the same student (another browser) is not signed out by this one
    other, again = stack.sign_in("alicesmith@gmail.com")
    assert echo(again)["x_rstudio_username"] == ["s000001"]


def test_login_with_a_signed_out_cookie_does_not_re_enter(stack):
    """Workbench's sign-out may still send the browser to the sign-in URL with its cookie."""
    from urllib.parse import parse_qs, urlsplit

    s, final = stack.sign_in("alicesmith@gmail.com")
    echo(final)
    copy = s.cookies.get(SESSION_COOKIE)
    s.post(stack.base_url + "/_cdsops/logout", timeout=5)
    b = stack.browser()
    b.cookies.set(SESSION_COOKIE, copy, domain="127.0.0.1", path="/")
    r = b.get(stack.base_url + "/_cdsops/login?rd=/rstudio/", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"].startswith(stack.issuer + "/oauth2/authorize")
    # the issuer is asked to show its account chooser: no silent sign-in as the last user
    assert parse_qs(urlsplit(r.headers["Location"]).query)["prompt"] == ["select_account"]
    assert any(h.startswith(SESSION_COOKIE + "=;") or h.startswith(SESSION_COOKIE + '="";')
               for h in r.raw.headers.getlist("Set-Cookie"))


def test_the_sign_out_url_workbench_and_the_hub_use_answers_get_and_post(stack):
    for method in ("get", "post"):
        s, final = stack.sign_in("alicesmith@gmail.com")
        echo(final)
        copy = s.cookies.get(SESSION_COOKIE)
        r = getattr(s, method)(stack.base_url + "/_cdsops/logout", timeout=5)
        assert r.status_code == 200 and "Signed out" in r.text
        _refused(stack, copy)


def test_the_open_ides_logout_ends_at_the_gates_sign_out(stack):
    """JupyterHub's /hub/logout (JupyterLab's "Log Out" too) alone would only clear the hub's
    cookie: with the gate's session still valid, auto_login would let the student straight back in."""
    s, final = stack.sign_in("alicesmith@gmail.com")
    echo(final)
    copy = s.cookies.get(SESSION_COOKIE)
    r = s.get(stack.base_url + "/hub/logout", allow_redirects=False, timeout=5)
    assert r.status_code == 303 and r.headers["Location"] == "/_cdsops/logout"
    out = s.get(stack.base_url + "/hub/logout", timeout=5)  # followed, as a browser does
    assert out.status_code == 200 and "Signed out" in out.text
    _refused(stack, copy)


@pytest.mark.parametrize("claims, reasons", [
    # issued to another client (the demonstrated attack): Authlib, told to require our audience
    ({"aud": "someone-else", "azp": "cdsops-e2e"}, {"oidc: invalid_claim", "oidc: invalid_audience"}),
    # several audiences and no azp (Authlib's own azp rule), or an azp that is not us
    ({"aud": ["someone-else", "cdsops-e2e"]}, {"oidc: missing_claim", "oidc: invalid_authorized_party"}),
    ({"aud": ["someone-else", "cdsops-e2e"], "azp": "someone-else"},
     {"oidc: invalid_claim", "oidc: invalid_authorized_party"}),
    # a token saying the issuer "does not support" nonces no longer skips the check (the gate's own)
    ({"nonce": "not-the-one-we-sent", "nonce_supported": False}, {"oidc: invalid_nonce"}),
    ({"nonce": None, "nonce_supported": False}, {"oidc: invalid_nonce"}),
])
def test_id_token_for_another_client_or_without_our_nonce_is_refused(stack, claims, reasons):
    before = len(stack.audit())
    b, final = stack.sign_in("alicesmith@gmail.com", extra=claims)
    assert final.status_code == 400 and "could not be completed" in final.text
    assert SESSION_COOKIE not in b.cookies
    records = _audit_since(stack, before)
    assert [r["outcome"] for r in records] == ["error"]
    assert records[0]["reason"] in reasons


def test_id_token_with_several_audiences_and_our_azp_is_accepted(stack):
    _, final = stack.sign_in("alicesmith@gmail.com", extra={"aud": ["cdsops-e2e", "other"], "azp": "cdsops-e2e"})
    assert echo(final)["x_rstudio_username"] == ["s000001"]


@pytest.mark.parametrize("error, reason", [
    ("access_denied", "oidc: access_denied"),
    ("login_required", "oidc: login_required"),
    ("alice@example.org", "oidc: invalid_error_code"),
    ("server_error\n{\"outcome\":\"success\"}", "oidc: invalid_error_code"),
    ("x" * 500, "oidc: invalid_error_code"),
])
def test_callback_error_codes_only_known_codes_reach_the_audit_line(stack, error, reason):
    before = len(stack.audit())
    r = stack.browser().get(stack.base_url + "/_cdsops/callback", params={"error": error, "state": "s",
                                                                           "error_description": "bob@example.org"},
                            timeout=5)
    assert r.status_code == 400
    records = _audit_since(stack, before)
    assert [(x["outcome"], x["reason"]) for x in records] == [("error", reason)]
    assert not EMAIL_RE.search((stack.dir / "gate.out").read_bytes())


def test_a_flood_on_the_public_locations_gets_429_while_normal_use_passes(stack):
    """From another loopback address (nginx limits per client address, and in total)."""
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=stack.ca)
    before = len(stack.audit())
    statuses: list[int] = []
    started = time.monotonic()
    conn = None
    for _ in range(400):
        if conn is None:
            conn = http.client.HTTPSConnection("127.0.0.1", stack.nginx_port, context=ctx, timeout=10,
                                               source_address=("127.0.0.2", 0))
        conn.request("GET", "/_cdsops/callback?error=access_denied&state=flood")
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
        if resp.will_close:
            conn.close()
            conn = None
    elapsed = time.monotonic() - started
    if conn is not None:
        conn.close()
    passed = statuses.count(400)  # reached the gate: its error page
    print(f"flood: {len(statuses)} requests in {elapsed:.2f} s: {passed} reached the gate, "
          f"{statuses.count(429)} got 429")
    assert set(statuses) <= {400, 429} and statuses.count(429) > 0
    assert statuses[:100] == [400] * 100  # the burst passes
    # at most the burst plus what the rate refilled meanwhile (20/s) reached the gate
    assert passed <= 100 + int(20 * elapsed) + 1
    assert len([r for r in _audit_since(stack, before) if r.get("reason") == "oidc: access_denied"]) == passed
    # meanwhile a student from another address signs in normally
    _, final = stack.sign_in("alicesmith@gmail.com")
    assert echo(final)["x_rstudio_username"] == ["s000001"]
    assert '" 429 ' in (stack.dir / "nginx-access.log").read_text()


def test_same_email_with_another_subject_is_refused_until_support_resets_the_binding(stack):
    _, first = stack.sign_in("grace@example.org", sub="google-account-1")
    assert echo(first)["x_rstudio_username"] == ["s000007"]
    _, again = stack.sign_in("Grace@example.org", sub="google-account-1")  # same account: fine
    assert echo(again)["x_rstudio_username"] == ["s000007"]
    before = len(stack.audit())
    b, other = stack.sign_in("grace@example.org", sub="google-account-2")  # the address changed hands
    assert other.status_code == 403 and "cannot open this course account" in other.text
    assert "contact" in other.text and SESSION_COOKIE not in b.cookies
    records = _audit_since(stack, before)
    assert [r["outcome"] for r in records] == ["subject_mismatch"]
    assert records[0]["username"] == "s000007" and records[0]["hash"] == stack.hash("grace@example.org")
    assert "first sign-in" in records[0]["reason"]
    # the binding on the compute host: a keyed hash of the subject, no email, no raw subject
    binding = (stack.dir / "state/subjects/s000007").read_text()
    assert "google-account" not in binding and not EMAIL_RE.search(binding.encode())
    # support resets the binding; the next sign-in binds the new subject
    reset = stack.gate_command("--reset-subject", "s000007")
    assert reset.returncode == 0 and "removed" in reset.stdout, reset.stderr
    assert stack.gate_command("--reset-subject", "s000007").returncode == 1  # nothing left to remove
    _, rebound = stack.sign_in("grace@example.org", sub="google-account-2")
    assert echo(rebound)["x_rstudio_username"] == ["s000007"]
    _, old = stack.sign_in("grace@example.org", sub="google-account-1")
    assert old.status_code == 403
