"""``cdsops-gate --config /etc/cdsops/gate.json`` (or ``python -m cdsops.gate``).

Serves the gate with gunicorn (sync workers, ``workers`` from the configuration) on the
configured loopback address. ``--check-config`` validates the configuration and the
secret files, loads the sign-in map once and exits (the role uses it as ``validate:``).
SIGHUP (``systemctl reload cdsops-gate``) restarts the workers gracefully; the map is
also reloaded on its own whenever the file changes.

``--reset-subject USERNAME`` (support) removes the account's binding to a provider subject
(see docs/signin.md, "Subject mismatch"), so its next sign-in binds again.
"""

from __future__ import annotations

import argparse
import sys

from .config import GateConfigError, load_gate_config

DEFAULT_CONFIG = "/etc/cdsops/gate.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdsops-gate", description="the cdsops sign-in gate")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"gate configuration (default {DEFAULT_CONFIG})")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration (and the secrets when readable) and exit")
    parser.add_argument("--config-only", action="store_true",
                        help="with --check-config: do not read the secret files")
    parser.add_argument("--reset-subject", metavar="USERNAME",
                        help="remove USERNAME's binding to a provider subject (support) and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_gate_config(args.config)
        if args.reset_subject:
            return reset_subject(cfg, args.reset_subject)
        if args.check_config and args.config_only:
            print(f"cdsops-gate: configuration {args.config} is valid")
            return 0
        from .app import create_app

        app = create_app(cfg)
    except GateConfigError as exc:
        print(f"cdsops-gate: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"cdsops-gate: configuration {args.config} is valid; "
              f"sign-in map has {len(app.watcher.get())} active students")
        return 0
    return serve(app, cfg)


def reset_subject(cfg, username: str) -> int:
    """Remove one account's subject binding; 0 when removed, 1 when there was none."""
    from .server_state import StateError, SubjectBindings

    try:
        removed = SubjectBindings(cfg.state_dir, "").reset(username)
    except (StateError, ValueError) as exc:
        print(f"cdsops-gate: {exc}", file=sys.stderr)
        return 2
    if removed:
        print(f"cdsops-gate: the subject binding of {username} is removed; its next sign-in binds again")
        return 0
    print(f"cdsops-gate: {username} has no subject binding")
    return 1


def serve(app, cfg) -> int:  # pragma: no cover - exercised by the e2e tests
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", [f"{cfg.host}:{cfg.port}" if ":" not in cfg.host else f"[{cfg.host}]:{cfg.port}"])
            self.cfg.set("workers", cfg.workers)
            self.cfg.set("worker_class", "sync")
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)  # nginx logs requests; the gate logs sign-ins only
            self.cfg.set("errorlog", "-")
            self.cfg.set("proc_name", "cdsops-gate")
            self.cfg.set("forwarded_allow_ips", "127.0.0.1")

        def load(self):
            return app

    _Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
