"""A right-hand table grouped by its key columns and sorted by time, and q's ``bin`` into it.

kdb+ answers ``aj`` and ``wj`` with a binary search (``bin``) into a quote table sorted by
``sym`` then ``time``. :func:`group` builds that order (:class:`Grouped`) for an Arrow table
without sorting strings or timestamps more than needed:

* a right table already sorted by its key then time (how end of day writes HDB partitions) is
  used as it is: its runs of equal keys are the groups, found by comparing neighbours;
* otherwise each key column is encoded to integer codes once: a ``dictionary`` column whose
  chunks share one dictionary is used as is (kdb+'s enumerated syms arrive so from Parquet,
  DuckDB ENUMs or polars), anything else is dictionary-encoded (hashing, O(n)); several key
  columns are combined into one dense code. The rows are put in time order with a stable sort,
  skipped when they already are (a tickerplant writes rows in time order, so this is the usual
  case), then grouped by a stable radix sort of the codes, which keeps time order and, among
  equal times, row order. Within a group, rows are then searched by their time position.

The left table's keys are looked up in the right's dictionary, so a left key absent from the
right gets code -1 and never matches. "The last row of key ``c`` at or before time ``t``" is then
one ``searchsorted`` per group (or, with very many groups, one global ``searchsorted`` of
``c * n + position``).

Rows whose time is null never match (kdb+ sorts a null time first, so its ``bin`` can land on
one; see docs/q_like.md). Keys match by equality, a null key matching a null key, as in q.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickerplant.exceptions import DataError

I64 = npt.NDArray[np.int64]
Codes = npt.NDArray[np.integer[Any]]  # non-negative key codes, as narrow as they come
Bools = npt.NDArray[np.bool_]


def stable_argsort_codes(codes: npt.NDArray[Any], cardinality: int) -> I64:
    """Stable argsort of non-negative integer codes ``< cardinality`` with numpy's O(n) radix sort.

    numpy sorts 8- and 16-bit integers stably with a radix sort; wider codes take two 16-bit
    passes (least significant first), still O(n).
    """
    if cardinality <= 1 << 8:
        return np.argsort(codes.astype(np.uint8, copy=False), kind="stable")
    if cardinality <= 1 << 16:
        return np.argsort(codes.astype(np.uint16, copy=False), kind="stable")
    wide = codes.astype(np.int64, copy=False)
    first = np.argsort((wide & 0xFFFF).astype(np.uint16), kind="stable")
    second = np.argsort((wide[first] >> 16).astype(np.uint16), kind="stable")
    return first[second]


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-typed key column decoded to its value type, so values compare across tables."""
    if pa.types.is_dictionary(col.type):
        return col.cast(col.type.value_type)
    return col


def _dictionary_codes(col: pa.ChunkedArray) -> tuple[pa.Array, Codes] | None:
    """(dictionary, int64 code per row) of a dictionary-typed column whose chunks share one dictionary
    of distinct non-null values, without hashing the rows (a null row gets one extra code); else None.

    Columns read from Parquet with ``read_dictionary``, DuckDB ENUMs or polars categoricals arrive
    like this, as kdb+'s enumerated syms do.
    """
    if not pa.types.is_dictionary(col.type) or col.num_chunks == 0:
        return None
    dictionary = col.chunk(0).dictionary
    if dictionary.null_count or any(not c.dictionary.equals(dictionary) for c in col.chunks[1:]):
        return None
    if pc.count_distinct(dictionary).as_py() != len(dictionary):
        return None
    codes = _concat([np.asarray(pc.fill_null(c.indices, -1).to_numpy()) for c in col.chunks])
    if col.null_count:
        codes = codes.astype(np.int32 if codes.dtype.itemsize < 4 else codes.dtype)  # a writable copy
        codes[codes < 0] = len(dictionary)
        dictionary = pa.concat_arrays([dictionary, pa.nulls(1, dictionary.type)])
    return dictionary, codes


