"""Behaviour of the baseline role in a systemd container (run by `molecule verify`).

Runs on the CI host; `host` is the container (testinfra over the podman connection), and
network checks connect from the host to the container's address, i.e. from outside,
from an address that is not in the admin networks (192.0.2.0/24, 2001:db8::/32).
"""

from __future__ import annotations

import json
import re
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
    origins = [ln for ln in dump.splitlines() if ln.startswith("Unattended-Upgrade::Origins-Pattern::")]
    assert origins and all("Debian-Security" in ln for ln in origins)


# --- auditd (rendered here; loaded into a real kernel by scripts/test.d/40-audit.sh) ---

def test_audit_rules_cover_student_uid_range_and_changes(host):
    rules = host.file("/etc/audit/rules.d/50-cdsops.rules")
    assert rules.mode == 0o640
    text = rules.content_string
    assert "-S execve,execveat -F uid>=200001 -F uid<=1199999 -k cdsops_student_exec" in text
    for watched in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/sudoers", "/etc/sudoers.d", "/etc/localtime"):
        assert f"-w {watched} -p wa" in text
    assert "clock_settime" in text
    for watched in ("/etc/cdsops", "/etc/rstudio", "/etc/nginx", "/etc/nftables.conf", "/etc/nftables.d",
                    "/etc/ssh/sshd_config"):
        assert f"-w {watched} -p wa -k cdsops_config" in text


def test_immutable_flag_is_alone_and_loaded_last(host):
    """-e 2 is never loaded here (nor by the host audit test): its file and its place are checked."""
    final = host.file("/etc/audit/rules.d/99-finalize.rules")
    assert final.mode == 0o640
    rules = [ln for ln in final.content_string.splitlines() if ln.strip() and not ln.startswith("#")]
    assert rules == ["-e 2"]
    # numbered files load in order (Debian's own audit.rules sorts after them, and holds no -e)
    names = sorted(n for n in host.check_output("ls /etc/audit/rules.d").split() if n[:1].isdigit())
    assert names[-1] == "99-finalize.rules", names
    # augenrules (without --load) concatenates rules.d in order: -e 2 ends the result
    host.run_expect([0, 1], "augenrules")
    generated = [ln for ln in host.file("/etc/audit/audit.rules").content_string.splitlines() if ln.strip() and not ln.startswith("#")]
    assert generated[-1] == "-e 2" and generated.count("-e 2") == 1
    assert "-w /etc/nginx -p wa -k cdsops_config" in generated
    # at every boot auditd's unit loads that generated file with augenrules --load (Debian 12's
    # unit; the role does not override it), so -e 2 takes effect there; the host audit test
    # runs the role's reload handler (augenrules --load) with a non-locking last -e
    unit = host.check_output("systemctl cat auditd.service")
    assert re.search(r"^ExecStartPost=-?/(usr/)?sbin/augenrules --load$", unit, re.M), unit


def test_mail_to_root_is_delivered_locally(host):
    """auditd (action_mail_acct) and unattended-upgrades mail root through /usr/lib/sendmail (dma)."""
    marker = f"cdsops-mail-probe-{time.time_ns()}"
    assert host.file("/usr/lib/sendmail").exists
    host.run_expect([0], f"printf 'Subject: {marker}\\n\\nhello\\n' | /usr/lib/sendmail root")
    for _ in range(50):
        if marker in host.run("cat /var/mail/root 2>/dev/null").stdout:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the mail to root was not delivered to /var/mail/root: " + host.run("mailq").stdout)
    conf = host.file("/etc/dma/dma.conf").content_string
    assert "MAILNAME /etc/mailname" in conf and "SMARTHOST" not in conf.replace("baseline_mail_smarthost", "")


def test_auditd_never_loses_records_silently(host):
    conf = host.file("/etc/audit/auditd.conf").content_string
    assert "space_left = 25%" in conf and "space_left_action = email" in conf
    # on main: suspend (auditing stopped silently) and ROTATE (old records deleted)
    assert "admin_space_left_action = single" in conf
    assert "disk_full_action = halt" in conf
    assert "max_log_file_action = keep_logs" in conf
    assert "suspend" not in conf
    # auditd cannot run in a container: the role keeps it stopped there
    assert not host.service("auditd").is_running


