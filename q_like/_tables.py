"""Inputs of the q_like functions: tables, arrays, columns, DuckDB connections.

Owns the small contracts every q idiom shares: what counts as a table (a ``pyarrow.Table``, a
``RecordBatch`` or anything exporting the Arrow C stream interface), how an array argument becomes
values plus a null mask, how column names are checked and quoted into SQL, and how an Arrow table
is lent to DuckDB under a unique temporary name and taken back afterwards. No I/O happens here:
a connection is either the caller's or a new in-memory one.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickerplant.exceptions import DataError, QueryError

#: Names this package adds to relations it builds; a user column may not use the prefix.
RESERVED_PREFIX = "__q_like_"

_names = itertools.count()


def as_table(obj: Any, what: str) -> pa.Table:
    """``obj`` as a ``pyarrow.Table``: a Table, a RecordBatch, or an Arrow C stream exporter."""
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if hasattr(obj, "__arrow_c_stream__"):
        return pa.table(obj)
    raise DataError(
        f"{what} must be a pyarrow.Table (or a RecordBatch, or an object with __arrow_c_stream__ such as a "
        f"polars or pandas DataFrame), not {type(obj).__name__}; convert it with pyarrow.table(...)"
    )


def require_columns(table: pa.Table, names: Sequence[str], what: str) -> None:
    """Raise :class:`DataError` naming every one of ``names`` that ``table`` lacks."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise DataError(f"{what} has no column {', '.join(map(repr, missing))}; its columns are {table.column_names}")
    reserved = [n for n in table.column_names if n.startswith(RESERVED_PREFIX)]
    if reserved:
        raise DataError(f"{what} has column(s) {reserved} whose prefix {RESERVED_PREFIX!r} q_like reserves; "
                        "rename them")


def as_names(value: str | Sequence[str], what: str) -> list[str]:
    """A column name or a sequence of names, as a list (``"sym"`` -> ``["sym"]``)."""
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise DataError(f"{what} must be a column name or a list of column names, not {value!r}")
    return names


def quote_ident(name: str) -> str:
    """``name`` as a DuckDB identifier: ``time`` -> ``"time"``, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def sql_expr(expr: str) -> str:
    """A column argument of a SQL builder: a plain name is quoted, anything else is SQL kept as is."""
    return quote_ident(expr) if _SIMPLE_NAME.match(expr) else f"({expr})"


def to_array(values: Any, what: str) -> pa.Array:
    """An array argument (pyarrow Array/ChunkedArray, numpy array, or a sequence) as one ``pyarrow.Array``."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values
    try:
        if isinstance(values, np.ndarray):
            return pa.array(values, from_pandas=values.dtype.kind == "f")  # NaN -> null, as q's 0n
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise DataError(f"{what} must be an array (pyarrow, numpy or a list of values): {exc}") from None


def numeric_values(arr: pa.Array, what: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Values of a numeric array as numpy (nulls replaced by 0), and the null mask.

    A floating NaN counts as null, as q's float null ``0n`` is NaN.
    """
    if pa.types.is_null(arr.type):  # all nulls (e.g. an empty list): as floats
        arr = arr.cast(pa.float64())
    t = arr.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise DataError(f"{what} must be numeric (integer or floating), not {t}")
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.int64())
    null: npt.NDArray[np.bool_] = (
        arr.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
        if arr.null_count or pa.types.is_floating(t)
        else np.zeros(len(arr), dtype=bool)
    )
    filled = pc.fill_null(arr, 0) if arr.null_count else arr
    values = np.asarray(filled.to_numpy(zero_copy_only=False))
    if pa.types.is_floating(t):
        values = values.astype(np.float64, copy=True)
        values[null] = 0.0
    elif values.dtype != np.int64 and pa.types.is_integer(t) and not pa.types.is_uint64(t):
        values = values.astype(np.int64)
    return values, null


@contextlib.contextmanager
def connection(con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """The caller's connection, or a new in-memory one that is closed afterwards."""
    if con is not None:
        yield con
        return
    own = duckdb.connect()
    try:
        yield own
    finally:
        own.close()


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, table: pa.Table) -> Iterator[str]:
    """``table`` visible to ``con`` under a unique temporary name (quoted), unregistered afterwards."""
    name = f"{RESERVED_PREFIX}t{next(_names)}"
    con.register(name, table)
    try:
        yield quote_ident(name)
    finally:
        con.unregister(name)


def relation_columns(con: duckdb.DuckDBPyConnection, relation: str, what: str) -> list[str]:
    """Column names of ``relation`` (a table or view name, or a parenthesised query) on ``con``."""
    try:
        return list(con.sql(f"SELECT * FROM {relation} LIMIT 0").columns)
    except duckdb.Error as exc:
        raise DataError(f"{what} {relation!r} is not a relation DuckDB can read on this connection: {exc}") from None


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run ``sql`` and return the whole result as Arrow; DuckDB errors become ``QueryError``."""
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError("query_failed", f"{exc}; the SQL q_like generated was: {sql}") from None


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` (a DuckDB result) with the column types of ``schema`` (time zones, string widths)."""
    if table.schema.equals(schema):
        return table
    return table.cast(schema)
