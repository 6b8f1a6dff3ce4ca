"""``ohlc``: open-high-low-close-volume-VWAP bars per key and time bucket, as kdb+ users write them.

The q idiom::

    select open:first price, high:max price, low:min price, close:last price,
           volume:sum size, vwap:size wavg price, count:count i
      by sym, time:5 xbar time.minute from trade

becomes ``ohlc(trade, "5m")``. One row per (``by`` keys, bucket) that has at least one trade,
sorted by the keys then the bucket (nulls first, as q orders them). Columns: the ``by`` keys,
the bucket start under the time column's name (:func:`q_like.xbar`), then:

* ``open``/``close``: the price of the bucket's earliest/latest row by time, ties by row order
  (q's ``first``/``last`` take row order; on a table in time order the two agree). A null price
  there is returned as is, as q's ``first``/``last`` would;
* ``high``/``low``: the largest/smallest non-null price (null if none);
* ``volume``: the sum of sizes, nulls as 0;
* ``vwap``: ``size wavg price`` (pairs with a null left out; null if none, NaN if sizes sum to 0);
* ``count``: rows in the bucket.

Computed by DuckDB (:func:`ohlc_sql` builds the query; run it yourself through the query
service, or call :func:`ohlc` with a ``pyarrow.Table`` or a relation name on a connection).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from q_like._tables import (
    RESERVED_PREFIX,
    as_names,
    as_table,
    conform,
    connection,
    fetch,
    quote_ident,
    registered,
    require_columns,
)
from q_like.wavg import wavg
from q_like.xbar import Width, xbar
from tickerplant.exceptions import DataError

_T = f"{RESERVED_PREFIX}t"
_ROW = f"{RESERVED_PREFIX}row"
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "count")


def ohlc_sql(source: str, bucket: Width, *, by: str | Sequence[str] | None = "sym", time: str = "time",
             price: str = "price", size: str = "size", tz: str | None = "UTC") -> str:
    """The DuckDB query of :func:`ohlc` over ``source`` (a table or view name, or a parenthesised query).

    ``tz``: for a duration ``bucket``, the time zone of the bucket column (``None`` for a naive
    timestamp column); see :func:`q_like.xbar`.
    """
    keys = [] if by is None else as_names(by, "by")
    q = quote_ident
    p, s, t = q(price), q(size), q(time)
    within = f"ORDER BY {t}, {_ROW}"
    select = [*(q(k) for k in keys), f"{xbar(bucket, time, tz=tz)} AS {t}",
              f"first({p} {within}) AS open", f"max({p}) AS high", f"min({p}) AS low",
              f"last({p} {within}) AS close", f"coalesce(sum({s}), 0) AS volume",
              f"{wavg(size, price)} AS vwap", "count(*) AS count"]
    order = ", ".join(f"{i} NULLS FIRST" for i in range(1, len(keys) + 2))
    return (f"WITH {_T} AS (SELECT *, row_number() OVER () AS {_ROW} FROM {source})\n"
            f"SELECT {', '.join(select)}\nFROM {_T}\nGROUP BY ALL\nORDER BY {order}")


def ohlc(table: Any, bucket: Width, *, by: str | Sequence[str] | None = "sym", time: str = "time",
         price: str = "price", size: str = "size", con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """OHLCV + VWAP bars of ``table`` per ``by`` keys and ``bucket`` of ``time`` (see the module docstring).

    ``table``: a ``pyarrow.Table`` (or RecordBatch / Arrow stream exporter), or the name of a
    relation on ``con``. ``bucket``: a duration (``"5m"``, ``timedelta``) for a temporal time
    column, a number for a numeric one. ``by``: a column, a list of columns, or None.
    """
    keys = [] if by is None else as_names(by, "by")
    cols = [*keys, time, price, size]
    if isinstance(table, str):
        if con is None:
            raise DataError("a relation name needs the DuckDB connection it lives on: pass con=")
        return fetch(con, ohlc_sql(table, bucket, by=keys, time=time, price=price, size=size,
                                   tz=_relation_tz(con, table, time)))
    t = as_table(table, "table")
    require_columns(t, cols, "table")
    ttype = t.schema.field(time).type
    tz = ttype.tz if pa.types.is_timestamp(ttype) else None
    with connection(con) as db, contextlib.ExitStack() as stack:
        name = stack.enter_context(registered(db, t.select(cols)))
        result = fetch(db, ohlc_sql(name, bucket, by=keys, time=time, price=price, size=size, tz=tz))
    ptype, stype = t.schema.field(price).type, t.schema.field(size).type
    volume = pa.int64() if pa.types.is_integer(stype) else pa.float64()
    fields = [t.schema.field(k).with_nullable(True) for k in keys]
    fields += [pa.field(time, ttype), pa.field("open", ptype), pa.field("high", ptype), pa.field("low", ptype),
               pa.field("close", ptype), pa.field("volume", volume), pa.field("vwap", pa.float64()),
               pa.field("count", pa.int64())]
    return conform(result, pa.schema(fields))


def _relation_tz(con: duckdb.DuckDBPyConnection, relation: str, time: str) -> str | None:
    """'UTC' if ``relation``'s ``time`` column is a timestamp with time zone, else None."""
    try:
        rel = con.sql(f"SELECT {quote_ident(time)} FROM {relation} LIMIT 0")
    except duckdb.Error as exc:
        raise DataError(f"cannot read column {time!r} of relation {relation!r}: {exc}") from None
    return "UTC" if "TIME ZONE" in str(rel.types[0]).upper() or "TZ" in str(rel.types[0]).upper() else None
