"""The CLI contract end to end on the embedded DuckDB store, plus the race test."""

import csv
import fcntl
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC

import pytest

from cdsops.config import Config
from cdsops.service import roster_sync

COLUMNS = ["submitted_at", "email", "full_name", "city", "country", "agreed_dua", "agreed_terms"]


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(r)
    return str(path)


def cdsops(*args, env=None, check=False):
    e = dict(os.environ)
    e.pop("CDSOPS_CONFIG", None)
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-m", "cdsops.cli", *args], capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr)
    return p


@pytest.fixture
def sample(tmp_path):
    return write_csv(
        tmp_path / "form.csv",
        [
            ["2026-01-05T10:00:00Z", "Alice.Smith@googlemail.com", "Alice Smith", "Avalon", "Nowhere", "yes", "yes"],
            ["2026-01-05T10:00:00Z", "bob@example.org", "Bob", "", "", "yes", "yes"],
            ["2026-01-05T10:05:00Z", "alicesmith+mimic@gmail.com", "Alice Smith", "", "", "yes", "yes"],
            ["2026-01-05T10:06:00Z", "carol@example.org", "Carol", "", "", "yes", "no"],
            ["2026-01-05T10:07:00Z", "not an email", "X", "", "", "yes", "yes"],
            ["2026-01-06T09:00:00Z", "dave@example.org", "Dave", "", "", "yes", "yes"],
        ],
    )


