"""rdb.tables: appended batches come back in order, compacted, with bounded overhead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from rdb import tables
from rdb.tables import DayTable, Store
from tickerplant.schema import Registry

SCHEMA = Registry.default()["trade"].schema
DAY = dt.date(2026, 11, 24)


def batch(start: int, n: int) -> pa.RecordBatch:
    idx = np.arange(start, start + n)
    cols = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
    cols["time"] = pa.array(idx.astype("datetime64[ns]"), pa.timestamp("ns", tz="UTC"))
    cols["sym"] = pa.array(np.array(["BTCUSD", "ETHUSD"])[idx % 2])
    cols["price"] = pa.array(idx.astype(np.float64))
    cols["size"] = pa.array(np.ones(n))
    cols["tp_time"] = cols["time"]
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=60))
def test_rows_come_back_in_arrival_order(sizes: list[int]) -> None:
    day = DayTable(SCHEMA)
    start = 0
    for n in sizes:
        day.append(batch(start, n))
        start += n
    table = day.table()
    assert table.num_rows == day.rows == start
    assert table.column("price").to_numpy().tolist() == list(range(start))


def test_small_batches_are_compacted_and_big_ones_kept() -> None:
    day = DayTable(SCHEMA)
    for i in range(tables.COMPACT_BATCHES):
        day.append(batch(i, 1))
    assert len(day.chunks) == 1 and day.pending == []
    big = batch(1000, tables.COMPACT_ROWS)
    day.append(batch(999, 1))
    day.append(big)
    assert day.chunks[-1] is big  # not copied
    assert day.table().column("price").to_numpy()[-1] == 1000 + tables.COMPACT_ROWS - 1


def test_one_row_updates_cost_little_more_than_their_data() -> None:
    day = DayTable(SCHEMA)
    n = 20_000
    for i in range(n):
        day.append(batch(i, 1))
    raw = day.table().combine_chunks().get_total_buffer_size()
    assert day.nbytes <= 1.3 * raw


def test_schema_evolution_mid_day_fills_nulls() -> None:
    day = DayTable(SCHEMA)
    day.append(batch(0, 3))
    wider = SCHEMA.insert(2, pa.field("venue_ts", pa.int64()))
    b = batch(3, 2)
    cols = [*b.columns[:2], pa.array([7, 8], pa.int64()), *b.columns[2:]]
    day.append(pa.RecordBatch.from_arrays(cols, schema=wider))
    table = day.table()
    assert table.schema == wider
    assert table.column("venue_ts").to_pylist() == [None, None, None, 7, 8]


def test_store_snapshot_per_day_and_drop() -> None:
    store = Store()
    store.append(DAY, "trade", batch(0, 5))
    store.append(DAY + dt.timedelta(days=1), "trade", batch(5, 2))
    snap = store.snapshot()
    assert sorted((d, t.num_rows) for d, t in snap["trade"]) == [(DAY, 5), (DAY + dt.timedelta(days=1), 2)]
    assert store.stats()["trade"]["rows"] == 7
    store.drop(DAY)
    assert [d for d, _ in store.snapshot()["trade"]] == [DAY + dt.timedelta(days=1)]
    assert store.day(DAY) == {}
