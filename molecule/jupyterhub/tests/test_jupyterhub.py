"""The open IDE profile on a systemd host (testinfra through podman exec).

A student's browser is molecule/jupyterhub/tests/hubclient.py, run inside the container with
the hub's venv python against https://127.0.0.1 (the real nginx, gate, hub, proxy and
servers). Its only credential is the gate's session cookie, signed here with the scenario's
throwaway cookie key exactly as the gate signs it after a sign-in (the OIDC flow itself is
covered by molecule/jupyterhub/tests/test_browser.py).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(PROJECT / "src"))
from cdsops.gate import SESSION_COOKIE  # noqa: E402
from cdsops.gate import session as gate_session  # noqa: E402
from cdsops.identity import identity_hash  # noqa: E402

CONTAINER = "cdsops-jupyterhub"
COOKIE_KEY = b"molecule-cookie-key-0123456789abcdef0123456789"
HASH_KEY = b"molecule-hash-key-0123456789"
CLIENT = "/root/hubclient.py"
PY = "/opt/cdsops-jupyterhub/bin/python"
DATA_CSV = PROJECT / "molecule/rstudio_server/files/course-data/hosp/patients.csv"
EMAIL_RE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}"
UNIT = "cdsops-jupyter-{}"


@pytest.fixture(scope="module")
def host():
    h = testinfra.get_host(f"podman://{CONTAINER}")
    src = (Path(__file__).parent / "hubclient.py").read_text()
    h.run(f"cat > {CLIENT} <<'PYEOF'\n{src}\nPYEOF")
    return h


def cookie(username: str) -> str:
    key = gate_session.derive_key(COOKIE_KEY, "session")
    h = identity_hash(f"student{int(username[1:])}@example.org", HASH_KEY)
    return f"{SESSION_COOKIE}={gate_session.issue(key, username, h, int(time.time() + 3600))}"


def browser(host, user: str, action: str, *args: str, gate_user: str | None = None) -> dict:
    c = cookie(gate_user or user) if (gate_user or user) != "-" else "-"
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)
    cmd = host.run(f"{PY} {CLIENT} '{c}' '{user}' {action} {quoted}")
    assert cmd.rc == 0, cmd.stderr[-3000:]
    return json.loads(cmd.stdout.strip().splitlines()[-1])


def unit_pid(host, user: str) -> int:
    return int(host.check_output(f"systemctl show -p MainPID --value {UNIT.format(user)}"))


@pytest.fixture(scope="module")
def s1_ready(host):
    out = browser(host, "s000001", "spawn")
    assert out["ready"], "s000001's server never became ready"
    return True


def test_hub_listens_on_loopback_only(host):
    assert host.service("cdsops-jupyterhub").is_running
    listening = host.check_output("ss -Htln")
    for port in (8000, 8001, 8081, 8010):  # proxy, proxy API, hub, check server
        assert f"127.0.0.1:{port}" in listening
        assert f"0.0.0.0:{port}" not in listening and f"*:{port}" not in listening


def test_server_runs_as_the_students_uid_with_limits(host, s1_ready):
    pid = unit_pid(host, "s000001")
    # /proc is mounted hidepid=invisible: root in the container lacks CAP_SYS_PTRACE, so it
    # reads other uids' processes through the exempt group (procview), as monitoring does
    status = host.check_output(f"setpriv --groups procview --reuid 0 --regid 0 cat /proc/{pid}/status")
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    assert set(uids) == {"200001"}
    assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    props = host.check_output(f"systemctl show {UNIT.format('s000001')} -p MemoryLimit -p MemoryMax "
                              f"-p CPUQuotaPerSecUSec -p PrivateTmp -p UMask -p NoNewPrivileges -p User")
    assert "PrivateTmp=yes" in props and "UMask=0077" in props and "NoNewPrivileges=yes" in props
    assert "User=200001" in props or "User=s000001" in props  # the spawner passes the uid
    assert str(400 * 1024 * 1024) in props and "CPUQuotaPerSecUSec=200ms" in props


def test_terminals_are_refused(host, s1_ready):
    # signed in to s000001's own server (so a refusal is the terminal policy, not a missing login)
    ok = browser(host, "s000001", "GET", "/user/s000001/api/kernelspecs")
    assert ok["status"] == 200 and '"ir"' in ok["body"], ok
    out = browser(host, "s000001", "POST", "/user/s000001/api/terminals")
    assert out["status"] in (403, 404), out


def test_chunked_upload_over_the_limit_is_refused(host, s1_ready):
    small = browser(host, "s000001", "upload", "small.bin", "1")
    assert small["statuses"] == [201] or small["statuses"] == [200], small
    big = browser(host, "s000001", "upload", "big.bin", "3")
    assert big["statuses"][:2] in ([201, 200], [200, 200]) and big["statuses"][-1] == 413, big
    assert not host.file("/home/s000001/big.bin").exists
    assert host.file("/home/s000001/small.bin").size == 1024 * 1024


def test_file_is_private_to_the_student(host, s1_ready):
    f = host.file("/home/s000001/small.bin")
    assert f.user == "s000001" and f.mode == 0o600  # umask 077 of the server


def test_forged_username_header_never_reaches_the_hub(host, s1_ready):
    # no gate session, a forged header: the gate's login, never the hub
    anon = browser(host, "-", "GET", "/hub/api/user", "X-RStudio-Username: s000001")
    assert "/hub/" not in anon["url"].split("?")[0], anon  # sent to the gate's sign-in instead
    assert '"s000001"' not in anon["body"]
    # s000002's gate session and a forged header naming s000001: the hub sees s000002
    forged = browser(host, "-", "GET", "/hub/api/user", "X-RStudio-Username: s000001", gate_user="s000002")
    assert forged["status"] == 200 and json.loads(forged["body"])["name"] == "s000002", forged


def test_another_students_server_path_is_refused_by_nginx(host, s1_ready):
    out = browser(host, "-", "GET", "/user/s000001/api/status", gate_user="s000002")
    assert out["status"] == 403, out


def test_downloads_are_refused(host, s1_ready):
    out = browser(host, "-", "GET", "/user/s000001/files/small.bin", gate_user="s000001")
    assert out["status"] == 403, out


def test_expired_account_gets_no_server_even_with_the_header(host):
    # straight to the hub's proxy as root with nginx's secret: the hub still refuses
    secret = host.check_output("cat /etc/cdsops-jupyterhub/proxy-secret")
    cmd = host.run("python3 -c \"import urllib.request as u, urllib.error as e\n"
                   "r=u.Request('http://127.0.0.1:8000/hub/login', headers={'X-RStudio-Username': 's000003', "
                   f"'X-Cdsops-Proxy-Secret': '{secret}'}})\n"
                   "try: print(u.urlopen(r, timeout=20).status)\nexcept e.HTTPError as x: print(x.code)\"")
    assert cmd.stdout.strip() == "403", cmd.stdout + cmd.stderr


def test_direct_login_on_the_hub_api_port_is_refused(host):
    """The hub's own port stays reachable (students' servers report to it), but a login by
    header there lacks nginx's secret: refused even for a real, active student's name."""
    probe = ("import urllib.request as u, urllib.error as e\n"
             "r=u.Request('http://127.0.0.1:8081/hub/login', headers={'X-RStudio-Username': 's000001'})\n"
             "try: print(u.urlopen(r, timeout=20).status)\nexcept e.HTTPError as x: print(x.code)")
    cmd = host.run(f"runuser -u s000002 -- python3 -c \"{probe}\"")
    assert cmd.stdout.strip() == "403", cmd.stdout + cmd.stderr


@pytest.mark.parametrize("port", [8000, 8001, 8010])
def test_student_uid_cannot_connect_to_the_hub_ports(host, port):
    probe = (f"import socket; s=socket.create_connection(('127.0.0.1', {port}), timeout=5); "
             "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(len(s.recv(100)))")
    student = host.run(f"runuser -u s000001 -- python3 -c \"{probe}\"")
    assert student.rc != 0 and ("refused" in student.stderr or "reset" in student.stderr.lower()), student.stderr
    assert host.run(f"python3 -c \"{probe}\"").rc == 0  # root (like nginx) may


def test_r_cell_reads_the_course_data_and_is_logged(host, s1_ready):
    rows = len(DATA_CSV.read_text().strip().splitlines()) - 1
    code = "nrow(read.csv('/srv/cdsdata/hosp/patients.csv'))"
    out = browser(host, "s000001", "run", code)
    assert out.get("result", "").strip() == f"[1] {rows}", out
    lines = host.check_output("journalctl -q SYSLOG_IDENTIFIER=cdsops-code -o json --no-pager")
    records = [json.loads(line) for line in lines.splitlines()]
    mine = [r for r in records if json.loads(r["MESSAGE"]).get("code") == code]
    assert mine, records[-3:]
    msg = json.loads(mine[-1]["MESSAGE"])
    assert msg["username"] == "s000001" and msg["kernel"] == "ir" and msg["event"] == "code"
    assert msg["truncated"] is False and msg["ts"].endswith("Z")
    assert mine[-1]["_UID"] == "200001"  # journald's trusted field


def test_session_start_is_logged(host, s1_ready):
    lines = host.check_output("journalctl -q SYSLOG_IDENTIFIER=cdsops-session -o cat --no-pager")
    starts = [json.loads(x) for x in lines.splitlines() if '"session.start"' in x]
    assert any(s["username"] == "s000001" and s["profile"] == "jupyter" for s in starts), lines


def test_memory_limit_kills_a_cell_at_it(host, s1_ready):
    cg = f"/sys/fs/cgroup/memory/system.slice/{UNIT.format('s000001')}.service"
    before = host.file(f"{cg}/memory.oom_control").content_string
    out = browser(host, "s000001", "run", "x <- numeric(100 * 1024^2); length(x)")  # 800 MB > 400 MB
    after = host.file(f"{cg}/memory.oom_control").content_string
    kills = [int(re.search(r"oom_kill (\d+)", t).group(1)) for t in (before, after)]
    peak = int(host.file(f"{cg}/memory.max_usage_in_bytes").content_string)
    print(f"memory: oom_kill {kills[0]} -> {kills[1]}, peak {peak / 2**20:.0f} MiB (limit 400 MiB), cell: {out}")
    assert kills[1] > kills[0], out
    assert peak <= 400 * 1024 * 1024
    assert "[1] 104857600" not in out.get("result", "")


def test_cpu_quota_holds_a_busy_loop(host, s1_ready):
    # R measures itself: CPU time (user + system, from the kernel) over 8 s of wall time
    code = ("t0 <- proc.time(); while ((proc.time() - t0)[[3]] < 8) {}; "
            "d <- proc.time() - t0; cat(sprintf('%.3f', (d[[1]] + d[[2]]) / d[[3]]))")
    out = browser(host, "s000001", "run", code)
    share = float(out.get("stdout", "nan"))
    print(f"cpu: {share:.1%} of one core over 8 s (quota 20%)")
    assert share < 0.3, out


def test_no_email_on_the_hosts_disk(host, s1_ready):
    places = "/etc/cdsops /etc/cdsops-jupyterhub /var/lib/cdsops-jupyterhub /home /srv/cdsdata /opt/cdsops-jupyterhub/cdsops-lib"
    found = host.run(f"grep -rIlE '{EMAIL_RE}' {places}")
    assert found.rc == 1 and found.stdout == "", found.stdout
    journal = host.run(f"journalctl -q -o cat --no-pager SYSLOG_IDENTIFIER=cdsops-code SYSLOG_IDENTIFIER=cdsops-session "
                       f"SYSLOG_IDENTIFIER=cdsops-jupyterhub SYSLOG_IDENTIFIER=cdsops-gate | grep -E '{EMAIL_RE}'")
    assert journal.stdout == "", journal.stdout


# A stand-in for a student's server: answers every request with the headers it received.
# It is put behind the real nginx check server and the real proxy with a route of the proxy's
# own API, so what it sees is exactly what a student's server would see.
ECHO = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
ECHO_PORT = 18999
# curl is not on the host: a request with the standard library (method, url, header, body);
# its file name must not shadow a standard module (hubclient.py runs from /root too)
HTTP = r"""
import sys, time, urllib.request
method, url, header, body = sys.argv[1:5]
req = urllib.request.Request(url, data=body.encode() or None, method=method)
if header:
    name, value = header.split(": ", 1); req.add_header(name, value)
