"""The baseline role's nftables ruleset, loaded into real network namespaces on this machine.

The Molecule scenario proves the compute profile from outside one container; this test
covers both profiles (compute: 443 public; management: no public port) from an admin
network and from a non-admin network, and, from inside the server namespace, what student
uids may reach: the egress allow-list (loopback, the resolver, the configured networks) and
the IDE-port guard, which the rstudio_server role's drop-in fills and which survives a
reload of the whole ruleset. The namespaces, the documentation-range addresses
(192.0.2.0/24 = "admin", 198.51.100.0/24 = "internet") and the listeners exist only for the
test and are removed after it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "baseline" / "templates" / "nftables.conf.j2"
GUARD_DROPIN = ROOT / "roles" / "rstudio_server" / "templates" / "cdsops-ide-guard.nft.j2"
PORTS = (22, 53, 443, 5559, 8000, 8081, 8787, 9100, 19532)
STUDENT, OTHER_USER = 200001, 1000  # a student uid (uid_base 200000 + 1) and a normal account

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nft)"),
    pytest.mark.skipif(not (shutil.which("nft") and shutil.which("ip")), reason="needs nft and ip (scripts/apt/roles.txt)"),
]

LISTENER = textwrap.dedent(
    """
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for port in map(int, sys.argv[1:]):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept(); conn.close()
    """
)
PROBE = "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close()\nexcept OSError:\n    sys.exit(1)\n"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def template(src: Path, dest: Path, variables: dict) -> Path:
    env = dict(os.environ, ANSIBLE_INVENTORY_ENABLED="ansible.builtin.host_list", ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-o", "-m", "ansible.builtin.template",
         "-a", f"src={src} dest={dest} mode=0644", "-e", json.dumps(variables)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def render(tmp_path: Path, name: str, variables: dict, dropins: dict | None = None) -> Path:
    """The ruleset, including a drop-in directory of its own (with the given rendered drop-ins)."""
    include_dir = tmp_path / f"{name}.d"
    include_dir.mkdir()
    for dropin_name, (src, dropin_vars) in (dropins or {}).items():
        template(src, include_dir / dropin_name, dropin_vars)
    defaults = yaml.safe_load((ROOT / "roles" / "baseline" / "defaults" / "main.yml").read_text(encoding="utf-8"))
    variables = {**defaults, "baseline_firewall_include_dir": str(include_dir),
                 "baseline_firewall_student_dns_servers": ["198.51.100.2"], **variables}
    dest = template(TEMPLATE, tmp_path / f"{name}.nft", variables)
    check = sh("nft", "-c", "-f", str(dest), check=False)
    assert check.returncode == 0, f"nft -c refused the rendered ruleset: {check.stderr}"
    return dest


@pytest.fixture
def lab():
    """server <-veth-> admin (192.0.2.0/24), server <-veth-> internet (198.51.100.0/24)."""
    tag = f"{os.getpid() % 100000}"
    ns = {"srv": f"cdsfw-s{tag}", "adm": f"cdsfw-a{tag}", "inet": f"cdsfw-i{tag}"}
    listeners: list[subprocess.Popen] = []
    try:
        for n in ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        for peer, net in (("adm", "192.0.2"), ("inet", "198.51.100")):
            a, b = f"v{peer[0]}s{tag}", f"v{peer[0]}c{tag}"
            sh("ip", "link", "add", a, "netns", ns["srv"], "type", "veth", "peer", "name", b, "netns", ns[peer])
            sh("ip", "-n", ns["srv"], "addr", "add", f"{net}.1/24", "dev", a)
            sh("ip", "-n", ns[peer], "addr", "add", f"{net}.2/24", "dev", b)
            sh("ip", "-n", ns["srv"], "link", "set", a, "up")
            sh("ip", "-n", ns[peer], "link", "set", b, "up")
        for n in ns.values():
            listener = subprocess.Popen(
                ["ip", "netns", "exec", n, sys.executable, "-c", LISTENER, *map(str, PORTS)],
                stdout=subprocess.PIPE, text=True,
            )
            listeners.append(listener)
            assert listener.stdout.readline().strip() == "ready"

        def reachable(src: str, ip: str, port: int, uid: int = 0) -> bool:
            as_uid = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
            probe = [*as_uid, "/usr/bin/python3", "-c", PROBE, ip, str(port)]
            return sh("ip", "netns", "exec", ns[src], *probe, check=False).returncode == 0

        def load(path: Path) -> None:
            sh("ip", "netns", "exec", ns["srv"], "nft", "-f", str(path))

        def nft_json(*args: str) -> list:
            out = sh("ip", "netns", "exec", ns["srv"], "nft", "-j", *args).stdout
            return json.loads(out)["nftables"]

        yield reachable, load, nft_json
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait(timeout=10)
        for n in ns.values():
            sh("ip", "netns", "del", n, check=False)


def open_ports(reachable, src: str, ip: str) -> set[int]:
    return {p for p in PORTS if reachable(src, ip, p)}


def test_without_rules_everything_is_reachable(lab):
    reachable, _, _ = lab
    assert open_ports(reachable, "inet", "198.51.100.1") == set(PORTS)


def test_compute_profile(lab, tmp_path):
    reachable, load, _ = lab
    load(render(tmp_path, "compute", {
        "baseline_admin_networks": ["192.0.2.0/24", "2001:db8::/32"],
        "baseline_firewall_public_tcp_ports": [443],
        "baseline_firewall_admin_tcp_ports": [22, 9100],
    }))
    assert open_ports(reachable, "inet", "198.51.100.1") == {443}
    assert open_ports(reachable, "adm", "192.0.2.1") == {22, 443, 9100}


COMPUTE = {
    "baseline_admin_networks": ["192.0.2.0/24"],
    "baseline_firewall_public_tcp_ports": [443],
    "baseline_firewall_admin_tcp_ports": [22],
    "baseline_firewall_student_egress_networks": ["192.0.2.0/24"],  # stands in for 199.36.153.4/30
}
RSTUDIO_DROPIN = {"50-cdsops-rstudio-guard.nft": (GUARD_DROPIN, {"rstudio_server_www_port": 8787,
                                                                 "rstudio_server_loopback_guard_extra_ports": [5559]})}


def refused(nft_json, table: str, counter: str) -> int:
    return next(i["counter"]["packets"] for i in nft_json("list", "counter", "inet", table, counter) if "counter" in i)


def test_student_egress_is_an_allow_list(lab, tmp_path):
    reachable, load, nft_json = lab
    load(render(tmp_path, "egress", COMPUTE))
    before = refused(nft_json, "cdsops_filter", "student_egress_refused")
    # student uids: the configured network on 443 only, the resolver on 53 only, loopback
    assert reachable("srv", "192.0.2.2", 443, STUDENT)
    assert not reachable("srv", "192.0.2.2", 22, STUDENT)
    assert reachable("srv", "198.51.100.2", 53, STUDENT)
    assert not reachable("srv", "198.51.100.2", 443, STUDENT)
    assert reachable("srv", "127.0.0.1", 443, STUDENT)
    assert refused(nft_json, "cdsops_filter", "student_egress_refused") > before
    # root and other accounts are not restricted
    for uid in (0, OTHER_USER):
        assert reachable("srv", "198.51.100.2", 443, uid)
        assert reachable("srv", "192.0.2.2", 22, uid)


def test_egress_restriction_can_be_turned_off(lab, tmp_path):
    reachable, load, _ = lab
    load(render(tmp_path, "open", {**COMPUTE, "baseline_firewall_student_egress_restricted": False}))
    assert reachable("srv", "198.51.100.2", 443, STUDENT)


def test_ide_guard_from_the_rstudio_dropin_refuses_students_and_survives_a_reload(lab, tmp_path):
    reachable, load, nft_json = lab
    ruleset = render(tmp_path, "guard", {**COMPUTE, "baseline_firewall_ide_guard_ports": [8000, 8081]}, RSTUDIO_DROPIN)
    for attempt in range(2):  # the second load is what `systemctl reload nftables` does
        load(ruleset)
        ports = next(i["set"] for i in nft_json("list", "set", "inet", "cdsops_ide_guard", "ide_ports") if "set" in i)
        assert sorted(ports["elem"]) == [5559, 8000, 8081, 8787], attempt
        for port in (5559, 8000, 8081, 8787):
            assert not reachable("srv", "127.0.0.1", port, STUDENT), (attempt, port)
            assert reachable("srv", "127.0.0.1", port, OTHER_USER), (attempt, port)  # nginx, the hub
        assert reachable("srv", "127.0.0.1", 443, STUDENT)
    assert refused(nft_json, "cdsops_ide_guard", "ide_guard_refused") >= 4  # counters restart at a reload


def test_management_profile(lab, tmp_path):
    reachable, load, _ = lab
    load(render(tmp_path, "management", {
        "baseline_admin_networks": ["192.0.2.0/24"],
        "baseline_firewall_public_tcp_ports": [],
        "baseline_firewall_admin_tcp_ports": [22, 9100],
    }))
    assert open_ports(reachable, "inet", "198.51.100.1") == set()
    assert open_ports(reachable, "adm", "192.0.2.1") == {22, 9100}


def test_a_port_open_to_its_own_sources_only(lab, tmp_path):
    # the management host's audit receiver: the compute hosts (here the "admin" side) reach
    # 19532, the internet does not, and SSH stays as the admin networks say (none here)
    reachable, load, _ = lab
    load(render(tmp_path, "sources", {
        "baseline_admin_networks": [],
        "baseline_firewall_source_tcp_ports": [{"port": 19532, "sources": ["192.0.2.2/32", "2001:db8::10/128"]}],
    }))
    assert open_ports(reachable, "adm", "192.0.2.1") == {19532}
    assert open_ports(reachable, "inet", "198.51.100.1") == set()


def test_no_admin_networks_means_admin_ports_closed_to_all(lab, tmp_path):
    reachable, load, _ = lab
    load(render(tmp_path, "default", {
        "baseline_admin_networks": [],
        "baseline_firewall_public_tcp_ports": [443],
        "baseline_firewall_admin_tcp_ports": [22],
    }))
    assert open_ports(reachable, "adm", "192.0.2.1") == {443}
    assert open_ports(reachable, "inet", "198.51.100.1") == {443}
