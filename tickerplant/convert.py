"""Turn what users publish into Arrow record batches of a table's wire schema.

Accepted: a dict of columns (lists, numpy arrays, Arrow arrays, pandas Series), a dict
of scalars (one row), a list of row dicts, a pandas DataFrame, a pyarrow Table or
RecordBatch. Columns are matched by name and cast safely to the declared type
(integers as nanoseconds, numpy ``datetime64`` or ``datetime`` for timestamps); a
missing nullable column is filled with nulls. A missing required column, an unknown
column or a value that does not convert raises :class:`DataError` naming it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tickerplant.exceptions import DataError
from tickerplant.schema import TP_TIME, TableSchema, type_name

_COLUMN_TYPES = (list, tuple, np.ndarray, pa.Array, pa.ChunkedArray)


def is_row(data: Mapping[str, Any]) -> bool:
    """A dict of scalars (one row) rather than a dict of columns; judged by its first value."""
    for value in data.values():
        # numpy scalars (np.float64, np.datetime64) have __array__ too, but are one value
        if isinstance(value, np.generic):
            return True
        return not isinstance(value, _COLUMN_TYPES) and not hasattr(value, "__array__")
    return False


# Up to this many rows, one C++ call converting the rows as structs beats nine column
# conversions (16 us against 52 us for one trade row); past it, columns win.
SMALL = 32


def rows_to_batch(rows: Sequence[Mapping[str, Any]], table: TableSchema) -> pa.RecordBatch:
    """Many row dicts -> one batch (column by column, no Python object per value kept)."""
    if len(rows) <= SMALL:
        try:
            batch = pa.RecordBatch.from_struct_array(pa.array(rows, type=table.row_type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass  # the column path below converts more forms, and says precisely what failed
        else:
            if all(batch.column(name).null_count == 0 for name in table.required):
                return batch
    names = set(table.wire.names)
    for row in rows[:1]:
        extra = set(row) - names - {TP_TIME}
        if extra:
            raise _unknown_column(table, sorted(extra)[0])
    columns: dict[str, list[Any]] = {}
    for f in table.wire:
        try:
            columns[f.name] = list(map(operator.itemgetter(f.name), rows))  # twice a comprehension's speed
        except KeyError:
            if not f.nullable:
                raise DataError(f"table {table.name!r} needs column {f.name!r}, which is missing") from None
            columns[f.name] = [row.get(f.name) for row in rows]
    return columns_to_batch(columns, table, len(rows))


def columns_to_batch(columns: Mapping[str, Any], table: TableSchema, nrows: int | None = None) -> pa.RecordBatch:
    """A dict of columns -> a batch of the wire schema."""
    wire = table.wire
    for name in columns:
        if wire.get_field_index(name) < 0 and name != TP_TIME:
            raise _unknown_column(table, name)
    arrays: list[pa.Array | None] = []
    length = nrows
    for field in wire:
        values = columns.get(field.name)
        if values is None:
            if not field.nullable:
                raise DataError(f"table {table.name!r} needs column {field.name!r}, which is missing")
            arrays.append(None)  # filled once the length is known
            continue
        arr = _to_array(values, field, table)
        if length is None:
            length = len(arr)
        elif len(arr) != length:
            raise DataError(f"column {table.name}.{field.name} has {len(arr)} values, expected {length}")
        arrays.append(arr)
    n = length or 0
    filled = [a if a is not None else pa.nulls(n, f.type) for a, f in zip(arrays, wire, strict=True)]
    return _checked(pa.RecordBatch.from_arrays(filled, schema=wire), table)


def _to_array(values: Any, field: pa.Field, table: TableSchema) -> pa.Array:
    try:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.Array):
            arr = values
        elif hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):  # pandas Series
            arr = pa.Array.from_pandas(values)
        else:
            want = field.type if not isinstance(values, np.ndarray) else None
            try:
                arr = pa.array(values, type=want)
            except pa.ArrowException:
                if want is None or not pa.types.is_timestamp(want):
                    raise
                arr = pa.array(values)  # np.datetime64 scalars: pyarrow refuses them with a tz type; cast below
        if arr.type != field.type:
            if pa.types.is_timestamp(field.type) and pa.types.is_integer(arr.type):
                arr = arr.cast(pa.int64()).view(field.type)
            else:
                arr = arr.cast(field.type)
        return arr
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        want = type_name(field.type)
        raise DataError(f"column {table.name}.{field.name} does not convert to {want}: {exc}") from None


def table_to_batch(data: pa.Table | pa.RecordBatch, table: TableSchema) -> pa.RecordBatch:
    if isinstance(data, pa.Table):
        data = data.combine_chunks()
        batch = data.to_batches()[0] if data.num_rows else None
        columns = {name: (batch.column(name) if batch is not None else data.column(name)) for name in data.column_names}
        return columns_to_batch(columns, table, data.num_rows)
    if data.schema.equals(table.wire):
        return _checked(data, table)
    return columns_to_batch({n: data.column(n) for n in data.schema.names}, table, data.num_rows)


def to_batch(data: Any, table: TableSchema) -> pa.RecordBatch:
    """Any accepted form -> a record batch of ``table``'s wire schema."""
    if isinstance(data, pa.RecordBatch | pa.Table):
        return table_to_batch(data, table)
    if isinstance(data, Mapping):
        if is_row(data):
            return rows_to_batch([data], table)
        return columns_to_batch(data, table)
    if isinstance(data, list) and (not data or isinstance(data[0], Mapping)):
        return rows_to_batch(data, table)
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas DataFrame
        return table_to_batch(pa.Table.from_pandas(data, preserve_index=False), table)
    raise DataError(
        f"cannot publish {type(data).__name__} to {table.name!r}: pass a dict of columns, a dict for one row, "
        f"a list of row dicts, a pandas DataFrame or a pyarrow Table/RecordBatch"
    )


def _checked(batch: pa.RecordBatch, table: TableSchema) -> pa.RecordBatch:
    for name in table.required:
        if batch.column(name).null_count:
            raise DataError(f"column {table.name}.{name} may not be null ({batch.column(name).null_count} nulls)")
    return batch


def _unknown_column(table: TableSchema, name: str) -> DataError:
    return DataError(f"table {table.name!r} has no column {name!r}; its columns are {', '.join(table.wire.names)}")
