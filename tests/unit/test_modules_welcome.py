"""cdsops_welcome through a real ansible-playbook on localhost: check mode, send once, no address in results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdsops.config import load_config
from cdsops.service import compute_plan, roster_sync
from cdsops.testing.registrations import write_registrations

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 6, 1, tzinfo=UTC)

PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    due: %(due)s
  tasks:
    - name: check
      cdsops.platform.cdsops_welcome: {store: "%(store)s", config: "%(cfg)s", outbox: "%(outbox)s", notifications: "{{ due }}"}
      check_mode: true
      diff: true
      register: check
    - name: send
      cdsops.platform.cdsops_welcome: {store: "%(store)s", config: "%(cfg)s", outbox: "%(outbox)s", notifications: "{{ due }}",
                       context: {course_name: Test Course}}
      register: send
    - name: again
      cdsops.platform.cdsops_welcome: {store: "%(store)s", config: "%(cfg)s", outbox: "%(outbox)s", notifications: "{{ due }}"}
      register: again
    - name: bad
      cdsops.platform.cdsops_welcome: {store: "%(store)s", notifications: [{student_id: 1}]}
      register: bad
      ignore_errors: true
    - name: dump
      ansible.builtin.copy:
        dest: "%(out)s"
        content: "{{ {'check': check, 'send': send, 'again': again, 'bad': bad} | to_json }}"
"""


