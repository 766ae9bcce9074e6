"""cdsops.times: the one place cdsops parses and formats times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cdsops import times

AT = datetime(2026, 1, 5, 10, 0, 0, tzinfo=times.UTC)


def test_format_iso_uses_z_and_drops_zero_microseconds():
    assert times.format_iso(AT) == "2026-01-05T10:00:00Z"
    assert times.format_iso(AT.replace(microsecond=1500)) == "2026-01-05T10:00:00.001500Z"


def test_format_iso_timespec_and_naive_input_as_utc():
    assert times.format_iso(AT.replace(microsecond=1500), "milliseconds") == "2026-01-05T10:00:00.001Z"
    assert times.format_iso(datetime(2026, 1, 5, 10, 0, 0, 999999), "seconds") == "2026-01-05T10:00:00Z"


def test_format_iso_converts_other_offsets_to_utc():
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    assert times.format_iso(paris) == "2026-01-05T10:00:00Z"


@pytest.mark.parametrize("text", ["2026-01-05T10:00:00Z", "2026-01-05T10:00:00z", "2026-01-05T11:00:00+01:00", "2026-01-05T10:00:00"])
def test_parse_iso_reads_z_offsets_and_naive_as_utc(text):
    assert times.parse_iso(text) == AT
    assert times.parse_iso(text).tzinfo is times.UTC


def test_parse_iso_refuses_what_is_not_a_time():
    with pytest.raises(ValueError):
        times.parse_iso("yesterday")


@pytest.mark.parametrize("value", [None, "", 42, "not a time", "2026-13-01T00:00:00Z"])
def test_parse_iso_lenient_never_raises(value):
    assert times.parse_iso_lenient(value) is None


def test_parse_iso_lenient_reads_a_time():
    assert times.parse_iso_lenient("2026-01-05T10:00:00.000Z") == AT


def test_round_trip_and_epoch():
    assert times.parse_iso(times.format_iso(AT)) == AT
    assert times.from_epoch(AT.timestamp()) == AT
    assert times.compact_stamp(AT) == "20260105T100000Z"


def test_naive_helpers():
    assert times.naive_utc(AT) == datetime(2026, 1, 5, 10, 0, 0)
    now = times.naive_utcnow()
    assert now.tzinfo is None
    assert abs((times.as_utc(now) - times.utcnow()).total_seconds()) < 60
    assert times.iso(None) is None and times.parse_iso_or_none("") is None
