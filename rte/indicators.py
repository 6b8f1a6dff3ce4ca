"""Streaming indicators per sym, and the engine that publishes them (table ``indicator``).

This module owns the per-tick indicators of issue 5: EMA and RSI exactly as TA-Lib computes
them, a sliding time-window VWAP, realized volatility over a trailing time window, and the
z-score of the spread between venues. Each indicator is a small class holding its state per
key (a dense integer id per sym, or per venue pair) and an ``update(keys, ...)`` that takes a
whole batch of rows in arrival order and returns one value per row, so that:

* the work per row is O(1) (amortized for the windows) and runs in a compiled kernel (numba):
  no Python object per row, and one call per batch whatever its size;
* feeding a series in chunks of any size gives bit-for-bit what one call over the whole series
  gives: the kernels carry their whole state between calls, and do the same arithmetic in the
  same order either way.

TA-Lib conventions kept exactly (the oracle is ``talib``; the arithmetic below is ta_EMA.c's
and ta_RSI.c's, in their order, so the results are bit-identical):

* EMA(n): nothing for the first n-1 values; the n-th is their simple average, then
  ``ema = (x - ema) * k + ema`` with ``k = 2 / (n + 1)``, as one fused multiply-add: the
  TA-Lib C library of the ``ta-lib`` wheel (0.8.2, TA-Lib 0.8.1) computes it so (its compiler
  contracts the expression); rounding the product separately differs in the last bit.
* RSI(n): nothing for the first n values; gains and losses of the first n changes are summed and
  multiplied by ``1 / n``, then Wilder smoothing ``avg = (avg * (n - 1) + change) * (1 / n)``
  (TA-Lib 0.8 multiplies by the reciprocal; dividing differs in the last bit); the value is
  ``100 * gain / (gain + loss)`` when ``gain + loss > 0``, else 0 (TA-Lib 0.6+ tests the sum
  exactly: flat prices give RSI 0).
* NaN: leading NaNs are skipped (a series starts at its first number, as TA-Lib's Python
  wrapper does). After that a NaN poisons what TA-Lib's arithmetic makes it poison: every
  later EMA is NaN, and every later RSI is 0 (the NaN averages fail the ``> 0`` test).

Time windows (VWAP, realized volatility, spread z-scores) are trailing and closed on the
right: a row at time t sees the rows of its key with time in ``(t - window, t]`` (pandas'
``rolling("5min", on=...)``). A key's series is in arrival order; a row stamped earlier than
one already seen counts at the latest time seen (the running maximum), because a window needs
time that does not go back. Sums are Kahan-compensated on add and on remove, as pandas', and
restart from zero when a window empties; NaN values are skipped (pandas' rule).

Realized volatility is ``sqrt(sum r^2)`` over the window, ``r = log(p / previous p)`` of the
same sym (not annualized); null until the sym has a return in its window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import llvmlite.ir  # type: ignore[import-untyped]
import numba
import numba.core.types
import numba.extending
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from rte.engine import Engine, Output
from rte.units import parse_duration
from tickerplant.message import Message
from tickerplant.schema import Registry

__all__ = [
    "Ema",
    "IndicatorEngine",
    "KeyIndex",
    "RealizedVol",
    "RollingSums",
    "Rsi",
    "SlidingVwap",
    "sliding_vwap",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_F = TypeVar("_F", bound=Callable[..., Any])

# TA-Lib's range for optInTimePeriod of EMA and RSI.
_MIN_PERIOD, _MAX_PERIOD = 2, 100_000


def jit(fn: _F) -> _F:
    """Compile ``fn`` with numba (no fastmath: IEEE arithmetic in source order, the way TA-Lib's C does it)."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


def _fma_intrinsic(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` rounded once (LLVM's ``llvm.fma``: the hardware instruction, or an exact software one).

    The ``ta-lib`` wheel's ta_EMA.c is compiled with floating-point contraction, so its
    ``((x - prev) * k) + prev`` is a fused multiply-add (found by comparing bit for bit);
    rounding twice differs in the last bit.
    """
    sig = numba.core.types.float64(numba.core.types.float64, numba.core.types.float64, numba.core.types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        double = llvmlite.ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [double], llvmlite.ir.FunctionType(double, [double] * 3))
        return builder.call(fn, args)

    return sig, codegen


_fma = cast(Callable[[float, float, float], float], numba.extending.intrinsic(_fma_intrinsic))


# --------------------------------------------------------------------------- kernels
# Each kernel walks rows in arrival order; per-key state lives in arrays indexed by key.


@jit
def _ema_kernel(keys: I64, x: F64, n: int, k: float, count: I64, value: F64, out: F64) -> None:
    for i in range(x.shape[0]):
        s = keys[i]
        v = x[i]
        c = count[s]
        if c == 0 and v != v:  # leading NaN: the series has not started
            out[i] = np.nan
            continue
        c += 1
        count[s] = c
        if c < n:
            value[s] += v  # ta_EMA.c: tempReal += inReal[today++]
            out[i] = np.nan
        elif c == n:
            value[s] = (value[s] + v) / n  # prevMA = tempReal / optInTimePeriod
            out[i] = value[s]
        else:
            value[s] = _fma(v - value[s], k, value[s])  # ((x - prev) * k) + prev, fused as in TA-Lib's build
            out[i] = value[s]


@jit
def _rsi_kernel(keys: I64, x: F64, n: int, count: I64, prev: F64, gain: F64, loss: F64, out: F64) -> None:
    inv = 1.0 / n  # TA-Lib 0.8's invPeriod: it multiplies by 1/n rather than divide by n
    for i in range(x.shape[0]):
        s = keys[i]
        v = x[i]
        c = count[s]  # values seen so far (the first one only sets prev)
        out[i] = np.nan
        if c == 0:
            if v == v:
                prev[s] = v
                count[s] = 1
            continue
        count[s] = c + 1
        d = v - prev[s]
        prev[s] = v
        if c < n:  # ta_RSI.c: accumulate the first n changes
            if d < 0:
                loss[s] -= d
            else:
                gain[s] += d
            continue
        if c == n:
            if d < 0:
                loss[s] -= d
            else:
                gain[s] += d
            loss[s] *= inv
            gain[s] *= inv
        else:  # Wilder: multiply by n-1, add today's change, divide by n (as a multiplication, as TA-Lib)
            loss[s] *= n - 1
            gain[s] *= n - 1
            if d < 0:
                loss[s] -= d
            else:
                gain[s] += d
            loss[s] *= inv
            gain[s] *= inv
        total = gain[s] + loss[s]
        if total > 0.0:  # ta_RSI.c (TA-Lib >= 0.6): exact test, so NaN and flat prices give 0
            out[i] = 100.0 * (gain[s] / total)
        else:
            out[i] = 0.0


@jit
def _squared_log_return_kernel(keys: I64, p: F64, last: F64, out: F64) -> None:
    for i in range(p.shape[0]):
        s = keys[i]
        r = math.log(p[i] / last[s])  # NaN for a sym's first price (last starts NaN)
        out[0, i] = r * r
        last[s] = p[i]


@jit
def _vol_kernel(sums: F64, nobs: I64, out: F64) -> None:
    for i in range(out.shape[0]):
        if nobs[0, i] == 0:
            out[i] = np.nan
        else:  # Kahan leaves at most a rounding's worth below zero
            out[i] = math.sqrt(max(sums[0, i], 0.0))


@jit
def _window_kernel(keys: I64, t: I64, v: F64, window: int, pool_t: I64, pool_v: F64, ring: I64, sums: F64,
                   nobs: I64, out_sum: F64, out_nobs: I64, start: int) -> int:
    """Rows from ``start`` in arrival order, every key at once; returns where it stopped.

    Key k's window is a ring of ``cap`` slots at ``pool[off:]``, ``size`` of them used from
    ``head``, where ``ring[k]`` = [off, cap, head, size, latest time]. The kernel stops at a row
    whose key's ring is full (``len(keys)`` when all are done); the caller gives that key a
    bigger ring and calls again from there. ``sums[k, c]`` = [sum, add compensation, remove
    compensation] of value column c (``v[c]``).
    """
    m = v.shape[0]
    for i in range(start, keys.shape[0]):
        k = keys[i]
        e = t[i]
        if e < ring[k, 4]:
            e = ring[k, 4]
        ring[k, 4] = e
        edge = e - window
        base = ring[k, 0]
        c_k = ring[k, 1]
        h = ring[k, 2]
        n = ring[k, 3]
        while n > 0 and pool_t[base + h] <= edge:  # expire rows at or before t - window
            for c in range(m):
                x = pool_v[base + h, c]
                if x == x:
                    nobs[k, c] -= 1
                    y = -x - sums[k, c, 2]
                    tt = sums[k, c, 0] + y
                    sums[k, c, 2] = tt - sums[k, c, 0] - y
                    sums[k, c, 0] = tt
            h += 1
            if h == c_k:
                h = 0
            n -= 1
        if n == 0:  # an empty window starts from exact zeros: no drift carried over
            h = 0
            for c in range(m):
                sums[k, c, 0] = 0.0
                sums[k, c, 1] = 0.0
                sums[k, c, 2] = 0.0
                nobs[k, c] = 0
        ring[k, 2] = h
        ring[k, 3] = n
        if n == c_k:
            return i
        tail = h + n
        if tail >= c_k:
            tail -= c_k
        pool_t[base + tail] = e
        for c in range(m):
            x = v[c, i]
            pool_v[base + tail, c] = x
            if x == x:
                nobs[k, c] += 1
                y = x - sums[k, c, 1]
                tt = sums[k, c, 0] + y
                sums[k, c, 1] = tt - sums[k, c, 0] - y
                sums[k, c, 0] = tt
            out_sum[c, i] = sums[k, c, 0]
            out_nobs[c, i] = nobs[k, c]
        ring[k, 3] = n + 1
    return int(keys.shape[0])


# --------------------------------------------------------------------------- per-key state


def _keys(keys: npt.ArrayLike) -> I64:
    return np.ascontiguousarray(keys, dtype=np.int64)


def _floats(x: npt.ArrayLike) -> F64:
    return np.ascontiguousarray(x, dtype=np.float64)


def _top(keys: I64) -> int:
    """One past the largest key, after checking none is negative (the kernels index state arrays with them)."""
    if keys.shape[0] == 1:  # the per-tick path: no numpy reductions
        low = high = int(keys[0])
    else:
        low, high = int(keys.min()), int(keys.max())
    if low < 0:
        raise ValueError(f"keys must be dense ids >= 0, got {low}")
    return high + 1


def _grow(a: npt.NDArray[Any], size: int, fill: float) -> npt.NDArray[Any]:
    """``a`` extended (along axis 0) to at least ``size`` rows, new rows set to ``fill``."""
    if a.shape[0] >= size:
        return a
    out = np.full((max(size, 2 * a.shape[0]), *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _check_period(name: str, period: int) -> int:
    if not _MIN_PERIOD <= period <= _MAX_PERIOD:
        raise ValueError(f"{name} period {period} out of range: TA-Lib accepts {_MIN_PERIOD} to {_MAX_PERIOD}")
    return period


class Ema:
    """TA-Lib's EMA(period) per key, streaming."""

    def __init__(self, period: int = 20) -> None:
        self.period = _check_period("EMA", period)
        self.k = 2.0 / (period + 1)  # PER_TO_K in ta_EMA.c
        self.reset()

    def reset(self) -> None:
        self._count = np.zeros(0, dtype=np.int64)
        self._value = np.zeros(0, dtype=np.float64)

    def update(self, keys: npt.ArrayLike, x: npt.ArrayLike) -> F64:
        """One EMA value per row (NaN until the key has ``period`` values)."""
        k, v = _keys(keys), _floats(x)
        out = np.empty(v.shape[0], dtype=np.float64)
        if v.shape[0]:
            top = _top(k)
            self._count = _grow(self._count, top, 0)
            self._value = _grow(self._value, top, 0.0)
            _ema_kernel(k, v, self.period, self.k, self._count, self._value, out)
        return out


class Rsi:
    """TA-Lib's RSI(period) per key (Wilder smoothing, seeded with the mean of the first n changes), streaming."""

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("RSI", period)
        self.reset()

    def reset(self) -> None:
        self._count = np.zeros(0, dtype=np.int64)
        self._prev = np.zeros(0, dtype=np.float64)
        self._gain = np.zeros(0, dtype=np.float64)
        self._loss = np.zeros(0, dtype=np.float64)

    def update(self, keys: npt.ArrayLike, x: npt.ArrayLike) -> F64:
        """One RSI value per row (NaN until the key has ``period`` changes)."""
        k, v = _keys(keys), _floats(x)
        out = np.empty(v.shape[0], dtype=np.float64)
        if v.shape[0]:
            top = _top(k)
            self._count = _grow(self._count, top, 0)
            self._prev = _grow(self._prev, top, 0.0)
            self._gain = _grow(self._gain, top, 0.0)
            self._loss = _grow(self._loss, top, 0.0)
            _rsi_kernel(k, v, self.period, self._count, self._prev, self._gain, self._loss, out)
        return out


_OFF, _CAP, _HEAD, _LATEST = 0, 1, 2, 4  # columns of RollingSums._ring (3 is the size)


class RollingSums:
    """Per key, the sums of ``columns`` value columns over the trailing time window ``(t - window_ns, t]``.

    ``update(keys, time, values)`` takes ``values`` as (columns, rows) and returns, per column
    and row, the sum and the count of non-NaN values in that row's window (the row included).
    O(1) amortized per row, one pass over the rows in arrival order whatever the keys. Memory is
    what the windows hold: each key's ring doubles when it fills, in one shared pool that is
    compacted when it runs out. Keys are dense ids >= 0.
    """

    def __init__(self, window_ns: int, columns: int, capacity: int = 16) -> None:
        if window_ns <= 0:
            raise ValueError(f"window must be positive, got {window_ns} ns")
        self.window_ns = int(window_ns)
        self.columns = columns
        self.capacity = capacity
        self.reset()

    def reset(self) -> None:
        m = self.columns
        self._pool_t = np.zeros(0, dtype=np.int64)
        self._pool_v = np.zeros((0, m), dtype=np.float64)
        self._used = 0  # pool slots handed out (live rings and abandoned ones)
        self._ring = np.zeros((0, 5), dtype=np.int64)  # per key: offset, capacity, head, size, latest time
        self._sums = np.zeros((0, m, 3), dtype=np.float64)
        self._nobs = np.zeros((0, m), dtype=np.int64)

    def _ensure_keys(self, top: int) -> None:
        old = self._ring.shape[0]
        if top <= old:
            return
        self._ring = _grow(self._ring, top, 0)
        self._ring[old:, _LATEST] = np.iinfo(np.int64).min
        self._sums = _grow(self._sums, top, 0.0)
        self._nobs = _grow(self._nobs, top, 0)

    def _unrolled(self, key: int) -> tuple[I64, F64]:
        """Key's window rows, oldest first."""
        base, cap, head, size = (int(x) for x in self._ring[key, :4])
        slots = base + (head + np.arange(size)) % max(cap, 1)
        return self._pool_t[slots], self._pool_v[slots]

    def _enlarge(self, key: int) -> None:
        """Give ``key`` a ring twice as big (its rows copied, oldest first), compacting the pool if needed."""
        cap = int(self._ring[key, _CAP])
        new_cap = max(2 * cap, self.capacity)
        if self._used + new_cap > self._pool_t.shape[0]:
            live = int(self._ring[:, _CAP].sum()) - cap + new_cap
            self._compact(max(2 * live, 1024))
        rows_t, rows_v = self._unrolled(key)
        base = self._used
        self._pool_t[base:base + rows_t.shape[0]] = rows_t
        self._pool_v[base:base + rows_t.shape[0]] = rows_v
        self._ring[key, _OFF], self._ring[key, _CAP], self._ring[key, _HEAD] = base, new_cap, 0
        self._used = base + new_cap

    def _compact(self, slots: int) -> None:
        """A new pool of ``slots``, every live ring moved to the front in key order (abandoned rings dropped)."""
        pool_t = np.zeros(slots, dtype=np.int64)
        pool_v = np.zeros((slots, self.columns), dtype=np.float64)
        base = 0
        for key in np.flatnonzero(self._ring[:, _CAP]).tolist():
            rows_t, rows_v = self._unrolled(key)
            pool_t[base:base + rows_t.shape[0]] = rows_t
            pool_v[base:base + rows_t.shape[0]] = rows_v
            self._ring[key, _OFF], self._ring[key, _HEAD] = base, 0
            base += int(self._ring[key, _CAP])
        self._pool_t, self._pool_v, self._used = pool_t, pool_v, base

    def update(self, keys: npt.ArrayLike, time: npt.ArrayLike, values: npt.ArrayLike) -> tuple[F64, I64]:
        k = _keys(keys)
        n = k.shape[0]
        t = np.ascontiguousarray(time, dtype=np.int64)
        v = np.ascontiguousarray(values, dtype=np.float64).reshape(self.columns, n)
        out_sum = np.empty((self.columns, n), dtype=np.float64)
        out_nobs = np.empty((self.columns, n), dtype=np.int64)
        if n == 0:
            return out_sum, out_nobs
        self._ensure_keys(_top(k))
        done = 0
        while True:
            done = _window_kernel(k, t, v, self.window_ns, self._pool_t, self._pool_v, self._ring, self._sums,
                                  self._nobs, out_sum, out_nobs, done)
            if done == n:
                return out_sum, out_nobs
            self._enlarge(int(k[done]))


class SlidingVwap:
    """Per-tick VWAP over the trailing time window: ``sum(price * size) / sum(size)`` of the window's trades."""

    def __init__(self, window_ns: int) -> None:
        self._sums = RollingSums(window_ns, 2)

    def reset(self) -> None:
        self._sums.reset()

    def update(self, keys: npt.ArrayLike, time: npt.ArrayLike, price: npt.ArrayLike, size: npt.ArrayLike) -> F64:
        p, q = _floats(price), _floats(size)
        values = np.empty((2, p.shape[0]), dtype=np.float64)
        np.multiply(p, q, out=values[0])
        values[1] = q
        sums, nobs = self._sums.update(keys, time, values)
        sums[nobs == 0] = np.nan  # no value in the window: undefined, as pandas' rolling sum
        with np.errstate(divide="ignore", invalid="ignore"):
            return cast(F64, sums[0] / sums[1])


def sliding_vwap(keys: npt.ArrayLike, time: npt.ArrayLike, price: npt.ArrayLike, size: npt.ArrayLike,
                 window_ns: int) -> F64:
    """Per-tick sliding VWAP of one batch (rows in arrival order, ``keys`` = dense sym ids), no state kept."""
    return SlidingVwap(window_ns).update(keys, time, price, size)


class RealizedVol:
    """Per-tick realized volatility: ``sqrt(sum r^2)`` of the sym's log returns in the trailing time window."""

    def __init__(self, window_ns: int) -> None:
        self._sums = RollingSums(window_ns, 1)
        self.reset()

    def reset(self) -> None:
        self._sums.reset()
        self._last = np.zeros(0, dtype=np.float64)

    def update(self, keys: npt.ArrayLike, time: npt.ArrayLike, price: npt.ArrayLike) -> F64:
        k, p = _keys(keys), _floats(price)
        r2 = np.empty((1, p.shape[0]), dtype=np.float64)
        if p.shape[0]:
            self._last = _grow(self._last, _top(k), np.nan)
            _squared_log_return_kernel(k, p, self._last, r2)
        sums, nobs = self._sums.update(k, time, r2)
        vol = np.empty(p.shape[0], dtype=np.float64)
        _vol_kernel(sums, nobs, vol)
        return vol


# --------------------------------------------------------------------------- engines


class KeyIndex:
    """Dense integer ids for the strings of a column (syms, venues), stable for the engine's life."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str | None) -> int:
        if name is None:
            return -1
        found = self.ids.get(name)
        if found is None:
            found = self.ids[name] = len(self.names)
            self.names.append(name)
        return found

    def encode(self, column: pa.Array) -> I64:
        """One id per row; -1 for a null."""
        if len(column) == 1:  # the per-tick path: no dictionary encoding for one row
            return np.array([self.id(column[0].as_py())], dtype=np.int64)
        encoded = pc.dictionary_encode(column)
        lut = np.array([self.id(s) for s in encoded.dictionary.to_pylist()] + [-1], dtype=np.int64)
        indices = encoded.indices.fill_null(len(encoded.dictionary))
        return cast(I64, lut[indices.to_numpy(zero_copy_only=False)])


def ns_values(column: pa.Array) -> I64:
    return cast(I64, column.view(pa.int64()).to_numpy(zero_copy_only=False))


def float_values(column: pa.Array) -> F64:
    return np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def nullable(x: F64) -> pa.Array:
    """NaN (not yet defined) as null."""
    return pa.array(x, type=pa.float64(), from_pandas=True)


def output_schema(table: str) -> pa.Schema:
    wire = Registry.default()[table].wire
    return wire.remove(wire.get_field_index("src_seq"))  # the runner adds src_seq


class IndicatorEngine(Engine):
    """``trade`` -> ``indicator``: per trade, the sym's RSI, EMA, realized volatility and sliding VWAP after it.

    All venues' trades of a sym make one series, in the TP's (log) order. A day's state is
    dropped at end of day.
    """

    name = "indicators"
    inputs = ("trade",)
    outputs = ("indicator",)

    def __init__(self, rsi: int = 14, ema: int = 20, vol_ns: int = parse_duration("5m"),
                 vwap_ns: int = parse_duration("5m")) -> None:
        self.rsi = Rsi(rsi)
        self.ema = Ema(ema)
        self.vol = RealizedVol(vol_ns)
        self.vwap = SlidingVwap(vwap_ns)
        self.syms = KeyIndex()
        self._schema = output_schema("indicator")

    def on_upd(self, msg: Message) -> list[Output]:
        data = msg.data
        if msg.table != "trade" or data.num_rows == 0:
            return []
        keys = self.syms.encode(data.column("sym"))
        price = float_values(data.column("price"))
        rsi = self.rsi.update(keys, price)
        ema = self.ema.update(keys, price)
        time = ns_values(data.column("time"))
        vol = self.vol.update(keys, time, price)
        vwap = self.vwap.update(keys, time, price, float_values(data.column("size")))
        batch = pa.RecordBatch.from_arrays(
            [data.column("time"), data.column("sym"), data.column("price"), nullable(rsi), nullable(ema),
             nullable(vol), nullable(vwap)], schema=self._schema)
        return [("indicator", batch)]

    def on_eod(self, date: str) -> list[Output]:
        self.rsi.reset()
        self.ema.reset()
        self.vol.reset()
        self.vwap.reset()
        return []
