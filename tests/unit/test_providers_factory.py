"""Providers built from configuration: defaults, production shapes, clear errors."""

from __future__ import annotations

import pytest

from cdsops.config import ConfigError, config_from_mapping
from cdsops.providers import factory
from cdsops.providers.email import SendGridEmailProvider, SMTPEmailProvider
from cdsops.providers.google import GoogleAccessProvider, GoogleGroupProvider
from cdsops.providers.local import LocalDatasetAccess, LocalGroupProvider


def cfg(providers=None, **kw):
    data = dict(kw)
    if providers is not None:
        data["providers"] = providers
    return config_from_mapping(data)


def test_embedded_defaults() -> None:
    c = cfg(data_group="coursedata", data_group_gid=199990)
    g = factory.group_provider(c)
    assert isinstance(g, LocalGroupProvider) and g.group == "coursedata"
    a = factory.access_provider(c)
    assert isinstance(a, LocalDatasetAccess) and a.group == "coursedata" and str(a.data_dir) == "/srv/cdsdata"
    e = factory.email_provider(c)
    assert isinstance(e, SMTPEmailProvider) and (e.host, e.port) == ("127.0.0.1", 25)


def test_google_and_sendgrid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSOPS_GOOGLE_EMULATOR", "http://127.0.0.1:9")
    monkeypatch.setenv("SG_KEY", "SG.secret")
    c = cfg({
        "group": {"kind": "google", "group": "Data@Example.org"},
        "access": {"kind": "google", "group": "data@example.org", "project": "p", "datasets": ["mimic"]},
        "email": {"kind": "sendgrid", "sender": "cds@example.org", "api_key_env": "SG_KEY"},
    })
    g = factory.group_provider(c)
    assert isinstance(g, GoogleGroupProvider) and g.group == "data@example.org"
    assert g.service.batch_uri == "http://127.0.0.1:9/batch"
    assert g.rate_limiter.calls == 2400 and g.batch_size == 50
    a = factory.access_provider(c)
    assert isinstance(a, GoogleAccessProvider) and a.project_roles == ("roles/bigquery.jobUser",) and a.dataset_roles == ("READER",)
    assert isinstance(factory.email_provider(c), SendGridEmailProvider)


def test_email_secrets_from_the_credentials_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # the management role writes credential files 0600 into $CDSOPS_CREDENTIALS_DIR
    (tmp_path / "sendgrid.key").write_text("SG.from-file\n")
    (tmp_path / "smtp.pass").write_text("hunter2\n")
    monkeypatch.setenv("CDSOPS_CREDENTIALS_DIR", str(tmp_path))
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    e = factory.email_provider(cfg({"email": {"kind": "sendgrid", "sender": "cds@example.org", "api_key_file": "sendgrid.key"}}))
    assert isinstance(e, SendGridEmailProvider) and e.client.api_key == "SG.from-file"
    e = factory.email_provider(cfg({"email": {"kind": "smtp", "username": "u", "password_file": str(tmp_path / "smtp.pass")}}))
    assert e.password == "hunter2"
    with pytest.raises(ConfigError, match=r"api_key_file: cannot read .*missing.key"):
        factory.email_provider(cfg({"email": {"kind": "sendgrid", "api_key_file": "missing.key"}}))
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(ConfigError, match="empty.key is empty"):
        factory.email_provider(cfg({"email": {"kind": "sendgrid", "api_key_file": "empty.key"}}))


@pytest.mark.parametrize(
    "providers,which,msg",
    [
        ({"group": {"kind": "ldap"}}, "group", "providers.group.kind must be one of local, google"),
        ({"group": {"kind": "google"}}, "group", "providers.group.group is required"),
        ({"access": {"kind": "google", "group": "g@example.org"}}, "access", "providers.access.project is required"),
        ({"access": {"kind": "google", "group": "user:x@example.org", "project": "p"}}, "access", "only group: principals"),
        ({"email": {"kind": "sendgrid", "api_key_env": "NOPE_UNSET"}}, "email", r"\$NOPE_UNSET, which is not set"),
        ({"email": {"port": "25"}}, "email", "TCP port"),
        ({"group": {"kind": "google", "group": "g@example.org", "calls_per_minute": -1}}, "group", "calls_per_minute"),
        ("x", "group", "providers must be a mapping"),
        ({"email": ["smtp"]}, "email", "providers.email must be a mapping"),
    ],
)
def test_config_errors(monkeypatch: pytest.MonkeyPatch, providers, which: str, msg: str) -> None:
    monkeypatch.setenv("CDSOPS_GOOGLE_EMULATOR", "http://127.0.0.1:9")
    monkeypatch.delenv("NOPE_UNSET", raising=False)
    with pytest.raises(ConfigError, match=msg):
        getattr(factory, f"{which}_provider")(cfg(providers))


def test_ledger_for_store(tmp_path) -> None:
    from cdsops.providers.email import DuckDBLedger

    led = factory.ledger_for_store(f"duckdb:{tmp_path / 'r.duckdb'}")
    assert isinstance(led, DuckDBLedger)
    led.close()
    with pytest.raises(ConfigError, match="bigquery://PROJECT/DATASET"):
        factory.ledger_for_store("bigquery://only-project")
    with pytest.raises(ConfigError, match="no roster store"):
        factory.ledger_for_store(" ")
