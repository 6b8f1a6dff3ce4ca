"""Today's rows in memory: Arrow chunks per (day, table), appended without a Python object per row.

The RDB appends each update's record batch as it arrives. Small batches (one tick, a few
hundred rows) would cost more in per-batch bookkeeping than in data, and each one keeps
alive the receive buffer it was read from, so they wait in ``pending`` and are
concatenated into one chunk every ``COMPACT_ROWS`` rows or ``COMPACT_BATCHES`` batches;
large batches are kept as they are. A query takes a snapshot — a ``pa.Table`` over the
current chunks, no data copied — under the store's lock, which appends hold only for
a list operation.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pyarrow as pa

COMPACT_ROWS = 65_536
COMPACT_BATCHES = 256


class DayTable:
    """One table's rows for one day, in arrival order."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.chunks: list[pa.RecordBatch] = []
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0

    def append(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(self.schema):
            self._evolve(batch.schema)
        self.rows += batch.num_rows
        if batch.num_rows >= COMPACT_ROWS:
            self.compact()  # keep arrival order: what is pending goes first
            self.chunks.append(batch)
            return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= COMPACT_ROWS or len(self.pending) >= COMPACT_BATCHES:
            self.compact()

    def compact(self) -> None:
        if self.pending:
            self.chunks.append(pa.concat_batches(self.pending))
            self.pending = []
            self.pending_rows = 0

    def table(self) -> pa.Table:
        """A zero-copy snapshot of every row so far."""
        return pa.Table.from_batches([*self.chunks, *self.pending], schema=self.schema)

    @property
    def nbytes(self) -> int:
        """Bytes of Arrow buffers held (what the rows cost in memory)."""
        held: int = sum(b.get_total_buffer_size() for b in [*self.chunks, *self.pending])
        return held

    def _evolve(self, schema: pa.Schema) -> None:
        """The TP restarted with a newer schema version mid-day: conform the rows held so far.

        Evolution only adds nullable columns (DESIGN.md invariant 7), so the old rows get
        nulls for the new ones.
        """
        old = self.table()
        columns = [
            old.column(f.name) if f.name in old.column_names else pa.nulls(old.num_rows, f.type) for f in schema
        ]
        merged = pa.Table.from_arrays(columns, schema=schema).combine_chunks()
        self.schema = schema
        self.chunks = merged.to_batches()
        self.pending, self.pending_rows = [], 0


class Store:
    """Every day's tables held in memory (today, plus a day being written at end of day)."""

    def __init__(self) -> None:
        self.days: dict[dt.date, dict[str, DayTable]] = {}
        self.lock = threading.Lock()

    def append(self, date: dt.date, table: str, batch: pa.RecordBatch) -> None:
        with self.lock:
            tables = self.days.setdefault(date, {})
            day = tables.get(table)
            if day is None:
                day = tables[table] = DayTable(batch.schema)
            day.append(batch)

    def snapshot(self) -> dict[str, list[tuple[dt.date, pa.Table]]]:
        """Table name -> [(date, rows)] for every day held: what the query engine sees."""
        out: dict[str, list[tuple[dt.date, pa.Table]]] = {}
        with self.lock:
            for date, tables in self.days.items():
                for name, day in tables.items():
                    out.setdefault(name, []).append((date, day.table()))
        return out

    def day(self, date: dt.date) -> dict[str, pa.Table]:
        """One day's tables (snapshots), for the end-of-day writer."""
        with self.lock:
            return {name: day.table() for name, day in self.days.get(date, {}).items()}

    def drop(self, date: dt.date) -> None:
        with self.lock:
            self.days.pop(date, None)

    def __iter__(self) -> Iterator[tuple[dt.date, str, DayTable]]:
        with self.lock:
            items = [(d, n, t) for d, tables in self.days.items() for n, t in tables.items()]
        return iter(items)

    def stats(self) -> dict[str, dict[str, int]]:
        """Rows and Arrow bytes per table (summed over the days held)."""
        out: dict[str, dict[str, int]] = {}
        for _, name, day in self:
            entry = out.setdefault(name, {"rows": 0, "bytes": 0})
            entry["rows"] += day.rows
            entry["bytes"] += day.nbytes
        return out
