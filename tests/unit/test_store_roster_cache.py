"""The BigQuery store's local copy of the students (cdsops.store.roster_cache): round trip,
and every problem with the copy means a miss (a full read), never an error or stale data."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from cdsops.roster import Student
from cdsops.store.base import StoreError
from cdsops.store.roster_cache import RosterCache

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STUDENTS = (Student(1, "a@example.org", "s000001", "h1", (T,), T, T, datetime(2026, 7, 1, tzinfo=UTC), 1, T),
            Student(2, "b@example.org", "s000002", "h1", (T, T.replace(day=3)), T, T.replace(day=3), datetime(2026, 7, 2, tzinfo=UTC), 2, T))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> RosterCache:
    monkeypatch.setenv("CDSOPS_ROSTER_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("CDSOPS_ROSTER_CACHE_MAX_AGE", raising=False)
    return RosterCache("bigquery://p/roster")


def test_round_trip_under_a_final_generation_only(cache: RosterCache) -> None:
    cache.put("g1", STUDENTS)
    assert cache.get("g1") == STUDENTS
    assert oct(cache.path.stat().st_mode & 0o777) == "0o600" and oct(cache.path.parent.stat().st_mode & 0o777) == "0o700"
    assert cache.get("g2") is None  # another generation: the table changed
    assert cache.get("pending-x") is None and cache.get(None) is None and cache.get("") is None
    cache.put("pending-x", ())  # never stored under a pending generation
    assert cache.get("g1") == STUDENTS
    assert RosterCache("bigquery://p/other").get("g1") is None  # another store


@pytest.mark.parametrize("content", ["", "{", "[]", '{"uri": "bigquery://p/roster", "generation": "g1"}',
                                     '{"uri": "bigquery://p/roster", "generation": "g1", "stored_at": 1e20, "students": []}',
                                     '{"uri": "bigquery://p/roster", "generation": "g1", "stored_at": 0, "students": [[1]]}'])
def test_a_damaged_or_future_copy_is_a_miss(cache: RosterCache, content: str) -> None:
    cache.put("g1", STUDENTS)
    cache.path.write_text(content)
    assert cache.get("g1") is None


def test_max_age(cache: RosterCache, monkeypatch) -> None:
    cache.put("g1", STUDENTS)
    old = cache.path.read_text().replace('"stored_at":', '"stored_at":0,"x":')
    cache.path.write_text(old)
    assert cache.get("g1") is None  # older than an hour
    monkeypatch.setenv("CDSOPS_ROSTER_CACHE_MAX_AGE", "0")
    off = RosterCache("bigquery://p/roster")
    off.put("g9", STUDENTS)
    assert off.get("g9") is None and not any(n.endswith("g9") for n in os.listdir(cache.path.parent))
    monkeypatch.setenv("CDSOPS_ROSTER_CACHE_MAX_AGE", "an hour")
    with pytest.raises(StoreError, match="CDSOPS_ROSTER_CACHE_MAX_AGE must be a whole number"):
        RosterCache("bigquery://p/roster")


def test_an_unwritable_directory_only_means_no_copy(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CDSOPS_ROSTER_CACHE_DIR", str(blocker / "sub"))
    cache = RosterCache("bigquery://p/roster")
    cache.put("g1", STUDENTS)
    assert cache.get("g1") is None
