"""As-of join: kdb+'s ``aj`` and ``aj0`` over Arrow tables or DuckDB relations.

``aj(["sym", "time"], trade, quote)`` is q's ``aj[`sym`time; trade; quote]``: for every row of
the left table, in the left table's order, the last row of the right table with the same keys
(every column of ``on`` but the last, matched by equality; a null key matches a null key) and
``right.time <= left.time`` (the last column of ``on``). "Last" means latest time; among right
rows with that same time, the last one in row order, which is what q's binary search finds on a
right table sorted by time.

The result, as q builds it (``.Q.ajf0`` in q.k, kdb+ 3.6 and later):

* the left table's columns, in order, then the right table's columns that the left lacks, in
  the right's order; the right's key columns are not repeated;
* a column present on both sides (not a key) takes the right's value on every matched row, even
  a null one (``ajf`` would fill it from the left), and keeps the left's value where nothing
  matched; the right-only columns are null where nothing matched;
* ``aj`` keeps the left's time (the boundary), ``aj0`` takes the matched right row's time (the
  actual quote time) and keeps the left's where nothing matched.

Where we differ from q: a row whose time is null never matches (q orders a null time before
every other, so its ``bin`` can match a right row whose time is null); q leaves the right table
unsorted at the caller's risk, we sort by time when it is not already sorted.

Two engines compute the same answer:

* ``"numpy"`` (Arrow tables): q's own method, a binary search in the right table grouped by
  key, with radix sorts and vectorized ``searchsorted`` (see :mod:`q_like._keyed`);
* ``"duckdb"``: DuckDB's ``ASOF LEFT JOIN`` (the SQL of :func:`aj_sql`); used for relation
  names on a connection, where the data already lives in DuckDB. DuckDB alone picks an arbitrary
  row among equal right times, so the SQL compares ``(time, row number)`` pairs to take the last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from q_like._keyed import group, time_values
from q_like._tables import (
    RESERVED_PREFIX,
    as_names,
    as_table,
    conform,
    connection,
    fetch,
    quote_ident,
    registered,
    relation_columns,
    require_columns,
)
from tickerplant.exceptions import DataError

Engine = Literal["auto", "numpy", "duckdb"]

_L = f"{RESERVED_PREFIX}l"
_R = f"{RESERVED_PREFIX}r"
_LROW = f"{RESERVED_PREFIX}lrow"
_RROW = f"{RESERVED_PREFIX}rrow"
_MAX_ROW = 2**63 - 1


def aj(on: str | Sequence[str], left: Any, right: Any, *, con: duckdb.DuckDBPyConnection | None = None,
       engine: Engine = "auto") -> pa.Table:
    """kdb+ ``aj``: each left row joined with the last right row at or before its time, per key.

    ``on``: the key columns then the time column (``["sym", "time"]``; ``"time"`` alone joins on
    time only). ``left``/``right``: ``pyarrow.Table`` (or RecordBatch / Arrow stream exporter), or
    the name of a relation on ``con`` (a table, a view, or a parenthesised query). Returns a
    ``pyarrow.Table`` with one row per left row, in left order; see the module docstring for the
    columns. ``engine``: ``"numpy"`` (default for Arrow tables) or ``"duckdb"`` (default, and
    the only choice, when a side is a relation name).
    """
    return _aj(on, left, right, con, engine, zero=False)


def aj0(on: str | Sequence[str], left: Any, right: Any, *, con: duckdb.DuckDBPyConnection | None = None,
        engine: Engine = "auto") -> pa.Table:
    """kdb+ ``aj0``: as :func:`aj`, but a matched row's time is the right row's (the actual quote time)."""
    return _aj(on, left, right, con, engine, zero=True)


def aj_sql(on: str | Sequence[str], left: str, right: str, *, left_columns: Sequence[str],
           right_columns: Sequence[str], zero: bool = False) -> str:
    """The DuckDB query of :func:`aj` (``zero=True``: :func:`aj0`) over two relations.

    ``left``/``right`` are inserted as written (a table or view name, or a parenthesised query);
    ``left_columns``/``right_columns`` are their column names, needed to build the select list.
    The result keeps the left relation's row order (``row_number() OVER ()``, which DuckDB
    guarantees follows the scan order).
    """
    keys, t = _split_on(on)
    for what, cols in (("left", left_columns), ("right", right_columns)):
        missing = [c for c in (*keys, t) if c not in cols]
        if missing:
            raise DataError(f"{what} relation has no column {', '.join(map(repr, missing))}; its columns are "
                            f"{list(cols)}")
    payload = [c for c in right_columns if c not in (*keys, t)]
    q = quote_ident
    select: list[str] = []
    for c in left_columns:
        if c in payload or (zero and c == t):
            select.append(f"CASE WHEN {_R}.{_RROW} IS NULL THEN {_L}.{q(c)} ELSE {_R}.{q(c)} END AS {q(c)}")
        else:
            select.append(f"{_L}.{q(c)}")
    select += [f"{_R}.{q(c)}" for c in payload if c not in left_columns]
    right_cols = ", ".join(q(c) for c in dict.fromkeys([*keys, t, *payload]))
    # Equal keys, then one inequality on (time, row number): among right rows with the same time
    # the one with the highest row number is the "last" one, as q's binary search finds it. A
    # left row with a null time gets a null pair, which DuckDB's ASOF join never matches.
    conditions = [f"{_L}.{q(k)} IS NOT DISTINCT FROM {_R}.{q(k)}" for k in keys]
    conditions.append(
        f"(CASE WHEN {_L}.{q(t)} IS NULL THEN NULL ELSE {{'t': {_L}.{q(t)}, 'r': {_MAX_ROW}}} END)"
        f" >= {{'t': {_R}.{q(t)}, 'r': {_R}.{_RROW}}}"
    )
    return (
        f"WITH {_L} AS (SELECT *, row_number() OVER () AS {_LROW} FROM {left}),\n"
        f"{_R} AS (SELECT * FROM (SELECT {right_cols}, row_number() OVER () AS {_RROW} FROM {right})"
        f" WHERE {q(t)} IS NOT NULL)\n"
        f"SELECT {', '.join(select)}\n"
        f"FROM {_L} ASOF LEFT JOIN {_R} ON {' AND '.join(conditions)}\n"
        f"ORDER BY {_L}.{_LROW}"
    )


def _split_on(on: str | Sequence[str]) -> tuple[list[str], str]:
    names = as_names(on, "on")
    if not names:
        raise DataError("on must name at least the time column, e.g. ['sym', 'time']")
    if len(set(names)) != len(names):
        raise DataError(f"on names a column twice: {names}")
    return names[:-1], names[-1]


def _aj(on: str | Sequence[str], left: Any, right: Any, con: duckdb.DuckDBPyConnection | None, engine: Engine,
        zero: bool) -> pa.Table:
    keys, t = _split_on(on)
    if engine not in ("auto", "numpy", "duckdb"):
        raise DataError(f"engine must be 'auto', 'numpy' or 'duckdb', not {engine!r}")
    named = isinstance(left, str) or isinstance(right, str)
    if named and engine == "numpy":
        raise DataError("the numpy engine joins Arrow tables; a relation name needs engine='duckdb' (or 'auto')")
    if named and con is None:
        raise DataError("a relation name needs the DuckDB connection it lives on: pass con=")
    if named or engine == "duckdb":
        return _aj_duckdb(keys, t, left, right, con, zero)
    lt = as_table(left, "left")
    rt = as_table(right, "right")
    require_columns(lt, [*keys, t], "left table")
    require_columns(rt, [*keys, t], "right table")
    return _aj_numpy(keys, t, lt, rt, zero)


def _aj_numpy(keys: list[str], t: str, left: pa.Table, right: pa.Table, zero: bool) -> pa.Table:
    lvals, lvalid, rvals, rvalid, _ = time_values(left.column(t), right.column(t), t)
    grouped, lcodes = group([right.column(k) for k in keys], [left.column(k) for k in keys], keys, rvals, rvalid,
                             left.num_rows)
    pos = grouped.last_le(np.where(lvalid, lcodes, -1), lvals)
    matched = pos >= 0
    rows = grouped.row_ids(np.where(matched, pos, 0)) if grouped.n else np.zeros(len(pos), np.int64)
    all_matched = bool(matched.all())
    indices = pa.array(rows, pa.int64()) if all_matched else pa.array(rows, pa.int64(), mask=~matched)
    mask = None if all_matched else pa.array(matched)

    payload = [c for c in right.column_names if c not in (*keys, t)]
    taken = set(payload) | ({t} if zero else set())
    names: list[str] = []
    columns: list[pa.ChunkedArray | pa.Array] = []
    for name in left.column_names:
        col = left.column(name)
        if name in taken:
            values = _take(right.column(name), indices)
            if values.type != col.type:
                values = _cast_like(values, col.type, name)
            col = values if mask is None else pc.if_else(mask, values, col)
        names.append(name)
        columns.append(col)
    for name in payload:
        if name not in left.column_names:
            names.append(name)
            columns.append(_take(right.column(name), indices))
    fields = [left.schema.field(n) if n in left.column_names else right.schema.field(n) for n in names]
    # A matched row can bring a null into a column the left declared non-nullable.
    schema = pa.schema([f.with_nullable(True) if n in taken or n not in left.column_names else f
                        for f, n in zip(fields, names, strict=True)], metadata=left.schema.metadata)
    return pa.Table.from_arrays(columns, schema=schema)


def _take(col: pa.ChunkedArray, indices: pa.Array) -> pa.Array:
    # One contiguous array gathers several times faster than a many-chunk ChunkedArray.
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return arr.take(indices)


def _cast_like(values: pa.Array, to: pa.DataType, name: str) -> pa.Array:
    try:
        return values.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"column {name!r} is {to} on the left but {values.type} on the right and the right's "
                        f"values do not fit the left's type ({exc}); give both sides the same type") from None


def _aj_duckdb(keys: list[str], t: str, left: Any, right: Any, con: duckdb.DuckDBPyConnection | None,
               zero: bool) -> pa.Table:
    with connection(con) as db:
        lt = None if isinstance(left, str) else as_table(left, "left")
        rt = None if isinstance(right, str) else as_table(right, "right")
        if lt is not None:
            require_columns(lt, [*keys, t], "left table")
        if rt is not None:
            require_columns(rt, [*keys, t], "right table")
        if lt is not None and rt is not None and lt.schema.field(t).type != rt.schema.field(t).type:
            # DuckDB compares (time, row) pairs only between equal types: compare as the left's type.
            i = rt.column_names.index(t)
            rt = rt.set_column(i, rt.schema.field(t).with_type(lt.schema.field(t).type),
                               rt.column(t).cast(lt.schema.field(t).type))
        with contextlib.ExitStack() as stack:
            lname = left if lt is None else stack.enter_context(registered(db, lt))
            rname = right if rt is None else stack.enter_context(registered(db, rt))
            lcols = lt.column_names if lt is not None else relation_columns(db, lname, "left")
            rcols = rt.column_names if rt is not None else relation_columns(db, rname, "right")
            sql = aj_sql([*keys, t], lname, rname, left_columns=lcols, right_columns=rcols, zero=zero)
            result = fetch(db, sql)
    if lt is None or rt is None:
        return result
    fields = [lt.schema.field(n) if n in lt.column_names else rt.schema.field(n) for n in result.column_names]
    return conform(result, pa.schema([f.with_nullable(True) for f in fields], metadata=lt.schema.metadata))

