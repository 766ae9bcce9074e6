"""The ``cdsops`` command line (console script ``cdsops = "cdsops.cli:main"``).

Contract (kept stable; acceptance tests depend on it, README.md lists every command):
``cdsops roster sync|show``, ``cdsops plan``, ``cdsops lookup``, ``cdsops changes``,
``cdsops reconcile``. Exit status 0 on success; otherwise non-zero with a one-line reason on
stderr.

Adding a command: write ``cdsops/cli/NAME.py`` with ``register(subparsers)`` (add a parser with
:func:`cdsops.cli.common.add_command`, ``set_defaults(func=...)``; the function parses, calls the
service layer, prints and returns the exit status; failures raise a
:class:`cdsops.errors.CdsopsError`), then add the module to ``COMMANDS`` in ``cdsops/cli/app.py``.
"""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["main", "build_parser"]
