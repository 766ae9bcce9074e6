"""Email templates and the DuckDB notification ledger."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cdsops.providers.base import NotificationKey
from cdsops.providers.email import KINDS, DuckDBLedger, TemplateError, render

CTX = {
    "course_name": "CDS 101",
    "username": "s000042",
    "workspace_url": "https://rstudio.example.org/",
    "expires_on": "2027-05-27",
    "support_email": "help@example.org",
    "signature": "The CDS team",
    "registration_url": "https://example.org/register",
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_template_renders(kind: str) -> None:
    key = NotificationKey(42, "2026-11-26T10:00:00Z", kind)
    msg = render(kind, "ada@example.org", key, {**CTX, "student_id": 42, "first_name": "Ada"})
    assert msg.to == "ada@example.org" and msg.key == key
    assert "s000042" in msg.subject and "\n" not in msg.subject
    assert "s000042" in msg.text and "Hello Ada," in msg.text and "42" in msg.text
    assert "{{" not in msg.text
    assert "ada@example.org" not in repr(msg)  # reprs (and so tracebacks/logs) never show the address


def test_welcome_mentions_propagation_only_when_asked() -> None:
    key = NotificationKey(1, "a", "welcome")
    plain = render("welcome", "x@example.org", key, {**CTX, "student_id": 1})
    noted = render("welcome", "x@example.org", key, {**CTX, "student_id": 1, "propagation_note": True})
    assert "take a while" not in plain.text and "take a while" in noted.text
    assert "Hello," in plain.text


@pytest.mark.parametrize(
    "kind,ctx,msg",
    [
        ("welcome", {k: v for k, v in CTX.items() if k != "workspace_url"}, "workspace_url"),
        ("expiry", {k: v for k, v in CTX.items() if k != "registration_url"}, "registration_url"),
        ("birthday", CTX, "unknown message kind"),
        ("welcome", {**CTX, "username": "a\nBcc: evil@example.org"}, "subject must be one line"),
    ],
)
def test_bad_template_input_is_a_clear_error(kind: str, ctx: dict, msg: str) -> None:
    with pytest.raises(TemplateError, match=msg):
        render(kind, "x@example.org", NotificationKey(1, "a", kind), {**ctx, "student_id": 1})


@pytest.mark.parametrize("args", [(-1, "a", "welcome"), (1, "", "welcome"), (1, "a", ""), ("1", "a", "welcome")])
def test_bad_notification_keys(args: tuple) -> None:
    with pytest.raises(ValueError):
        NotificationKey(*args)


def test_ledger_claims_once_and_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "roster.duckdb"
    k = NotificationKey(7, "2026-11-26T10:00:00Z", "welcome")
    other = NotificationKey(7, "2027-06-01T10:00:00Z", "readmission")
    with DuckDBLedger(db) as led:
        assert led.status(k) is None
        assert led.claim(k) is True
        assert led.status(k) == "sending"
        assert led.claim(k) is False  # in flight: never a second send
        led.mark_failed(k, "SMTP server unreachable")
        assert led.status(k) == "failed"
        assert led.claim(k) is True  # a definite failure may be retried
        led.mark_sent(k)
        assert led.claim(other) is True
        assert led.uncertain() == [other]
        led.release(other)
        assert led.uncertain() == [] and led.status(other) == "failed"
    with DuckDBLedger(db) as led:  # idempotent schema, persistent state
        assert led.status(k) == "sent" and led.claim(k) is False
    rows = duckdb.connect(str(db)).execute("SELECT student_id, kind, status, attempts, error FROM notifications ORDER BY kind").fetchall()
    assert rows == [(7, "readmission", "failed", 1, "released by operator"), (7, "welcome", "sent", 2, None)]


def test_ledger_shares_a_connection(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    con.execute("CREATE TABLE students (id INTEGER)")  # the core's tables live alongside
    led = DuckDBLedger(connection=con)
    assert led.claim(NotificationKey(1, "a", "expiry"))
    led.close()  # does not close a borrowed connection
    assert con.execute("SELECT count(*) FROM notifications").fetchone() == (1,)
    with pytest.raises(ValueError, match="path or a connection"):
        DuckDBLedger()


def test_the_roster_store_reads_what_the_ledger_records(tmp_path: Path) -> None:
    from cdsops.store import open_store

    db = tmp_path / "roster.duckdb"
    with DuckDBLedger(db) as led:
        for sid, kind in ((1, "welcome"), (2, "welcome"), (3, "expiry")):
            k = NotificationKey(sid, "1", kind)
            led.claim(k)
            if sid != 2:
                led.mark_sent(k)  # 2 stays "sending": not sent as far as the plan knows
    assert open_store(str(db)).sent_notifications() == frozenset({(1, 1, "welcome"), (3, 1, "expiry")})


@pytest.mark.parametrize(
    ("first_name", "greeting"),
    [
        ("Ada", "Hello Ada,"),
        ("Zoë", "Hello Zoë,"),
        ("Anne-Marie", "Hello Anne-Marie,"),
        ("O'Brien", "Hello O'Brien,"),
        ("Mary Jane", "Hello Mary Jane,"),
        ("http://evil.example/login", "Hello,"),
        ("Ada\nBcc: someone@example.org", "Hello,"),
        ("Ada<script>", "Hello,"),
        ("R2D2", "Hello,"),
        ("--", "Hello,"),
        ("A" * 41, "Hello,"),
        ("", "Hello,"),
    ],
)
def test_first_name_is_a_plain_given_name_or_left_out(first_name: str, greeting: str) -> None:
    """The name comes from an untrusted registration row and the mail goes to an unverified
    address: only letters (any script), spaces, hyphens and apostrophes, at most 40 characters."""
    key = NotificationKey(1, "a", "welcome")
    msg = render("welcome", "x@example.org", key, {**CTX, "student_id": 1, "first_name": first_name})
    assert msg.text.splitlines()[0] == greeting
    assert "evil" not in msg.text and "Bcc" not in msg.text and "<script>" not in msg.text


def test_given_name_takes_the_first_word_of_a_plain_name() -> None:
    from cdsops.providers.email import given_name

    assert given_name("Zoë Smith") == "Zoë"
    assert given_name("  Ada   Lovelace ") == "Ada"
    assert given_name("www.evil.example Smith") == ""
    assert given_name(None) == "" and given_name("") == ""
