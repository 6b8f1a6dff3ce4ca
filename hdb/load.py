"""Backfill: load one day of a table from a Parquet or CSV file into the HDB (``tick hdb load``).

The file is checked against the table's schema before anything is written, column by
column and vectorized (no Python object per row):

* a column the table does not declare is refused, naming the table's columns (a ``date``
  column is accepted when every row holds the day being loaded: an HDB export has one);
* a required (not-null) column that is missing, or that holds nulls, is refused with the
  count and the first row;
* values are converted to the declared types where no information is lost: integers to
  floats, strings to numbers, booleans and timestamps by parsing. A value that does not
  convert is refused with the column, the value and its row. A number is never taken for
  a timestamp (seconds? nanoseconds?): write times as ISO-8601 strings or as a timestamp
  column;
* timestamps are stored as nanoseconds, UTC. ``2026-11-20T14:30:00.123456789Z`` and
  ``...+01:00`` are converted to UTC; a time without a zone (``2026-11-20 14:30:00``, or a
  Parquet timestamp without a time zone) is taken to be UTC already;
* a nullable column that is absent is filled with nulls; so is ``tp_time`` (the
  tickerplant's receive time), which a backfilled day does not have;
* in a CSV file an empty field is null, for every type (strings too).

Rows are numbered from 1, the first data row (a CSV file's header is not counted).
The day's partition is then written by :func:`hdb.partition.write_partition` (sorted by
(sym, time), atomic). A day that already has a partition is refused unless ``replace``.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from hdb.partition import DATE_COLUMN, WriteResult, partition_dir, write_partition
from tickerplant.exceptions import DataError
from tickerplant.schema import TIMESTAMP, TP_TIME, Registry, TableSchema, type_name

__all__ = ["conform", "load", "read_source"]

_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# A timestamp string that ends in a zone: Z or +HH[:MM] / -HH[:MM] after a time of day (a
# bare date such as 2026-11-20 must not read as "-20").
_ZONED = r"[T ]\d{2}:\d{2}(:\d{2}(\.\d*)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)$"


def load(
    hdb: str | Path,
    table: str,
    date: dt.date,
    source: str | Path,
    registry: Registry,
    *,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> WriteResult:
    """Validate ``source`` (``.parquet`` or ``.csv``) against ``registry[table]`` and write it as the
    partition of ``date``. Raises :class:`DataError` (nothing written) when the file does not fit.

    A file with no rows writes nothing and returns a result with ``rows == 0``.
    """
    schema = registry[table]
    path = Path(source)
    target = partition_dir(hdb, table, date)
    if target.exists() and not replace:
        raise DataError(f"{table} already has a partition for {date} ({target}); use --replace to overwrite it")
    data = conform(read_source(path, schema), schema, date, str(path))
    return write_partition(hdb, table, date, data, progress=progress)


def target_schema(schema: TableSchema) -> pa.Schema:
    """What a backfilled partition holds: the table's columns, ``tp_time`` nullable (a backfill has none)."""
    full: pa.Schema = schema.schema
    i = full.get_field_index(TP_TIME)
    return full.set(i, full.field(i).with_nullable(True))


# --------------------------------------------------------------------------- reading


def read_source(path: Path, schema: TableSchema) -> pa.Table:
    """The file as an Arrow table: Parquet with its own types, CSV with every column as strings
    (converted by :func:`conform`, which names the column and row of a bad value)."""
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"cannot load {path}: no such file")
    if name.endswith(_PARQUET_SUFFIXES):
        try:
            return pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read {path} as Parquet: {exc}") from exc
    if name.endswith(_CSV_SUFFIXES):
        return _read_csv(path, schema)
    raise DataError(f"cannot load {path}: unknown file type; use a .parquet or .csv (.csv.gz) file")


def _csv_header(path: Path) -> list[str]:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as gz:
                return next(csv.reader(gz), [])
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the header line of {path}: {exc}") from exc


def _read_csv(path: Path, schema: TableSchema) -> pa.Table:
    header = _csv_header(path)
    if not header:
        raise DataError(f"{path} is empty: a CSV file needs a header line naming its columns "
                        f"({', '.join(schema.schema.names)})")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: column(s) {', '.join(dupes)} appear more than once in the header")
    _check_names(header, schema, str(path))  # before reading the whole file
    convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=True,
                                  null_values=[""])
    try:
        return pcsv.read_csv(path, convert_options=convert)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read {path} as CSV: {exc}") from exc


# --------------------------------------------------------------------------- validation


def _check_names(names: list[str], schema: TableSchema, source: str) -> None:
    known = set(schema.schema.names)
    unknown = [n for n in names if n not in known and n != DATE_COLUMN]
    if unknown:
        raise DataError(
            f"{source}: unknown column(s) {', '.join(unknown)} for table {schema.name!r}; its columns are "
            f"{', '.join(schema.schema.names)}. Rename or drop them"
        )
    missing = [n for n in schema.required if n not in names]
    if missing:
        raise DataError(
            f"{source}: required column(s) {', '.join(missing)} of table {schema.name!r} are missing; "
            f"the required columns are {', '.join(schema.required)}"
        )


