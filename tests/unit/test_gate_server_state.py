"""The gate's server-side state: revoked sessions and provider-subject bindings (files)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from cdsops.gate.server_state import RevokedSessions, StateError, SubjectBindings, key_id, subject_hash
from cdsops.gate.session import new_session_id

NOW = 1_900_000_000.0
KEY = b"k" * 32


def test_revocation_is_one_file_per_session_until_it_would_have_expired(tmp_path):
    revoked = RevokedSessions(str(tmp_path))
    sid, other = new_session_id(), new_session_id()
    assert not revoked.is_revoked(sid)
    revoked.revoke(sid, int(NOW + 60), NOW)
    revoked.revoke(sid, int(NOW + 60), NOW)  # twice: still one entry
    assert revoked.is_revoked(sid) and not revoked.is_revoked(other) and len(revoked) == 1
    assert RevokedSessions(str(tmp_path)).is_revoked(sid)  # another process sees it
    assert oct(os.stat(tmp_path / "revoked").st_mode & 0o777) == "0o700"
    assert revoked.sweep(NOW + 59) == 0 and revoked.sweep(NOW + 60) == 1 and len(revoked) == 0


@pytest.mark.parametrize("sid", ["", "../x", "a" * 21, "a/" * 11])
def test_anything_but_a_session_id_counts_as_revoked_and_cannot_be_recorded(tmp_path, sid):
    revoked = RevokedSessions(str(tmp_path))
    assert revoked.is_revoked(sid)
    with pytest.raises(ValueError):
        revoked.revoke(sid, int(NOW), NOW)


def test_an_unreadable_revocation_directory_fails_closed(tmp_path):
    revoked = RevokedSessions(str(tmp_path))
    sid = new_session_id()
    os.chmod(tmp_path / "revoked", 0o000)
    try:
        if os.geteuid() == 0:  # root reads anything: replace the directory by a file instead
            os.chmod(tmp_path / "revoked", 0o700)
            os.rmdir(tmp_path / "revoked")
            (tmp_path / "revoked").write_text("")
        assert revoked.is_revoked(sid)
    finally:
        if (tmp_path / "revoked").is_dir():
            os.chmod(tmp_path / "revoked", 0o700)


def test_state_directory_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="state directory"):
        RevokedSessions(str(tmp_path / "file"))


def test_subject_hash_is_keyed_and_per_issuer():
    h = subject_hash(KEY, "https://accounts.google.com", "1234")
    assert len(h) == 64 and "1234" not in h
    assert h == subject_hash(KEY, "https://accounts.google.com", "1234")
    assert h != subject_hash(b"z" * 32, "https://accounts.google.com", "1234")
    assert h != subject_hash(KEY, "https://other.example", "1234")
    assert h != subject_hash(KEY, "https://accounts.google.com", "12345")


def test_first_sign_in_binds_and_another_subject_is_refused(tmp_path):
    bindings = SubjectBindings(str(tmp_path), key_id(KEY))
    a, b = subject_hash(KEY, "iss", "a"), subject_hash(KEY, "iss", "b")
    assert bindings.check_or_bind("s000001", a, NOW) is None
    assert bindings.check_or_bind("s000001", a, NOW + 5) is None  # idempotent
    reason = bindings.check_or_bind("s000001", b, NOW + 10)
    assert reason and "first sign-in" in reason and "2030-03-17T17:46:40Z" in reason
    assert bindings.check_or_bind("s000002", b, NOW) is None  # per account
    doc = json.loads((tmp_path / "subjects/s000001").read_text())
    assert doc == {"format": "cdsops-gate-subject/1", "subject": a, "key_id": key_id(KEY),
                   "bound_at": "2030-03-17T17:46:40Z"}
    assert bindings.reset("s000001") and not bindings.reset("s000001")
    assert bindings.check_or_bind("s000001", b, NOW) is None  # re-bound after the reset


def test_a_binding_made_under_another_hash_key_is_replaced(tmp_path):
    old = SubjectBindings(str(tmp_path), key_id(b"old-key" * 5))
    old.check_or_bind("s000001", subject_hash(b"old-key" * 5, "iss", "a"), NOW)
    new = SubjectBindings(str(tmp_path), key_id(KEY))
    assert new.check_or_bind("s000001", subject_hash(KEY, "iss", "a"), NOW) is None
    assert new.check_or_bind("s000001", subject_hash(KEY, "iss", "b"), NOW) is not None


@pytest.mark.parametrize("content", ["", "{", "[]", '{"format": "other"}'])
def test_an_unreadable_binding_refuses_until_support_looks(tmp_path, content):
    bindings = SubjectBindings(str(tmp_path), key_id(KEY))
    (tmp_path / "subjects/s000001").write_text(content)
    assert bindings.check_or_bind("s000001", subject_hash(KEY, "iss", "a"), NOW) == "the subject binding cannot be read"
    assert (tmp_path / "subjects/s000001").read_text() == content  # left for support


def test_racing_first_sign_ins_bind_exactly_one_subject(tmp_path):
    bindings = SubjectBindings(str(tmp_path), key_id(KEY))
    results: dict[str, str | None] = {}
    barrier = threading.Barrier(8)

    def sign_in(name: str) -> None:
        barrier.wait()
        results[name] = bindings.check_or_bind("s000001", subject_hash(KEY, "iss", name), NOW)

    threads = [threading.Thread(target=sign_in, args=(f"sub{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results.values() if r is None) == 1
    assert [p for p in os.listdir(tmp_path / "subjects") if p.startswith(".")] == []  # no temp files left


def test_reset_refuses_a_path(tmp_path):
    with pytest.raises(ValueError, match="not a valid username"):
        SubjectBindings(str(tmp_path), key_id(KEY)).reset("../x")
