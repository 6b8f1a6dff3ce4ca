"""``xbar``: round down to a multiple of a width; kdb+'s bucketing primitive, as SQL and on arrays.

q's ``x xbar y`` is ``y`` rounded down to the nearest multiple of ``x``: ``5 xbar 11:07`` is
``11:05``; ``select ... by 5 xbar time.minute`` makes five-minute bars. Here:

* :func:`xbar` builds a DuckDB SQL expression (``xbar("5m", "time")``) for ``SELECT``/``GROUP BY``;
* :func:`xbar_array` computes the same on a pyarrow or numpy array.

Both return the bucket's start (the floor). Widths:

* a duration for temporal values: ``datetime.timedelta``, ``numpy.timedelta64``, or a string of
  number-unit parts, units ``ns us ms s m h d w`` (``"250ms"``, ``"5m"``, ``"1h30m"``, ``"1d"``);
  ``"m"`` is minutes, ``"min"`` is accepted too. A day is 24 hours of UTC, a week 7 days;
* an int or float for numbers.

Buckets are aligned to zero: for timestamps, to the Unix epoch 1970-01-01T00:00:00 UTC. kdb+
counts timestamps from 2000-01-01, which is a whole number of days after 1970, so for every width
that divides a day (all the usual bar widths) q's buckets and ours are the same; for other widths
(e.g. ``"7d"``, ``"7m"``) q's boundaries are offset from ours by 10,957 days modulo the width.
Time zones play no part: ``"1d"`` buckets start at UTC midnight.

Other differences from q: q's ``floor`` is tolerant (``0.1 xbar 0.3`` is ``0.3`` in q because
``0.3 % 0.1`` is 2.9999999999999996 and q rounds it to 3); we use IEEE ``floor``, which gives
``0.2``. Use integer units (cents, ticks) where that matters. Nulls stay null.

DuckDB's ``time_bucket`` is not used: it works in microseconds, has no nanosecond timestamp
overload, and its default origin for day widths is 2000-01-03 (a Monday); the SQL here is
integer arithmetic on ``epoch_ns``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from q_like._tables import sql_expr
from tickerplant.exceptions import DataError

Width = str | dt.timedelta | np.timedelta64 | int | float

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|min|s|m|h|d|w)\s*")
_ARROW_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def duration_ns(width: str | dt.timedelta | np.timedelta64, *, signed: bool = False) -> int:
    """A duration in nanoseconds: ``"5m"`` -> 300_000_000_000.

    A width must be positive; with ``signed=True`` (window offsets) any value is accepted and a
    string may start with ``-``.
    """
    if isinstance(width, str):
        text = width.strip()
        sign = 1
        if signed and text.startswith("-"):
            sign, text = -1, text[1:]
        pos, exact, fraction = 0, 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos:
                break
            number, unit = m.group(1), m.group(2)
            if "." in number:
                fraction += float(number) * _UNIT_NS[unit]
            else:
                exact += int(number) * _UNIT_NS[unit]
            pos = m.end()
        if pos != len(text) or not text:
            raise DataError(f"{width!r} is not a duration; write it as number-unit parts with units "
                            f"ns us ms s m h d w, e.g. '250ms', '5m', '1h30m'")
        if fraction != int(fraction):
            raise DataError(f"{width!r} is not a whole number of nanoseconds")
        ns = sign * (exact + int(fraction))
    elif isinstance(width, dt.timedelta):
        ns = (width.days * 86_400 + width.seconds) * 1_000_000_000 + width.microseconds * 1_000
    elif isinstance(width, np.timedelta64):
        if np.isnat(width):
            raise DataError("the duration is NaT; give one such as '5m'")
        ns = int(width.astype("timedelta64[ns]").astype(np.int64))
    else:
        raise DataError(f"expected a duration (str, timedelta, numpy.timedelta64), not {type(width).__name__}")
    if ns <= 0 and not signed:
        raise DataError(f"width {width!r} must be positive")
    return ns


def _is_duration(width: Any) -> bool:
    return isinstance(width, str | dt.timedelta | np.timedelta64)


def _number(width: Any) -> int | float:
    if isinstance(width, bool) or not isinstance(width, int | float | np.integer | np.floating):
        raise DataError(f"width must be a duration ('5m', timedelta, timedelta64) or a number, not {width!r}")
    value: int | float = int(width) if isinstance(width, int | np.integer) else float(width)
    if not value > 0 or value != value or value == float("inf"):
        raise DataError(f"width {width!r} must be a positive finite number")
    return value


def xbar(width: Width, expr: str, *, tz: str | None = "UTC") -> str:
    """SQL for q's ``width xbar expr``: the start of ``expr``'s bucket.

    ``expr`` is a column name (quoted for you) or any SQL expression. With a duration width,
    ``expr`` must be a timestamp or date; the result is ``TIMESTAMPTZ_NS`` in ``tz`` (the
    tickerplant's ``time`` columns are UTC) or, with ``tz=None``, a naive ``TIMESTAMP_NS``.
    With a number width, the result has ``expr``'s numeric type (an integer width on an integer
    column stays integer). Example: ``SELECT sym, {xbar("5m", "time")} AS bar, count(*) FROM trade
    GROUP BY ALL``.
    """
    e = sql_expr(expr)
    if _is_duration(width):
        w = duration_ns(width)  # type: ignore[arg-type]
        ns = f"epoch_ns({e})"
        floor = f"make_timestamp_ns({ns} - ((({ns} % {w}) + {w}) % {w}))"
        if tz is None:
            return floor
        return f"timezone({_sql_string(tz)}, {floor})"
    n = _number(width)
    if isinstance(n, int):
        return f"({e} - ((({e} % {n}) + {n}) % {n}))"
    return f"({n!r} * floor({e} / {n!r}))"


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def xbar_array(width: Width, values: Any) -> Any:
    """q's ``width xbar values`` on an array: each value rounded down to a multiple of ``width``.

    ``values``: a pyarrow Array or ChunkedArray (timestamp, date, time, duration, integer, float)
    or a numpy array (datetime64, timedelta64, integer, float); the result is of the same kind and
    type, nulls (NaT, and NaN for floats) kept. A duration width must be a whole number of the
    values' unit (``"1ms"`` on second timestamps is refused).
    """
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([_xbar_arrow(width, c) for c in values.chunks], type=values.type)
    if isinstance(values, pa.Array):
        return _xbar_arrow(width, values)
    if isinstance(values, np.ndarray):
        return _xbar_numpy(width, values)
    raise DataError(f"values must be a pyarrow Array/ChunkedArray or a numpy array, not {type(values).__name__}")


def _floor_int(v: npt.NDArray[np.int64], w: int) -> npt.NDArray[np.int64]:
    return v - np.mod(v, w)  # numpy's integer mod takes the divisor's sign: a floor for w > 0


def _width_in_unit(width: Any, unit_ns: int, what: str) -> int:
    ns = duration_ns(width)
    if ns % unit_ns:
        raise DataError(f"width {width!r} is not a whole number of the {what}'s unit ({unit_ns} ns)")
    return ns // unit_ns


def _xbar_numpy(width: Width, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    kind = values.dtype.kind
    if kind in "mM":
        unit, count = np.datetime_data(values.dtype)
        unit_ns = int(np.array(count, dtype=f"m8[{unit}]").astype("m8[ns]").astype(np.int64))
        if not _is_duration(width):
            raise DataError(f"{values.dtype} values need a duration width such as '5m', not {width!r}")
        w = _width_in_unit(width, unit_ns, "array")
        ints = values.view(np.int64)
        out = _floor_int(ints, w)
        nat = np.isnat(values)
        if nat.any():
            out[nat] = np.iinfo(np.int64).min
        return out.view(values.dtype)
    if kind in "iu":
        n = _number(width)
        if isinstance(n, int):
            return _floor_int(values.astype(np.int64, copy=False), n).astype(values.dtype, copy=False)
        return n * np.floor(values / n)
    if kind == "f":
        n = _number(width)
        return (n * np.floor(values / n)).astype(values.dtype, copy=False)
    raise DataError(f"xbar needs numeric or temporal values, not {values.dtype}")


def _xbar_arrow(width: Width, values: pa.Array) -> pa.Array:
    t = values.type
    valid = None if values.null_count == 0 else values.is_valid()
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t) or pa.types.is_date(t):
        if not _is_duration(width):
            raise DataError(f"{t} values need a duration width such as '5m', not {width!r}")
        if pa.types.is_date32(t):
            unit_ns = 86_400_000_000_000
        elif pa.types.is_date64(t):
            unit_ns = 1_000_000
        else:
            unit_ns = _ARROW_UNIT_NS[t.unit]
        w = _width_in_unit(width, unit_ns, str(t))
        storage = pa.int64() if t.bit_width == 64 else pa.int32()
        ints = np.asarray(pc.fill_null(values.view(storage), 0).to_numpy(), dtype=np.int64)
        out = pa.array(_floor_int(ints, w).astype(storage.to_pandas_dtype()), storage)
        return _with_nulls(out.view(t), valid)
    if pa.types.is_integer(t):
        n = _number(width)
        ints = np.asarray(pc.fill_null(values, 0).to_numpy())
        if isinstance(n, int):
            return _with_nulls(pa.array(_floor_int(ints.astype(np.int64), n)).cast(t), valid)
        return _with_nulls(pa.array(n * np.floor(ints / n)), valid)
    if pa.types.is_floating(t):
        n = _number(width)
        floats = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        return _with_nulls(pa.array(n * np.floor(floats / n)).cast(t), valid)
    raise DataError(f"xbar needs numeric or temporal values, not {t}")


def _with_nulls(values: pa.Array, valid: pa.Array | None) -> pa.Array:
    if valid is None:
        return values
    return pc.if_else(valid, values, pa.scalar(None, values.type))
