"""Row validation and the CSV source: each bad row is reported and skipped, never fatal."""

from datetime import UTC, datetime

import pytest

from cdsops.registrations import Registration, Rejection, parse_time, validate_row, validate_rows
from cdsops.sources import SourceError, parse_source, read_csv

NOW = datetime(2026, 6, 1, tzinfo=UTC)
GOOD = {
    "submitted_at": "2026-05-01T10:00:00Z",
    "email": "alice@example.org",
    "full_name": "Alice Example",
    "city": "Avalon",
    "country": "Nowhere",
    "agreed_dua": "yes",
    "agreed_terms": "yes",
}


def row(**kw):
    r = dict(GOOD)
    r.update(kw)
    return r


REJECTED = [
    (row(email=None), "email is missing"),
    (row(email=""), "email is missing"),
    (row(email="nope"), "exactly one '@'"),
    (row(email="x" * 300 + "@example.org"), "longer than 254"),
    (row(email="a\nb@example.org"), "control characters"),
    (row(email="robert');DROP TABLE students;--@x.org"), "whitespace"),
    (row(submitted_at=""), "submitted_at is missing"),
    (row(submitted_at=None), "submitted_at is missing"),
    (row(submitted_at="yesterday"), "not an ISO 8601 time"),
    (row(submitted_at="2026-02-30T00:00:00"), "not an ISO 8601 time"),
    (row(submitted_at="2/30/2026 10:00:00"), "not a valid time"),
    (row(submitted_at="2027-01-01T00:00:00Z"), "in the future"),
    (row(submitted_at="1970-01-01T00:00:00Z"), "before the year 2000"),
    (row(agreed_dua="no"), "data use agreement not agreed"),
    (row(agreed_dua=""), "data use agreement not agreed"),
    (row(agreed_dua=None), "data use agreement not agreed"),
    (row(agreed_dua="maybe"), "agreed_dua is not a yes/no value"),
    (row(agreed_terms="FALSE"), "terms not agreed"),
    (row(agreed_terms="perhaps"), "agreed_terms is not a yes/no value"),
    (row(full_name="Eve\nEvil"), "full_name contains control characters"),
    (row(full_name="Bell\x07"), "full_name contains control characters"),
    (row(full_name="n" * 201), "full_name is longer than 200"),
    (row(city="c\x1b[31m"), "city contains control characters"),
]


@pytest.mark.parametrize("data,reason", REJECTED)
def test_rejections_are_specific(data, reason):
    result = validate_row(7, data, NOW)
    assert isinstance(result, Rejection)
    assert result.row == 7
    assert reason in result.reason


ACCEPTED = [
    (row(), "alice@example.org", datetime(2026, 5, 1, 10, tzinfo=UTC)),
    (row(submitted_at="2026-05-01 12:00:00+02:00"), "alice@example.org", datetime(2026, 5, 1, 10, tzinfo=UTC)),
    (row(submitted_at="2026-05-01T10:00:00"), "alice@example.org", datetime(2026, 5, 1, 10, tzinfo=UTC)),
    (row(submitted_at="5/1/2026 10:00:00"), "alice@example.org", datetime(2026, 5, 1, 10, tzinfo=UTC)),
    (row(submitted_at=datetime(2026, 5, 1, 10)), "alice@example.org", datetime(2026, 5, 1, 10, tzinfo=UTC)),
    (row(email=" Alice.Smith@GoogleMail.com "), "alicesmith@gmail.com", None),
    (row(agreed_dua=True, agreed_terms=1), "alice@example.org", None),
    (row(agreed_dua="I agree", agreed_terms="Agreed"), "alice@example.org", None),
    (row(full_name="Zoë Ñúñez 王小明", city="Zürich"), "alice@example.org", None),
    (row(full_name=None, city=None, country=None), "alice@example.org", None),
    (row(email="-rf@example.org"), "-rf@example.org", None),
    (row(submitted_at="2026-06-01T00:05:00Z"), "alice@example.org", None),  # clock skew tolerated
]


