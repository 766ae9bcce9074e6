"""The events table in BigQuery and the Data Access audit log ingest, on bqemulator through
the official client: rows of Cloud Logging's BigQuery export shape, principals matched to
students by canonical identity (an alias too), the email never stored, a re-run adds
nothing; journal lines into BigQuery events; whois and report reading BigQuery."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from cdsops.events import synth
from cdsops.testing import bigquery_client, running_emulator
from cdsops.testing.bqemulator import new_dataset
from cdsops.testing.registrations import write_registrations

pytestmark = pytest.mark.integration
PROJECT = "test-project"
NOW = datetime.now(UTC).replace(microsecond=0)
CDSOPS = [sys.executable, "-m", "cdsops.cli"]


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(project=PROJECT) as emu:
        yield emu


@pytest.fixture()
def env(emulator):
    return dict(os.environ, CDSOPS_BIGQUERY_ENDPOINT=emulator.endpoint, CDSOPS_BIGQUERY_TIMEOUT="60")


def run(env, *args, check=True):
    out = subprocess.run(CDSOPS + list(args), capture_output=True, text=True, env=env)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def _audit_table(client, ds: str, rows: list[dict]) -> None:
    from google.cloud import bigquery

    F = bigquery.SchemaField
    schema = [
        F("insertId", "STRING"), F("timestamp", "TIMESTAMP"), F("logName", "STRING"),
        F("resource", "RECORD", fields=[F("type", "STRING"), F("labels", "RECORD", fields=[F("project_id", "STRING"), F("dataset_id", "STRING")])]),
        F("protopayload_auditlog", "RECORD", fields=[
            F("serviceName", "STRING"), F("methodName", "STRING"), F("resourceName", "STRING"),
            F("authenticationInfo", "RECORD", fields=[F("principalEmail", "STRING")]),
        ]),
    ]
    table = f"{PROJECT}.{ds}.cloudaudit_googleapis_com_data_access"
    client.create_table(bigquery.Table(table, schema=schema))
    body = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
    cfg = bigquery.LoadJobConfig(schema=schema, source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON)
    client.load_table_from_file(body, table, job_config=cfg).result()  # a load job, as the sink's export is read-only to us


def _entry(insert_id: str, email: str, at: datetime, method: str = "jobservice.jobcompleted") -> dict:
    return {
        "insertId": insert_id, "timestamp": at.isoformat(), "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Fdata_access",
        "resource": {"type": "bigquery_dataset", "labels": {"project_id": PROJECT, "dataset_id": "mimic"}},
        "protopayload_auditlog": {"serviceName": "bigquery.googleapis.com", "methodName": method,
                                  "resourceName": f"projects/{PROJECT}/datasets/mimic/tables/patients",
                                  "authenticationInfo": {"principalEmail": email}},
    }


@pytest.fixture()
def roster(env, emulator, tmp_path) -> str:
    ds = new_dataset(emulator.endpoint, PROJECT, "roster")
    src = write_registrations(tmp_path / "reg.csv", [
        (NOW - timedelta(days=3), "Ann.Reader@gmail.com", "Ann Reader", "Lyon", "France", "yes", "yes"),
        (NOW - timedelta(days=2), "bo@example.org", "Bo Other", "Tokyo", "Japan", "yes", "yes"),
    ])
    run(env, "roster", "sync", "--source", str(src), "--roster", f"bigquery://{PROJECT}/{ds}")
    return f"bigquery://{PROJECT}/{ds}"


def test_audit_log_rows_become_data_reads_without_the_email(env, emulator, roster):
    client = bigquery_client(emulator.endpoint, PROJECT)
    audit = new_dataset(emulator.endpoint, PROJECT, "audit")
    t = NOW - timedelta(hours=1)
    _audit_table(client, audit, [
        _entry("a1", "annreader+course@googlemail.com", t),         # an alias of s000001
        _entry("a2", "bo@example.org", t + timedelta(minutes=1)),
        _entry("a3", "etl@proj.iam.gserviceaccount.com", t),      # not a student: skipped
    ])
    src = f"bigquery-audit://{PROJECT}/{audit}"
    first = json.loads(run(env, "events", "ingest", "--roster", roster, "--source", src).stdout)
    assert (first["added"], first["skipped"], first["lines"]) == (2, 1, 3)
    again = json.loads(run(env, "events", "ingest", "--roster", roster, "--source", src).stdout)
    assert again["added"] == 0
    ds = roster.rsplit("/", 1)[1]
    rows = [tuple(r.values()) for r in client.query(
        f"SELECT event_key, kind, student_id, username, detail FROM `{PROJECT}.{ds}.events` ORDER BY event_key").result()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("gcl:a1", "data.read", 1, "s000001"), ("gcl:a2", "data.read", 2, "s000002")]
    assert "@" not in json.dumps(rows, default=str)
    assert json.loads(rows[0][4])["resource"].endswith("/tables/patients")
    client.close()


def test_journal_events_whois_and_report_on_bigquery(env, roster, tmp_path):
    t = NOW - timedelta(hours=2)
    (tmp_path / "j.json").write_text(synth.dumps([synth.signin("s000001", "success", t), synth.code("s000001", "head(x)", t),
                                                  synth.signin("s000002", "expired", t)]))
    out = json.loads(run(env, "events", "ingest", "--roster", roster, "--source", str(tmp_path / "j.json")).stdout)
    assert out["added"] == 3
    assert json.loads(run(env, "events", "ingest", "--roster", roster, "--source", str(tmp_path / "j.json")).stdout)["added"] == 0
    info = json.loads(run(env, "whois", "annreader@gmail.com", "--roster", roster, "--json").stdout)
    assert info["username"] == "s000001" and info["cells"][0]["code"] == "head(x)"
    rep = json.loads(run(env, "report", "--roster", roster, "--json").stdout)
    assert {k: rep["funnel"][k] for k in ("registered", "signed_in", "ran_code")} == {"registered": 2, "signed_in": 1, "ran_code": 1}
    assert rep["weekly"]["busiest_platform"]["events"] == 2
    unknown = run(env, "whois", "nobody@example.org", "--roster", roster, check=False)
    assert unknown.returncode == 1
