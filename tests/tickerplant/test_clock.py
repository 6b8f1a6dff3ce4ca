"""Trading dates and end-of-day instants for an end-of-day time in a time zone."""

from __future__ import annotations

import datetime as dt

import pytest

from tickerplant.clock import NS, Calendar, OffsetClock, parse_instant


def ns(text: str) -> int:
    return parse_instant(text)


def test_parse_instant_keeps_nanosecond_scale_and_zones() -> None:
    assert ns("1970-01-01T00:00:01Z") == NS
    assert ns("1970-01-01T01:00:00+01:00") == 0
    assert ns("1970-01-01T00:00:00.000001") == 1000  # naive means UTC


def test_midnight_utc_is_the_utc_date() -> None:
    cal = Calendar("00:00", "UTC")
    assert cal.date(ns("2026-11-23T23:59:59.999Z")) == dt.date(2026, 11, 23)
    assert cal.date(ns("2026-11-24T00:00:00Z")) == dt.date(2026, 11, 24)
    assert cal.end_ns(dt.date(2026, 11, 23)) == ns("2026-11-24T00:00:00Z")


def test_fx_convention_new_york_5pm_across_dst() -> None:
    cal = Calendar("17:00", "America/New_York")
    # Monday 16:59 New York belongs to Monday, 17:00 to Tuesday.
    assert cal.date(ns("2026-11-23T16:59:59-05:00")) == dt.date(2026, 11, 23)
    assert cal.date(ns("2026-11-23T17:00:00-05:00")) == dt.date(2026, 11, 24)
    assert cal.end_ns(dt.date(2026, 11, 24)) == ns("2026-11-24T17:00:00-05:00")
    # In July New York is on UTC-4: the day still ends at 17:00 local.
    assert cal.end_ns(dt.date(2026, 7, 15)) == ns("2026-07-15T17:00:00-04:00")
    # Every instant's day ends after it, and the end is the next day's first instant.
    for t in ("2026-03-08T12:00:00Z", "2026-11-01T05:30:00Z", "2026-11-24T21:59:59Z"):
        day = cal.date(ns(t))
        assert ns(t) < cal.end_ns(day)
        assert cal.date(cal.end_ns(day)) == day + dt.timedelta(days=1)


def test_zone_midnight_is_the_local_date() -> None:
    cal = Calendar("00:00", "Asia/Tokyo")
    assert cal.date(ns("2026-11-23T15:00:00Z")) == dt.date(2026, 11, 24)
    assert cal.end_ns(dt.date(2026, 11, 24)) == ns("2026-11-24T15:00:00Z")


@pytest.mark.parametrize(("eod", "tz", "what"), [("25:00", "UTC", "HH:MM"), ("00:00", "Mars/Olympus", "time zone")])
def test_bad_settings_say_what_is_wrong(eod: str, tz: str, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        Calendar(eod, tz)


def test_offset_clock_starts_where_told_and_runs_at_real_speed() -> None:
    start = ns("2026-11-23T23:59:58Z")
    clock = OffsetClock(start)
    first = clock.now_ns()
    assert 0 <= first - start < NS
    assert clock.now_ns() >= first