def play_on_localhost(play: Path, cwd: Path) -> None:
    """Run ``play`` with ansible-playbook on localhost, with this checkout's modules."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                          env=env, capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    d = tmp_path_factory.mktemp("welcome")
    cfg = d / "cdsops.yml"
    cfg.write_text("compute_hosts: [c1]\n")
    src = d / "reg.csv"
    write_registrations(src, [[T0 + timedelta(minutes=i), f"person{i}@example.org", f"First{i} Last{i}", "C", "K", "Yes", "Yes"]
                              for i in range(1, 6)])
    store = d / "roster.duckdb"
    now = T0 + timedelta(hours=1)
    roster_sync(str(src), str(store), load_config(cfg), now)
    plan = compute_plan(str(store), load_config(cfg), now, enforce_guard=False)
    due = [n.to_dict() for n in plan.notifications]
    out = d / "out.json"
    (d / "play.yml").write_text(PLAY % {"due": json.dumps(due), "store": store, "cfg": cfg, "outbox": d / "outbox", "out": out})
    play_on_localhost(d / "play.yml", cwd=REPO)
    return json.loads(out.read_text()), d, plan, cfg, store, now


def test_check_mode_sends_nothing(played):
    res, d, *_ = played
    assert res["check"]["changed"] and res["check"]["report"] == {"would_send": 5}
    assert res["check"]["diff"]["after"].splitlines() == [f"email.welcome s{i:06d}" for i in range(1, 6)]
    assert "diff" not in res["send"]  # only with --diff


def test_sends_each_once_and_records_it(played):
    res, d, plan, cfg, store, now = played
    assert res["send"]["changed"] and res["send"]["report"]["sent"] == 5
    assert sorted(c["username"] for c in res["send"]["changes"]) == [f"s{i:06d}" for i in range(1, 6)]
    assert {c["kind"] for c in res["send"]["changes"]} == {"email.welcome"}
    files = sorted((d / "outbox").iterdir())
    assert len(files) == 5
    text = files[0].read_text()
    assert "To: person" in text and "Test Course" in text and "s00000" in text
    assert res["again"]["changed"] is False and res["again"]["report"]["skipped"] == 5
    # the plan no longer lists them (the ledger is the store's notifications table)
    assert compute_plan(str(store), load_config(cfg), now, enforce_guard=False).notifications == ()


def test_results_never_carry_an_address_or_name(played):
    res, *_ = played
    blob = json.dumps({k: v for k, v in res.items() if k != "bad"})
    assert "@" not in blob and "First1" not in blob


def test_bad_notification_is_a_clear_error(played):
    res, *_ = played
    assert res["bad"]["failed"] and "needs student_id, username, admission and kind" in res["bad"]["msg"]


# -- the ledger next to the store ---------------------------------------------------------
def _welcome_module():
    from ansible_collections.cdsops.platform.plugins.modules import cdsops_welcome

    return cdsops_welcome


def test_a_bigquery_store_selects_the_bigquery_ledger(monkeypatch):
    import cdsops.providers.ledger_bigquery as lbq

    made = []

    class FakeBigQueryLedger(lbq.BigQueryLedger):
        def __init__(self, project, dataset, **kw):  # no client, no DDL: no BigQuery needed
            made.append((project, dataset))
            self.closed = False

        def close(self):
            self.closed = True

    monkeypatch.setattr(lbq, "BigQueryLedger", FakeBigQueryLedger)
    mod = _welcome_module()
    led = mod.open_ledger("bigquery://course-project/roster")
    assert isinstance(led, FakeBigQueryLedger) and made == [("course-project", "roster")]
    mod.close_ledger(led)
    assert led.closed


@pytest.mark.parametrize("form", ["{p}", "duckdb:{p}"])
def test_a_duckdb_store_selects_the_duckdb_ledger_in_that_file(tmp_path, form):
    from cdsops.providers.base import NotificationKey
    from cdsops.providers.email import DuckDBLedger

    mod = _welcome_module()
    path = tmp_path / "roster.duckdb"
    led = mod.open_ledger(form.format(p=path))
    try:
        assert isinstance(led, DuckDBLedger) and led.claim(NotificationKey(1, "1", "welcome"))
    finally:
        mod.close_ledger(led)
    assert path.is_file() and not (tmp_path / "duckdb:roster.duckdb").exists()
    mod.close_ledger(object())  # a ledger without close() is fine


@pytest.mark.integration
def test_module_records_in_the_bigquery_dataset_of_a_bigquery_store(tmp_path, monkeypatch):
    """Through ansible-playbook against bqemulator: sent once, recorded in BigQuery, no DuckDB file."""
    if not (Path(sys.prefix) / "bin" / "bqemulator").exists():
        pytest.skip("bqemulator is not installed in this venv")
    from cdsops.store import open_store
    from cdsops.testing import new_dataset, running_emulator

    project = "test-project"
    cfg = tmp_path / "cdsops.yml"
    cfg.write_text("compute_hosts: [c1]\n")
    src = tmp_path / "reg.csv"
    write_registrations(src, [[T0 + timedelta(minutes=i), f"bq{i}@example.org", f"Bq{i} L", "C", "K", "Yes", "Yes"] for i in range(1, 3)])
    with running_emulator(project=project) as emu:
        monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", emu.endpoint)
        monkeypatch.setenv("CDSOPS_BIGQUERY_TIMEOUT", "60")
        ds = new_dataset(emu.endpoint, project, "welcome")
        store = f"bigquery://{project}/{ds}"
        now = T0 + timedelta(hours=1)
        roster_sync(str(src), store, load_config(cfg), now)
        due = [n.to_dict() for n in compute_plan(store, load_config(cfg), now, enforce_guard=False).notifications]
        assert len(due) == 2
        out = tmp_path / "out.json"
        play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                "    - cdsops.platform.cdsops_welcome: {store: '%s', config: '%s', outbox: '%s', notifications: %s}\n      register: send\n"
                "    - cdsops.platform.cdsops_welcome: {store: '%s', config: '%s', outbox: '%s', notifications: %s}\n      register: again\n"
                "    - ansible.builtin.copy: {dest: '%s', content: \"{{ {'send': send, 'again': again} | to_json }}\"}\n"
                ) % ((store, cfg, tmp_path / "outbox", json.dumps(due)) * 2 + (out,))
        (tmp_path / "play.yml").write_text(play)
        play_on_localhost(tmp_path / "play.yml", cwd=tmp_path)
        res = json.loads(out.read_text())
        assert res["send"]["report"]["sent"] == 2 and res["again"]["report"]["skipped"] == 2
        # the ledger is the dataset's notifications table: the store reads it, the plan is done
        assert open_store(store).sent_notifications() == frozenset({(1, 1, "welcome"), (2, 1, "welcome")})
        assert compute_plan(store, load_config(cfg), now, enforce_guard=False).notifications == ()
    assert not [p for p in tmp_path.rglob("*") if "duckdb" in p.name or p.name.startswith("bigquery")]
