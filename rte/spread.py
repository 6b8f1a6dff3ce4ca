"""Cross-venue spreads: each venue's mid against every other venue's, in bps, and its z-score (table ``spread_z``).

The per-pair trailing-window sums come from :class:`rte.indicators.RollingSums`; the per-quote
pairing runs in one compiled kernel over the batch, as the indicators do.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pyarrow as pa

from rte.engine import Engine, Output
from rte.indicators import F64, I64, KeyIndex, RollingSums, float_values, jit, ns_values, nullable, output_schema
from rte.units import parse_duration
from tickerplant.message import Message

__all__ = ["SpreadEngine", "zscores"]


@jit
def _spread_kernel(syms: I64, venues: I64, bid: F64, ask: F64, mids: F64, pair_of: I64, npairs: I64,
                   out_row: I64, out_other: I64, out_pair: I64, out_spread: F64) -> int:
    nv = mids.shape[1]
    k = 0
    for i in range(syms.shape[0]):
        v = venues[i]
        b = bid[i]
        a = ask[i]
        s = syms[i]
        if v < 0 or s < 0 or not (b > 0.0 and a > 0.0):  # no venue, or a one-sided / empty quote: no mid
            continue
        mid = (b + a) * 0.5
        mids[s, v] = mid
        for o in range(nv):
            other = mids[s, o]
            if o == v or other != other:
                continue
            p = pair_of[s, v, o]
            if p < 0:
                p = npairs[0]
                pair_of[s, v, o] = p
                npairs[0] = p + 1
            out_row[k] = i
            out_other[k] = o
            out_pair[k] = p
            out_spread[k] = (mid - other) / other * 1e4
            k += 1
    return k


class SpreadEngine(Engine):
    """``quote`` -> ``spread_z``: each venue's mid against every other venue's latest mid of the sym.

    For a two-sided quote (bid and ask > 0) of venue V on a sym, one row per other venue O with a
    mid for that sym: ``spread_bps = (mid_V - mid_O) / mid_O * 1e4`` and its z-score among the
    spreads of the pair (V, O) in the trailing window ``(t - window_ns, t]`` (this one included):
    ``(x - mean) / std`` with the sample standard deviation (ddof 1), null until the window holds
    ``min_periods`` spreads or when they are all equal. A pair's series only grows when V quotes;
    O's mid is its latest, however old. Quotes without an exchange are ignored. Rows come per
    quote in the order of the other venues' first appearance.
    """

    name = "spread_z"
    inputs = ("quote",)
    outputs = ("spread_z",)

    def __init__(self, window_ns: int = parse_duration("5m"), min_periods: int = 2) -> None:
        if min_periods < 2:
            raise ValueError("min_periods must be at least 2: a standard deviation needs two spreads")
        self.window_ns = window_ns
        self.min_periods = min_periods
        self._schema = output_schema("spread_z")
        self.reset()

    def reset(self) -> None:
        self.syms = KeyIndex()
        self.venues = KeyIndex()
        self._mids = np.full((0, 0), np.nan, dtype=np.float64)
        self._pair_of = np.full((0, 0, 0), -1, dtype=np.int64)
        self._npairs = np.zeros(1, dtype=np.int64)
        self._window = RollingSums(self.window_ns, 2)

    def _ensure(self) -> None:
        ns, nv = len(self.syms), len(self.venues)
        s0, v0 = self._mids.shape
        if ns <= s0 and nv <= v0:
            return
        s1, v1 = max(ns, 2 * s0, 4), max(nv, v0 + 4)
        mids = np.full((s1, v1), np.nan, dtype=np.float64)
        mids[:s0, :v0] = self._mids
        pair_of = np.full((s1, v1, v1), -1, dtype=np.int64)
        pair_of[:s0, :v0, :v0] = self._pair_of
        self._mids, self._pair_of = mids, pair_of

    def on_upd(self, msg: Message) -> list[Output]:
        data = msg.data
        if msg.table != "quote" or data.num_rows == 0:
            return []
        syms = self.syms.encode(data.column("sym"))
        venues = self.venues.encode(data.column("exchange"))
        self._ensure()
        n = data.num_rows
        width = max(self._mids.shape[1] - 1, 1)
        rows = np.empty(n * width, dtype=np.int64)
        other = np.empty(n * width, dtype=np.int64)
        pair = np.empty(n * width, dtype=np.int64)
        spread = np.empty(n * width, dtype=np.float64)
        k = _spread_kernel(syms, venues, float_values(data.column("bid_price")), float_values(data.column("ask_price")),
                           self._mids, self._pair_of, self._npairs, rows, other, pair, spread)
        if k == 0:
            return []
        rows, other, pair, spread = rows[:k], other[:k], pair[:k], spread[:k]
        time = ns_values(data.column("time"))[rows]
        sums, nobs = self._window.update(pair, time, np.stack((spread, spread * spread)))
        z = zscores(spread, sums, nobs[0], self.min_periods)
        take = pa.array(rows)
        names = pa.array(self.venues.names, type=pa.string())
        batch = pa.RecordBatch.from_arrays(
            [data.column("time").take(take), data.column("sym").take(take), data.column("exchange").take(take),
             names.take(pa.array(other)), pa.array(spread), nullable(z)], schema=self._schema)
        return [("spread_z", batch)]

    def on_eod(self, date: str) -> list[Output]:
        self.reset()
        return []


def zscores(x: F64, sums: F64, count: I64, min_periods: int) -> F64:
    """``(x - mean) / std`` (ddof 1) from a window's count, sum and sum of squares (``sums`` rows); NaN if undefined."""
    n = count.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = sums[0] / n
        var = (sums[1] - sums[0] * mean) / (n - 1.0)
        # A spread series flat to rounding has no spread of its own: no z (pandas gives std 0 there).
        flat = var <= 1e-20 * (sums[1] / n)
        z = (x - mean) / np.sqrt(var)
    z[(count < min_periods) | flat | ~np.isfinite(var)] = np.nan
    return cast(F64, z)