def encode_keys(right_keys: Sequence[pa.ChunkedArray], left_keys: Sequence[pa.ChunkedArray],
                names: Sequence[str], n_right: int, n_left: int) -> tuple[Codes, I64, int]:
    """Dense codes of the right rows' keys, the left rows' codes in the same space (-1: absent), cardinality."""
    if not right_keys:
        return np.zeros(n_right, np.int64), np.zeros(n_left, np.int64), 1
    rcodes: Codes | None = None
    lcodes: I64 | None = None
    for rk, lk, name in zip(right_keys, left_keys, names, strict=True):
        coded = _dictionary_codes(rk)
        dictionary, rc = coded if coded is not None else _dictionary_encode(_plain(rk))
        lk = _plain(lk)
        if lk.type != dictionary.type:
            lk = _cast_key(lk, dictionary.type, name)
        lc = pc.fill_null(pc.index_in(lk, value_set=dictionary, skip_nulls=False), -1)
        lc_np = np.asarray(lc.to_numpy(), dtype=np.int64) if n_left else np.zeros(0, np.int64)
        k = max(len(dictionary), 1)
        if rcodes is None or lcodes is None:
            rcodes, lcodes = rc, lc_np
        else:
            rcodes = rcodes.astype(np.int64) * k + rc
            lcodes = np.where((lcodes < 0) | (lc_np < 0), -1, lcodes * k + lc_np)
    assert rcodes is not None and lcodes is not None
    if len(right_keys) == 1:
        return rcodes, lcodes, int(rcodes.max(initial=-1)) + 1
    # Several keys: the product of cardinalities may be large; make the codes dense again.
    dictionary_, dense = _dictionary_encode(pa.chunked_array([pa.array(rcodes, pa.int64())]))
    lc2 = pc.fill_null(pc.index_in(pa.array(lcodes, pa.int64()), value_set=dictionary_), -1)
    return dense, np.asarray(lc2.to_numpy(), dtype=np.int64), len(dictionary_)


def _concat(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)  # one chunk: no copy


def _dictionary_encode(col: pa.ChunkedArray) -> tuple[pa.Array, Codes]:
    """(dictionary, int64 codes) of a column; a null value is a dictionary entry of its own."""
    if len(col) == 0:
        return pa.array([], col.type), np.zeros(0, np.int64)
    enc = pc.dictionary_encode(col, null_encoding="encode")
    chunks = enc.chunks
    dictionary = chunks[-1].dictionary
    if any(not c.dictionary.equals(dictionary) for c in chunks[:-1]):
        enc = pc.dictionary_encode(col.combine_chunks(), null_encoding="encode")
        chunks = [enc] if isinstance(enc, pa.Array) else enc.chunks
        dictionary = chunks[-1].dictionary
    codes = _concat([np.asarray(c.indices.to_numpy()) for c in chunks])  # int32: half the memory traffic
    return dictionary, codes


def time_values(left: pa.ChunkedArray, right: pa.ChunkedArray, name: str
                ) -> tuple[npt.NDArray[Any], Bools, npt.NDArray[Any], Bools, pa.DataType]:
    """Left and right time columns as comparable numpy arrays (int64 or float64), their valid masks, and the type.

    The type is the one both sides were compared as: the common type when they differ, the
    timestamps' finer unit (ns) when only units differ. A time zone on one side only, or types
    that do not order together, raise :class:`DataError`.
    """
    common = common_time_type(left.type, right.type, name)
    if left.type != common:
        left = _cast(left, common, name)
    if right.type != common:
        right = _cast(right, common, name)
    lv, lnull = comparable(left, name)
    rv, rnull = comparable(right, name)
    return lv, ~lnull, rv, ~rnull, common


def common_time_type(lt: pa.DataType, rt: pa.DataType, name: str) -> pa.DataType:
    """The type two time columns are compared as (see :func:`time_values`)."""
    if lt == rt:
        return lt
    if pa.types.is_timestamp(lt) and pa.types.is_timestamp(rt):
        if (lt.tz is None) != (rt.tz is None):
            raise DataError(f"time column {name!r} has a time zone on one side only ({lt} vs {rt}); "
                            "give both sides the same type")
        return pa.timestamp("ns", tz=lt.tz)
    if _is_number(lt) and _is_number(rt):
        return pa.float64() if pa.types.is_floating(lt) or pa.types.is_floating(rt) else pa.int64()
    raise DataError(f"time column {name!r} is {lt} on the left but {rt} on the right; give both sides the same type")


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _cast(col: pa.ChunkedArray, to: pa.DataType, name: str) -> pa.ChunkedArray:
    try:
        return col.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"time column {name!r} cannot be compared as {to}: {exc}") from None


