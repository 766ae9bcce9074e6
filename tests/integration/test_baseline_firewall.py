"""The baseline role's nftables ruleset, loaded into real network namespaces on this machine.

The Molecule scenario proves the compute profile from outside one container; this test
covers both profiles (compute: 443 public; management: no public port) from an admin
network and from a non-admin network. The namespaces, the documentation-range addresses
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

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "baseline" / "templates" / "nftables.conf.j2"
PORTS = (22, 443, 8787, 9100)

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


def render(tmp_path: Path, name: str, variables: dict) -> Path:
    dest = tmp_path / f"{name}.nft"
    env = dict(os.environ, ANSIBLE_INVENTORY_ENABLED="ansible.builtin.host_list", ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-o", "-m", "ansible.builtin.template",
         "-a", f"src={TEMPLATE} dest={dest} mode=0600", "-e", json.dumps(variables)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = sh("nft", "-c", "-f", str(dest), check=False)
    assert check.returncode == 0, f"nft -c refused the rendered ruleset: {check.stderr}"
    return dest


@pytest.fixture
def lab():
    """server <-veth-> admin (192.0.2.0/24), server <-veth-> internet (198.51.100.0/24)."""
    tag = f"{os.getpid() % 100000}"
    ns = {"srv": f"cdsfw-s{tag}", "adm": f"cdsfw-a{tag}", "inet": f"cdsfw-i{tag}"}
    listener = None
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
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns["srv"], sys.executable, "-c", LISTENER, *map(str, PORTS)],
            stdout=subprocess.PIPE, text=True,
        )
        assert listener.stdout.readline().strip() == "ready"

        def reachable(src: str, ip: str, port: int) -> bool:
            return sh("ip", "netns", "exec", ns[src], sys.executable, "-c", PROBE, ip, str(port), check=False).returncode == 0

        def load(path: Path) -> None:
            sh("ip", "netns", "exec", ns["srv"], "nft", "-f", str(path))

        yield reachable, load
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        for n in ns.values():
            sh("ip", "netns", "del", n, check=False)


def open_ports(reachable, src: str, ip: str) -> set[int]:
    return {p for p in PORTS if reachable(src, ip, p)}


def test_without_rules_everything_is_reachable(lab):
    reachable, _ = lab
    assert open_ports(reachable, "inet", "198.51.100.1") == set(PORTS)


def test_compute_profile(lab, tmp_path):
    reachable, load = lab
    load(render(tmp_path, "compute", {
        "baseline_admin_networks": ["192.0.2.0/24", "2001:db8::/32"],
        "baseline_firewall_public_tcp_ports": [443],
        "baseline_firewall_admin_tcp_ports": [22, 9100],
    }))
    assert open_ports(reachable, "inet", "198.51.100.1") == {443}
    assert open_ports(reachable, "adm", "192.0.2.1") == {22, 443, 9100}


def test_management_profile(lab, tmp_path):
    reachable, load = lab
    load(render(tmp_path, "management", {
        "baseline_admin_networks": ["192.0.2.0/24"],
        "baseline_firewall_public_tcp_ports": [],
        "baseline_firewall_admin_tcp_ports": [22, 9100],
    }))
    assert open_ports(reachable, "inet", "198.51.100.1") == set()
    assert open_ports(reachable, "adm", "192.0.2.1") == {22, 9100}


def test_no_admin_networks_means_admin_ports_closed_to_all(lab, tmp_path):
    reachable, load = lab
    load(render(tmp_path, "default", {
        "baseline_admin_networks": [],
        "baseline_firewall_public_tcp_ports": [443],
        "baseline_firewall_admin_tcp_ports": [22],
    }))
    assert open_ports(reachable, "adm", "192.0.2.1") == {443}
    assert open_ports(reachable, "inet", "198.51.100.1") == {443}