# --- sysctl and mounts -------------------------------------------------------------

def test_sysctl_file_lists_only_real_kernel_keys(host):
    text = host.file("/etc/sysctl.d/60-cdsops.conf").content_string
    keys = [ln.split("=")[0].strip() for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert "kernel.kptr_restrict" in keys and "fs.protected_symlinks" in keys
    for key in keys:
        assert host.file("/proc/sys/" + key.replace(".", "/")).exists, key


def test_user_namespaces_are_off_for_everyone_but_nothing_else_is_touched(host):
    text = host.file("/etc/sysctl.d/60-cdsops.conf").content_string
    assert "user.max_user_namespaces = 0" in text
    debian_knob = host.file("/proc/sys/kernel/unprivileged_userns_clone").exists
    assert ("kernel.unprivileged_userns_clone = 0" in text) == debian_knob
    assert "fs.suid_dumpable = 0" in text


def test_dev_shm_noexec_in_fstab_and_tmp_keeps_exec(host):
    fstab = host.file("/etc/fstab").content_string
    line = next(ln for ln in fstab.splitlines() if ln.split()[1:2] == ["/dev/shm"])
    assert "noexec" in line and "nosuid" in line and "nodev" in line
    assert not any(ln.split()[1:2] == ["/tmp"] and "noexec" in ln for ln in fstab.splitlines() if ln.strip())


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


def test_ruleset_includes_the_dropin_directory_and_the_ide_guard(host):
    conf = host.file("/etc/nftables.conf").content_string
    assert 'include "/etc/nftables.d/*.nft"' in conf
    assert host.file("/etc/nftables.d").is_directory and host.file("/etc/nftables.d").mode == 0o755
    guard = host.check_output("nft list table inet cdsops_ide_guard")
    assert "meta skuid 200001-1199999 tcp dport @ide_ports" in guard and "reject with tcp reset" in guard


def test_a_dropin_survives_a_reload_and_the_metric_tracks_it(host):
    prom = "/var/lib/prometheus/node-exporter/cdsops_ide_guard.prom"
    assert host.service("cdsops-host-metrics.timer").is_enabled
    try:
        host.run_expect([0], "printf 'add element inet cdsops_ide_guard ide_ports { 8000 }\\n' > /tmp/60-probe.nft"
                             " && /usr/local/sbin/cdsops-nft-check-dropin /tmp/60-probe.nft"
                             " && mv /tmp/60-probe.nft /etc/nftables.d/60-probe.nft")
        for reload in ("systemctl reload nftables", "nft -f /etc/nftables.conf"):
            host.run_expect([0], reload)
            assert "8000" in host.check_output("nft list set inet cdsops_ide_guard ide_ports"), reload
            host.run_expect([0], "systemctl start cdsops-host-metrics.service")
            assert "cdsops_ide_guard_present 1" in host.file(prom).content_string
        host.run_expect([0], "nft delete element inet cdsops_ide_guard ide_ports '{ 8000 }'")
        host.run_expect([0], "systemctl start cdsops-host-metrics.service")
        assert "cdsops_ide_guard_present 0" in host.file(prom).content_string
    finally:
        host.run("rm -f /etc/nftables.d/60-probe.nft; systemctl reload nftables; systemctl start cdsops-host-metrics.service")
    assert "cdsops_ide_guard_present 1" in host.file(prom).content_string
    # a broken drop-in is refused by the checker before it could break the whole ruleset
    host.run_expect([0], "printf 'add element inet nosuch table { 1 }\\n' > /tmp/bad.nft")
    assert host.run("/usr/local/sbin/cdsops-nft-check-dropin /tmp/bad.nft").rc != 0


EGRESS_PROBE = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('192.0.2.10', 443), timeout=3).close()\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)


