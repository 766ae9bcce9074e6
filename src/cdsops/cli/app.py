"""The ``cdsops`` parser, the command registry and the one place errors become exit statuses."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from ..errors import CdsopsError
from ..events import cli as events
from ..service import SourceError
from . import plan, reconcile, roster, support
from .common import Parser

__all__ = ["COMMANDS", "build_parser", "main"]

# Every command module, in the order of `cdsops --help`; each has register(subparsers).
COMMANDS: tuple[ModuleType, ...] = (roster, plan, support, reconcile, events)

# Errors of modules that do not derive from CdsopsError yet (sources.py): also one plain line.
_PLAIN_ERRORS: tuple[type[Exception], ...] = (CdsopsError, SourceError)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cdsops", description="Registration rows in, accounts, groups and access out.")
    parser.add_argument("--config", help="configuration file (YAML); default $CDSOPS_CONFIG or built-in defaults")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("cdsops: interrupted; nothing further was changed\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line, no traceback, for every failure
        return _report(exc)


def _report(exc: Exception) -> int:
    msg = " ".join(str(exc).split()) or exc.__class__.__name__
    verbose = os.environ.get("CDSOPS_DEBUG", "") not in ("", "0")
    if not isinstance(exc, _PLAIN_ERRORS) and not verbose:
        msg = f"{exc.__class__.__name__}: {msg}"  # unexpected: the class helps a bug report
    sys.stderr.write(f"cdsops: error: {msg}\n")
    if verbose:
        traceback.print_exception(exc)
    return exc.exit_code if isinstance(exc, CdsopsError) else 1
