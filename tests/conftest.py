"""Suite-wide settings. The BigQuery store's local roster copy (cdsops.store.roster_cache) goes
to a throwaway directory, not the user's ~/.cache, for this process and the ones it starts."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _roster_cache_dir():
    if os.environ.get("CDSOPS_ROSTER_CACHE_DIR"):
        yield
        return
    path = tempfile.mkdtemp(prefix="cdsops-roster-cache-")
    os.environ["CDSOPS_ROSTER_CACHE_DIR"] = path
    try:
        yield
    finally:
        os.environ.pop("CDSOPS_ROSTER_CACHE_DIR", None)
        shutil.rmtree(path, ignore_errors=True)
