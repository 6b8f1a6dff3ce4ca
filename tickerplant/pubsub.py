"""Subscriptions and fan-out: who gets which update (kdb+ ``u.q``).

Knows nothing of logs, clocks or sockets: a subscriber is anything with ``send``.
A subscription names tables and, optionally, syms. Fan-out of one commit builds each
distinct payload once: subscribers with the same tables and no sym filter share one
byte string; a sym filter is applied once per update per distinct filter (not per
subscriber), and skipped when every row, or none, matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tickerplant import protocol
from tickerplant.message import UpdReader
from tickerplant.protocol import Frame
from tickerplant.schema import TP_TIME, Registry


class Sink(Protocol):
    def send(self, data: bytes | bytearray | memoryview) -> None: ...


class Subscription:
    __slots__ = ("conn", "syms", "tables")

    def __init__(self, conn: Any, tables: frozenset[str], syms: frozenset[str] | None) -> None:
        self.conn = conn
        self.tables = tables
        self.syms = syms

    @property
    def key(self) -> tuple[frozenset[str], frozenset[str] | None]:
        return self.tables, self.syms


class Update(Protocol):
    """What fan-out needs of a logged update."""

    table: str
    frame: Frame
    batch: pa.RecordBatch


def sym_filter(batch: pa.RecordBatch, value_set: pa.Array) -> pa.RecordBatch | None:
    """The rows whose sym is in ``value_set``, and rows with no sym: ``batch`` itself if all
    match, None if none do. A null sym means "about no sym in particular" (a feed_event for a
    whole connection: a disconnect, a gap across every book), which concerns every subscriber."""
    sym = batch.column("sym")
    mask = pc.is_in(sym, value_set=value_set)
    if sym.null_count:
        mask = pc.or_(mask, pc.is_null(sym))
    hits = mask.true_count
    if hits == batch.num_rows:
        return batch
    if hits == 0:
        return None
    return batch.filter(mask)


class Topic:
    """The live subscribers and the fan-out of committed updates."""

    def __init__(self) -> None:
        self.subs: list[Subscription] = []
        self._value_sets: dict[frozenset[str], pa.Array] = {}

    def add(self, sub: Subscription) -> None:
        if sub not in self.subs:
            self.subs.append(sub)

    def remove(self, sub: Subscription) -> None:
        if sub in self.subs:
            self.subs.remove(sub)

    def value_set(self, syms: frozenset[str]) -> pa.Array:
        vs = self._value_sets.get(syms)
        if vs is None:
            vs = self._value_sets[syms] = pa.array(sorted(syms), pa.string())
        return vs

    def fan_out(
        self, updates: Sequence[Update], pieces: Sequence[bytes | memoryview]
    ) -> Iterator[tuple[Any, list[bytes | memoryview]]]:
        """``(conn, buffers)`` for every live subscriber that has something in this commit.

        ``pieces[2*i]`` and ``pieces[2*i+1]`` are update ``i``'s header and payload, as
        logged; subscribers get those very buffers (written with ``writelines``, no copy)
        unless a sym filter cuts the batch.
        """
        built: dict[tuple[frozenset[str], frozenset[str] | None], list[bytes | memoryview]] = {}
        for sub in list(self.subs):
            data = built.get(sub.key)
            if data is None:
                data = built[sub.key] = self._build(sub, updates, pieces)
            if data:
                yield sub.conn, data

    def _build(
        self, sub: Subscription, updates: Sequence[Update], pieces: Sequence[bytes | memoryview]
    ) -> list[bytes | memoryview]:
        if sub.syms is None and all(u.table in sub.tables for u in updates):
            return list(pieces)  # every update of this commit is for this subscriber
        out: list[bytes | memoryview] = []
        for i, upd in enumerate(updates):
            if upd.table not in sub.tables:
                continue
            if sub.syms is None:
                out += pieces[2 * i : 2 * i + 2]
                continue
            part = sym_filter(upd.batch, self.value_set(sub.syms))
            if part is upd.batch:
                out += pieces[2 * i : 2 * i + 2]
            elif part is not None:
                out.append(protocol.encode_upd(upd.table, part, upd.frame.seq, upd.frame.time))
        return out

    def catchup_reader(self, registry: Registry, schemas: dict[str, bytes]) -> CatchupReader:
        return CatchupReader(self, registry, schemas.values())


class CatchupReader:
    """Turns logged UPD frames into what one subscriber should receive during catch-up.

    A frame written under the table's current schema and passing the sym filter whole
    is sent as logged; one written under an older schema version is conformed first.
    """

    def __init__(self, topic: Topic, registry: Registry, schema_frames: Iterable[bytes]) -> None:
        self.topic = topic
        self.registry = registry
        self.reader = UpdReader(registry)
        for raw in schema_frames:
            self.on_schema(protocol.decode_all(raw)[0][0])

    def on_schema(self, frame: Frame) -> None:
        self.reader.on_schema(frame)

    def frame_for(self, sub: Subscription, frame: Frame) -> bytes | None:
        table, _ = protocol.split_name(frame.payload)
        if table not in sub.tables:
            return None
        source = self.reader.wire_schema(table)
        current = table in self.registry and source is not None and source.equals(self.registry[table].wire)
        if current and sub.syms is None:
            return frame.to_bytes()
        batch = self.reader.decode(frame).data.drop_columns([TP_TIME])
        if sub.syms is not None:
            part = sym_filter(batch, self.topic.value_set(sub.syms))
            if part is None:
                return None
            if part is batch and current:
                return frame.to_bytes()
            batch = part
        return protocol.encode_upd(table, batch, frame.seq, frame.time)