def test_sync_json_contract(tmp_path, sample):
    roster = str(tmp_path / "roster.duckdb")
    p = cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", "--json", check=True)
    out = json.loads(p.stdout)
    assert set(out) == {"added", "renewed", "unchanged", "rejected"}
    assert (out["added"], out["renewed"], out["unchanged"]) == (3, 0, 0)
    assert sorted(r["row"] for r in out["rejected"]) == [4, 5]
    assert all(isinstance(r["reason"], str) and r["reason"] for r in out["rejected"])

    again = json.loads(cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", "--json", check=True).stdout)
    assert (again["added"], again["renewed"], again["unchanged"]) == (0, 0, 3)


def test_show_json_contract_and_status(tmp_path, sample):
    roster = str(tmp_path / "roster.duckdb")
    cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", check=True)
    shown = json.loads(cdsops("roster", "show", "--roster", roster, "--now", "2026-03-01T00:00:00Z", "--json", check=True).stdout)
    students = shown["students"]
    assert [s["student_id"] for s in students] == [1, 2, 3]
    alice = students[0]
    assert alice == {
        "student_id": 1,
        "username": "s000001",
        "identity": "alicesmith@gmail.com",
        "status": "active",
        "expires_at": "2026-07-06T10:05:00Z",
        "first_registered_at": "2026-01-05T10:00:00Z",
        "last_registered_at": "2026-01-05T10:05:00Z",
    }
    assert students[1]["identity"] == "bob@example.org"  # tie at 10:00 broken by identity
    later = json.loads(cdsops("roster", "show", "--roster", roster, "--now", "2026-07-06T10:05:00Z", "--json", check=True).stdout)
    assert [s["status"] for s in later["students"]] == ["expired", "expired", "active"]


def test_plan_json_and_guard(tmp_path, sample):
    roster = str(tmp_path / "roster.duckdb")
    cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", check=True)
    p = cdsops("plan", "--roster", roster, "--now", "2026-02-01T00:00:00Z", "--json", check=True)
    plan = json.loads(p.stdout)
    assert [m["username"] for m in plan["members"]] == ["s000001", "s000002", "s000003"]
    assert [n["kind"] for n in plan["notifications"]] == ["welcome"] * 3
    # every student's access ends: the guard stops the run, one line on stderr
    p = cdsops("plan", "--roster", roster, "--now", "2026-08-01T00:00:00Z", "--json")
    assert p.returncode != 0
    assert len(p.stderr.strip().splitlines()) == 1 and "revoke" in p.stderr
    p = cdsops("plan", "--roster", roster, "--now", "2026-08-01T00:00:00Z", "--json", "--allow-mass-revoke", check=True)
    assert json.loads(p.stdout)["summary"]["active"] == 0


def test_human_tables(tmp_path, sample):
    roster = str(tmp_path / "roster.duckdb")
    out = cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", check=True).stdout
    assert "3 added" in out and "terms not agreed" in out
    assert "s000003" in cdsops("roster", "show", "--roster", roster, check=True).stdout
    assert "s000001" in cdsops("plan", "--roster", roster, "--now", "2026-01-08T00:00:00Z", check=True).stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["roster", "sync", "--source", "/nonexistent.csv", "--roster", "{roster}"], "does not exist"),
        (["roster", "sync", "--source", "{empty}", "--roster", "{roster}"], "no registration rows"),
        (["roster", "sync", "--source", "duckdb:/x.duckdb#t;drop", "--roster", "{roster}"], "invalid DuckDB table"),
        (["roster", "sync", "--source", "{sample}", "--roster", "{roster}", "--now", "soon"], "--now"),
        (["roster", "sync", "--source", "{sample}", "--roster", "/proc/forbidden/roster.duckdb"], "roster store"),
        (["roster", "show", "--roster", "bigquery://only-project", "--json"], "bigquery://PROJECT/DATASET"),
    ],
)
def test_failures_exit_nonzero_with_one_line_and_change_nothing(tmp_path, sample, args, needle):
    roster = str(tmp_path / "roster.duckdb")
    cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", check=True)
    before = cdsops("roster", "show", "--roster", roster, "--json", check=True).stdout
    empty = write_csv(tmp_path / "empty.csv", [])
    fmt = {"roster": roster, "empty": empty, "sample": sample}
    p = cdsops(*[a.format(**fmt) for a in args])
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert cdsops("roster", "show", "--roster", roster, "--json", check=True).stdout == before


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--roster", "{missing}"],
        ["plan", "--roster", "{missing}", "--json"],
        ["roster", "show", "--roster", "{missing}"],
        ["lookup", "alice.smith@gmail.com", "--roster", "{missing}"],
        ["whois", "s000001", "--roster", "{missing}", "--json"],
        ["report", "--roster", "{missing}", "--json"],
        ["events", "ingest", "--roster", "{missing}", "--source", "{sample}"],
    ],
)
def test_a_missing_roster_is_an_error_not_an_empty_roster(tmp_path, sample, args):
    """A mistyped roster path must not read as a roster with nobody in it: an empty plan would
    take every student out of the data group and the sign-in map. Every reader refuses it,
    names the path, and creates no file (no store, no lock, no events store)."""
    missing = tmp_path / "typo" / "roster.duckdb"
    p = cdsops(*[a.format(missing=missing, sample=sample) for a in args])
    assert p.returncode != 0
    assert f"roster store {missing} does not exist" in p.stderr, p.stderr
    assert "roster sync" in p.stderr
    assert p.stdout.strip() in ("", '{"found": false}') and "0 accounts" not in p.stdout
    assert not (tmp_path / "typo").exists()


def test_an_empty_roster_is_not_a_missing_one(tmp_path):
    """A roster synced from an empty source (--allow-empty) exists: it plans nothing, without an error."""
    roster = str(tmp_path / "roster.duckdb")
    cdsops("roster", "sync", "--source", write_csv(tmp_path / "e.csv", []), "--roster", roster, "--allow-empty", check=True)
    assert json.loads(cdsops("plan", "--roster", roster, "--json", check=True).stdout)["summary"]["accounts"] == 0


def test_usage_error_is_nonzero():
    p = cdsops("roster", "sync", "--roster", "x.duckdb")
    assert p.returncode != 0 and "--source" in p.stderr


def test_empty_source_override(tmp_path):
    empty = write_csv(tmp_path / "empty.csv", [])
    roster = str(tmp_path / "roster.duckdb")
    p = cdsops("roster", "sync", "--source", empty, "--roster", roster, "--allow-empty", "--json", check=True)
    assert json.loads(p.stdout)["added"] == 0


