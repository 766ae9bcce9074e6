"""The gate's view of the sign-in map: parsing, decisions, reload on change."""

from __future__ import annotations

import json
import os
import threading

import pytest

from cdsops.gate.signin_map import FORMAT, MapError, MapWatcher, decide, parse_map

A, B, C = "a" * 64, "b" * 64, "c" * 64


def doc(active=(), expired=()):
    return json.dumps({"format": FORMAT, "active": list(active), "expired": list(expired)})


def entry(h, user, ready="2026-01-01T00:00:00Z"):
    return {"hash": h, "username": user, "ready_at": ready}


def test_decisions():
    m = parse_map(doc([entry(A, "s000001"), entry(B, "s000002", "2030-01-01T00:00:00Z")], [C]))
    now = parse_map(doc([entry(A, "x", "2027-01-01T00:00:00Z")])).active[A].ready_at
    assert decide(m, A, now) == ("success", m.active[A])
    assert decide(m, B, now)[0] == "preparing"
    assert decide(m, C, now) == ("expired", None)
    assert decide(m, "d" * 64, now) == ("unknown", None)


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not valid JSON"),
        (json.dumps({"format": "other"}), "not a sign-in map"),
        (doc([entry(A, "s1"), entry(A, "s2")]), "same identity hash appears twice"),
        (doc([entry(A, "s1"), entry(B, "s1")]), "username s1 appears twice"),
        (doc([entry(A, "s1")], [A]), "also active"),
        (doc([entry("A" * 64, "s1")]), "hash must be"),
        (doc([entry(A, "bad name")]), "username"),
        (doc([entry(A, "s1", "2026-01-01T00:00:00")]), "UTC"),
        (doc([entry(A, "s1", "2026-01-01T00:00:00+01:00")]), "UTC"),
        (doc([entry(A, "s1", "soon")]), "ISO 8601"),
        (doc([], ["xyz"]), "64 lower-case hex"),
    ],
)
def test_invalid_maps_are_refused(text, message):
    with pytest.raises(MapError, match=message):
        parse_map(text)


def write(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def test_watcher_reloads_on_change_and_keeps_the_good_map(tmp_path):
    path = tmp_path / "map.json"
    errors = []
    w = MapWatcher(str(path), on_error=errors.append)
    assert len(w.get()) == 0 and "missing" in errors[0]
    write(path, doc([entry(A, "s000001")]))
    assert set(w.get().active) == {A}
    assert w.get() is w.get()  # unchanged file: no re-parse
    write(path, doc([entry(A, "s1"), entry(A, "s2")]))
    assert set(w.get().active) == {A}  # invalid: previous map kept
    assert "keeping the previous one" in errors[-1]
    n = len(errors)
    w.get()
    assert len(errors) == n  # reported once
    write(path, doc([entry(B, "s000002")]))
    assert set(w.get().active) == {B}
    os.unlink(path)
    assert len(w.get()) == 0  # map gone: nobody gets in


def test_watcher_under_concurrent_reads_never_fails(tmp_path):
    path = tmp_path / "map.json"
    maps = [doc([entry(f"{i:064x}", f"s{i:06d}") for i in range(n)]) for n in (10, 2000)]
    write(path, maps[0])
    w = MapWatcher(str(path))
    failures, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            m = w.get()
            if len(m) not in (10, 2000):
                failures.append(len(m))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(40):
        write(path, maps[i % 2])
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert w.reloads >= 1


def test_background_reload_keeps_answering_from_the_previous_map(tmp_path):
    import time

    path = tmp_path / "map.json"
    write(path, doc([entry(A, "s000001")]))
    w = MapWatcher(str(path), background=True, background_min_bytes=1)
    assert set(w.get().active) == {A}  # first load: at once
    write(path, doc([entry(B, "s000002")] + [entry(f"{i:064x}", f"u{i}") for i in range(5000)]))
    first = w.get()  # answered at once, from whichever map is current
    assert A in first.active or B in first.active
    deadline = time.monotonic() + 10
    while B not in w.get().active:
        assert time.monotonic() < deadline, "background reload never finished"
        time.sleep(0.01)
    assert A not in w.get().active and w.reloads == 2
