"""What the command modules share: the parser class, common options, ``--now`` and the config."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from ..config import Config, load_config
from ..errors import UsageError
from ..times import parse_iso, utcnow

__all__ = ["EXIT_USAGE", "Parser", "add_command", "add_group", "add_store_options", "now_of", "config_of"]

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line on stderr, exit 2
        sys.stderr.write(f"cdsops: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def add_command(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand parser; ``--config`` is accepted after the subcommand too."""
    parser = subparsers.add_parser(name, help=help_text)
    parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def add_group(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """A command with subcommands of its own (``cdsops roster sync``)."""
    parser = subparsers.add_parser(name, help=help_text)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=Parser)
    group.required = True
    return group


def add_store_options(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """``--roster STORE``, ``--now ISO8601`` and (optionally) ``--json``."""
    parser.add_argument("--roster", required=True, metavar="STORE", help="DuckDB file path or bigquery://PROJECT/DATASET")
    parser.add_argument("--now", metavar="ISO8601", help="evaluate at this time (default: now)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def now_of(args: argparse.Namespace) -> datetime:
    """``--now``: an ISO 8601 time (``Z`` or an offset; naive is UTC), as UTC; now when absent."""
    value = getattr(args, "now", None)
    if not value:
        return utcnow()
    try:
        return parse_iso(value)
    except ValueError:
        raise UsageError(f"--now must be an ISO 8601 time, got {value!r}") from None


def config_of(args: argparse.Namespace) -> Config:
    """The configuration of ``--config`` (else ``$CDSOPS_CONFIG``, else the defaults)."""
    return load_config(getattr(args, "config", None))
