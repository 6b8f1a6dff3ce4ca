"""Window join: kdb+'s ``wj`` and ``wj1`` over Arrow tables.

``wj(("-2s", "1s"), ["sym", "time"], trade, quote, {"ask": ("max", "ask"), "bid": ("min", "bid")})``
is q's ``wj[-2 1+\\:trade.time; `sym`time; trade; (quote; (max;`ask); (min;`bid))]`` with
seconds: for each left row, aggregates of the right rows with the same keys whose time is in the
window ``[begin, end]`` (both ends included, kdb+ 3.0 and later).

* ``wj`` also counts the *prevailing* row on entry to the window: the last right row with
  time ``<= begin`` (a quote is in force until the next one). So it aggregates that row plus the
  rows with ``begin < time <= end``; when no row is at or before ``begin``, it starts at the
  key's first row. Among rows that share the time ``begin``, only the last is prevailing.
* ``wj1`` aggregates exactly the rows with ``begin <= time <= end``.

``windows`` is a pair: either two offsets added to each left row's time (durations such as
``"-2s"``/``datetime.timedelta``/``numpy.timedelta64`` for temporal times, numbers for numeric
times), or two arrays with each left row's ``begin`` and ``end`` (q's ``w``). ``on`` is the keys
then the time column, as in :func:`q_like.aj`. ``aggs`` maps each new column's name to
``(function, column)``, or ``(function, weight, value)`` for ``wavg``/``wsum``; a list of such
tuples names each result after its (last) column, as q does. A name that is already a left column
replaces it.

Functions, with q's null rules (a floating NaN counts as null):

====================  ==========================================  =================
function              result                                       empty window
====================  ==========================================  =================
``count``             rows in the window (nulls included, q's      0
                      ``count``)
``sum``               sum, nulls as 0 (int64 or float64)           0
``avg``               mean of the non-null values (float64)        null
``min`` / ``max``     of the non-null values (the column's type)   null (q: ``0W``/``-0W``)
``first`` / ``last``  the first/last row's value, even null         null
``wavg`` / ``wsum``   as :mod:`q_like.wavg`, over complete pairs    null / 0
====================  ==========================================  =================

Rows with a null time never match; the right table need not be sorted (it is grouped as in
:mod:`q_like._keyed`). Sums come from differences of cumulative sums (floats centred first);
``min``/``max`` reduce each window, so their cost grows with the total size of the windows, as in q.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from q_like._keyed import Grouped, comparable, group, time_values
from q_like._tables import as_names, as_table, numeric_values, require_columns
from q_like.xbar import duration_ns
from tickerplant.exceptions import DataError

I64 = npt.NDArray[np.int64]
Agg = tuple[str, str] | tuple[str, str, str]
Aggs = Mapping[str, Agg] | Sequence[Agg]

_ONE_COLUMN = ("count", "sum", "avg", "min", "max", "first", "last")
_TWO_COLUMNS = ("wavg", "wsum")
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def wj(windows: tuple[Any, Any], on: str | Sequence[str], left: Any, right: Any, aggs: Aggs) -> pa.Table:
    """kdb+ ``wj``: aggregates of the right rows in each left row's window, plus the prevailing row."""
    return _wj(windows, on, left, right, aggs, prevailing=True)


def wj1(windows: tuple[Any, Any], on: str | Sequence[str], left: Any, right: Any, aggs: Aggs) -> pa.Table:
    """kdb+ ``wj1``: aggregates of the right rows with ``begin <= time <= end`` in each left row's window."""
    return _wj(windows, on, left, right, aggs, prevailing=False)


def _agg_list(aggs: Aggs, right: pa.Table) -> list[tuple[str, str, list[str]]]:
    """``aggs`` as ``[(name, function, [columns])]``, checked against the right table."""
    items: list[tuple[str, Any]] = list(aggs.items()) if isinstance(aggs, Mapping) else [("", s) for s in aggs]
    out: list[tuple[str, str, list[str]]] = []
    for name, spec in items:
        if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not all(isinstance(x, str) for x in spec):
            raise DataError(f"an aggregation is (function, column) or (function, weight, value), not {spec!r}")
        func, *cols = spec
        if (func in _ONE_COLUMN and len(cols) != 1) or (func in _TWO_COLUMNS and len(cols) != 2):
            raise DataError(f"{func!r} takes {'one column' if func in _ONE_COLUMN else 'two columns'}: {spec!r}")
        if func not in _ONE_COLUMN and func not in _TWO_COLUMNS:
            raise DataError(f"unknown aggregation {func!r}; use one of {', '.join(_ONE_COLUMN + _TWO_COLUMNS)}")
        require_columns(right, cols, "right table")
        out.append((name or cols[-1], func, cols))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise DataError(f"aggregations must have distinct result names, got {names}; name them with a dict")
    if not out:
        raise DataError("give at least one aggregation, e.g. {'ask': ('max', 'ask')}")
    return out


