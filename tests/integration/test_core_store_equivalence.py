"""The DuckDB store's indexed sync gives exactly what the pure sync over the whole roster gives."""

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdsops.config import Config
from cdsops.identity import canonicalize
from cdsops.registrations import Registration
from cdsops.roster import sync
from cdsops.store.duckdb_store import DuckDBStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = Config(compute_hosts=("c1", "c2"))
emails = st.sampled_from(
    ["alice@gmail.com", "a.lice@googlemail.com", "ALICE+x@gmail.com", "bob@example.org", "carol@example.org", "dave@x.io", "eve@x.io"]
)
batch = st.lists(st.tuples(emails, st.integers(0, 500)), max_size=12)


def regs(rows):
    return [
        Registration(i, T0 + timedelta(days=d), canonicalize(e), e, "Invented", "", "") for i, (e, d) in enumerate(rows, 1)
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(batch, min_size=1, max_size=4))
def test_indexed_sync_equals_pure_sync(tmp_path_factory, batches):
    store = DuckDBStore(tmp_path_factory.mktemp("eq") / "roster.duckdb")
    pure = ()
    for i, rows in enumerate(batches):
        expected = sync(pure, regs(rows), CFG)
        got = store.sync_registrations(regs(rows), CFG, run_id=f"r{i}", now=T0)
        pure = expected.students
        assert got.counts == expected.counts
        assert [s.student_id for s in got.added] == [s.student_id for s in expected.added]
    assert store.load().students == pure
    changes = store.changes()
    assert sum(c["kind"] == "student.added" for c in changes) == len(pure)
