"""Time for the tickerplant: the clock it stamps with and the end-of-day calendar.

The clock is injectable so tests (and rehearsals) can cross midnight in seconds:
``OffsetClock`` runs at real speed from a chosen start instant (``tick tp
--clock-start 2026-11-23T23:59:58Z``). The trading date of an instant follows the
kdb+ convention of one log per day: with end of day at ``eod`` in zone ``tz``, the
day's date is the local date, plus one when the local time is at or past ``eod``
(for ``eod`` 00:00 that is simply the local date; for 17:00 New York it is the FX
convention that Monday 18:00 belongs to Tuesday).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol
from zoneinfo import ZoneInfo

NS = 1_000_000_000


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    """Wall-clock time (UTC nanoseconds)."""

    def now_ns(self) -> int:
        return time.time_ns()


class OffsetClock:
    """Real-speed time that starts at ``start_ns`` when created."""

    def __init__(self, start_ns: int) -> None:
        self._offset = start_ns - time.time_ns()

    def now_ns(self) -> int:
        return time.time_ns() + self._offset


def parse_instant(text: str) -> int:
    """ISO-8601 instant (``Z`` or an offset; naive means UTC) -> UTC nanoseconds."""
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * NS + stamp.microsecond * 1000


class Calendar:
    """Trading dates and end-of-day instants for an end-of-day time in a time zone."""

    def __init__(self, eod: str = "00:00", tz: str = "UTC") -> None:
        try:
            self.eod = dt.time.fromisoformat(eod)
        except ValueError:
            raise ValueError(f"end-of-day time {eod!r} is not HH:MM") from None
        try:
            self.tz = ZoneInfo(tz)
        except (KeyError, ValueError):
            raise ValueError(f"unknown time zone {tz!r}; use an IANA name like UTC or America/New_York") from None

    def date(self, ns: int) -> dt.date:
        local = dt.datetime.fromtimestamp(ns / NS, self.tz)
        day = local.date()
        if self.eod != dt.time(0) and local.time() >= self.eod:
            day += dt.timedelta(days=1)
        return day

    def end_ns(self, day: dt.date) -> int:
        """The instant trading date ``day`` ends (the next day's log starts)."""
        last = day if self.eod != dt.time(0) else day + dt.timedelta(days=1)
        end = dt.datetime.combine(last, self.eod, self.tz)
        return int(end.timestamp()) * NS