def _is_offset(x: Any) -> bool:
    return isinstance(x, str | dt.timedelta | np.timedelta64 | int | float | np.integer | np.floating) and \
        not isinstance(x, bool)


def _offset(x: Any, t: pa.DataType) -> int | float:
    """A window offset in the time column's units."""
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t) or pa.types.is_date(t):
        if not isinstance(x, str | dt.timedelta | np.timedelta64):
            raise DataError(f"a window offset on {t} times must be a duration such as '-2s', not {x!r}")
        ns = duration_ns(x, signed=True)
        unit_ns = 86_400_000_000_000 if pa.types.is_date32(t) else (
            1_000_000 if pa.types.is_date64(t) else _UNIT_NS[t.unit])
        if ns % unit_ns:
            raise DataError(f"window offset {x!r} is not a whole number of the time column's unit ({t})")
        return ns // unit_ns
    if not isinstance(x, int | float | np.integer | np.floating) or isinstance(x, bool):
        raise DataError(f"a window offset on {t} times must be a number, not {x!r}")
    return float(x) if pa.types.is_floating(t) else int(x)


def _bounds(windows: tuple[Any, Any], left: pa.Table, t: str, common: pa.DataType,
            lvals: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Each left row's (begin, end) in comparable units, and where both are known."""
    if not isinstance(windows, tuple | list) or len(windows) != 2:
        raise DataError("windows must be a pair: (begin offset, end offset) such as ('-2s', '1s'), "
                        "or (begin array, end array) with one value per left row")
    lo, hi = windows
    if _is_offset(lo) and _is_offset(hi):
        a, b = _offset(lo, common), _offset(hi, common)
        return lvals + a, lvals + b, np.ones(len(lvals), dtype=bool)
    out = []
    valid = np.ones(len(lvals), dtype=bool)
    for what, arr in (("begin", lo), ("end", hi)):
        a = pa.chunked_array([arr]) if isinstance(arr, pa.Array) else arr
        if not isinstance(a, pa.ChunkedArray):
            a = pa.chunked_array([pa.array(arr)])
        if len(a) != left.num_rows:
            raise DataError(f"the window {what} array has {len(a)} values for {left.num_rows} left rows")
        if a.type != common:
            try:
                a = a.cast(common)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(f"the window {what} array ({a.type}) does not compare with time "
                                f"column {t!r} ({common}): {exc}") from None
        values, null = comparable(a, t)
        valid &= ~null
        out.append(values)
    return out[0], out[1], valid


def _wj(windows: tuple[Any, Any], on: str | Sequence[str], left: Any, right: Any, aggs: Aggs,
        prevailing: bool) -> pa.Table:
    names = as_names(on, "on")
    if not names:
        raise DataError("on must name at least the time column, e.g. ['sym', 'time']")
    keys, t = names[:-1], names[-1]
    lt, rt = as_table(left, "left"), as_table(right, "right")
    require_columns(lt, names, "left table")
    require_columns(rt, names, "right table")
    spec = _agg_list(aggs, rt)
    lvals, lvalid, rvals, rvalid, common = time_values(lt.column(t), rt.column(t), t)
    begin, end, known = _bounds(windows, lt, t, common, lvals)
    grouped, lcodes = group([rt.column(k) for k in keys], [lt.column(k) for k in keys], keys, rvals, rvalid,
                            lt.num_rows)
    codes = np.where(lvalid & known, lcodes, -1)
    last = grouped.last_le(codes, end)
    if prevailing:
        first = grouped.last_le(codes, begin)
        first = np.where((first < 0) & (codes >= 0), grouped.starts[np.maximum(codes, 0)], first)
    else:
        first = grouped.first_ge(codes, begin)
    empty = (codes < 0) | (last < 0) | (first < 0) | (last < first)
    lo = np.where(empty, 0, first).astype(np.int64)
    hi = np.where(empty, 0, last + 1).astype(np.int64)
    windows_ = _Windows(grouped, lo, hi, empty)

    results = {name: windows_.aggregate(func, [rt.column(c) for c in cols], cols) for name, func, cols in spec}
    out_names = list(lt.column_names)
    out_cols: list[pa.Array | pa.ChunkedArray] = [lt.column(n) for n in out_names]
    for name, values in results.items():
        if name in out_names:
            out_cols[out_names.index(name)] = values
        else:
            out_names.append(name)
            out_cols.append(values)
    return pa.Table.from_arrays(out_cols, names=out_names)


class _Windows:
    """The right rows of every left row's window: grouped positions ``lo[i]:hi[i]``."""

    def __init__(self, grouped: Grouped, lo: I64, hi: I64, empty: npt.NDArray[np.bool_]) -> None:
        self.grouped = grouped
        self.lo, self.hi, self.empty = lo, hi, empty
        self.size = hi - lo
        n = grouped.n
        self._all = grouped.row_ids(np.arange(n, dtype=np.int64)) if n else np.zeros(0, np.int64)

    def _grouped(self, col: pa.ChunkedArray) -> pa.Array:
        """A right column in grouped order (the rows with a time, grouped by key)."""
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        return arr if self.grouped.rows is None else arr.take(pa.array(self._all))

    def _sum(self, v: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Sum of ``v`` over each window (``v`` in grouped order, nulls already 0)."""
        if v.dtype.kind == "f":
            centre = float(np.rint(v.mean())) if len(v) else 0.0  # whole: integer-valued data stay exact
            total = np.concatenate(([0.0], np.cumsum(v - centre)))
            return np.asarray(total[self.hi] - total[self.lo] + centre * self.size)
        total_i = np.concatenate(([0], np.cumsum(v, dtype=np.int64)))
        return total_i[self.hi] - total_i[self.lo]

    def aggregate(self, func: str, cols: list[pa.ChunkedArray], names: list[str]) -> pa.Array:
        if func == "count":
            return pa.array(self.size, pa.int64())
        if func in ("first", "last"):
            at = self.lo if func == "first" else self.hi - 1
            rows = self._all[np.where(self.empty, 0, at)] if len(self._all) else np.zeros(len(at), np.int64)
            col = cols[0].combine_chunks() if cols[0].num_chunks != 1 else cols[0].chunk(0)
            return col.take(pa.array(rows, pa.int64(), mask=self.empty))
        if func in ("wavg", "wsum"):
            w, wnull = numeric_values(self._grouped(cols[0]), names[0])
            v, vnull = numeric_values(self._grouped(cols[1]), names[1])
            pair = ~(wnull | vnull)
            wsum = self._sum(np.where(pair, w * v, 0))
            if func == "wsum":
                return pa.array(wsum)
            weights = self._sum(np.where(pair, w, 0).astype(np.float64))
            pairs = self._sum(pair.astype(np.int64))
            with np.errstate(divide="ignore", invalid="ignore"):
                avg = wsum / weights
            return pa.array(avg, pa.float64(), mask=pairs == 0)
        col = self._grouped(cols[0])
        if func in ("sum", "avg"):
            v, null = numeric_values(col, names[0])
            sums = self._sum(v)
            if func == "sum":
                return pa.array(np.where(self.empty, 0, sums))
            counts = self._sum((~null).astype(np.int64))
            with np.errstate(divide="ignore", invalid="ignore"):
                avg = sums / counts
            return pa.array(avg, pa.float64(), mask=counts == 0)
        return self._extreme(func, col, names[0])

    def _extreme(self, func: str, col: pa.Array, name: str) -> pa.Array:
        """min or max of the non-null values of each window, in the column's type."""
        t = col.type
        if pa.types.is_boolean(t):
            col, t = col.cast(pa.int64()), pa.int64()
        values, null = comparable(col, name)
        pick = np.maximum if func == "max" else np.minimum
        if values.dtype.kind == "f":
            fill: Any = -np.inf if func == "max" else np.inf
        else:
            info = np.iinfo(values.dtype)
            fill = info.min if func == "max" else info.max
        values = np.where(null, fill, values)
        counts = self._sum((~null).astype(np.int64))
        nothing = counts == 0
        out = np.full(len(self.lo), fill, dtype=values.dtype)
        some = np.flatnonzero(~nothing)
        if len(some):
            # reduceat over (lo, hi) pairs; taken in order of lo, the gaps between windows are
            # disjoint, so the work is the windows' total size plus at most one pass over the data.
            by_lo = some[np.argsort(self.lo[some], kind="stable")]
            bounds = np.empty(2 * len(by_lo), np.int64)
            bounds[0::2], bounds[1::2] = self.lo[by_lo], self.hi[by_lo]
            padded = np.concatenate((values, values[:1]))
            out[by_lo] = pick.reduceat(padded, bounds)[0::2]
        storage = pa.array(out, mask=nothing)
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return storage.cast(t)
        narrow = storage.cast(pa.int32()) if t.bit_width == 32 else storage
        return narrow.view(t)