for attempt in range(50):
    try:
        print(urllib.request.urlopen(req, timeout=10).read().decode()); break
    except ConnectionRefusedError:
        time.sleep(0.1)
    except OSError as e:
        if "refused" not in str(e): raise
        time.sleep(0.1)
else:
    sys.exit("connection refused")
"""


def _http(host, method: str, url: str, header: str = "", body: str = "") -> str:
    q = lambda v: "'" + v.replace("'", "'\\''") + "'"  # noqa: E731 -- a one-line shell quote
    return host.check_output(f"python3 /root/cdsops_probe_http.py {q(method)} {q(url)} {q(header)} {q(body)}")


def _proxy_api(host, method: str, path: str, body: str = "") -> None:
    """A call to configurable-http-proxy's API with the token the hub gave it (root reads it
    from the proxy's environment)."""
    pid = host.check_output("pgrep -f -o configurable-http-proxy")
    env = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    token = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("CONFIGPROXY_AUTH_TOKEN="))
    _http(host, method, f"http://127.0.0.1:8001/api/routes{path}", f"Authorization: token {token}", body)


def test_the_hubs_secret_never_reaches_a_students_server(host, s1_ready):
    """nginx adds the hub's secret header only on the hub's paths: a student's server (the
    student's own process) must never receive it, or they could log in as anyone on the hub's
    port. Proved with a header-echoing server behind the real nginx and proxy: on a /user/
    path it sees no secret; on a hub path (the control, so the test can fail) it does."""
    secret = host.check_output("cat /etc/cdsops-jupyterhub/proxy-secret").strip()
    assert secret
    host.run(f"cat > /root/echo.py <<'PYEOF'\n{ECHO}\nPYEOF")
    host.run(f"cat > /root/cdsops_probe_http.py <<'PYEOF'\n{HTTP}\nPYEOF")
    host.run(f"nohup python3 /root/echo.py {ECHO_PORT} >/dev/null 2>&1 &")
    _http(host, "GET", f"http://127.0.0.1:{ECHO_PORT}/")  # waits until it listens
    target = json.dumps({"target": f"http://127.0.0.1:{ECHO_PORT}"})
    try:
        _proxy_api(host, "POST", "/user/s000077", target)
        _proxy_api(host, "POST", "/cdsops-echo-control", target)

        def seen(path: str) -> dict:
            out = _http(host, "GET", f"http://127.0.0.1:8010{path}", "X-RStudio-Username: s000077")
            return {k.lower(): v for k, v in json.loads(out).items()}

        student = seen("/user/s000077/api/status")
        assert student.get("x-rstudio-username") == "s000077"  # it did come through nginx
        assert not student.get("x-cdsops-proxy-secret") and secret not in json.dumps(student)
        hub_path = seen("/cdsops-echo-control/")
        assert hub_path.get("x-cdsops-proxy-secret") == secret
    finally:
        _proxy_api(host, "DELETE", "/user/s000077")
        _proxy_api(host, "DELETE", "/cdsops-echo-control")
        host.run(f"pkill -f 'echo.py {ECHO_PORT}'")


