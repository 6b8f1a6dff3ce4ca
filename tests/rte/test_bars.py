"""Bars and VWAP engines: tables and columns as declared, values against pandas, late rows, end of day, a real TP."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rte.bars import BAR_SCHEMA, LATE_SCHEMA, VWAP_SCHEMA, BarEngine, VwapEngine, bar_table_name
from rte.engine import Output, RunStats, run
from tests.conftest import TPProcess
from tickerplant import Message, Publisher, admin
from tickerplant.schema import Registry, stamp

S = 1_000_000_000
T0 = 1_700_000_000 * S
REGISTRY = Registry.default()
TRADE = REGISTRY["trade"]


def message(seq: int, tp_time: int, t: Any, sym: list[str], price: Any, size: Any) -> Message:
    n = len(sym)
    wire = pa.RecordBatch.from_pydict({
        "time": pa.array(np.asarray(t, np.int64), pa.timestamp("ns", tz="UTC")), "sym": sym,
        "exchange": ["x"] * n, "price": np.asarray(price, float), "size": np.asarray(size, float),
        "side": [None] * n, "trade_id": [None] * n, "seq": pa.nulls(n, pa.int64()),
        "recv_time": pa.nulls(n, pa.timestamp("ns", tz="UTC")), "venue_sym": [None] * n,
    }, schema=TRADE.wire)
    return Message("trade", seq, tp_time, stamp(wire, tp_time, TRADE.schema))


def random_trades(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"time": T0 + np.sort(rng.integers(0, 600 * S, n)), "sym": rng.choice(["BTC", "ETH"], n),
                         "price": np.round(rng.uniform(90, 110, n), 2), "size": rng.integers(1, 9, n).astype(float)})


def drive(engine: BarEngine | VwapEngine, df: pd.DataFrame, chunk: int) -> dict[str, pd.DataFrame]:
    """Feed ``df`` in updates of ``chunk`` rows (tp_time = the last event time), then end the day."""
    outs: list[Output] = []
    for seq, lo in enumerate(range(0, len(df), chunk), start=1):
        part = df.iloc[lo:lo + chunk]
        outs += engine.on_upd(message(seq, int(part.time.iloc[-1]), part.time, part.sym.tolist(), part.price,
                                      part["size"]))
    outs += engine.on_eod("2023-11-14")
    tables: dict[str, list[pa.RecordBatch]] = {}
    for table, rows in outs:
        assert table in engine.outputs
        tables.setdefault(table, []).append(rows)
    return {t: pa.Table.from_batches(b).to_pandas() for t, b in tables.items()}


def as_ns(col: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(col).as_unit("ns").asi8


def test_bar_table_names() -> None:
    assert bar_table_name(S) == "bar_1s"
    assert bar_table_name(60 * S) == "bar_1m"
    assert bar_table_name(300 * S) == "bar_5m"
    assert bar_table_name(3600 * S) == "bar_1h"
    assert bar_table_name(90 * S) == "bar_90s"
    assert bar_table_name(1500 * 1_000_000) == "bar_1500ms"
    with pytest.raises(ValueError):
        bar_table_name(0)
    assert BarEngine(60 * S).outputs == ("bar_1m", "late_data")


@pytest.mark.parametrize(("table", "schema"), [("bar_1s", BAR_SCHEMA), ("bar_1m", BAR_SCHEMA), ("vwap", VWAP_SCHEMA),
                                               ("late_data", LATE_SCHEMA)])
def test_output_columns_are_the_declared_ones(table: str, schema: pa.Schema) -> None:
    declared = REGISTRY[table].wire
    want = pa.schema([f for f in declared if f.name != "src_seq"])
    assert schema.equals(want), f"{table}: {schema} != {want}"


@pytest.mark.parametrize("chunk", [1, 13, 10_000])
def test_bars_match_pandas(chunk: int) -> None:
    df = random_trades(1500, seed=3)
    got = drive(BarEngine(60 * S, bound_ns=0), df, chunk)
    assert set(got) == {"bar_1m"}  # in order: nothing late
    bars = got["bar_1m"].sort_values(["sym", "time"]).reset_index(drop=True)
    g = df.assign(start=df.time // (60 * S) * (60 * S), pv=df.price * df["size"]).groupby(["sym", "start"])
    want = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                 volume=("size", "sum"), pv=("pv", "sum"), count=("price", "size")).reset_index()
    assert bars.sym.tolist() == want.sym.tolist()
    np.testing.assert_array_equal(as_ns(bars.time), want.start.to_numpy())
    np.testing.assert_array_equal(as_ns(bars.window_end), want.start.to_numpy() + 60 * S)
    for col in ("open", "high", "low", "close", "volume", "count"):
        np.testing.assert_array_equal(bars[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(bars.vwap.to_numpy(), (want.pv / want.volume).to_numpy(), rtol=1e-12)
    assert (bars.revision == 0).all()


def test_vwap_matches_pandas_window_enumeration() -> None:
    window, slide = 300 * S, 60 * S
    df = random_trades(1000, seed=4)
    got = drive(VwapEngine(window, slide, bound_ns=0), df, 50)["vwap"].sort_values(["sym", "time"])
    parts = [df.assign(start=df.time // slide * slide - m * slide) for m in range(window // slide)]
    every = pd.concat(parts)
    g = every.assign(pv=every.price * every["size"]).groupby(["sym", "start"])
    want = g.agg(volume=("size", "sum"), pv=("pv", "sum"), count=("price", "size")).reset_index()
    assert got.sym.tolist() == want.sym.tolist()
    np.testing.assert_array_equal(as_ns(got.time), want.start.to_numpy())
    np.testing.assert_array_equal(as_ns(got.window_end), want.start.to_numpy() + window)
    np.testing.assert_array_equal(got["count"].to_numpy(), want["count"].to_numpy())
    np.testing.assert_array_equal(got.volume.to_numpy(), want.volume.to_numpy())  # integer sizes: exact
    np.testing.assert_allclose(got.vwap.to_numpy(), (want.pv / want.volume).to_numpy(), rtol=1e-12)


def test_late_rows_go_to_late_data_and_lateness_refires() -> None:
    engine = VwapEngine(2 * S, S, lateness_ns=3 * S, bound_ns=S)
    out = engine.on_upd(message(1, T0, [T0 + S // 2, T0 + 4 * S], ["A", "A"], [10.0, 20.0], [1.0, 1.0]))
    assert [t for t, _ in out] == ["vwap"]
    first = out[0][1].to_pylist()  # watermark T0 + 3s: windows [-1s, 1s) and [0, 2s) fired
    assert [(r["revision"], r["count"], r["vwap"]) for r in first] == [(0, 1, 10.0), (0, 1, 10.0)]
    # 1.5 s: [0, 2s) is past its end but within the lateness; [1s, 3s) is new and already past its end
    out = engine.on_upd(message(2, T0 + 1, [T0 + 3 * S // 2], ["A"], [30.0], [3.0]))
    rows = out[0][1].to_pylist()
    assert [(r["time"].timestamp(), r["revision"], r["count"], r["vwap"]) for r in rows] == [
        ((T0) / S, 1, 2, 25.0), ((T0 + S) / S, 0, 1, 30.0)]
    # the watermark moves to 7s: [0, 2s) is past end + lateness (5s) and the next row for it is late
    engine.on_upd(message(3, T0 + 2, [T0 + 8 * S], ["A"], [1.0], [1.0]))
    out = engine.on_upd(message(4, T0 + 3, [T0 + S // 4], ["A"], [5.0], [2.0]))
    assert [t for t, _ in out] == ["late_data"]
    late = out[0][1]
    assert late.schema.equals(LATE_SCHEMA)
    (row,) = late.to_pylist()
    assert (row["sym"], row["engine"], row["source_table"], row["price"], row["size"]) == ("A", "vwap", "trade", 5.0,
                                                                                          2.0)
    assert pd.Timestamp(row["time"]).value == T0 + S // 4
    assert pd.Timestamp(row["watermark"]).value == T0 + 7 * S
    assert engine.late_count == 1


def test_end_of_day_flushes_and_other_tables_are_ignored() -> None:
    engine = BarEngine(S, bound_ns=10 * S)
    assert engine.on_upd(message(1, T0, [T0, T0 + 2 * S], ["A", "B"], [1.0, 2.0], [1.0, 1.0])) == []
    quote = Message("quote", 2, T0, pa.record_batch({"x": [1]}))
    assert engine.on_upd(quote) == []
    ((table, rows),) = engine.on_eod("2023-11-14")
    assert table == "bar_1s" and rows.schema.equals(BAR_SCHEMA)
    assert rows.column("sym").to_pylist() == ["A", "B"]
    assert engine.on_eod("2023-11-15") == []  # the new day starts empty


@pytest.mark.parametrize("make", [lambda: BarEngine(S, lateness_ns=2 * S, bound_ns=S // 2),
                                  lambda: VwapEngine(3 * S, S, lateness_ns=S, bound_ns=S // 2)], ids=["bars", "vwap"])
def test_small_updates_publish_what_the_batch_path_publishes(make: Any) -> None:
    """1- to 3-row updates take the row path; forced through the batch path they publish the same batches."""
    rng = np.random.default_rng(8)
    n = 1500
    df = pd.DataFrame({"time": T0 + np.cumsum(rng.integers(0, S // 20, n)) - rng.integers(0, 6 * S, n),
                       "sym": rng.choice(["BTC", "ETH", "SOL", "XRP"], n),
                       "price": np.round(rng.uniform(90, 110, n), 2), "size": rng.integers(1, 9, n).astype(float)})
    ends = np.cumsum(rng.integers(1, 4, n))
    chunks = [0, *ends[ends < n].tolist(), n]
    outs: dict[bool, list[tuple[int, str, pa.RecordBatch]]] = {}
    for row_path in (True, False):
        engine = make()
        engine.windows.scalar_rows = 10**9 if row_path else 0
        outs[row_path] = []
        for seq, (lo, hi) in enumerate(itertools.pairwise(chunks), start=1):
            part = df.iloc[lo:hi]
            outs[row_path] += [(seq, *o) for o in engine.on_upd(
                message(seq, T0 + seq * S // 10, part.time, part.sym.tolist(), part.price, part["size"]))]
        outs[row_path] += [(0, *o) for o in engine.on_eod("2023-11-14")]
    assert [(seq, t) for seq, t, _ in outs[True]] == [(seq, t) for seq, t, _ in outs[False]]
    tables = {t for _, t, _ in outs[True]}
    assert tables == {make().table, "late_data"}  # windows fired and re-fired, and some rows were late
    for (_, table, got), (_, _, want) in zip(outs[True], outs[False], strict=True):
        assert got.schema.equals(want.schema)
        sums = [c for c in ("volume", "vwap") if c in got.schema.names]  # summation order: last bits only
        assert got.drop_columns(sums).equals(want.drop_columns(sums)), table
        for c in sums:
            np.testing.assert_allclose(got.column(c).to_numpy(zero_copy_only=False),
                                       want.column(c).to_numpy(zero_copy_only=False), rtol=1e-12)
    assert any(r > 0 for _, t, b in outs[True] if t != "late_data" for r in b.column("revision").to_pylist())


def test_bars_from_a_real_tickerplant(tp: TPProcess, collect: Any) -> None:
    """Trades published out of order go through a TP; bars and late rows from its messages are as expected."""
    sub = collect(tp.address, tables=["trade"])
    sub.wait_subscribed()
    df = random_trades(400, seed=5)
    rng = np.random.default_rng(5)
    arrival = df.iloc[np.argsort(df.time.to_numpy() + rng.integers(0, 2 * S, len(df)), kind="stable")]
    stragglers = df.iloc[:5].assign(time=df.time.iloc[:5] - 120 * S)  # far behind: late for every window
    with Publisher(tp.address, name="test feed") as pub:
        for lo in range(0, len(arrival), 40):
            part = arrival.iloc[lo:lo + 40]
            pub.publish("trade", {c: part[c].to_numpy() if c != "sym" else part[c].tolist() for c in part})
        pub.publish("trade", {c: stragglers[c].to_numpy() if c != "sym" else stragglers[c].tolist()
                              for c in stragglers})
        pub.flush()
    sub.wait_rows(len(df) + 5)
    engine = BarEngine(30 * S, bound_ns=2 * S, table="bar_1m")
    outs: list[Output] = []
    for m in sub.messages:
        outs += engine.on_upd(m)
    outs += engine.on_eod("today")
    late = pa.Table.from_batches([r for t, r in outs if t == "late_data"]).to_pandas()
    assert len(late) == 5 and engine.late_count == 5
    np.testing.assert_array_equal(np.sort(as_ns(late.time)), np.sort(stragglers.time.to_numpy()))
    bars = pa.Table.from_batches([r for t, r in outs if t == "bar_1m"]).to_pandas()
    assert (bars.revision == 0).all()
    want = df.assign(start=df.time // (30 * S) * (30 * S)).groupby(["sym", "start"]).agg(
        open=("price", "first"), close=("price", "last"), count=("price", "size"), volume=("size", "sum"))
    bars = bars.assign(start=as_ns(bars.time)).set_index(["sym", "start"]).sort_index()
    pd.testing.assert_frame_equal(bars[["open", "close", "count", "volume"]], want, check_dtype=False)


def _run_until(engine: BarEngine | VwapEngine, address: str, target: int, timeout: float = 30.0) -> RunStats:
    """``engine`` under the runner against a real TP until it has handled input seq ``target``; then stop."""

    async def main() -> RunStats:
        stop, stats = asyncio.Event(), RunStats()
        task = asyncio.get_running_loop().create_task(run(engine, address, stop=stop, stats=stats))
        deadline = time.monotonic() + timeout
        while not task.done() and not (stats.replayed and stats.seq >= target):
            assert time.monotonic() < deadline, f"engine did not reach seq {target}: {stats}"
            await asyncio.sleep(0.01)
        stop.set()
        return await task

    return asyncio.run(main())


def test_bar_engine_under_the_runner_publishes_once(tp: TPProcess, collect: Any) -> None:
    """Bars and late rows published through the TP equal the engine's own output, tagged with src_seq, and a
    restarted engine (replaying the log) publishes nothing twice."""
    df = random_trades(300, seed=6)
    rng = np.random.default_rng(6)
    arrival = df.iloc[np.argsort(df.time.to_numpy() + rng.integers(0, 3 * S, len(df)), kind="stable")]
    with Publisher(tp.address, name="test feed") as pub:
        for lo in range(0, len(arrival), 25):
            part = arrival.iloc[lo:lo + 25]
            pub.publish("trade", {c: part[c].to_numpy() if c != "sym" else part[c].tolist() for c in part})
        late = df.iloc[:3].assign(time=df.time.iloc[-1] - 60 * S)  # a minute behind: late for every window
        pub.publish("trade", {c: late[c].to_numpy() if c != "sym" else late[c].tolist() for c in late})
        pub.flush()
    target = admin.stats(tp.address)["seq"]
    first = _run_until(BarEngine(10 * S, bound_ns=S, table="bar_1s"), tp.address, target)
    again = _run_until(BarEngine(10 * S, bound_ns=S, table="bar_1s"), tp.address, target)
    assert sum(again.published.values()) == 0 and again.suppressed == first.published
    assert first.published.get("late_data", 0) >= 3

    sub = collect(tp.address, tables=["trade", "bar_1s", "late_data"], from_seq=1)
    sub.wait(lambda c: (c.sub.position or 0) >= admin.stats(tp.address)["seq"], 20.0, "the whole log")
    logged = sub.messages
    local = BarEngine(10 * S, bound_ns=S, table="bar_1s")
    want: dict[str, list[pa.Table]] = {"bar_1s": [], "late_data": []}
    for m in logged:
        if m.table == "trade":
            for table, rows in local.on_upd(m):
                want[table].append(pa.Table.from_batches([rows]).append_column(
                    "src_seq", pa.array(np.full(rows.num_rows, m.seq, np.int64))))
    for table in ("bar_1s", "late_data"):
        got = pa.Table.from_batches([m.data for m in logged if m.table == table]).drop_columns(["tp_time"])
        expected = pa.concat_tables(want[table])
        assert got.num_rows == expected.num_rows == first.published[table]
        for name in expected.column_names:
            assert got.column(name).to_pylist() == expected.column(name).to_pylist(), (table, name)


def test_windowed_engines_share_late_data_without_hiding_each_others_rows(tp: TPProcess) -> None:
    """late_data has one publisher per engine name: a vwap engine's late rows are not taken for the bar
    engine's (logged earlier, with larger src_seq) when it resumes, and each resumes on its own rows."""
    df = random_trades(200, seed=7)
    with Publisher(tp.address, name="test feed") as pub:
        pub.publish("trade", {c: df[c].to_numpy() if c != "sym" else df[c].tolist() for c in df})
        late = df.iloc[:3].assign(time=df.time.iloc[-1] - 60 * S)
        pub.publish("trade", {c: late[c].to_numpy() if c != "sym" else late[c].tolist() for c in late})
        pub.publish("trade", {c: df[c].to_numpy()[-1:] + (60 * S if c == "time" else 0) if c != "sym"
                              else df[c].tolist()[-1:] for c in df})  # moves the watermark on after them
        pub.flush()
    target = admin.stats(tp.address)["seq"]
    bars = _run_until(BarEngine(10 * S, bound_ns=S, table="bar_1s"), tp.address, target)
    vwap = _run_until(VwapEngine(10 * S, 5 * S, bound_ns=S), tp.address, target)
    assert bars.published["late_data"] == 3 and vwap.published["late_data"] == 3
    assert not vwap.suppressed
    again = _run_until(VwapEngine(10 * S, 5 * S, bound_ns=S), tp.address, target)
    assert sum(again.published.values()) == 0 and again.suppressed == vwap.published