def comparable(col: pa.ChunkedArray | pa.Array, name: str) -> tuple[npt.NDArray[Any], Bools]:
    """An orderable column as int64 (temporal, integer) or float64 numpy values, and its null mask."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_floating(t):
        null = np.asarray(arr.is_null(nan_is_null=True).to_numpy(zero_copy_only=False))
        values = np.asarray(pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
        return values, null
    if pa.types.is_temporal(t) and not pa.types.is_interval(t):
        width = t.bit_width
        arr = arr.view(pa.int64() if width == 64 else pa.int32())
    elif not pa.types.is_integer(t):
        raise DataError(f"time column {name!r} must be temporal or numeric to be ordered, not {t}")
    null = (np.asarray(arr.is_null().to_numpy(zero_copy_only=False)) if arr.null_count
            else np.zeros(len(arr), dtype=bool))
    filled = pc.fill_null(arr, 0) if arr.null_count else arr
    values = np.asarray(filled.to_numpy(zero_copy_only=False))
    if values.dtype != np.int64 and values.dtype != np.uint64:
        values = values.astype(np.int64)
    return values, null


# A right table already sorted by its key then by time (how end of day writes HDB partitions)
# needs no encoding or sorting: its key runs are the groups.
_MAX_RUNS = 10_000
# Up to this many groups, searches run group by group (one small, cache-friendly searchsorted
# each); beyond, one global search over ``code * n + position`` avoids a long Python loop.
_MAX_GROUP_LOOP = 4_096


class Grouped:
    """Right rows with a time, ordered by (key code, time, row number): the layout q's ``bin`` needs.

    ``rows[p]`` is the original right row at grouped position ``p`` (``rows`` is None when that is
    ``p`` itself); group ``c`` occupies positions ``starts[c]:starts[c + 1]``. The searches
    return grouped positions, -1 where there is none. Build with :func:`group`.

    Within a group, rows are searched by ``sorted_by``, which increases along the group:

    * key runs (input already sorted by key then time): the times themselves, ``by_time=None``;
    * key codes (any input): each row's position in time order, and ``by_time`` holds the times
      in time order, so a time is first turned into a position (one global ``searchsorted``).
    """

    def __init__(self, n: int, starts: I64, rows: I64 | None, sorted_by: npt.NDArray[Any],
                 by_time: npt.NDArray[Any] | None) -> None:
        self.n = n
        self.starts = starts
        self.rows = rows
        self._sorted_by = sorted_by
        self._by_time = by_time
        self._skey: I64 | None = None

    def row_ids(self, pos: I64) -> I64:
        """Original right rows of grouped positions ``pos`` (which must be valid, >= 0)."""
        return pos if self.rows is None else self.rows[pos]

    def last_le(self, codes: I64, times: npt.NDArray[Any]) -> I64:
        """Grouped position of the last row of key ``codes[i]`` with time ``<= times[i]`` (-1: none)."""
        if self.n == 0:
            return np.full(len(codes), -1, np.int64)
        if self._by_time is not None:  # the last time position <= t
            times = np.searchsorted(self._by_time, times, side="right") - 1
        return self._search(codes, times, "right")

    def first_ge(self, codes: I64, times: npt.NDArray[Any]) -> I64:
        """Grouped position of the first row of key ``codes[i]`` with time ``>= times[i]`` (-1: none)."""
        if self.n == 0:
            return np.full(len(codes), -1, np.int64)
        if self._by_time is not None:  # the first time position >= t
            times = np.searchsorted(self._by_time, times, side="left")
        return self._search(codes, times, "left")

    def _search(self, codes: I64, needles: npt.NDArray[Any], side: str) -> I64:
        """Position of each needle within its code's group: the last ``<=`` (right) or first ``>=`` (left)."""
        groups = len(self.starts) - 1
        present = np.flatnonzero(codes >= 0)
        out = np.full(len(codes), -1, np.int64)
        if not len(present):
            return out
        if groups > _MAX_GROUP_LOOP and self._by_time is not None:
            return self._search_global(codes, needles, side)
        by_code = present[stable_argsort_codes(codes[present], groups)]
        cuts = np.flatnonzero(np.diff(codes[by_code])) + 1
        for chunk in np.split(by_code, cuts):
            c = int(codes[chunk[0]])
            lo, hi = int(self.starts[c]), int(self.starts[c + 1])
            found = np.searchsorted(self._sorted_by[lo:hi], needles[chunk], side=side)  # type: ignore[call-overload]
            if side == "right":
                out[chunk] = np.where(found > 0, lo + found - 1, -1)
            else:
                out[chunk] = np.where(found < hi - lo, lo + found, -1)
        return out

    def _search_global(self, codes: I64, positions: I64, side: str) -> I64:
        """The same search for many groups: ``code * n + position`` is sorted along the grouped order."""
        n = self.n
        if self._skey is None:
            self._skey = np.repeat(np.arange(len(self.starts) - 1, dtype=np.int64) * n, np.diff(self.starts))
            self._skey += self._sorted_by
        skey = self._skey
        probes = codes * n + positions
        order = stable_argsort_codes(codes + 1, len(self.starts))  # by code; positions follow the left's order
        pos = np.empty(len(probes), np.int64)
        pos[order] = np.searchsorted(skey, probes[order], side=side)  # type: ignore[call-overload]
        if side == "right":
            pos -= 1
            ok = (codes >= 0) & (pos >= 0) & (skey[np.maximum(pos, 0)] >= codes * n)
        else:
            ok = (codes >= 0) & (pos < n) & (skey[np.minimum(pos, n - 1)] < (codes + 1) * n)
        return np.where(ok, pos, -1)


