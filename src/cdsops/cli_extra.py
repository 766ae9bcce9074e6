"""Commands added to the ``cdsops`` CLI: ``cdsops reconcile``.

``cdsops reconcile [--config F] [--roster STORE] [--source SRC] [--now ISO] [--allow-mass-revoke]``
syncs the roster from the source (when one is given or configured as ``source:``), checks the
guard, runs ``playbooks/reconcile.yml`` through ansible-runner and prints one JSON summary line.
Exit status: 0 ok, 1 failed, 3 guard stopped the run, 4 timeout, 5 canceled, 75 another
reconcile is running.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register", "cmd_reconcile"]


def cmd_reconcile(args: argparse.Namespace) -> int:
    from .cli import CliError, _config, _now
    from .runner import DEFAULT_TEXTFILE_DIR, EXIT_BUSY, Busy, reconcile

    cfg = _config(args)
    rc_cfg = cfg.extra.get("reconcile") or {}
    if not isinstance(rc_cfg, dict):
        raise CliError("reconcile (in the configuration) must be a mapping")
    store = args.roster or cfg.extra.get("roster") or os.environ.get("CDSOPS_ROSTER")
    if not store:
        raise CliError("no roster store: pass --roster or set roster: in the configuration")
    source = args.source or cfg.extra.get("source")
    config_path = getattr(args, "config", None) or os.environ.get("CDSOPS_CONFIG")
    base = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()

    def rel(p):
        return p if not p or "://" in str(p) or os.path.isabs(str(p)) else os.path.normpath(os.path.join(base, str(p)))

    if rc_cfg.get("ansible_home") and not os.environ.get("CDSOPS_ANSIBLE_HOME"):
        os.environ["CDSOPS_ANSIBLE_HOME"] = rel(rc_cfg["ansible_home"])
    if store and not args.roster:
        store = rel(store)
    if source and not args.source and ":" not in str(source).split("/")[0]:
        source = rel(source)
    try:
        summary = reconcile(
            cfg,
            config_path=config_path,
            store_uri=store,
            source=source,
            now=_now(args.now) if args.now else None,
            allow_mass_revoke=args.allow_mass_revoke,
            state_dir=args.state_dir or rel(rc_cfg.get("state_dir")) or "/var/lib/cdsops",
            inventory=args.inventory or rel(rc_cfg.get("inventory")),
            job_timeout=args.job_timeout or int(rc_cfg.get("job_timeout", 1800)),
            idle_timeout=args.idle_timeout or int(rc_cfg.get("idle_timeout", 600)),
            keep_artifacts=args.keep_artifacts if args.keep_artifacts is not None else int(rc_cfg.get("keep_artifacts", 20)),
            textfile_dir=args.textfile_dir or rel(rc_cfg.get("textfile_dir", DEFAULT_TEXTFILE_DIR)),
            check=args.check,
        )
    except Busy as exc:
        sys.stderr.write(f"cdsops: {exc}\n")
        return EXIT_BUSY
    print(summary.to_json(), flush=True)
    if summary.status == "guard":
        sys.stderr.write(f"cdsops: error: {summary.message}\n")
    elif summary.exit_code:
        first = summary.failures[0]["msg"] if summary.failures else summary.status
        sys.stderr.write(f"cdsops: error: reconcile {summary.status}: {first} (artifacts {summary.artifacts})\n")
    return summary.exit_code


def register(sub, common) -> None:
    from .cli import _Parser

    rc = sub.add_parser("reconcile", help="apply the plan to the hosts through Ansible (lock, timeouts, changes record)")
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
    rc.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    rc.set_defaults(func=cmd_reconcile)
