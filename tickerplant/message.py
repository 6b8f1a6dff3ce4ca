"""Decoded updates: ``Message(table, seq, time, data)`` and the reader that makes them.

A :class:`UpdReader` follows the SCHEMA frames of one stream (a connection or a log
file) and turns each UPD frame into a :class:`Message` whose ``data`` is a record batch
of the table's current schema, ``tp_time`` included. Given a registry, it conforms
batches written under older schema versions to the registry's (nulls filled); without
one, batches keep the schema the stream declared.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from tickerplant import protocol
from tickerplant.exceptions import ProtocolError
from tickerplant.schema import Conformer, Registry, TableSchema, evolve, stamp


@dataclass(frozen=True, slots=True)
class Message:
    """One update: ``data`` holds its rows, ``seq`` its place in the day, ``time`` the TP's."""

    table: str
    seq: int
    time: int
    data: pa.RecordBatch


class UpdReader:
    """Turns a stream's SCHEMA and UPD frames into messages."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry
        self.tables: dict[str, TableSchema] = {}
        self._source: dict[str, pa.Schema] = {}
        self._conform: dict[str, Conformer] = {}

    def on_schema(self, frame: protocol.Frame) -> TableSchema:
        table, schema = protocol.decode_schema(frame)
        declared = TableSchema(table, frame.seq, schema)
        target = declared
        if self.registry is not None and table in self.registry:
            target = self.registry[table]
        self._source[table] = schema
        self._conform[table] = evolve(schema, frame.seq, target)
        self.tables[table] = target
        return target

    def wire_schema(self, table: str) -> pa.Schema | None:
        """The schema UPD bodies of ``table`` are currently written in."""
        return self._source.get(table)

    def decode(self, frame: protocol.Frame) -> Message:
        table, batch = self.decode_wire(frame)
        return Message(table, frame.seq, frame.time, stamp(batch, frame.time, self.tables[table].schema))

    def decode_wire(self, frame: protocol.Frame) -> tuple[str, pa.RecordBatch]:
        """A UPD's table and rows in the current wire schema (no ``tp_time`` column yet)."""
        table, body = protocol.split_name(frame.payload)
        try:
            source = self._source[table]
        except KeyError:
            raise ProtocolError(f"UPD for table {table!r} before its SCHEMA frame") from None
        try:
            batch = protocol.read_batch(body, source)
        except protocol.ARROW_ERRORS as exc:
            raise ProtocolError(f"UPD seq {frame.seq} for {table!r}: unreadable Arrow batch: {exc}") from exc
        return table, self._conform[table](batch)
