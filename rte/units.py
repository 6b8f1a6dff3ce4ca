"""Durations and basis points as users write them on the command line: ``5m``, ``2s``, ``50bps``."""

from __future__ import annotations

import re

_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
             "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d)")


def parse_duration(text: str) -> int:
    """``"5m"`` -> 300_000_000_000 (nanoseconds). Units: ns us ms s m h d; ``"1m30s"`` adds up."""
    spec = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(spec):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    if pos != len(spec) or not spec:
        raise ValueError(f"duration {text!r} not understood: write a number and a unit, e.g. 500ms, 2s, 5m, 1h")
    return round(total)


def parse_bps(text: str) -> float:
    """``"50bps"`` or ``"50"`` -> 50.0 basis points; ``"0.5%"`` -> 50.0."""
    spec = text.strip().lower()
    try:
        if spec.endswith("bps"):
            return float(spec[:-3])
        if spec.endswith("%"):
            return float(spec[:-1]) * 100
        return float(spec)
    except ValueError:
        raise ValueError(f"threshold {text!r} not understood: write basis points, e.g. 50bps (or 0.5%)") from None