def conform(data: pa.Table, schema: TableSchema, date: dt.date, source: str) -> pa.Table:
    """``data`` with the table's columns in schema order, each converted to its declared type.

    Raises :class:`DataError` naming the column (and value and row) of anything that does not fit.
    """
    _check_names(data.column_names, schema, source)
    if DATE_COLUMN in data.column_names:
        _check_date(data.column(DATE_COLUMN), date, source)
    target = target_schema(schema)
    n = data.num_rows
    columns: list[pa.ChunkedArray] = []
    for field in target:
        if field.name not in data.column_names:
            columns.append(pa.chunked_array([pa.nulls(n, field.type)], field.type))
            continue
        col = _convert(data.column(field.name), field, schema.name, source)
        if not field.nullable and col.null_count:
            nulls = np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))
            raise DataError(
                f"{source}: column {field.name!r} of table {schema.name!r} is required but has {len(nulls)} null "
                f"value(s), the first in row {int(nulls[0]) + 1}; fill them or drop those rows"
            )
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=target)


def _check_date(col: pa.ChunkedArray, date: dt.date, source: str) -> None:
    try:
        days = col.cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{source}: column 'date' does not hold dates ({exc}); drop it (the partition is "
                        f"the date given to the load)") from exc
    other = pc.not_equal(days, pa.scalar(date, pa.date32()))
    bad = np.flatnonzero(pc.fill_null(other, True).to_numpy(zero_copy_only=False))
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{source}: column 'date' holds {days[row].as_py()} in row {row + 1}, not {date}; load "
                        f"each day on its own (or drop the column)")


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_null(t):
        return "null"
    return "other"


# Which source kinds convert to each target kind without guessing.
_ACCEPTS = {
    "int": {"int", "float", "string"},  # a float only when it is whole (Arrow's safe cast checks)
    "float": {"int", "float", "string"},
    "bool": {"bool", "string"},
    "string": {"string", "int"},
    "timestamp": {"timestamp", "date", "string"},
    "date": {"date", "string"},
}


def _convert(col: pa.ChunkedArray, field: pa.Field, table: str, source: str) -> pa.ChunkedArray:
    target = field.type
    if col.type == target:
        return col
    src_kind, dst_kind = _kind(col.type), _kind(target)
    if src_kind == "null":
        return pa.chunked_array([pa.nulls(len(col), target)], target)
    if src_kind not in _ACCEPTS.get(dst_kind, {dst_kind}):
        hint = " (write times as ISO-8601 strings or a timestamp column)" if dst_kind == "timestamp" else ""
        raise DataError(
            f"{source}: column {field.name!r} is {col.type}; table {table!r} declares it {type_name(target)}, "
            f"and {col.type} does not convert to it without guessing{hint}. Convert the column and retry"
        )
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if src_kind == "string" and dst_kind == "timestamp":
        out = _parse_timestamps(arr, field, table, source)
    else:
        out = _cast(arr, target, field, table, source)
    return pa.chunked_array([out], target)


def _cast(arr: pa.Array, target: pa.DataType, field: pa.Field, table: str, source: str,
          expected: str | None = None) -> pa.Array:
    try:
        return pc.cast(arr, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        row = _first_failure(arr, target)
        what = f"value {arr[row].as_py()!r} in row {row + 1}" if row is not None else "a value"
        raise DataError(
            f"{source}: column {field.name!r}: {what} is not a valid {expected or type_name(target)} "
            f"(table {table!r}; {exc}). Fix or drop that row"
        ) from exc


def _first_failure(arr: pa.Array, target: pa.DataType) -> int | None:
    """Index of the first value of ``arr`` that does not cast to ``target``: a bisection over
    casts of slices (about two casts' worth of work), so it agrees with Arrow's own rules."""

    def fails(a: int, b: int) -> bool:
        try:
            pc.cast(arr.slice(a, b - a), target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return True
        return False

    lo, hi = 0, len(arr)
    if hi == 0 or not fails(lo, hi):
        return None
    while hi - lo > 1:  # invariant: arr[lo:hi] holds the first failure
        mid = (lo + hi) // 2
        if fails(lo, mid):
            hi = mid
        else:
            lo = mid
    return lo


def _parse_timestamps(arr: pa.Array, field: pa.Field, table: str, source: str) -> pa.Array:
    """ISO-8601 strings to timestamp[ns, UTC]: with a zone converted to UTC, without one taken as UTC."""
    zoned = pc.fill_null(pc.match_substring_regex(arr, _ZONED), False)
    n_zoned = pc.sum(zoned).as_py() or 0
    naive_type = pa.timestamp("ns")
    what = "ISO-8601 timestamp (e.g. 2026-11-20T14:30:00.123456789Z)"
    if n_zoned == len(arr):
        return _cast(arr, TIMESTAMP, field, table, source, what)
    if n_zoned == 0:
        return _cast(arr, naive_type, field, table, source, what).cast(TIMESTAMP)
    null = pa.scalar(None, arr.type)
    with_zone = _cast(pc.if_else(zoned, arr, null), TIMESTAMP, field, table, source, what)
    without = _cast(pc.if_else(zoned, null, arr), naive_type, field, table, source, what)
    return pc.if_else(zoned, with_zone, without.cast(TIMESTAMP))