def test_duckdb_table_source(tmp_path):
    import duckdb

    db = tmp_path / "forms.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE regs (submitted_at TIMESTAMPTZ, email VARCHAR, full_name VARCHAR, city VARCHAR, "
        "country VARCHAR, agreed_dua BOOLEAN, agreed_terms BOOLEAN)"
    )
    con.execute("SET TimeZone='Europe/Paris'")
    con.execute("INSERT INTO regs VALUES ('2026-01-05 11:00:00+01', 'a@x.org', 'A', '', '', true, true)")
    con.execute("INSERT INTO regs VALUES ('2026-01-05 12:00:00+01', 'b@x.org', 'B', NULL, NULL, true, false)")
    con.close()
    roster = str(tmp_path / "roster.duckdb")
    out = json.loads(cdsops("roster", "sync", "--source", f"duckdb:{db}#regs", "--roster", roster, "--now", "2026-01-07T00:00:00Z", "--json", check=True).stdout)  # noqa: E501  a literal line kept whole for grep
    assert out["added"] == 1 and out["rejected"] == [{"row": 2, "reason": "terms not agreed"}]
    shown = json.loads(cdsops("roster", "show", "--roster", roster, "--json", check=True).stdout)
    assert shown["students"][0]["first_registered_at"] == "2026-01-05T10:00:00Z"


def test_changes_and_lookup(tmp_path, sample):
    roster = str(tmp_path / "roster.duckdb")
    cdsops("roster", "sync", "--source", sample, "--roster", roster, "--now", "2026-01-07T00:00:00Z", check=True)
    lines = cdsops("changes", "--roster", roster, check=True).stdout.splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["kind"] for r in recs] == ["student.added"] * 3
    assert all("@" not in line for line in lines)  # the changes record never holds an address
    who = json.loads(cdsops("lookup", "ALICE.SMITH@gmail.com", "--roster", roster, "--now", "2026-01-08T00:00:00Z", "--json", check=True).stdout)
    assert who["username"] == "s000001" and who["status"] == "active" and len(who["changes"]) == 1
    nobody = json.loads(cdsops("lookup", "carol@example.org", "--roster", roster, "--json", check=True).stdout)
    assert nobody["found"] is False


# -- races and locks -----------------------------------------------------------------
def _sync_worker(args):
    source, roster = args
    os.environ.pop("CDSOPS_CONFIG", None)
    from datetime import datetime

    report = roster_sync(source, roster, Config(), datetime(2026, 2, 1, tzinfo=UTC))
    return report.to_dict()["added"]


def test_two_concurrent_syncs_never_duplicate_or_share_ids(tmp_path):
    roster = str(tmp_path / "roster.duckdb")
    batches = []
    for b in range(4):
        rows = []
        for i in range(400):
            person = (b * 150 + i) % 700  # overlapping people across batches
            alias = f"person.{person}@gmail.com" if b % 2 else f"Person{person}+b{b}@GoogleMail.com"
            rows.append([f"2026-01-{1 + (i % 28):02d}T10:00:00Z", alias, "Invented", "", "", "yes", "yes"])
        batches.append(write_csv(tmp_path / f"b{b}.csv", rows))
    with ProcessPoolExecutor(max_workers=4) as pool:
        added = list(pool.map(_sync_worker, [(b, roster) for b in batches]))
    import duckdb

    con = duckdb.connect(roster, read_only=True)
    rows = con.execute("SELECT student_id, identity FROM students").fetchall()
    con.close()
    ids = [r[0] for r in rows]
    idents = [r[1] for r in rows]
    assert len(set(ids)) == len(ids) and len(set(idents)) == len(idents)
    assert sorted(ids) == list(range(1, len(ids) + 1))
    assert sum(added) == len(rows) == 700


def test_busy_store_fails_clearly_and_changes_nothing(tmp_path, sample):
    roster = tmp_path / "roster.duckdb"
    lock = open(str(roster) + ".lock", "w")  # noqa: SIM115  the handle must outlive this statement (held lock or stream)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        p = cdsops("roster", "sync", "--source", sample, "--roster", str(roster), env={"CDSOPS_LOCK_TIMEOUT": "0.5"})
    finally:
        lock.close()
    assert p.returncode != 0 and "busy" in p.stderr
    assert not roster.exists() or json.loads(cdsops("roster", "show", "--roster", str(roster), "--json").stdout)["students"] == []


