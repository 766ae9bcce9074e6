"""The scheduled reconcile: sync the roster, check the guard, run ``playbooks/reconcile.yml``
through ansible-runner, record every change, write metrics, print one JSON line.

- an exclusive lock (``<state_dir>/reconcile.lock``, ``fcntl``): a second run exits at once
  with :data:`EXIT_BUSY` and a clear message; a killed run's lock dies with it;
- job and idle timeouts (ansible-runner ``job_timeout``/``idle_timeout``); after a timeout, a
  cancel (SIGTERM/SIGINT) or an error every process of the run is killed, also the playbook's
  workers, which ansible starts in sessions of their own beyond the reach of ansible-runner's
  process-group kill (each process of a run carries ``CDSOPS_RECONCILE_RUN=<run id>``);
- artifacts under ``<state_dir>/runner/artifacts/<run id>``, the newest ``keep_artifacts`` kept;
- every change a module reports (``changes`` in its result: kind, username, before, after)
  becomes one JSON line in the store's changes record, with the run id;
- after a successful run the store's ``last_applied_at`` is set to the plan time (the guard
  counts revocations since then);
- node-exporter textfile metrics ``cdsops_reconcile_last_success_timestamp_seconds`` and
  ``cdsops_reconcile_last_status`` (0 ok) in ``textfile_dir`` when that directory exists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Config
from .errors import CdsopsError, UsageError
from .plan import GuardError, check_guard
from .service import compute_plan, new_run_id, roster_sync
from .store import open_store
from .store.base import ChangeRecord
from .times import format_iso, utcnow

__all__ = [
    "Busy",
    "RunSettings",
    "RunSummary",
    "reconcile",
    "ansible_home",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_GUARD",
    "EXIT_TIMEOUT",
    "EXIT_BUSY",
    "STATUS_CODES",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_GUARD = 3
EXIT_TIMEOUT = 4
EXIT_BUSY = 75  # EX_TEMPFAIL: another reconcile holds the lock; try again later
STATUS_CODES = {"successful": 0, "failed": 1, "guard": 3, "timeout": 4, "canceled": 5, "error": 1}
DEFAULT_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
METRICS_FILE = "cdsops_reconcile.prom"
RUN_MARKER = "CDSOPS_RECONCILE_RUN"  # in the environment of every process a run starts


class Busy(CdsopsError, RuntimeError):
    """Another reconcile is running (the lock is held); nothing was done."""

    exit_code = EXIT_BUSY


@dataclass
class RunSummary:
    run_id: str
    status: str = "error"
    changes: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    failures: list[dict] = field(default_factory=list)
    sync: dict | None = None
    message: str = ""
    artifacts: str = ""

    @property
    def exit_code(self) -> int:
        return STATUS_CODES.get(self.status, EXIT_FAILED)

    def to_json(self) -> str:
        out = {
            "run_id": self.run_id,
            "status": self.status,
            "changes": dict(sorted(self.changes.items())),
            "changed": sum(self.changes.values()),
            "duration_s": round(self.duration_s, 3),
            "failures": self.failures,
        }
        if self.sync is not None:
            out["sync"] = self.sync
        if self.message:
            out["message"] = self.message
        if self.artifacts:
            out["artifacts"] = self.artifacts
        return json.dumps(out, sort_keys=True)


PACKAGED_ANSIBLE_HOME = Path(__file__).resolve().parent / "ansible"


def ansible_home(configured: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding ``playbooks/reconcile.yml`` (the collection is found on ``sys.path``):
    ``$CDSOPS_ANSIBLE_HOME``; else ``configured`` (``reconcile.ansible_home``); else the checkout
    cdsops is installed from (editable install); else the copy inside the installed package
    (``cdsops/ansible``, what the management host runs: the playbook always
    match the installed code)."""
    env = os.environ.get("CDSOPS_ANSIBLE_HOME") or configured
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "playbooks" / "reconcile.yml").is_file() and (checkout / "ansible_collections").is_dir():
        return checkout
    return PACKAGED_ANSIBLE_HOME


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                try:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                except OSError:
                    holder = ""
                raise Busy(
                    f"another cdsops reconcile is running (lock {path}{', pid ' + holder if holder else ''}); "
                    "nothing was done, the next run will pick up the changes"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock (also when the process is killed)


def write_metrics(textfile_dir: str | os.PathLike[str] | None, status: str, now: float | None = None) -> bool:
    """Write the node-exporter textfile; the success timestamp only moves on success."""
    if not textfile_dir:
        return False
    d = Path(textfile_dir)
    if not d.is_dir():
        return False
    path = d / METRICS_FILE
    last_success = None
    try:
        for line in path.read_text().splitlines():
            if line.startswith("cdsops_reconcile_last_success_timestamp_seconds "):
                last_success = float(line.split()[1])
    except (OSError, ValueError, IndexError):
        last_success = None
    now = time.time() if now is None else now
    code = STATUS_CODES.get(status, EXIT_FAILED)
    if code == 0:
        last_success = now
    lines = [
        "# HELP cdsops_reconcile_last_status Status of the last cdsops reconcile (0 ok, 1 failed, 3 guard, 4 timeout, 5 canceled).",
        "# TYPE cdsops_reconcile_last_status gauge",
        f"cdsops_reconcile_last_status {code}",
        "# HELP cdsops_reconcile_last_run_timestamp_seconds When the last cdsops reconcile finished.",
        "# TYPE cdsops_reconcile_last_run_timestamp_seconds gauge",
        f"cdsops_reconcile_last_run_timestamp_seconds {now:.3f}",
    ]
    if last_success is not None:
        lines += [
            "# HELP cdsops_reconcile_last_success_timestamp_seconds When the last successful cdsops reconcile finished.",
            "# TYPE cdsops_reconcile_last_success_timestamp_seconds gauge",
            f"cdsops_reconcile_last_success_timestamp_seconds {last_success:.3f}",
        ]
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".cdsops_reconcile.")
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        return False  # not writable here (e.g. the service's sandbox): its ExecStopPost hook writes it
    return True


