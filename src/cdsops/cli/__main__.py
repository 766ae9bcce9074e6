"""``python -m cdsops.cli``: the ``cdsops`` command."""

from __future__ import annotations

from .app import main

raise SystemExit(main())