def test_expiry_stops_the_server_and_ends_every_process(host):
    """What the reconcile does for an expired student: the hub's API, then cdsops_kill."""
    assert browser(host, "s000002", "spawn")["ready"]
    host.run("runuser -u s000002 -- sh -c 'nohup sleep 600 >/dev/null 2>&1 &'")  # a job left behind
    stop = host.run("echo '[\"s000002\", \"s000009\"]' | /usr/local/sbin/cdsops-hub-stop")
    assert stop.rc == 0 and json.loads(stop.stdout)["stopped"] == ["s000002"], stop.stdout + stop.stderr
    kill_src = (PROJECT / "ansible_collections/cdsops/platform/plugins/module_utils/cdsops_kill.py").read_text()
    host.run(f"cat > /root/cdsops_kill.py <<'PYEOF'\n{kill_src}\nPYEOF")
    killed = host.run("cd /root && python3 -c 'import cdsops_kill, json; print(json.dumps(cdsops_kill.kill_uid_processes([200002])))'")
    assert killed.rc == 0, killed.stderr
    assert host.run("pgrep -u 200002").rc == 1


def test_idle_servers_are_culled(host, s1_ready):
    """The hub runs jupyterhub-idle-culler with the role's timeout (120 minutes by default).
    Waiting that long is not a test, so the culler is run once more with the same service
    token and a 2-second timeout: an idle student's server is stopped by it. Runs last: it
    ends s000001's server."""
    pid = host.check_output("pgrep -f -o jupyterhub_idle_culler")
    assert "--timeout=7200" in host.check_output(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    env = dict(line.split("=", 1) for line in host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines() if "=" in line)
    unit = UNIT.format("s000001")
    assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    time.sleep(3)  # idle for longer than the culler's timeout below
    host.run(
        f"JUPYTERHUB_API_TOKEN={env['JUPYTERHUB_API_TOKEN']} nohup timeout 40 {PY} -m jupyterhub_idle_culler "
        f"--url={env['JUPYTERHUB_API_URL']} --timeout=2 --cull-every=5 >/root/culler.log 2>&1 &"
    )
    for _ in range(80):
        if host.run(f"systemctl is-active {unit}").stdout.strip() != "active":
            break
        time.sleep(0.5)
    log = host.run("cat /root/culler.log").stdout
    host.run("pkill -f 'timeout 40'")
    assert host.run(f"systemctl is-active {unit}").stdout.strip() != "active", log