@pytest.mark.parametrize("data,identity,when", ACCEPTED)
def test_valid_rows(data, identity, when):
    result = validate_row(1, data, NOW)
    assert isinstance(result, Registration), result
    assert result.identity == identity
    if when:
        assert result.submitted_at == when
    assert result.submitted_at.tzinfo is not None


def test_one_bad_row_never_blocks_the_others():
    rows = [row(email=f"p{i}@example.org") for i in range(5)]
    rows[2] = row(email="broken")
    result = validate_rows(rows, NOW)
    assert [r.row for r in result.rejections] == [3]
    assert len(result.registrations) == 4
    assert result.rows == 5


def test_parse_time_normalizes_to_utc():
    assert parse_time("2026-01-01T01:00:00+01:00") == datetime(2026, 1, 1, tzinfo=UTC)


CSV_HOSTILE = (
    "\ufeff Submitted_At , EMAIL ,Full Name,city,country,agreed_dua,agreed_terms,extra\r\n"
    "2026-05-01T10:00:00Z,  alice@example.org  ,  Alice  ,,,yes,yes,ignored\r\n"
    '2026-05-01T10:01:00Z,"bob@example.org","Bob ""the"" Builder\nSecond line",,,yes,yes\r\n'
    "2026-05-01T10:02:00Z,-carol@example.org,Carol,,,yes,yes\r\n"
    "\r\n"
    "2026-05-01T10:03:00Z,\"dave@example.org'; DELETE FROM students; --\",Dave,,,yes,yes\r\n"
    "2026-05-01T10:04:00Z," + "e" * 300 + "@example.org,Eve,,,yes,yes\r\n"
    "2026-05-01T10:05:00Z,Frank.Ünicode@example.org,Frank,,,yes,yes\r\n"
    "2026-05-01T10:06:00Z,gina@example.org,Gina,,,yes\r\n"
)


def test_csv_with_bom_whitespace_and_hostile_rows(tmp_path):
    p = tmp_path / "form.csv"
    p.write_text(CSV_HOSTILE, encoding="utf-8")
    rows = read_csv(p)
    assert len(rows) == 7  # the blank line is not a row
    result = validate_rows(rows, NOW)
    ok = {r.identity for r in result.registrations}
    assert ok == {"alice@example.org", "-carol@example.org"}
    reasons = {r.row: r.reason for r in result.rejections}
    assert "control characters" in reasons[2]  # newline in the name
    assert 4 in reasons and 5 in reasons and 6 in reasons
    assert "terms not agreed" in reasons[7]  # short row: agreed_terms missing
    assert result.registrations[0].full_name == "Alice"


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "empty"),
        ("email,full_name\nalice@example.org,A\n", "lacks required column"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
    ],
)
def test_csv_source_failures_are_whole_and_clear(tmp_path, content, message):
    p = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    with pytest.raises(SourceError, match=message):
        read_csv(p)


def test_missing_csv_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "uri,kind",
    [
        ("/tmp/x.csv", "csv"),
        ("csv:/tmp/x.csv", "csv"),
        ("duckdb:/tmp/x.duckdb#registrations", "duckdb"),
        ("bigquery://my-project/course/registrations", "bigquery"),
    ],
)
def test_parse_source(uri, kind):
    assert parse_source(uri).kind == kind


@pytest.mark.parametrize(
    "uri",
    [
        "duckdb:/tmp/x.duckdb",
        "duckdb:/tmp/x.duckdb#bad-name",
        "duckdb:/tmp/x.duckdb#t;DROP",
        "bigquery://p/d",
        "bigquery://my-project/course/regs`; DROP",
        "bigquery://P/d/t",
        "",
    ],
)
def test_parse_source_refuses_bad_uris(uri):
    with pytest.raises(SourceError):
        parse_source(uri)
