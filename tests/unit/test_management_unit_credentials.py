"""One credentials source (issue 14): the reconcile unit hands every Google client the key file
the inventory names (GOOGLE_APPLICATION_CREDENTIALS), and names none when there is no key (the
VM's own credentials). Renders the role's real template with StrictUndefined (~0.1 s)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "management"


def render(credentials: dict) -> str:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), undefined=jinja2.StrictUndefined)
    values = {k: v for k, v in defaults.items() if isinstance(v, (str, int)) and "{{" not in str(v)}
    values.update(ansible_managed="managed", management_credentials=credentials, management_config_path="/etc/cdsops/config.yml",
                  management_credentials_dir="/etc/cdsops/credentials", management_reconcile_command="/usr/local/bin/cdsops reconcile")
    return env.get_template("cdsops-reconcile.service.j2").render(**values)


@pytest.mark.parametrize("credentials,expected", [
    ({"google-sa.json": "{}", "sendgrid.key": "x"}, ["GOOGLE_APPLICATION_CREDENTIALS=/etc/cdsops/credentials/google-sa.json"]),
    ({"sendgrid.key": "x"}, []),
    ({}, []),
])
def test_the_reconcile_unit_names_the_key_file_for_every_google_client(credentials: dict, expected: list) -> None:
    unit = render(credentials)
    found = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("Environment=GOOGLE_APPLICATION_CREDENTIALS")]
    assert found == expected
