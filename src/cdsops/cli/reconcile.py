"""``cdsops reconcile``: sync, check the guard, apply the plan through ansible-runner.

``cdsops reconcile [--config F] [--roster STORE] [--source SRC] [--now ISO] [--allow-mass-revoke] ...``
prints one JSON summary line. Exit status: 0 ok, 1 failed, 3 guard stopped the run, 4 timeout,
5 canceled, 75 another reconcile is running.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..config import Config
from ..errors import UsageError
from ..runner import DEFAULT_TEXTFILE_DIR, reconcile
from .common import add_command, config_of, now_of

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    rc = add_command(subparsers, "reconcile", "apply the plan to the hosts through Ansible (lock, timeouts, changes record)")
    rc.add_argument("--roster", metavar="STORE", help="roster store (default: roster: in the configuration, or $CDSOPS_ROSTER)")
    rc.add_argument("--source", metavar="SRC", help="sync the roster from this source first (default: source: in the configuration)")
    rc.add_argument("--now", metavar="ISO8601", help="evaluate at this time (default: now)")
    rc.add_argument("--allow-mass-revoke", action="store_true", help="guard override: accept revoking many students")
    rc.add_argument("--state-dir", help="lock, runner artifacts (default /var/lib/cdsops or reconcile.state_dir)")
    rc.add_argument("--inventory", help="inventory (default: inventory/local of the cdsops checkout)")
    rc.add_argument("--job-timeout", type=int, help="seconds before the whole run is stopped (default 1800)")
    rc.add_argument("--idle-timeout", type=int, help="seconds without output before the run is stopped (default 600)")
    rc.add_argument("--keep-artifacts", type=int, help="runner artifact directories kept (default 20)")
    rc.add_argument("--textfile-dir", help="node-exporter textfile directory (default /var/lib/prometheus/node-exporter)")
    rc.add_argument("--check", action="store_true", help="check mode with diff: report, change nothing")
    rc.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    summary = reconcile(cfg, **_options(args, cfg))
    print(summary.to_json(), flush=True)
    if summary.status == "guard":
        sys.stderr.write(f"cdsops: error: {summary.message}\n")
    elif summary.exit_code:
        first = summary.failures[0]["msg"] if summary.failures else summary.status
        sys.stderr.write(f"cdsops: error: reconcile {summary.status}: {first} (artifacts {summary.artifacts})\n")
    return summary.exit_code


def _options(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """The flags, else the ``reconcile:`` keys of the configuration (paths relative to the
    configuration file), else the defaults."""
    rc = cfg.extra.get("reconcile") or {}
    if not isinstance(rc, dict):
        raise UsageError("reconcile (in the configuration) must be a mapping")
    store = args.roster or _relative(cfg.extra.get("roster") or os.environ.get("CDSOPS_ROSTER"), args)
    if not store:
        raise UsageError("no roster store: pass --roster or set roster: in the configuration")
    source = args.source or cfg.extra.get("source")
    if source and not args.source and ":" not in str(source).split("/")[0]:
        source = _relative(source, args)
    return {
        "config_path": _config_path(args),
        "store_uri": store,
        "source": source,
        "now": now_of(args) if args.now else None,
        "allow_mass_revoke": args.allow_mass_revoke,
        "ansible_dir": _relative(rc.get("ansible_home"), args),
        "state_dir": args.state_dir or _relative(rc.get("state_dir"), args) or "/var/lib/cdsops",
        "inventory": args.inventory or _relative(rc.get("inventory"), args),
        "job_timeout": args.job_timeout or int(rc.get("job_timeout", 1800)),
        "idle_timeout": args.idle_timeout or int(rc.get("idle_timeout", 600)),
        "keep_artifacts": args.keep_artifacts if args.keep_artifacts is not None else int(rc.get("keep_artifacts", 20)),
        "textfile_dir": args.textfile_dir or _relative(rc.get("textfile_dir", DEFAULT_TEXTFILE_DIR), args),
        "check": args.check,
    }


def _config_path(args: argparse.Namespace) -> str | None:
    return getattr(args, "config", None) or os.environ.get("CDSOPS_CONFIG")


def _relative(path: Any, args: argparse.Namespace) -> Any:
    """A path of the configuration, relative to the configuration file's directory (URIs as is)."""
    if not path or "://" in str(path) or os.path.isabs(str(path)):
        return path
    config_path = _config_path(args)
    base = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
    return os.path.normpath(os.path.join(base, str(path)))
