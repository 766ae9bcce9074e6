"""The BigQuery registration source and roster store against bqemulator.

One emulator (a subprocess on a free loopback port) serves the whole module; every
test uses datasets of its own, so tests stay independent. Everything goes through the
official google-cloud-bigquery client, as in production.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdsops.config import Config
from cdsops.identity import canonicalize
from cdsops.registrations import COLUMNS, Registration
from cdsops.roster import sync as pure_sync
from cdsops.sources import SourceError, read_bigquery_registrations
from cdsops.store import open_store
from cdsops.store.base import ChangeRecord, RosterStore, StoreError
from cdsops.store.bigquery_store import CONFLICT_MESSAGE, BigQueryStore, revision_of
from cdsops.testing import bigquery_client, free_port, running_emulator

pytestmark = pytest.mark.integration

PROJECT = "test-project"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = Config()
ROOT = Path(__file__).resolve().parents[2]
CDSOPS = [sys.executable, "-m", "cdsops.cli"]


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(project=PROJECT) as emu:
        pid = emu.pid
        yield emu
    with pytest.raises(ProcessLookupError):  # stopped: nothing left running
        os.kill(pid, 0)


@pytest.fixture()
def endpoint(emulator, monkeypatch):
    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", emulator.endpoint)
    monkeypatch.setenv("CDSOPS_BIGQUERY_TIMEOUT", "60")
    return emulator.endpoint


@pytest.fixture()
def client(endpoint):
    c = bigquery_client(endpoint, PROJECT)
    yield c
    c.close()


def new_dataset(client, prefix: str = "d") -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    client.create_dataset(f"{PROJECT}.{name}")
    return name


def make_source(client, rows, *, submitted_type: str = "TIMESTAMP", columns=None) -> str:
    """A registrations table with ``rows`` (tuples in COLUMNS order); returns 'dataset.table'."""
    ds = new_dataset(client, "src")
    cols = columns or [
        ("submitted_at", submitted_type),
        ("email", "STRING"),
        ("full_name", "STRING"),
        ("city", "STRING"),
        ("country", "STRING"),
        ("agreed_dua", "BOOL"),
        ("agreed_terms", "STRING"),
    ]
    client.query(f"CREATE TABLE `{PROJECT}.{ds}.reg` ({', '.join(f'{n} {t}' for n, t in cols)})").result()
    insert_rows(client, ds, rows, cols)
    return ds


def insert_rows(client, ds, rows, cols=None) -> None:
    """Insert with one parameterized DML statement (values never spliced into SQL)."""
    from google.cloud import bigquery

    if not rows:
        return
    cols = cols or [(c, None) for c in COLUMNS]
    names = [n for n, _ in cols]
    types = {n: t for n, t in cols}
    params, values = [], []
    for i, row in enumerate(rows):
        ph = []
        for n, v in zip(names, row, strict=False):
            t = types.get(n) or ("TIMESTAMP" if n == "submitted_at" else "BOOL" if n == "agreed_dua" else "STRING")
            params.append(bigquery.ScalarQueryParameter(f"p{i}_{n}", t, v))
            ph.append(f"@p{i}_{n}")
        values.append(f"({', '.join(ph)})")
    sql = f"INSERT INTO `{PROJECT}.{ds}.reg` ({', '.join(names)}) VALUES {', '.join(values)}"
    client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params)).result()


def row(day: float, email: str, dua=True, terms="yes", name="Invented Person"):
    return (T0 + timedelta(days=day), email, name, "Testville", "Nowhere", dua, terms)


def regs(pairs):
    return [
        Registration(i, T0 + timedelta(days=d), canonicalize(e), e, "Invented", "", "") for i, (e, d) in enumerate(pairs, 1)
    ]


def run_cli(*args: str, env_extra: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **(env_extra or {}))
    proc = subprocess.run([*CDSOPS, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


# -- the source ------------------------------------------------------------------------
def test_source_reads_the_seven_columns_in_a_stable_order(client):
    ds = make_source(
        client,
        [
            row(2, "b@example.org"),
            row(1, "Z@Example.org"),
            row(1, "a@example.org", dua=False),
            row(3, "x'); DROP TABLE reg; --@example.org"),
        ],
    )
    rows, complete, since = read_bigquery_registrations(PROJECT, ds, "reg")
    assert complete is True and since is None
    assert [list(r) for r in rows] == [list(COLUMNS)] * 4
    # ORDER BY submitted_at, then the other columns
    assert [r["email"] for r in rows] == ["Z@Example.org", "a@example.org", "b@example.org", "x'); DROP TABLE reg; --@example.org"]
    assert rows[0]["submitted_at"] == T0 + timedelta(days=1)
    assert rows[1]["agreed_dua"] is False
    again, _, _ = read_bigquery_registrations(PROJECT, ds, "reg")
    assert again == rows  # the hostile row was data, the table is intact


def test_source_incremental_by_timestamp_watermark(client):
    ds = make_source(client, [row(1, "a@example.org"), row(5, "b@example.org"), row(9, "c@example.org")])
    since = T0 + timedelta(days=5)
    rows, complete, effective = read_bigquery_registrations(PROJECT, ds, "reg", since=since)
    assert [r["email"] for r in rows] == ["b@example.org", "c@example.org"]  # submitted_at >= since
    assert complete is False and effective == since
    rows, complete, _ = read_bigquery_registrations(PROJECT, ds, "reg", since=T0 + timedelta(days=30))
    assert rows == [] and complete is False  # an empty incremental read is not an empty source


def test_source_string_times_mean_a_full_read_and_header_aliases_map(client):
    cols = [
        ("Timestamp", "STRING"),
        ("Email_Address", "STRING"),
        ("agreed_dua", "STRING"),
        ("agreed_terms", "STRING"),
        ("extra_column", "INT64"),
    ]
    ds = make_source(client, [], columns=cols)
    insert_rows(
        client,
        ds,
        [("1/31/2026 13:05:09", "a@example.org", "Yes", "Yes", 1), ("2026-01-02T00:00:00Z", "b@example.org", "Yes", "No", 2)],
        cols,
    )
    rows, complete, effective = read_bigquery_registrations(PROJECT, ds, "reg", since=T0 + timedelta(days=40))
    assert complete is True and effective is None
    assert len(rows) == 2
    assert set(rows[0]) == {"submitted_at", "email", "agreed_dua", "agreed_terms"}
    assert {r["email"] for r in rows} == {"a@example.org", "b@example.org"}


def test_source_errors_are_specific(client, endpoint, monkeypatch):
    ds = make_source(client, [], columns=[("submitted_at", "TIMESTAMP"), ("email", "STRING"), ("agreed_terms", "BOOL")])
    with pytest.raises(SourceError, match="lacks required column.*agreed_dua"):
        read_bigquery_registrations(PROJECT, ds, "reg")
    with pytest.raises(SourceError, match="does not exist"):
        read_bigquery_registrations(PROJECT, ds, "no_such_table")
    with pytest.raises(SourceError, match="does not exist"):
        read_bigquery_registrations(PROJECT, "no_such_dataset", "reg")
    bad = make_source(client, [], columns=[("submitted_at", "TIMESTAMP"), ("email", "ARRAY<STRING>"), ("agreed_dua", "BOOL"), ("agreed_terms", "BOOL")])
    with pytest.raises(SourceError, match="unsupported type"):
        read_bigquery_registrations(PROJECT, bad, "reg")
    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CDSOPS_BIGQUERY_TIMEOUT", "1")
    with pytest.raises(SourceError, match="cannot reach BigQuery table .*nothing was changed"):
        read_bigquery_registrations(PROJECT, ds, "reg")
    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", "127.0.0.1:9050")
    with pytest.raises(SourceError, match="CDSOPS_BIGQUERY_ENDPOINT must look like"):
        read_bigquery_registrations(PROJECT, ds, "reg")


# -- the store -------------------------------------------------------------------------
def test_store_creates_tables_and_round_trips_the_roster(client, endpoint):
    ds = f"roster_{secrets.token_hex(4)}"  # the store creates the dataset too
    store = open_store(f"bigquery://{PROJECT}/{ds}")
    assert isinstance(store, BigQueryStore)
    assert isinstance(store, RosterStore)  # the one store interface
    assert store.load().students == () and store.load_meta() == {} and not store.load().present
    with pytest.raises(StoreError, match=f"roster store bigquery://{PROJECT}/{ds} does not exist"):
        store.load_existing()  # a mistyped dataset never reads as an empty roster
    batch = regs([("a.b@gmail.com", 1), ("ab+x@googlemail.com", 0), ("c@example.org", 2), ("c@example.org", 3)])
    out = store.sync_registrations(batch, CFG, run_id="r1", now=T0 + timedelta(days=4), meta={"k": "v"})
    assert out.counts == {"added": 2, "renewed": 0, "unchanged": 0}
    tables = {t.table_id for t in client.list_tables(f"{PROJECT}.{ds}")}
    assert {"students", "profiles", "meta", "changes"} <= tables
    assert not [t for t in tables if t.startswith("_cdsops_stage")]
    agreements = next(f for f in client.get_table(f"{PROJECT}.{ds}.students").schema if f.name == "agreements")
    assert (agreements.field_type, agreements.mode) == ("TIMESTAMP", "REPEATED")
    snap = store.load_existing()
    assert snap.students == out.students
    assert snap.revision == revision_of(out.students) == 2 + 4
    assert [s.identity for s in snap.students] == ["ab@gmail.com", "c@example.org"]
    assert snap.meta["k"] == "v" and snap.meta["last_synced_at"] == "2026-01-05T00:00:00Z"
    # the same rows again change nothing (idempotent)
    again = store.sync_registrations(batch, CFG, run_id="r2", now=T0 + timedelta(days=5))
    assert again.counts == {"added": 0, "renewed": 0, "unchanged": 2}
    assert store.load().students == snap.students
    assert [c["kind"] for c in store.changes()] == ["student.added", "student.added"]
    # a later agreement renews; profiles keep the newest contact details
    later = regs([("c@example.org", 100)])
    out3 = store.sync_registrations(later, CFG, run_id="r3", now=T0 + timedelta(days=101))
    assert out3.counts == {"added": 0, "renewed": 1, "unchanged": 0}
    assert [c["kind"] for c in store.changes(run_id="r3")] == ["student.renewed"]
    assert store.changes(student_id=1) and all(c["student_id"] == 1 for c in store.changes(student_id=1))
    prof = store.profiles([1, 2, 99])
    assert set(prof) == {1, 2} and prof[2].updated_at == T0 + timedelta(days=100)
    assert store.load().students[1].expires_at == T0 + timedelta(days=100 + CFG.access_days)


def test_store_large_batches_go_through_a_staging_table(client, endpoint):
    ds = new_dataset(client, "stage")
    store = BigQueryStore(PROJECT, ds)
    store.inline_limit = 2  # force the Parquet load-job path
    batch = regs([(f"user{i}@example.org", i % 7) for i in range(40)] + [("user1@example.org", 50)])
    expected = pure_sync((), batch, CFG)
    out = store.sync_registrations(batch, CFG, run_id="big", now=T0 + timedelta(days=60))
    assert out.counts == expected.counts and store.load().students == expected.students
    assert len(store.changes(run_id="big")) == 40
    assert len(store.profiles(range(1, 41))) == 40
    assert not [t.table_id for t in client.list_tables(f"{PROJECT}.{ds}") if t.table_id.startswith("_cdsops_stage")]


def test_store_meta_changes_and_notifications(client, endpoint):
    ds = new_dataset(client, "meta")
    store = BigQueryStore(PROJECT, ds)
    store.set_meta({"last_applied_at": "2026-01-02T00:00:00Z", "watermark:x": "1"})
    store.set_meta({"watermark:x": "2"})
    assert store.load_meta() == {"last_applied_at": "2026-01-02T00:00:00Z", "watermark:x": "2"}
    assert store.load().since == T0 + timedelta(days=1)
    store.record_changes([ChangeRecord("run9", T0, "access.granted", 7, "s000007", None, {"group": "cdsdata"})])
    assert store.changes(run_id="run9") == [
        {"run_id": "run9", "at": "2026-01-01T00:00:00Z", "kind": "access.granted", "student_id": 7,
         "username": "s000007", "before": None, "after": {"group": "cdsdata"}}
    ]  # fmt: skip
    assert store.sent_notifications() == frozenset()
    client.query(
        f"CREATE TABLE `{PROJECT}.{ds}.notifications` AS SELECT * FROM UNNEST(["
        "STRUCT(1 AS student_id, 1 AS admission, 'welcome' AS kind, 'sent' AS status), "
        "STRUCT(2, 1, 'welcome', 'failed')])"
    ).result()
    assert store.sent_notifications() == frozenset({(1, 1, "welcome")})


def test_store_unreachable_fails_clearly(monkeypatch, emulator):
    monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CDSOPS_BIGQUERY_TIMEOUT", "1")
    store = open_store(f"bigquery://{PROJECT}/nowhere")
    with pytest.raises(StoreError, match=r"cannot prepare roster store bigquery://test-project/nowhere: no answer within 1 s.*nothing was changed"):
        store.sync_registrations(regs([("a@example.org", 1)]), CFG, run_id="x", now=T0)
    with pytest.raises(StoreError, match="cannot read roster store"):
        store.load()


def test_store_gives_up_after_bounded_retries_and_changes_nothing(client, endpoint):
    ds = new_dataset(client, "conflict")
    store = BigQueryStore(PROJECT, ds)
    store.max_attempts = 3
    rival = BigQueryStore(PROJECT, ds)
    n = iter(range(100))

    def rival_first(students, revision, now):
        # a rival sync lands between our read and our write, every time
        rival.sync_registrations(regs([(f"rival{next(n)}@example.org", 1)]), CFG, run_id="rival", now=T0)
        return BigQueryStore._write_students(store, students, revision, now)

    store._write_students = rival_first
    with pytest.raises(StoreError, match=CONFLICT_MESSAGE):
        store.sync_registrations(regs([("mine@example.org", 2)]), CFG, run_id="mine", now=T0, meta={"watermark:mine": "x"})
    snap = store.load()
    assert [s.identity for s in snap.students] == ["rival0@example.org", "rival1@example.org", "rival2@example.org"]
    assert "watermark:mine" not in snap.meta and store.changes(run_id="mine") == []


def _check_roster(students, identities):
    ids = [s.student_id for s in students]
    assert len(ids) == len(set(ids)), "one id given twice"
    idents = [s.identity for s in students]
    assert len(idents) == len(set(idents)), "one identity has two ids"
    assert len({s.username for s in students}) == len(students)
    assert set(idents) == set(identities)
    assert sorted(ids) == list(range(1, len(ids) + 1))  # dense: no id lost


def test_indexed_sync_equals_the_pure_sync_over_the_whole_roster(client, endpoint):
    ds = new_dataset(client, "eq")
    store = BigQueryStore(PROJECT, ds)
    batches = [
        [("zed@example.org", 4), ("alice@gmail.com", 1), ("a.lice+x@googlemail.com", 3), ("bob@example.org", 2)],  # staged, empty roster
        [("bob@example.org", 2), ("carol@example.org", 0)],  # bob unchanged, carol new
        [("ALICE@gmail.com", 200), ("dave@example.org", 5), ("bob@example.org", 2)],  # alice re-admitted
        [],
        [(f"many{i}@example.org", i) for i in range(6)] + [("carol@example.org", 9)],  # over index_limit
    ]
    pure = ()
    for i, pairs in enumerate(batches):
        store.index_limit = 2 if i in (0, len(batches) - 1) else 5000  # first and last batch: the staged join
        expected = pure_sync(pure, regs(pairs), CFG)
        got = store.sync_registrations(regs(pairs), CFG, run_id=f"r{i}", now=T0 + timedelta(days=300))
        assert got.counts == expected.counts, i
        assert [s.student_id for s in got.added] == [s.student_id for s in expected.added]
        assert [c.to_dict() for c in got.changes] == [c.to_dict() for c in expected.changes]
        pure = expected.students
    assert store.load().students == pure
    assert not [t.table_id for t in client.list_tables(f"{PROJECT}.{ds}") if t.table_id.startswith("_cdsops_stage")]
    # a large no-op batch touches nothing
    store.index_limit = 2
    every = [("alice@gmail.com", 1), ("a.lice+x@googlemail.com", 3), ("bob@example.org", 2), ("ALICE@gmail.com", 200)]
    again = store.sync_registrations(regs(every), CFG, run_id="noop", now=T0 + timedelta(days=300))
    assert again.counts == {"added": 0, "renewed": 0, "unchanged": 2} and again.changes == ()
    assert store.load().students == pure


@pytest.mark.parametrize("path", ["sync_registrations", "sync_registrations_staged"])
def test_race_two_syncs_that_read_the_same_roster(client, endpoint, path, monkeypatch):
    """Deterministic race: both syncs read the same revision before either writes."""
    ds = new_dataset(client, "race")
    stores = [BigQueryStore(PROJECT, ds), BigQueryStore(PROJECT, ds)]
    batches = [
        regs([("shared@example.org", 1), ("a.one@gmail.com", 2), ("only.a@example.org", 3)]),
        regs([("SHARED@example.org", 5), ("aone+x@googlemail.com", 1), ("only.b@example.org", 2)]),
    ]
    barrier = threading.Barrier(2, timeout=60)
    attempts = [0, 0]

    write = BigQueryStore._write_students

    def write_after_both_read(self, students, revision, now):
        i = stores.index(self)
        attempts[i] += 1
        if attempts[i] == 1:
            barrier.wait()  # both have read and computed; now both write
        return write(self, students, revision, now)

    monkeypatch.setattr(BigQueryStore, "_write_students", write_after_both_read)

    def run(i):
        stores[i].index_limit = 1 if path.endswith("staged") else 5000
        return stores[i].sync_registrations(batches[i], CFG, run_id=f"t{i}", now=T0 + timedelta(days=10))

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(run, [0, 1]))
    assert sorted(attempts) == [1, 2]  # exactly one lost the race and retried
    students = stores[0].load().students
    _check_roster(students, {"shared@example.org", "aone@gmail.com", "only.a@example.org", "only.b@example.org"})
    by = {s.identity: s for s in students}
    assert by["shared@example.org"].agreements == (T0 + timedelta(days=1), T0 + timedelta(days=5))
    assert sum(len(o.added) for o in outs) == 4
    added = [c for c in stores[0].changes() if c["kind"] == "student.added"]
    assert sorted(c["student_id"] for c in added) == [1, 2, 3, 4]


def test_race_between_processes_with_overlapping_batches(client, endpoint, tmp_path):
    """Four `cdsops roster sync` processes at once into one BigQuery roster."""
    ds = new_dataset(client, "prace")
    header = "submitted_at,email,full_name,city,country,agreed_dua,agreed_terms\n"
    people = [f"p{i}@example.org" for i in range(12)]
    batches = [people[0:6], people[3:9], people[6:12], people[::2]]
    paths = []
    for b, batch in enumerate(batches):
        p = tmp_path / f"batch{b}.csv"
        p.write_text(header + "".join(f"2026-01-0{1 + (i + b) % 5}T00:00:00Z,{e.upper() if b % 2 else e},Invented,,,yes,yes\n" for i, e in enumerate(batch)))
        paths.append(p)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    procs = [
        subprocess.Popen(
            [*CDSOPS, "roster", "sync", "--source", str(p), "--roster", f"bigquery://{PROJECT}/{ds}", "--json", "--now", "2026-02-01T00:00:00Z"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        for p in paths
    ]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for _out, err, rc in results:
        assert rc == 0, err
    added = sum(json.loads(out)["added"] for out, _, _ in results)
    students = BigQueryStore(PROJECT, ds).load().students
    _check_roster(students, set(people))
    assert added == len(people)  # every person was added exactly once, by one of the syncs


# -- the CLI end to end ----------------------------------------------------------------
def test_cli_sync_show_plan_and_incremental_watermark(client, endpoint):
    ds = make_source(
        client,
        [
            row(1, "A.B@gmail.com"),
            row(0, "ab+course@googlemail.com"),
            row(2, "bob@example.org", dua=False),
            row(3, "carol@example.org"),
            row(3, "not an email"),
        ],
    )
    src = f"bigquery://{PROJECT}/{ds}/reg"
    roster = f"bigquery://{PROJECT}/{ds}_roster"
    env = {"CDSOPS_BIGQUERY_ENDPOINT": endpoint}
    now = "2026-01-10T00:00:00Z"
    out = json.loads(run_cli("roster", "sync", "--source", src, "--roster", roster, "--json", "--now", now, env_extra=env).stdout)
    assert out["added"] == 2 and out["renewed"] == 0 and out["unchanged"] == 0
    assert sorted(r["row"] for r in out["rejected"]) == [3, 5]  # rows in ORDER BY submitted_at, email, ...
    show = json.loads(run_cli("roster", "show", "--roster", roster, "--json", "--now", now, env_extra=env).stdout)
    assert [(s["student_id"], s["username"], s["identity"], s["status"]) for s in show["students"]] == [
        (1, "s000001", "ab@gmail.com", "active"),
        (2, "s000002", "carol@example.org", "active"),
    ]
    plan = json.loads(run_cli("plan", "--roster", roster, "--json", "--now", now, env_extra=env).stdout)
    assert "@" not in json.dumps(plan.get("accounts", []))  # the compute host's part carries no email
    assert json.dumps(plan).count("s000001") >= 1
    meta = BigQueryStore(PROJECT, f"{ds}_roster").load_meta()
    assert meta[f"watermark:{src}"] == "2026-01-04T00:00:00Z"

    # nothing new: the incremental read is empty, which is not an empty source
    again = json.loads(run_cli("roster", "sync", "--source", src, "--roster", roster, "--json", "--now", now, env_extra=env).stdout)
    assert again["added"] == 0 and again["renewed"] == 0 and again["unchanged"] == 1  # carol, re-read in the overlap
    assert [r["row"] for r in again["rejected"]] == [2]  # "not an email", also within the overlap

    # a new registration and a renewal arrive; only rows since the watermark (minus the overlap) are read
    insert_rows(client, ds, [row(20, "dave@example.org"), row(21, "carol@example.org")])
    third = json.loads(run_cli("roster", "sync", "--source", src, "--roster", roster, "--json", "--now", "2026-01-25T00:00:00Z", env_extra=env).stdout)
    assert (third["added"], third["renewed"], third["unchanged"]) == (1, 1, 0)
    assert [r["row"] for r in third["rejected"]] == [2]  # only the bad row inside the overlap; older ones are not re-read
    meta = BigQueryStore(PROJECT, f"{ds}_roster").load_meta()
    assert meta[f"watermark:{src}"] == "2026-01-22T00:00:00Z"


def test_cli_errors_are_one_line(client, endpoint):
    ds = make_source(client, [])
    env = {"CDSOPS_BIGQUERY_ENDPOINT": endpoint}
    empty = run_cli("roster", "sync", "--source", f"bigquery://{PROJECT}/{ds}/reg", "--roster", f"bigquery://{PROJECT}/{ds}_r", "--json", env_extra=env, check=False)  # noqa: E501  a literal line kept whole for grep
    assert empty.returncode != 0 and "no registration rows" in empty.stderr and len(empty.stderr.strip().splitlines()) == 1
    missing = run_cli("roster", "sync", "--source", f"bigquery://{PROJECT}/{ds}/nope", "--roster", f"bigquery://{PROJECT}/{ds}_r", env_extra=env, check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    down = {"CDSOPS_BIGQUERY_ENDPOINT": f"http://127.0.0.1:{free_port()}", "CDSOPS_BIGQUERY_TIMEOUT": "1"}
    gone = run_cli("roster", "show", "--roster", f"bigquery://{PROJECT}/{ds}_r", "--json", env_extra=down, check=False)
    assert gone.returncode != 0 and "cannot read roster store" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
