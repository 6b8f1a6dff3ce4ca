"""VWAP mean reversion: buy when a sym trades well below its recent VWAP, sell when well above.

Run it against a tickerplant fed by the simulator::

    tick tp &
    tick feed sim &
    tick strategy run examples/vwap_reversion.py

Per sym it keeps a rolling VWAP of the last ``window`` of trades (event time). Each trade
update is reduced with numpy to one (notional, volume) bucket per sym, so the rolling sums
cost O(syms) per update, not O(trades). When the last trade price is more than
``threshold_bps`` below the VWAP it buys ``order_notional`` worth (market order), above it
sells, staying within ``max_notional`` of exposure per sym and waiting ``cooldown`` of event
time between orders on a sym. Everything depends only on the trades in the log, so the
strategy is deterministic: after a crash the runner replays the day and it rebuilds the same
orders, fills and position.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rte import Strategy
from rte.units import parse_duration


class VwapReversion(Strategy):
    name = "vwap_reversion"
    window = "30s"  # rolling VWAP over this much event time
    threshold_bps = 10.0  # trade when the price is this far from the VWAP
    order_notional = 10_000.0  # quote currency per order
    max_notional = 30_000.0  # largest position per sym, in quote currency at the order price
    cooldown = "1s"  # event time between two orders on one sym

    def __init__(self, name: str | None = None, **params: Any) -> None:
        super().__init__(name, **params)
        self.on_new_day("")

    def on_new_day(self, date: str) -> None:
        self.window_ns = parse_duration(self.window)
        self.cooldown_ns = parse_duration(self.cooldown)
        # per sym: buckets of (last event time, notional, volume), oldest first, and their sums
        self.buckets: dict[str, collections.deque[tuple[int, float, float]]] = {}
        self.sums: dict[str, list[float]] = {}
        self.last_order: dict[str, int] = {}

    def on_trade(self, batch: pa.RecordBatch) -> None:
        codes = pc.dictionary_encode(batch.column("sym"))
        idx = codes.indices.to_numpy(zero_copy_only=False)
        syms: list[str] = codes.dictionary.to_pylist()
        price = batch.column("price").to_numpy()
        size = batch.column("size").to_numpy()
        times = batch.column("time").cast(pa.int64()).to_numpy()
        n = len(syms)
        notional = np.bincount(idx, weights=price * size, minlength=n)
        volume = np.bincount(idx, weights=size, minlength=n)
        last_row = np.zeros(n, dtype=np.int64)
        np.maximum.at(last_row, idx, np.arange(len(idx)))  # each sym's last trade in the batch
        for i, sym in enumerate(syms):
            t = int(times[last_row[i]])
            vwap = self._roll(sym, t, float(notional[i]), float(volume[i]))
            self._decide(sym, float(price[last_row[i]]), vwap, t)

    def _roll(self, sym: str, t: int, notional: float, volume: float) -> float:
        """Add this update's bucket, drop buckets older than the window; the rolling VWAP."""
        buckets = self.buckets.setdefault(sym, collections.deque())
        sums = self.sums.setdefault(sym, [0.0, 0.0])
        buckets.append((t, notional, volume))
        sums[0] += notional
        sums[1] += volume
        while buckets and buckets[0][0] <= t - self.window_ns:
            _, old_notional, old_volume = buckets.popleft()
            sums[0] -= old_notional
            sums[1] -= old_volume
        return sums[0] / sums[1] if sums[1] > 0 else float("nan")

    def _decide(self, sym: str, price: float, vwap: float, t: int) -> None:
        if not vwap > 0 or t - self.last_order.get(sym, -self.cooldown_ns) < self.cooldown_ns:
            return
        deviation_bps = (price / vwap - 1.0) * 1e4
        qty = round(self.order_notional / price, 6)
        held = self.position(sym) * price
        if deviation_bps < -self.threshold_bps and held + self.order_notional <= self.max_notional + 1e-9:
            self.buy(sym, qty)
            self.last_order[sym] = t
        elif deviation_bps > self.threshold_bps and held - self.order_notional >= -self.max_notional - 1e-9:
            self.sell(sym, qty)
            self.last_order[sym] = t