class _Collector:
    """ansible-runner event handler: module changes and failures, nothing else kept."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, dict]] = []
        self.failures: list[dict] = []

    def __call__(self, event: dict) -> bool:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind in ("runner_on_ok", "runner_on_failed"):
            res = data.get("res") or {}
            for c in res.get("changes") or ():
                if isinstance(c, dict) and c.get("kind"):
                    self.changes.append((data.get("host", ""), c))
            if str(data.get("task_action", "")).endswith("cdsops_signin_map") and res.get("changed"):
                # the gate's module reports usernames added / removed / updated
                for what in ("added", "removed", "updated"):
                    for u in res.get(what) or ():
                        self.changes.append((data.get("host", ""), {"kind": f"signin.{what}", "username": u,
                                                                    "before": None, "after": {"map": res.get("path")}}))
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            res = data.get("res") or {}
            msg = " ".join(str(res.get("msg", "")).split())[:500]
            self.failures.append({"host": data.get("host", ""), "task": data.get("task", ""), "msg": msg,
                                  "unreachable": kind == "runner_on_unreachable"})
        return False  # do not keep the event in memory beyond the artifact file


def _student_id(username: str | None, prefix: str) -> int | None:
    if not username or not username.startswith(prefix):
        return None
    rest = username[len(prefix):]
    return int(rest) if rest.isdigit() else None


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of a process from ``/proc/<pid>/stat``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def _run_processes(run_id: str) -> set[int]:
    """The live processes of run ``run_id``: those whose environment carries its marker, every
    process in their sessions (a module that cleared its environment), and all their descendants."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    me = os.getpid()
    stats: dict[int, tuple[str, int, int, int]] = {}
    marked: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()  # no procfs: ansible-runner's process-group kill is all there is
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        stats[pid] = st
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    marked.add(pid)
        except OSError:
            continue  # another user's process, or gone
    own_sid = os.getsid(0)
    sessions = {stats[p][3] for p in marked} - {own_sid}
    found = marked | {p for p, st in stats.items() if st[3] in sessions}
    grew = True
    while grew:
        more = {p for p, st in stats.items() if st[1] in found and p not in found}
        found |= more
        grew = bool(more)
    found.discard(me)
    return found