def test_config_file(tmp_path, sample):
    cfg = tmp_path / "cdsops.yml"
    cfg.write_text("access_days: 30\nusername_prefix: mimic\nusername_width: 4\n")
    roster = str(tmp_path / "roster.duckdb")
    cdsops("--config", str(cfg), "roster", "sync", "--source", sample, "--roster", roster, check=True)
    shown = json.loads(cdsops("roster", "show", "--roster", roster, "--json", check=True).stdout)
    assert shown["students"][0]["username"] == "mimic0001"
    assert shown["students"][0]["expires_at"] == "2026-02-04T10:05:00Z"
    cfg.write_text("access_days: -1\n")
    p = cdsops("roster", "show", "--roster", roster, "--json", env={"CDSOPS_CONFIG": str(cfg)})
    # show does not need the config; sync and plan refuse it
    p = cdsops("plan", "--roster", roster, env={"CDSOPS_CONFIG": str(cfg)})
    assert p.returncode != 0 and "access_days" in p.stderr


def test_incremental_batches_count_only_what_they_carry(tmp_path):
    roster = str(tmp_path / "roster.duckdb")
    first = write_csv(
        tmp_path / "a.csv",
        [
            ["2026-01-05T10:00:00Z", "alice@example.org", "A", "", "", "yes", "yes"],
            ["2026-01-05T11:00:00Z", "bob@example.org", "B", "", "", "yes", "yes"],
        ],
    )
    second = write_csv(
        tmp_path / "b.csv",
        [
            ["2026-03-01T10:00:00Z", "ALICE@example.org", "A", "", "", "yes", "yes"],  # renews alice
            ["2026-01-05T11:00:00Z", "bob@example.org", "B", "", "", "yes", "yes"],  # the same agreement again
            ["2026-03-01T12:00:00Z", "carol@example.org", "C", "", "", "yes", "yes"],
        ],
    )
    cdsops("roster", "sync", "--source", first, "--roster", roster, "--now", "2026-03-02T00:00:00Z", check=True)
    out = json.loads(cdsops("roster", "sync", "--source", second, "--roster", roster, "--now", "2026-03-02T00:00:00Z", "--json", check=True).stdout)
    assert (out["added"], out["renewed"], out["unchanged"], out["rejected"]) == (1, 1, 1, [])
    shown = json.loads(cdsops("roster", "show", "--roster", roster, "--json", "--now", "2026-03-02T00:00:00Z", check=True).stdout)
    assert [(s["username"], s["expires_at"]) for s in shown["students"]] == [
        ("s000001", "2026-08-30T10:00:00Z"),
        ("s000002", "2026-07-06T11:00:00Z"),
        ("s000003", "2026-08-30T12:00:00Z"),
    ]


def test_usernames_stay_unique_and_stable_across_a_prefix_change(tmp_path):
    roster = str(tmp_path / "roster.duckdb")
    a = write_csv(tmp_path / "a.csv", [[f"2026-01-05T10:{i:02d}:00Z", f"p{i}@example.org", "P", "", "", "yes", "yes"] for i in range(12)])
    cdsops("roster", "sync", "--source", a, "--roster", roster, check=True)
    b = write_csv(tmp_path / "b.csv", [["2026-01-06T10:00:00Z", "new@example.org", "N", "", "", "yes", "yes"]])
    cfg = tmp_path / "cdsops.yml"
    cfg.write_text("username_prefix: s00000\nusername_width: 1\n")
    p = cdsops("--config", str(cfg), "roster", "sync", "--source", b, "--roster", roster)
    assert p.returncode != 0 and "does not fit" in p.stderr  # id 13 has no one-digit name
    cfg.write_text("username_prefix: mimic\nusername_width: 4\n")
    cdsops("--config", str(cfg), "roster", "sync", "--source", b, "--roster", roster, check=True)
    shown = json.loads(cdsops("roster", "show", "--roster", roster, "--json", check=True).stdout)
    names = [s["username"] for s in shown["students"]]
    assert names[:12] == [f"s{i:06d}" for i in range(1, 13)]  # existing students keep their names
    assert names[12] == "mimic0013" and len(set(names)) == 13
