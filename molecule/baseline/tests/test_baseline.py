"""Behaviour of the baseline role in a systemd container (run by `molecule verify`).

Runs on the CI host; `host` is the container (testinfra over the podman connection), and
network checks connect from the host to the container's address, i.e. from outside,
from an address that is not in the admin networks (192.0.2.0/24, 2001:db8::/32).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from podman_host import host  # noqa: E402,F401  (podman exec instead of Ansible per command)

FILES = Path(__file__).resolve().parent.parent / "files"
STUDENT_UID = 200001  # cdsops.config: uid_base 200000 + student id 1


def container_ip(host) -> str:
    name = host.backend.get_hostname()
    out = subprocess.run(
        ["podman", "inspect", name, "--format", "{{json .NetworkSettings}}"],
        check=True, capture_output=True, text=True,
    ).stdout
    settings = json.loads(out)
    ip = settings.get("IPAddress") or next(
        n["IPAddress"] for n in settings.get("Networks", {}).values() if n.get("IPAddress")
    )
    return ip


def can_connect(ip: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def listeners(host):
    """Throwaway TCP listeners on 443 (public) and 8787 (must stay closed) in the container."""
    units = []
    for port in (443, 8787):
        unit = f"cdsops-verify-listen-{port}"
        host.run(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null")
        cmd = host.run(f"systemd-run --unit={unit} /usr/bin/python3 -m http.server --bind 0.0.0.0 {port}")
        assert cmd.rc == 0, cmd.stderr
        units.append(unit)
    for _ in range(50):
        if all(host.socket(f"tcp://0.0.0.0:{p}").is_listening for p in (443, 8787)):
            break
        time.sleep(0.1)
    yield
    for unit in units:
        host.run(f"systemctl stop {unit}")


# --- unattended-upgrades -----------------------------------------------------------

def test_unattended_upgrade_dry_run_succeeds(host):
    cmd = host.run("unattended-upgrade --dry-run --debug")
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    assert "Allowed origins are:" in cmd.stdout + cmd.stderr


def test_unattended_upgrades_security_only_with_reboot_window(host):
    dump = host.check_output("apt-config dump")
    assert 'Unattended-Upgrade::Automatic-Reboot "true";' in dump
    assert 'Unattended-Upgrade::Automatic-Reboot-Time "04:30";' in dump
    assert 'Unattended-Upgrade::Mail "root";' in dump
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    origins = [l for l in dump.splitlines() if l.startswith("Unattended-Upgrade::Origins-Pattern::")]
    assert origins and all("Debian-Security" in l for l in origins)


# --- auditd (rendered here; loaded into a real kernel by scripts/test.d/40-audit.sh) ---

def test_audit_rules_cover_student_uid_range_and_changes(host):
    rules = host.file("/etc/audit/rules.d/50-cdsops.rules")
    assert rules.mode == 0o640
    text = rules.content_string
    assert "-S execve,execveat -F uid>=200001 -F uid<=1199999 -k cdsops_student_exec" in text
    for watched in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/sudoers", "/etc/sudoers.d", "/etc/localtime"):
        assert f"-w {watched} -p wa" in text
    assert "clock_settime" in text


def test_auditd_alerts_before_the_disk_is_full(host):
    conf = host.file("/etc/audit/auditd.conf").content_string
    assert "space_left = 25%" in conf and "space_left_action = email" in conf
    assert "admin_space_left_action = suspend" in conf
    assert "disk_full_action = suspend" in conf
    # auditd cannot run in a container: the role keeps it stopped there
    assert not host.service("auditd").is_running


# --- sysctl and mounts -------------------------------------------------------------

def test_sysctl_file_lists_only_real_kernel_keys(host):
    text = host.file("/etc/sysctl.d/60-cdsops.conf").content_string
    keys = [l.split("=")[0].strip() for l in text.splitlines() if l and not l.startswith("#")]
    assert "kernel.kptr_restrict" in keys and "fs.protected_symlinks" in keys
    for key in keys:
        assert host.file("/proc/sys/" + key.replace(".", "/")).exists, key


def test_dev_shm_noexec_in_fstab_and_tmp_keeps_exec(host):
    fstab = host.file("/etc/fstab").content_string
    line = next(l for l in fstab.splitlines() if l.split()[1:2] == ["/dev/shm"])
    assert "noexec" in line and "nosuid" in line and "nodev" in line
    assert not any(l.split()[1:2] == ["/tmp"] and "noexec" in l for l in fstab.splitlines() if l.strip())


# --- sshd: key-only, admins only ---------------------------------------------------

@pytest.fixture(scope="module")
def student(host):
    """A student account (uid in the student range, member of cdsdata) with a valid SSH key."""
    host.run("getent group cdsdata || groupadd -g 199999 cdsdata")
    host.run(f"id s000001 || useradd -m -u {STUDENT_UID} -G cdsdata -s /bin/bash s000001")
    host.run("usermod -p '*' s000001")
    pub = (FILES / "test_student_ed25519.pub").read_text().strip()
    host.run(f"install -d -m 0700 -o s000001 -g s000001 /home/s000001/.ssh && "
             f"echo '{pub}' > /home/s000001/.ssh/authorized_keys && "
             f"chown s000001: /home/s000001/.ssh/authorized_keys && chmod 0600 /home/s000001/.ssh/authorized_keys")
    yield "s000001"


def ssh_as(host, user: str, keyfile: str, *extra: str):
    key = (FILES / keyfile).read_text()
    host.run(f"install -m 0600 /dev/null /root/{keyfile} && printf '%s' '{key}' > /root/{keyfile}")
    opts = "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5"
    return host.run(f"ssh {opts} {' '.join(extra)} -i /root/{keyfile} {user}@127.0.0.1 id -un")


def test_sshd_effective_config_is_key_only(host):
    conf = host.check_output("sshd -T")
    assert "passwordauthentication no" in conf
    assert "kbdinteractiveauthentication no" in conf
    assert "permitrootlogin no" in conf
    assert "allowgroups cdsops-admins" in conf
    assert "denygroups cdsdata" in conf


def test_admin_logs_in_with_key(host):
    cmd = ssh_as(host, "opsadmin", "test_admin_ed25519")
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.strip() == "opsadmin"
    sudo = ssh_as(host, "opsadmin", "test_admin_ed25519")
    assert sudo.rc == 0


def test_student_cannot_log_in_even_with_a_valid_key(host, student):
    cmd = ssh_as(host, student, "test_student_ed25519")
    assert cmd.rc == 255
    assert "Permission denied" in cmd.stderr


def test_password_login_is_not_offered(host):
    cmd = ssh_as(host, "opsadmin", "test_admin_ed25519", "-o PreferredAuthentications=password,keyboard-interactive")
    assert cmd.rc == 255
    assert "Permission denied (publickey)" in cmd.stderr


# --- firewall (from outside the container) -----------------------------------------

def test_firewall_ruleset_is_loaded(host):
    ruleset = host.check_output("nft list table inet cdsops_filter")
    assert "policy drop" in ruleset
    assert "192.0.2.0/24" in ruleset


def test_public_port_open_from_outside(host, listeners):
    assert can_connect(container_ip(host), 443)


def test_ide_port_8787_closed_from_outside(host, listeners):
    assert host.socket("tcp://0.0.0.0:8787").is_listening
    assert not can_connect(container_ip(host), 8787)


def test_ssh_closed_to_non_admin_networks(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening
    assert not can_connect(container_ip(host), 22)


# --- time sync ---------------------------------------------------------------------

def test_timesyncd_enabled_with_configured_servers(host):
    assert host.service("systemd-timesyncd").is_enabled
    conf = host.file("/etc/systemd/timesyncd.conf.d/50-cdsops.conf").content_string
    assert "NTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org 2.debian.pool.ntp.org" in conf
