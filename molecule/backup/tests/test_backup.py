"""The backup role and playbooks/restore.yml in a systemd container (compute + management).

Back up, delete a student's files and corrupt the roster, restore both with the playbook,
and compare byte for byte (checksums, modes, owners) with the state before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from podman_host import host  # noqa: E402,F401  (podman exec instead of Ansible per command)

REPO = Path(__file__).resolve().parents[3]
RESTIC = "restic -r /var/backups/cdsops/restic --password-file /etc/cdsops/backup/password"
# .cache is excluded from the backups (backup_homes_excludes): compare everything else
HOME_MANIFEST = ("cd /home/s000001 && find . -path ./.cache -prune -o -printf '%p %y %m %u %g %l\\n' | sort && "
                 "find . -path ./.cache -prune -o -type f -print0 | sort -z | xargs -0 sha256sum")
ROSTER_SUM = "sha256sum /var/lib/cdsops/roster.duckdb && stat -c '%a %U %G' /var/lib/cdsops/roster.duckdb"


def run_ok(host, cmd: str) -> str:
    result = host.run(cmd)
    assert result.rc == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def metrics(host) -> dict[str, float]:
    out = {}
    for line in run_ok(host, "cat /var/lib/prometheus/node-exporter/cdsops_backup.prom").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def snapshots(host, tag: str) -> list[dict]:
    return json.loads(run_ok(host, f"{RESTIC} snapshots --json --tag {tag}"))


def restore_playbook(host, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    name = host.backend.name
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"[compute]\n{name}\n[management]\n{name}\n[all:vars]\nansible_connection=containers.podman.podman\n"
                         "ansible_become=false\n")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks/restore.yml"), *extra],
        capture_output=True, text=True, env=env, check=False, timeout=300)


def test_secrets_and_configuration_are_root_only(host):
    for path in ["/etc/cdsops/backup/password", "/etc/cdsops/backup/backup.json"]:
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600), path
    assert host.file("/etc/cdsops/backup").mode == 0o700
    assert host.file("/var/backups/cdsops/restic/config").exists
    assert "molecule-test-password" not in host.file("/etc/cdsops/backup/backup.json").content_string


def test_timer_is_scheduled(host):
    timer = host.service("cdsops-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert "02:15:00" in run_ok(host, "systemctl show -p TimersCalendar cdsops-backup.timer")


def test_backup_run_writes_snapshots_and_metrics(host):
    run_ok(host, "systemctl start cdsops-backup.service")
    homes, roster = snapshots(host, "cdsops-homes"), snapshots(host, "cdsops-roster")
    assert len(homes) == 1 and homes[0]["paths"] == ["/home"]
    assert len(roster) == 1 and roster[0]["paths"] == ["/var/lib/cdsops-backup/roster"]
    m = metrics(host)
    assert m['cdsops_backup_last_status{set="homes"}'] == 0
    assert m['cdsops_backup_last_status{set="roster"}'] == 0
    now = float(run_ok(host, "date +%s"))
    assert now - 300 < m['cdsops_backup_last_success_timestamp_seconds{set="homes"}'] <= now
    assert now - 300 < m['cdsops_backup_last_success_timestamp_seconds{set="roster"}'] <= now
    # caches are not backed up; the roster's lock file stays usable by the cdsops service
    listing = run_ok(host, f"{RESTIC} ls latest --tag cdsops-homes")
    assert "/home/s000001/project/data/admissions.csv" in listing
    assert "/home/s000001/.cache" not in listing
    lock = host.file("/var/lib/cdsops/roster.duckdb.lock")
    assert lock.user == "cdsops"


def test_retention_keeps_one_snapshot_per_day(host):
    run_ok(host, "systemctl start cdsops-backup.service")
    # keep-daily 7: two runs on one day leave the newer one (forget --prune ran)
    assert len(snapshots(host, "cdsops-homes")) == 1
    assert len(snapshots(host, "cdsops-roster")) == 1


def test_restore_a_home_and_the_roster_byte_for_byte(host, tmp_path):
    home_before = run_ok(host, HOME_MANIFEST)
    roster_before = run_ok(host, ROSTER_SUM)
    other_before = run_ok(host, "cd /home/s000002 && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    assert "admissions.csv" in home_before and "blob.bin" in home_before
    # disaster: the student's files are gone (a stray new file appears), the roster is corrupt
    run_ok(host, "rm -rf /home/s000001/project /home/s000001/latest.R && echo oops > /home/s000001/stray.txt")
    run_ok(host, "dd if=/dev/urandom of=/var/lib/cdsops/roster.duckdb bs=4096 count=3 conv=notrunc status=none")
    assert run_ok(host, ROSTER_SUM) != roster_before

    result = restore_playbook(host, tmp_path, "-e", "restore_username=s000001", "-e", "restore_roster=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored /home/s000001" in result.stdout and "restored /var/lib/cdsops/roster.duckdb" in result.stdout

    assert run_ok(host, HOME_MANIFEST) == home_before
    assert not host.file("/home/s000001/.cache").exists  # excluded, so not restored
    assert run_ok(host, ROSTER_SUM) == roster_before
    assert run_ok(host, "cd /home/s000002 && find . -type f -print0 | sort -z | xargs -0 sha256sum") == other_before
    # the damaged state is kept aside, root only, for an admin to inspect
    kept = run_ok(host, "ls -d /home/.cdsops-restore/s000001.before-restore.*").split()
    assert len(kept) == 1 and host.file(kept[0] + "/stray.txt").exists
    assert host.file("/home/.cdsops-restore").mode == 0o700
    assert run_ok(host, "ls /var/lib/cdsops/ | grep -c 'roster.duckdb.before-restore'").strip() == "1"


def test_restored_roster_opens_in_duckdb(host, tmp_path):
    from cdsops.store.duckdb_store import DuckDBStore

    subprocess.run(["podman", "cp", f"{host.backend.name}:/var/lib/cdsops/roster.duckdb", str(tmp_path / "r.duckdb")], check=True)
    assert len(DuckDBStore(tmp_path / "r.duckdb").load().students) > 0


def test_restore_refuses_unknown_and_bad_requests(host, tmp_path):
    result = restore_playbook(host, tmp_path, "-e", "restore_username=s999999")
    assert result.returncode != 0
    assert "has no /home/s999999" in result.stdout + result.stderr
    result = restore_playbook(host, tmp_path, "-e", "restore_username=../etc")
    assert result.returncode != 0 and "restore: give -e restore_username" in result.stdout + result.stderr
    result = restore_playbook(host, tmp_path)
    assert result.returncode != 0 and "restore: give -e restore_username" in result.stdout + result.stderr


def test_a_failed_run_is_reported_and_keeps_the_last_success(host):
    before = metrics(host)['cdsops_backup_last_success_timestamp_seconds{set="homes"}']
    run_ok(host, "cp /etc/cdsops/backup/password /root/pw && echo wrong-password-0123456789 > /etc/cdsops/backup/password")
    try:
        assert host.run("systemctl start cdsops-backup.service").rc != 0
    finally:
        run_ok(host, "cp /root/pw /etc/cdsops/backup/password && rm /root/pw")
    m = metrics(host)
    assert m['cdsops_backup_last_status{set="homes"}'] == 1
    assert m['cdsops_backup_last_status{set="roster"}'] == 1
    assert m['cdsops_backup_last_success_timestamp_seconds{set="homes"}'] == before
    assert "wrong password" in run_ok(host, "journalctl -u cdsops-backup.service --no-pager -n 50")
