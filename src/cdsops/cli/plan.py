"""``cdsops plan``: the desired state."""

from __future__ import annotations

import argparse

from ..plan import check_guard, plan_table
from ..service import compute_plan
from .common import add_command, add_store_options, config_of, now_of

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "plan", "print the desired state")
    add_store_options(parser)
    parser.add_argument("--allow-mass-revoke", action="store_true", help="guard override: accept revoking many students")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = compute_plan(args.roster, config_of(args), now_of(args), enforce_guard=False)
    print(plan.to_json() if args.json else plan_table(plan))
    check_guard(plan, args.allow_mass_revoke)  # printed first: the plan shows what the guard refused
    return 0
