"""The schema registry: every table, its columns and its version, from one TOML file.

A table's *wire schema* is what publishers send and the log stores: the declared
columns. Its *schema* is what subscribers receive: the wire schema plus ``tp_time``,
the tickerplant's receive time, which travels once per message in the frame header
and is expanded into a column on the way out (:func:`stamp`).

Evolution (DESIGN.md invariant 7): a new version may add nullable columns (anywhere)
and relax a column to nullable; nothing else. Data written under an older version is
conformed to the newer one by name, with nulls for the new columns (:class:`Conformer`).
Anything else is a :class:`SchemaError` whose message says how to migrate.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from tickerplant.exceptions import DataError, SchemaError

TP_TIME = "tp_time"
TIMESTAMP = pa.timestamp("ns", tz="UTC")
TYPES: Mapping[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "timestamp": TIMESTAMP,
    "date": pa.date32(),
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_REQUIRED = {"time": TIMESTAMP, "sym": pa.string()}


def type_name(t: pa.DataType) -> str:
    for name, dtype in TYPES.items():
        if dtype == t:
            return name
    return str(t)


@dataclass(frozen=True)
class TableSchema:
    """One table: its name, version and wire schema (declared columns, in order)."""

    name: str
    version: int
    wire: pa.Schema

    @property
    def schema(self) -> pa.Schema:
        """What subscribers receive: the wire schema plus ``tp_time``."""
        return self.wire.append(pa.field(TP_TIME, TIMESTAMP, nullable=False))

    @functools.cached_property
    def required(self) -> list[str]:
        return [f.name for f in self.wire if not f.nullable]

    @functools.cached_property
    def row_type(self) -> pa.StructType:
        """One row as an Arrow struct (converting row dicts in one call)."""
        return pa.struct(list(self.wire))


class Registry:
    """All tables of one tickerplant, by name."""

    def __init__(self, tables: Iterable[TableSchema], source: str = "<memory>") -> None:
        self.tables: dict[str, TableSchema] = {t.name: t for t in tables}
        self.source = source

    def __contains__(self, name: object) -> bool:
        return name in self.tables

    def __iter__(self) -> Iterator[TableSchema]:
        return iter(self.tables.values())

    def __getitem__(self, name: str) -> TableSchema:
        try:
            return self.tables[name]
        except KeyError:
            raise self.unknown(name) from None

    def unknown(self, name: str) -> DataError:
        """The error for a table that is not declared, naming the ones that are."""
        return DataError(
            f"unknown table {name!r}; tables in {self.source}: {', '.join(sorted(self.tables))}. "
            f"Declare it in the schema file (tick tp --schema FILE)"
        )

    @classmethod
    def default(cls) -> Registry:
        text = resources.files("tickerplant").joinpath("schema.toml").read_text()
        return cls.parse(text, "the default schema")

    @classmethod
    def load(cls, path: str | Path | None) -> Registry:
        if path is None:
            return cls.default()
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> Registry:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"{source}: not valid TOML: {exc}") from exc
        tables = doc.get("tables")
        if not isinstance(tables, dict) or not tables:
            raise SchemaError(f"{source}: declares no tables; add [tables.NAME] sections")
        return cls([_parse_table(name, body, source) for name, body in tables.items()], source)


def _parse_table(name: str, body: object, source: str) -> TableSchema:
    where = f"{source}: table {name!r}"
    if not _NAME.match(name) or name == TP_TIME:
        raise SchemaError(f"{where}: table names are letters, digits and _ (at most 63)")
    if not isinstance(body, dict):
        raise SchemaError(f"{where}: must be a table with `version` and `columns`")
    version = body.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SchemaError(f"{where}: version must be a positive integer, got {version!r}")
    cols = body.get("columns")
    if not isinstance(cols, list) or not cols:
        raise SchemaError(f"{where}: `columns` must be a non-empty list of {{name, type}}")
    fields: list[pa.Field] = []
    for col in cols:
        if not isinstance(col, dict) or "name" not in col or "type" not in col:
            raise SchemaError(f"{where}: each column needs a name and a type, got {col!r}")
        cname, ctype = col["name"], col["type"]
        if not isinstance(cname, str) or not _NAME.match(cname):
            raise SchemaError(f"{where}: bad column name {cname!r}")
        if cname == TP_TIME:
            raise SchemaError(f"{where}: {TP_TIME} is added by the tickerplant; do not declare it")
        if not isinstance(ctype, str) or ctype not in TYPES:
            raise SchemaError(f"{where}: column {cname!r} has unknown type {ctype!r}; use one of {', '.join(TYPES)}")
        if any(f.name == cname for f in fields):
            raise SchemaError(f"{where}: column {cname!r} is declared twice")
        nullable = col.get("nullable", True)
        if not isinstance(nullable, bool):
            raise SchemaError(f"{where}: column {cname!r}: nullable must be true or false, got {nullable!r}")
        fields.append(pa.field(cname, TYPES[ctype], nullable=nullable))
    schema = pa.schema(fields)
    for req, rtype in _REQUIRED.items():
        idx = schema.get_field_index(req)
        if idx < 0 or schema.field(idx).type != rtype:
            raise SchemaError(f"{where}: every table needs a column {req!r} of type {type_name(rtype)}")
    return TableSchema(name, version, schema)


class Conformer:
    """Turns batches of an older (or the same) wire schema into the current one."""

    def __init__(self, source: pa.Schema, target: TableSchema) -> None:
        self.source = source
        self.target = target
        self.identity = source.equals(target.wire)
        # For each target column, the index in the source or -1 for a null fill.
        self._take = [source.get_field_index(f.name) for f in target.wire]

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.identity:
            return batch
        n = batch.num_rows
        cols = [
            batch.column(i) if i >= 0 else pa.nulls(n, f.type)
            for i, f in zip(self._take, self.target.wire, strict=True)
        ]
        return pa.RecordBatch.from_arrays(cols, schema=self.target.wire)


def evolve(source: pa.Schema, source_version: int, target: TableSchema) -> Conformer:
    """A conformer from ``source`` to ``target``, or a SchemaError saying how to migrate."""
    if source.equals(target.wire):
        return Conformer(source, target)
    problems: list[str] = []
    for f in source:
        idx = target.wire.get_field_index(f.name)
        if idx < 0:
            problems.append(f"column {f.name!r} was removed")
            continue
        new = target.wire.field(idx)
        if new.type != f.type:
            problems.append(f"column {f.name!r} changed type {type_name(f.type)} -> {type_name(new.type)}")
        elif f.nullable and not new.nullable:
            problems.append(f"column {f.name!r} became non-nullable")
    for f in target.wire:
        if source.get_field_index(f.name) < 0 and not f.nullable:
            problems.append(f"new column {f.name!r} is not nullable")
    if problems:
        raise SchemaError(
            f"table {target.name!r}: version {target.version} is not a compatible evolution of "
            f"version {source_version} ({'; '.join(problems)}). Only nullable columns may be added. "
            f"To migrate: roll the day first (`tick eod`) so the old log is closed, then keep the old "
            f"columns and add new nullable ones, or declare a new table"
        )
    if target.version <= source_version:
        raise SchemaError(
            f"table {target.name!r}: columns differ from version {source_version} already in use but "
            f"the schema file still says version {target.version}; bump `version` to {source_version + 1}"
        )
    return Conformer(source, target)


def check_wire(received: pa.Schema, table: TableSchema) -> Conformer:
    """Accept a publisher's schema for ``table`` or raise DataError naming the problem."""
    if received.equals(table.wire):
        return Conformer(received, table)
    if len(set(received.names)) != len(received.names):
        dup = next(n for n in received.names if received.names.count(n) > 1)
        raise DataError(f"table {table.name!r}: column {dup!r} is sent twice")
    for f in received:
        idx = table.wire.get_field_index(f.name)
        if idx < 0:
            raise DataError(
                f"table {table.name!r} has no column {f.name!r}; its columns are "
                f"{', '.join(table.wire.names)}"
            )
        want = table.wire.field(idx).type
        if f.type != want:
            raise DataError(
                f"column {table.name}.{f.name} must be {type_name(want)}, got {type_name(f.type)}"
            )
    for name in table.required:
        if received.get_field_index(name) < 0:
            raise DataError(f"table {table.name!r} needs column {name!r}, which is missing")
    return Conformer(received, table)


def stamp(batch: pa.RecordBatch, tp_time: int, schema: pa.Schema) -> pa.RecordBatch:
    """Append the ``tp_time`` column (one value for the whole message) to a wire batch."""
    values = np.full(batch.num_rows, tp_time, dtype=np.int64)
    col = pa.Array.from_buffers(TIMESTAMP, batch.num_rows, [None, pa.py_buffer(values)])
    return pa.RecordBatch.from_arrays([*batch.columns, col], schema=schema)