def group(right_keys: Sequence[pa.ChunkedArray], left_keys: Sequence[pa.ChunkedArray], names: Sequence[str],
          right_times: npt.NDArray[Any], right_valid: Bools, n_left: int) -> tuple[Grouped, I64]:
    """The right rows grouped by key (see :class:`Grouped`) and the left rows' key codes (-1: no such key)."""
    in_time_order = len(right_times) < 2 or bool(np.all(right_times[1:] >= right_times[:-1]))
    runs = None if in_time_order else _key_runs(right_keys, right_times, right_valid)
    if runs is not None:
        values, starts = runs
        lk = _plain(left_keys[0])
        if lk.type != values.type:
            lk = _cast_key(lk, values.type, names[0])
        lcodes = pc.fill_null(pc.index_in(lk, value_set=values), -1)
        lc = np.asarray(lcodes.to_numpy(), dtype=np.int64) if len(lk) else np.zeros(0, np.int64)
        return Grouped(len(right_times), starts, None, right_times, None), lc
    rcodes, lcodes, cardinality = encode_keys(right_keys, left_keys, names, len(right_times), n_left)
    return _by_codes(rcodes, right_times, right_valid, cardinality, in_time_order), lcodes


def _key_runs(right_keys: Sequence[pa.ChunkedArray], times: npt.NDArray[Any], valid: Bools
              ) -> tuple[pa.Array, I64] | None:
    """(key of each run, run starts + [n]) if the right table is sorted by its one key then time, else None."""
    n = len(times)
    if len(right_keys) != 1 or n < 2 or not valid.all():
        return None
    if right_keys[0].null_count:
        return None  # null keys: the code layout handles them
    coded = _dictionary_codes(right_keys[0])
    if coded is not None:  # compare the integer codes, not the strings
        dictionary, codes = coded
        starts_np = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        if len(starts_np) + 1 > _MAX_RUNS:
            return None
        starts = np.concatenate(([0], starts_np, [n])).astype(np.int64)
        values = dictionary.take(pa.array(codes[starts[:-1]]))
    else:
        key = _plain(right_keys[0])
        key = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
        changed = pc.not_equal(key.slice(1), key.slice(0, n - 1))
        starts_np = np.flatnonzero(np.asarray(changed.to_numpy(zero_copy_only=False))) + 1
        if len(starts_np) + 1 > _MAX_RUNS:
            return None
        starts = np.concatenate(([0], starts_np, [n])).astype(np.int64)
        values = key.take(pa.array(starts[:-1]))
    if pc.count_distinct(values).as_py() != len(values):
        return None  # a key appears in more than one run: not grouped
    in_order = times[1:] >= times[:-1]
    in_order[starts_np - 1] = True  # a new run may start at any time
    if not bool(in_order.all()):
        return None
    return values, starts


def _cast_key(col: pa.ChunkedArray, to: pa.DataType, name: str) -> pa.ChunkedArray:
    try:
        return col.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"key column {name!r} is {col.type} on the left but {to} on the right; "
                        f"give both the same type ({exc})") from None


def _by_codes(codes: Codes, times: npt.NDArray[Any], valid: Bools, cardinality: int, in_time_order: bool
              ) -> Grouped:
    keep: I64 | None = None
    if not valid.all():
        keep = np.flatnonzero(valid)
        codes, times = codes[keep], times[keep]
    n = len(times)
    order: I64 | None = None
    if not in_time_order:
        order = np.argsort(times, kind="stable")
        times, codes = times[order], codes[order]
    grouped = stable_argsort_codes(codes, cardinality)  # positions in time order, grouped by key
    counts = np.bincount(codes, minlength=cardinality) if n else np.zeros(cardinality, np.int64)
    starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    rows = grouped if order is None else order[grouped]
    return Grouped(n, starts, rows if keep is None else keep[rows], grouped, times)