def _kill_run(run_id: str, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process of run ``run_id`` (rescanning, so a fork during the kill is caught
    too) and wait until they are gone; returns the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + wait_s
    while True:
        pids = _run_processes(run_id)
        for pid in sorted(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue  # gone already, or not ours to kill
            if pid not in killed:
                killed.append(pid)
        if not pids or time.monotonic() > deadline:
            return killed
        time.sleep(0.05)


def _rotate(artifacts: Path, keep: int) -> None:
    if keep <= 0 or not artifacts.is_dir():
        return
    runs = sorted((p for p in artifacts.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for p in runs[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


@dataclass(frozen=True)
class RunSettings:
    """Everything one reconcile needs to run ansible (paths resolved)."""

    store_uri: str
    config_path: str | None
    now: datetime
    allow_mass_revoke: bool
    state: Path
    home: Path
    inventory: Path
    playbook: Path
    job_timeout: int = 1800
    idle_timeout: int = 600
    keep_artifacts: int = 20
    check: bool = False
    envvars: Mapping[str, str] = field(default_factory=dict)
    extravars: Mapping[str, Any] = field(default_factory=dict)

    @property
    def private_data_dir(self) -> Path:
        return self.state / "runner"


def reconcile(
    config: Config,
    *,
    config_path: str | None,
    store_uri: str,
    source: str | None = None,
    now: datetime | None = None,
    allow_mass_revoke: bool = False,
    state_dir: str | os.PathLike[str] = "/var/lib/cdsops",
    inventory: str | os.PathLike[str] | None = None,
    playbook: str | os.PathLike[str] | None = None,
    ansible_dir: str | os.PathLike[str] | None = None,
    job_timeout: int = 1800,
    idle_timeout: int = 600,
    keep_artifacts: int = 20,
    textfile_dir: str | os.PathLike[str] | None = DEFAULT_TEXTFILE_DIR,
    envvars: dict[str, str] | None = None,
    extravars: dict[str, Any] | None = None,
    check: bool = False,
) -> RunSummary:
    """Run one reconcile; raises :class:`Busy` when another one holds the lock. ``ansible_dir``:
    the playbooks and plugins (``reconcile.ansible_home``; see :func:`ansible_home`)."""
    t0 = time.monotonic()
    home = ansible_home(ansible_dir)
    book = Path(playbook) if playbook else _playbook(home)
    settings = RunSettings(
        store_uri=_absolute_store(store_uri), config_path=config_path, now=now or utcnow(), allow_mass_revoke=allow_mass_revoke,
        state=Path(state_dir), home=home, inventory=_inventory(inventory, home), playbook=book, job_timeout=job_timeout,
        idle_timeout=idle_timeout, keep_artifacts=keep_artifacts, check=check, envvars=dict(envvars or {}),
        extravars=dict(extravars or {}),
    )
    with exclusive_lock(settings.state / "reconcile.lock"):
        summary = RunSummary(new_run_id())
        try:
            _sync_and_guard(summary, config, settings, source)
        except GuardError as exc:
            summary.status = "guard"
            summary.message = " ".join(str(exc).split())
        else:
            summary.status = _run_playbook(summary, config, settings)
            if summary.status == "successful" and not check:
                open_store(settings.store_uri).set_meta({"last_applied_at": format_iso(settings.now)})
        summary.duration_s = time.monotonic() - t0
        write_metrics(textfile_dir, summary.status)
        return summary


def _playbook(home: Path) -> Path:
    book = home / "playbooks" / "reconcile.yml"
    if not book.is_file():
        raise FileNotFoundError(
            f"cannot find playbooks/reconcile.yml under {home}; set CDSOPS_ANSIBLE_HOME or reconcile.ansible_home "
            "to the cdsops checkout (playbooks/, inventory/)"
        )
    return book


def _inventory(inventory: str | os.PathLike[str] | None, home: Path) -> Path:
    inv = Path(inventory) if inventory else home / "inventory" / "local" / "cdsops.yml"
    if not inv.exists():
        raise FileNotFoundError(
            f"cannot find the reconcile inventory {inv}; give --inventory or reconcile.inventory in the configuration "
            "(a cdsops.platform.cdsops_roster inventory file like inventory/local/cdsops.yml; the management role writes one)"
        )
    _check_run_options(inv)
    return inv


# Options the run passes to the cdsops_roster plugin through their declared environment variables;
# a value in the inventory file would win over them (Ansible's precedence), so a file may not set them.
RUN_OPTIONS = ("store", "config", "now", "allow_mass_revoke")


def _check_run_options(inv: Path) -> None:
    import yaml

    if not inv.is_file() or inv.suffix not in (".yml", ".yaml"):
        return
    try:
        data = yaml.safe_load(inv.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return  # not ours to judge: ansible reports it
    if isinstance(data, dict) and data.get("plugin") in ("cdsops_roster", "cdsops.platform.cdsops_roster"):
        fixed = [k for k in RUN_OPTIONS if k in data]
        if fixed:
            raise UsageError(
                f"the reconcile inventory {inv} sets {', '.join(fixed)}: the run passes them (its store, config, time "
                "and guard override); remove them from the file"
            )


def _absolute_store(store_uri: str) -> str:
    if "://" not in store_uri and not store_uri.startswith(("duckdb:", "bigquery:")):
        return str(Path(store_uri).resolve())  # the playbook runs in another directory
    return store_uri


def _sync_and_guard(summary: RunSummary, config: Config, settings: RunSettings, source: str | None) -> None:
    """Sync the source (when one is given) and check the guard; :class:`GuardError` stops the run."""
    if source:
        report = roster_sync(source, settings.store_uri, config, settings.now, run_id=summary.run_id)
        d = report.to_dict()
        summary.sync = {"added": d["added"], "renewed": d["renewed"], "unchanged": d["unchanged"], "rejected": len(d["rejected"])}
    plan = compute_plan(settings.store_uri, config, settings.now, enforce_guard=False)
    check_guard(plan, settings.allow_mass_revoke)


# Passed through from the reconcile's own environment to the playbook's.
PASSED_ENV = ("CDSOPS_SIGNIN_KEY", "CDSOPS_EMAIL_OUTBOX", "CDSOPS_GOOGLE_EMULATOR", "SENDGRID_API_KEY", "HOME",
              "CONTAINERS_CONF", "XDG_RUNTIME_DIR")


def run_environment(settings: RunSettings, run_id: str) -> dict[str, str]:
    """The playbook's environment: plugin paths, the run's store, config and time, host key
    checking on (ansible-runner turns it off unless told), an unparsable inventory fatal, the
    run marker, this venv first on PATH."""
    home = settings.home
    env = {
        "ANSIBLE_INVENTORY_ENABLED": "cdsops.platform.cdsops_roster,ansible.builtin.yaml,ansible.builtin.ini,ansible.builtin.host_list",
        "ANSIBLE_ROLES_PATH": str(home / "roles"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # an inventory the plugin cannot parse fails the run; by default Ansible warns and plays
        # against no hosts, a silent "successful" that would also mark the plan applied
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "CDSOPS_ROSTER": settings.store_uri,
        "CDSOPS_NOW": format_iso(settings.now),
        "CDSOPS_ALLOW_MASS_REVOKE": "1" if settings.allow_mass_revoke else "0",
        RUN_MARKER: run_id,  # finds the run's processes to kill after a timeout or cancel
        # ansible-playbook of this venv first (the timer's unit has a minimal PATH)
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]),
    }
    if (home / "ansible.cfg").is_file():  # the checkout's, or the package's own (cdsops/ansible)
        env["ANSIBLE_CONFIG"] = str(home / "ansible.cfg")
    if settings.config_path:
        env["CDSOPS_CONFIG"] = str(Path(settings.config_path).resolve())
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    env.update(settings.envvars)
    return env


def _run_playbook(summary: RunSummary, config: Config, settings: RunSettings) -> str:
    """Run the playbook, kill what a stopped run leaves, rotate artifacts, record the changes."""
    collector = _Collector()
    status, rc = _run_ansible(summary, settings, collector)
    artifacts = settings.private_data_dir / "artifacts"
    summary.artifacts = str(artifacts / summary.run_id)
    summary.failures.extend(collector.failures)
    if status == "failed" and not summary.failures:
        summary.failures.append({"host": "", "task": "", "msg": f"ansible-playbook exited with {rc}; see {summary.artifacts}/stdout"})
    _record_changes(summary, collector, settings, config.username_prefix)
    return status


def _run_ansible(summary: RunSummary, settings: RunSettings, collector: _Collector) -> tuple[str, int | None]:
    """ansible-runner on the playbook: (status, return code)."""
    import ansible_runner

    pdd = settings.private_data_dir
    (pdd / "artifacts").mkdir(parents=True, exist_ok=True)
    # ansible-runner writes the run's env/ (envvars, settings, extravars) once and then prefers
    # those files over its arguments: start every run from a clean env/
    shutil.rmtree(pdd / "env", ignore_errors=True)
    env = run_environment(settings, summary.run_id)
    status, rc = "error", None
    try:
        r = ansible_runner.run(
            private_data_dir=str(pdd), playbook=str(settings.playbook), inventory=str(settings.inventory),
            ident=summary.run_id, envvars=env, extravars=dict(settings.extravars),
            settings={"idle_timeout": settings.idle_timeout, "job_timeout": settings.job_timeout,
                      "suppress_ansible_output": True},
            quiet=True, event_handler=collector, cmdline="--check --diff" if settings.check else None,
        )
        status, rc = r.status, r.rc
    except Exception as exc:  # the runner itself could not start
        summary.failures.append({"host": "", "task": "ansible-runner", "msg": f"{exc.__class__.__name__}: {exc}"})
    finally:
        if status not in ("successful", "failed"):
            # timeout, cancel, error (or an exception on its way out): ansible-runner killed the
            # ansible-playbook process group only; the workers live on in sessions of their own
            killed = _kill_run(summary.run_id)
            if killed:
                summary.failures.append({"host": "", "task": "ansible-runner",
                                         "msg": f"killed {len(killed)} leftover process(es) of the {status} run"})
        _rotate(pdd / "artifacts", settings.keep_artifacts)
    return status, rc


def _record_changes(summary: RunSummary, collector: _Collector, settings: RunSettings, prefix: str) -> None:
    """Count every change the modules reported and write it to the changes record (also after a
    failure: what happened, happened; never in check mode)."""
    counts: dict[str, int] = {}
    records = []
    for host, c in collector.changes:
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
        after = c.get("after")
        if isinstance(after, dict) or after is None:
            after = dict(after or {}, host=host) if not settings.check else dict(after or {}, host=host, check_mode=True)
        student_id = c.get("student_id") or _student_id(c.get("username"), prefix)
        records.append(ChangeRecord(summary.run_id, settings.now, c["kind"], student_id, c.get("username"), c.get("before"), after))
    summary.changes = counts
    if records and not settings.check:
        open_store(settings.store_uri).record_changes(records)
