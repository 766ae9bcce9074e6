"""The BigQuery notification ledger against bqemulator, through google-cloud-bigquery; the
roster store reads what it records."""

from __future__ import annotations

import pytest

from cdsops.emulator import Emulator
from cdsops.providers.base import NotificationKey
from cdsops.providers.email import Notification, Notifier, SendGridEmailProvider
from cdsops.providers.ledger_bigquery import BigQueryLedger
from cdsops.providers.retry import Backoff
from cdsops.store import open_store
from cdsops.testing import new_dataset, running_emulator

pytestmark = pytest.mark.integration
PROJECT = "test-project"


@pytest.fixture(scope="module")
def bq():
    with running_emulator(project=PROJECT) as emu:
        yield emu


@pytest.fixture()
def dataset(bq, monkeypatch):
    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", bq.endpoint)
    monkeypatch.setenv("CDSOPS_BIGQUERY_TIMEOUT", "60")
    return new_dataset(bq.endpoint, PROJECT, "ledger")


def test_claim_semantics_match_the_duckdb_ledger(dataset: str) -> None:
    k = NotificationKey(7, "1", "welcome")
    other = NotificationKey(7, "2", "readmission")
    with BigQueryLedger(PROJECT, dataset) as led:
        assert led.status(k) is None
        assert led.claim(k) is True and led.status(k) == "sending"
        assert led.claim(k) is False
        led.mark_failed(k, "SMTP server unreachable")
        assert led.claim(k) is True
        led.mark_sent(k)
        assert led.claim(k) is False and led.status(k) == "sent"
        assert led.claim(other) is True
        assert led.uncertain() == [other]
        led.release(other)
        assert led.uncertain() == [] and led.status(other) == "failed"
    with BigQueryLedger(PROJECT, dataset) as again:  # CREATE TABLE IF NOT EXISTS: idempotent
        assert again.status(k) == "sent"


def test_notifier_with_the_bigquery_ledger_and_the_roster_store_reading_it(dataset: str) -> None:
    items = [Notification(NotificationKey(i, "1", "welcome"), f"p{i}@example.org",
                          {"username": f"s{i:06d}", "course_name": "C", "workspace_url": "https://w/", "expires_on": "x",
                           "support_email": "h@example.org", "signature": "S"}) for i in (1, 2)]
    with Emulator() as emu, BigQueryLedger(PROJECT, dataset) as led:
        emu.add_fault({"kind": "503", "match": "sendgrid.send", "times": 1})
        n = Notifier(SendGridEmailProvider("SG.k", "cds@example.org", host=emu.url, backoff=Backoff(sleep=lambda s: None)), led)
        assert n.notify(items).summary()["sent"] == 2
        assert n.notify(items).summary()["skipped"] == 2 and len(emu.mail) == 2
    store = open_store(f"bigquery://{PROJECT}/{dataset}")
    assert store.sent_notifications() == frozenset({(1, 1, "welcome"), (2, 1, "welcome")})


def test_ledger_for_a_bigquery_store(dataset: str) -> None:
    from cdsops.providers.factory import ledger_for_store

    with ledger_for_store(f"bigquery://{PROJECT}/{dataset}") as led:
        assert isinstance(led, BigQueryLedger) and led.claim(NotificationKey(1, "1", "expiry"))
