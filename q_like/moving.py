"""Moving-window functions over n items, as kdb+ defines them: msum, mcount, mavg, mmax, mmin, ema.

q's ``n mavg x`` averages each item with the ``n - 1`` items before it; the first ``n - 1``
results use the items available so far (initial partial windows, pandas' ``min_periods=1``).
Every function here takes an optional ``by`` array of group keys (q's
``update mavg[5; price] by sym from t``): windows then never cross from one key's rows to
another's, each key's rows keep their order, and the result is in the input's row order.

Nulls, as q treats them (a floating NaN counts as null, q's float null being NaN):

* ``msum``: nulls count as 0; a window of nulls sums to 0. Integer input gives int64.
* ``mcount``: the number of non-null items in the window.
* ``mavg``: ``msum / mcount``, so nulls are ignored; null when the window has no value (q: ``0n``).
* ``mmax``: nulls are ignored (null is q's smallest value); null when the window has no value,
  where q gives negative infinity (``-0W``/``-0w``).
* ``mmin``: null is q's smallest value, so a window holding a null gives null (q's
  ``3 mmin 0N -3 -2 1`` is ``0N 0N 0N -3``).
* ``ema``: a null makes its result and every later result of its group null, because q computes
  ``ema`` with arithmetic in which a null propagates. Fill nulls first (``pyarrow.compute.
  fill_null_forward``) to carry the last value instead.

``ema(alpha, x)`` is q's ``alpha ema x``: the first result is the first item, then
``alpha * x[i] + (1 - alpha) * previous`` (pandas' ``ewm(alpha=alpha, adjust=False)``); ``alpha``
in [0, 1], a scalar (q also takes a list). Pass ``2 / (1 + N)`` for an N-period EMA.

Every function is vectorized: sums and counts by differences of cumulative sums (floats centred
on their mean first, so long series lose no precision to a growing total), maxima and minima by
doubling windows (O(n log n)), ``ema`` by a doubling scan of the linear recurrence, stopped once
``(1 - alpha) ** k`` underflows to 0. Results are ``pyarrow.Array``; inputs may be pyarrow
arrays, numpy arrays or lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from q_like._keyed import stable_argsort_codes
from q_like._tables import numeric_values, to_array
from tickerplant.exceptions import DataError

I64 = npt.NDArray[np.int64]


class _Layout:
    """Rows reordered so each group's rows are contiguous (in their original order)."""

    def __init__(self, n: int, by: Any) -> None:
        self.n = n
        self.idx: I64 = np.arange(n, dtype=np.int64)
        if by is None:
            self.order: I64 | None = None
            self.group_start: I64 = np.zeros(n, np.int64)
            self.longest = n
            return
        keys = to_array(by, "by")
        if len(keys) != n:
            raise DataError(f"by must have one key per item: {len(keys)} keys for {n} items")
        if n == 0:
            self.order, self.group_start, self.longest = None, np.zeros(0, np.int64), 0
            return
        enc = pc.dictionary_encode(keys, null_encoding="encode")
        codes = np.asarray(enc.indices.to_numpy(), dtype=np.int64)
        cardinality = len(enc.dictionary)
        self.order = stable_argsort_codes(codes, cardinality)
        counts = np.bincount(codes, minlength=cardinality)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.group_start = np.repeat(starts, counts)
        self.longest = int(counts.max())

    def sort(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return values if self.order is None else values[self.order]

    def unsort(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def window_start(self, window: int) -> I64:
        """First position of each item's window: ``window - 1`` items back, not before its group's first."""
        return np.maximum(self.idx - (window - 1), self.group_start)


def _window(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"the window must be a positive number of items, not {n!r}")
    return int(n)


def _prepare(values: Any, by: Any) -> tuple[pa.Array, npt.NDArray[Any], npt.NDArray[np.bool_], _Layout]:
    arr = to_array(values, "values")
    v, null = numeric_values(arr, "values")
    layout = _Layout(len(arr), by)
    return arr, layout.sort(v), layout.sort(null), layout


def _window_sum(v: npt.NDArray[Any], start: I64) -> npt.NDArray[Any]:
    """Sum of ``v[start[i]:i + 1]`` for every ``i`` (``v`` has no nulls left)."""
    if v.dtype.kind == "f":
        centre = float(np.rint(v.mean())) if len(v) else 0.0  # whole: integer-valued data stay exact
        total = np.concatenate(([0.0], np.cumsum(v - centre)))
        idx = np.arange(len(v))
        return np.asarray(total[idx + 1] - total[start] + centre * (idx + 1 - start))
    total_i = np.concatenate(([0], np.cumsum(v, dtype=np.int64)))
    return total_i[1:] - total_i[start]


def _window_count(null: npt.NDArray[np.bool_], start: I64) -> I64:
    valid = np.concatenate(([0], np.cumsum(~null, dtype=np.int64)))
    return valid[1:] - valid[start]


def msum(n: int, values: Any, by: Any = None) -> pa.Array:
    """q's ``n msum values``: moving sums over ``n`` items, nulls counting as 0 (int64 or float64)."""
    window = _window(n)
    _, v, _, layout = _prepare(values, by)
    sums = _window_sum(v, layout.window_start(window))  # nulls are already 0
    return pa.array(layout.unsort(sums))


def mcount(n: int, values: Any, by: Any = None) -> pa.Array:
    """q's ``n mcount values``: the number of non-null items in each ``n``-item window (int64)."""
    window = _window(n)
    _, _, null, layout = _prepare(values, by)
    return pa.array(layout.unsort(_window_count(null, layout.window_start(window))), pa.int64())


def mavg(n: int, values: Any, by: Any = None) -> pa.Array:
    """q's ``n mavg values``: moving averages over ``n`` items, nulls ignored (float64; null if no value)."""
    window = _window(n)
    _, v, null, layout = _prepare(values, by)
    start = layout.window_start(window)
    sums = _window_sum(v, start)  # exact for integers; nulls are already 0
    counts = _window_count(null, start)
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = sums / counts
    return pa.array(layout.unsort(avg), pa.float64(), mask=layout.unsort(counts == 0))


def mmax(n: int, values: Any, by: Any = None) -> pa.Array:
    """q's ``n mmax values``: moving maxima over ``n`` items, nulls ignored (null if the window has none)."""
    window = _window(n)
    arr, v, null, layout = _prepare(values, by)
    low = -np.inf if v.dtype.kind == "f" else np.iinfo(v.dtype).min
    start = layout.window_start(window)
    best = _window_extreme(np.where(null, low, v), start, layout, np.maximum)
    empty = _window_count(null, start) == 0
    return _restore(layout.unsort(best), layout.unsort(empty), arr.type)


def mmin(n: int, values: Any, by: Any = None) -> pa.Array:
    """q's ``n mmin values``: moving minima over ``n`` items; a null in the window gives null, as in q."""
    window = _window(n)
    arr, v, null, layout = _prepare(values, by)
    high = np.inf if v.dtype.kind == "f" else np.iinfo(v.dtype).max
    start = layout.window_start(window)
    best = _window_extreme(np.where(null, high, v), start, layout, np.minimum)
    has_null = _window_count(~null, start) > 0
    return _restore(layout.unsort(best), layout.unsort(has_null), arr.type)


def _restore(values: npt.NDArray[Any], null: npt.NDArray[np.bool_], to: pa.DataType) -> pa.Array:
    out = pa.array(values, mask=null if null.any() else None)
    if pa.types.is_boolean(to):
        return out.cast(pa.int64())
    return out.cast(to)


def _window_extreme(v: npt.NDArray[Any], start: I64, layout: _Layout,
                    pick: Callable[[npt.NDArray[Any], npt.NDArray[Any]], npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """``pick``-reduction (max or min) of ``v[start[i]:i + 1]`` for every ``i``, by doubling windows.

    Level ``k`` holds, at ``i``, the reduction of the ``2**k`` items ending at ``i`` (fewer at a
    group's start). A window of length ``L`` with ``2**k <= L < 2**(k + 1)`` is covered by two
    level-``k`` windows: the one ending at ``i`` and the one ending at ``start + 2**k - 1``.
    """
    n = len(v)
    out = np.empty_like(v)
    if n == 0:
        return out
    idx = layout.idx
    length = idx - start + 1
    level_of = np.floor(np.log2(length)).astype(np.int64)
    top = int(level_of.max())
    level = v
    for k in range(top + 1):
        rows = np.flatnonzero(level_of == k)
        if len(rows):
            out[rows] = pick(level[rows], level[start[rows] + (1 << k) - 1])
        if k == top:
            break
        step = 1 << k
        nxt = level.copy()
        inside = idx[step:] - step >= layout.group_start[step:]
        nxt[step:] = np.where(inside, pick(level[step:], level[:-step]), level[step:])
        level = nxt
    return out


def ema(alpha: float, values: Any, by: Any = None) -> pa.Array:
    """q's ``alpha ema values``: first item, then ``alpha * x + (1 - alpha) * previous`` (float64).

    A null makes its result and every later one in its group null (see the module docstring).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.integer | np.floating):
        raise DataError(f"alpha must be a number in [0, 1], not {alpha!r}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise DataError(f"alpha must be in [0, 1] (2 / (1 + N) for an N-period EMA), not {alpha!r}")
    _, v, null, layout = _prepare(values, by)
    x = np.where(null, 0.0, v.astype(np.float64))
    first = layout.idx == layout.group_start
    acc = np.where(first, x, a * x)  # s[i] = sum over j <= i in the group of d**(i - j) * acc[j]
    decay = 1.0 - a
    step, factor = 1, decay
    while step < layout.longest and factor != 0.0:
        inside = layout.idx[step:] - step >= layout.group_start[step:]
        acc[step:] = acc[step:] + np.where(inside, factor * acc[:-step], 0.0)
        step, factor = step * 2, factor * factor
    # Nulls so far in the group: a null poisons the rest of its group.
    seen = np.cumsum(null, dtype=np.int64)
    before = np.where(layout.group_start > 0, seen[layout.group_start - 1], 0) if len(seen) else seen
    poisoned = (seen - before) > 0
    return pa.array(layout.unsort(acc), pa.float64(), mask=layout.unsort(poisoned))