def egress_refused(host) -> int:
    out = json.loads(host.check_output("nft -j list counter inet cdsops_filter student_egress_refused"))
    return next(i["counter"]["packets"] for i in out["nftables"] if "counter" in i)


def test_students_cannot_reach_other_destinations_and_are_counted(host, student):
    host.run_expect([0], f"printf \"{EGRESS_PROBE}\" > /tmp/egress.py && chmod 0644 /tmp/egress.py")
    before = egress_refused(host)
    out = host.run(f"setpriv --reuid={STUDENT_UID} --regid={STUDENT_UID} --clear-groups python3 /tmp/egress.py")
    assert out.stdout.strip() in {"PermissionError", "OSError", "ConnectionRefusedError"}, out.stdout + out.stderr
    after = egress_refused(host)
    assert after > before
    host.run("python3 /tmp/egress.py")  # root: not subject to the allow-list (not counted)
    assert egress_refused(host) == after


def test_public_port_open_from_outside(host, listeners):
    assert can_connect(container_ip(host), 443)


def test_ide_port_8787_closed_from_outside(host, listeners):
    assert host.socket("tcp://0.0.0.0:8787").is_listening
    assert not can_connect(container_ip(host), 8787)


def test_ssh_closed_to_non_admin_networks(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening
    assert not can_connect(container_ip(host), 22)


# --- sessions: umask, core dumps, banners (CIS) ------------------------------------

def test_a_students_session_creates_private_files(host, student):
    """On main the umask was 022: files a student left in /tmp were world-readable."""
    out = host.run(f"su -l {student} -c 'rm -f /tmp/umask-probe; touch /tmp/umask-probe; umask; stat -c %a /tmp/umask-probe'")
    assert out.rc == 0, out.stderr
    assert out.stdout.split() == ["0077", "600"], out.stdout
    assert "UMASK\t\t077" in host.file("/etc/login.defs").content_string


def test_no_core_dumps(host, student):
    assert host.run(f"su -l {student} -c 'ulimit -c'").stdout.strip() == "0"
    conf = host.file("/etc/security/limits.d/60-cdsops-no-core.conf").content_string
    assert re.search(r"^\*\s+hard\s+core\s+0$", conf, re.M), conf
    conf = host.file("/etc/systemd/coredump.conf.d/60-cdsops.conf").content_string
    assert "Storage=none" in conf and "ProcessSizeMax=0" in conf


def test_login_banners_without_system_details(host):
    for path in ("/etc/issue", "/etc/issue.net", "/etc/motd"):
        text = host.file(path).content_string
        assert "Authorized use only" in text, path
        assert not any(esc in text for esc in ("\\m", "\\r", "\\s", "\\v")) and "Debian" not in text, path
    assert "banner /etc/issue.net" in host.check_output("sshd -T")


def test_sshd_config_and_cron_are_root_only(host):
    conf = host.file("/etc/ssh/sshd_config")
    assert conf.user == "root" and conf.mode == 0o600
    for path in ("/etc/cron.allow", "/etc/at.allow"):
        allow = host.file(path)
        assert allow.content_string == "root\n" and allow.mode == 0o600, path
    assert not host.file("/etc/cron.deny").exists
    for path in ("/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly", "/etc/cron.d"):
        if host.file(path).exists:
            assert host.file(path).mode == 0o700, path
    if host.file("/etc/crontab").exists:
        assert host.file("/etc/crontab").mode == 0o600


def test_unneeded_services_are_removed(host):
    """prepare.yml installs telnet (a client CIS wants gone); the role removes it."""
    assert not host.package("telnet").is_installed
    assert not host.package("avahi-daemon").is_installed


# --- time sync ---------------------------------------------------------------------

def test_timesyncd_enabled_with_configured_servers(host):
    assert host.service("systemd-timesyncd").is_enabled
    conf = host.file("/etc/systemd/timesyncd.conf.d/50-cdsops.conf").content_string
    assert "NTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org 2.debian.pool.ntp.org" in conf
