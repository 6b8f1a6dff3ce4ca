"""rte.indicators against independent oracles: TA-Lib (EMA, RSI, bit for bit), pandas rolling with time offsets
(VWAP, realized volatility, spread z-scores), and itself (streaming in any chunks == one batch, bit for bit).

The engines are also driven by what a real TP publishes and logs (``tp`` fixture).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from rte.indicators import (
    Ema,
    IndicatorEngine,
    KeyIndex,
    RealizedVol,
    RollingSums,
    Rsi,
    SlidingVwap,
    sliding_vwap,
)
from rte.units import parse_duration
from tests.conftest import Collector
from tickerplant import Publisher, Subscriber
from tickerplant.message import Message
from tickerplant.schema import Registry

REGISTRY = Registry.default()
T0 = 1_700_000_000_000_000_000
MIN = 60_000_000_000
SETTINGS = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- helpers


def walk(rng: np.random.Generator, n: int, start: float = 100.0, step: float = 1e-3) -> np.ndarray:
    return np.asarray(start * np.exp(np.cumsum(rng.normal(0, step, n))), dtype=np.float64)


def same(a: np.ndarray, b: np.ndarray) -> None:
    """Bit for bit, NaN where NaN."""
    assert a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True), np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))[:10]


def chunks(n: int, cuts: list[int]) -> list[slice]:
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def batch(table: str, columns: dict[str, Any], tp_time: int = 0) -> pa.RecordBatch:
    """A record batch of ``table``'s subscriber schema (tp_time included); absent columns null."""
    schema = REGISTRY[table].schema
    n = len(next(iter(columns.values())))
    arrays = []
    for field in schema:
        if field.name == "tp_time":
            arrays.append(pa.array(np.full(n, tp_time, dtype=np.int64)).view(field.type))
        elif field.name in columns:
            value = columns[field.name]
            if pa.types.is_timestamp(field.type):
                arrays.append(pa.array(np.asarray(value, dtype=np.int64)).view(field.type))
            else:
                arrays.append(pa.array(value, type=field.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def pandas_rolling_sum(times: np.ndarray, values: np.ndarray, window_ns: int) -> np.ndarray:
    """pandas' rolling sum over ``(t - window, t]`` on the running maximum of ``times`` (the module's rule)."""
    frame = pd.DataFrame({"t": pd.to_datetime(np.maximum.accumulate(times)), "v": values})
    return frame.rolling(pd.Timedelta(window_ns, "ns"), on="t")["v"].sum().to_numpy()


# --------------------------------------------------------------------------- TA-Lib: EMA and RSI, bit for bit

EDGE_CASES: list[tuple[str, list[float]]] = [
    ("flat", [5.0] * 40),
    ("flat then move", [5.0] * 20 + [5.5, 5.25, 6.0] * 5),
    ("short", [1.0, 2.0, 3.0]),
    ("leading NaN", [math.nan] * 4 + list(np.linspace(10, 12, 40))),
    ("NaN in the middle", [*np.linspace(10, 12, 25), math.nan, *np.linspace(12, 11, 20)]),
    ("NaN in the seed", [10.0, 11.0, math.nan, *np.linspace(12, 13, 30)]),
    ("all NaN", [math.nan] * 30),
    ("gap", [100.0] * 10 + [150.0] + [150.0] * 10 + [90.0] * 10),
    ("tiny moves", list(1.0 + 1e-12 * np.arange(40) % 3)),
    ("monotone up", list(np.arange(1.0, 41.0))),
    ("monotone down", list(np.arange(40.0, 0.0, -1.0))),
]


@pytest.mark.parametrize("period", [2, 5, 14, 30])
@pytest.mark.parametrize(("name", "prices"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_ema_rsi_edge_cases_equal_talib(name: str, prices: list[float], period: int) -> None:
    x = np.array(prices, dtype=np.float64)
    keys = np.zeros(x.shape[0], dtype=np.int64)
    same(Ema(period).update(keys, x), talib.EMA(x, timeperiod=period))
    same(Rsi(period).update(keys, x), talib.RSI(x, timeperiod=period))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), period=st.integers(2, 40),
       step=st.sampled_from([1e-4, 1e-2, 0.5]), scale=st.sampled_from([1e-3, 1.0, 5e4]))
def test_ema_rsi_random_walks_equal_talib(seed: int, n: int, period: int, step: float, scale: float) -> None:
    x = walk(np.random.default_rng(seed), n, scale, step)
    keys = np.zeros(n, dtype=np.int64)
    same(Ema(period).update(keys, x), talib.EMA(x, timeperiod=period))
    same(Rsi(period).update(keys, x), talib.RSI(x, timeperiod=period))


def test_interleaved_syms_each_equal_talib_on_their_own_series() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    keys = rng.integers(0, 7, n).astype(np.int64)
    x = walk(rng, n, 50.0, 1e-2)
    ema, rsi = Ema(20).update(keys, x), Rsi(14).update(keys, x)
    for k in range(7):
        mine = keys == k
        same(ema[mine], talib.EMA(x[mine], timeperiod=20))
        same(rsi[mine], talib.RSI(x[mine], timeperiod=14))


def test_periods_outside_talib_range_are_refused() -> None:
    with pytest.raises(ValueError, match="TA-Lib accepts 2"):
        Rsi(1)
    with pytest.raises(ValueError, match="TA-Lib accepts 2"):
        Ema(100_001)


# --------------------------------------------------------------------------- pandas: VWAP and realized volatility


def trade_series(seed: int, n: int, syms: int, gap_every: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dt = rng.choice([0, 1, 5, 30, 200], size=n, p=[0.2, 0.3, 0.3, 0.15, 0.05]) * 1_000_000_000
    if gap_every:
        dt[::gap_every] += 20 * MIN  # longer than the window: every window empties
    return {"key": rng.integers(0, syms, n).astype(np.int64), "time": T0 + np.cumsum(dt).astype(np.int64),
            "price": walk(rng, n, 100.0, 1e-3), "size": rng.choice([1.0, 0.5, 2.0, 0.013, 7.25], n)}


def oracle_vwap(s: dict[str, np.ndarray], window_ns: int) -> np.ndarray:
    out = np.empty(s["key"].shape[0])
    for k in np.unique(s["key"]):
        rows = s["key"] == k
        pq = pandas_rolling_sum(s["time"][rows], s["price"][rows] * s["size"][rows], window_ns)
        q = pandas_rolling_sum(s["time"][rows], s["size"][rows], window_ns)
        out[rows] = pq / q
    return out


def oracle_vol(s: dict[str, np.ndarray], window_ns: int) -> np.ndarray:
    out = np.empty(s["key"].shape[0])
    for k in np.unique(s["key"]):
        rows = s["key"] == k
        p = pd.Series(s["price"][rows])
        r = np.log(p / p.shift(1)).to_numpy()
        out[rows] = np.sqrt(np.clip(pandas_rolling_sum(s["time"][rows], r * r, window_ns), 0, None))
    return out


@pytest.mark.parametrize("gap_every", [0, 97])
def test_sliding_vwap_equals_pandas_rolling(gap_every: int) -> None:
    s = trade_series(1, 6000, 5, gap_every)
    got = sliding_vwap(s["key"], s["time"], s["price"], s["size"], 5 * MIN)
    np.testing.assert_allclose(got, oracle_vwap(s, 5 * MIN), rtol=1e-12, atol=0)


@pytest.mark.parametrize("gap_every", [0, 97])
def test_realized_vol_equals_pandas_rolling(gap_every: int) -> None:
    s = trade_series(2, 6000, 5, gap_every)
    got = RealizedVol(5 * MIN).update(s["key"], s["time"], s["price"])
    want = oracle_vol(s, 5 * MIN)
    assert np.array_equal(np.isnan(got), np.isnan(want))  # null exactly where pandas has no return
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)


def test_windows_with_many_rows_and_nan_values_equal_pandas() -> None:
    """Thousands of rows in one window (the rings grow and the pool is compacted) and NaN values (skipped)."""
    rng = np.random.default_rng(3)
    n = 20_000
    keys = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 40, n)).astype(np.int64)  # one hot key, many cold
    times = T0 + np.cumsum(rng.integers(0, 20_000_000, n)).astype(np.int64)
    values = rng.normal(0, 1, n)
    values[rng.random(n) < 0.05] = np.nan
    sums, nobs = RollingSums(MIN, 1).update(keys, times, values.reshape(1, -1))
    for k in np.unique(keys):
        rows = keys == k
        want = pandas_rolling_sum(times[rows], values[rows], MIN)
        np.testing.assert_allclose(sums[0][rows][nobs[0][rows] > 0], want[nobs[0][rows] > 0], rtol=1e-9,
                                   atol=1e-12)
        assert np.array_equal(np.isnan(want), nobs[0][rows] == 0)


def test_time_going_back_counts_at_the_latest_time_seen() -> None:
    times = T0 + np.array([0, 10, 5, 20, 3, 400, 390, 700], dtype=np.int64) * 1_000_000_000
    price = np.array([10.0, 11, 12, 13, 14, 15, 16, 17])
    size = np.ones(8)
    keys = np.zeros(8, dtype=np.int64)
    got = sliding_vwap(keys, times, price, size, 5 * MIN)
    want = pandas_rolling_sum(times, price, 5 * MIN) / pandas_rolling_sum(times, size, 5 * MIN)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[6] == 15.5  # t=390s counts at 400s: the window (100s, 400s] holds 15 and 16


def test_window_is_open_on_the_left() -> None:
    keys = np.zeros(3, dtype=np.int64)
    times = np.array([0, MIN, 2 * MIN], dtype=np.int64)
    got = sliding_vwap(keys, times, np.array([1.0, 2.0, 4.0]), np.ones(3), MIN)
    assert got.tolist() == [1.0, 2.0, 4.0]  # a row exactly one window old is out


# --------------------------------------------------------------------------- streaming == batch, bit for bit


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_streaming_in_any_chunks_equals_one_batch(seed: int, cuts: list[int]) -> None:
    s = trade_series(seed, 1500, 4, gap_every=211)
    s["price"][np.random.default_rng(seed).random(1500) < 0.01] = np.nan
    n = s["key"].shape[0]
    whole = {
        "rsi": Rsi(14).update(s["key"], s["price"]),
        "ema": Ema(9).update(s["key"], s["price"]),
        "vwap": SlidingVwap(MIN).update(s["key"], s["time"], s["price"], s["size"]),
        "vol": RealizedVol(MIN).update(s["key"], s["time"], s["price"]),
    }
    rsi, ema, vwap, vol = Rsi(14), Ema(9), SlidingVwap(MIN), RealizedVol(MIN)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in whole}
    for part in chunks(n, cuts):
        k, t, p, q = s["key"][part], s["time"][part], s["price"][part], s["size"][part]
        parts["rsi"].append(rsi.update(k, p))
        parts["ema"].append(ema.update(k, p))
        parts["vwap"].append(vwap.update(k, t, p, q))
        parts["vol"].append(vol.update(k, t, p))
    for name, got in parts.items():
        same(np.concatenate(got), whole[name])


def test_tick_by_tick_equals_one_batch() -> None:
    s = trade_series(11, 600, 3)
    whole = SlidingVwap(MIN).update(s["key"], s["time"], s["price"], s["size"])
    vwap = SlidingVwap(MIN)
    ticks = [vwap.update(s["key"][i:i + 1], s["time"][i:i + 1], s["price"][i:i + 1], s["size"][i:i + 1])
             for i in range(600)]
    same(np.concatenate(ticks), whole)


# --------------------------------------------------------------------------- IndicatorEngine


def trade_message(seq: int, s: dict[str, np.ndarray], rows: slice, names: list[str]) -> Message:
    cols = {"time": s["time"][rows], "sym": [names[k] for k in s["key"][rows]], "price": s["price"][rows],
            "size": s["size"][rows], "exchange": ["x"] * len(s["key"][rows])}
    return Message("trade", seq, seq * 1000, batch("trade", cols, seq * 1000))


def engine_rows(engine: IndicatorEngine, messages: list[Message]) -> pd.DataFrame:
    out = []
    for m in messages:
        for table, rows in engine.on_upd(m):
            assert table == "indicator"
            assert rows.schema.equals(REGISTRY["indicator"].wire.remove(REGISTRY["indicator"].wire.get_field_index(
                "src_seq")))
            out.append(rows)
    return pa.Table.from_batches(out).to_pandas()


def test_indicator_engine_rows_equal_talib_and_pandas_per_sym() -> None:
    s = trade_series(5, 2000, 3)
    names = ["BTCUSD", "ETHUSD", "SOLUSD"]
    msgs = [trade_message(i + 1, s, part, names) for i, part in enumerate(chunks(2000, [1, 2, 50, 51, 700, 1500]))]
    got = engine_rows(IndicatorEngine(rsi=14, ema=20, vol_ns=parse_duration("5m"), vwap_ns=parse_duration("2m")), msgs)
    assert len(got) == 2000
    assert got["sym"].tolist() == [names[k] for k in s["key"]]
    assert got["price"].tolist() == s["price"].tolist()
    vol = oracle_vol(s, 5 * MIN)
    vwap = oracle_vwap(s, 2 * MIN)
    for k, name in enumerate(names):
        mine = got["sym"] == name
        x = s["price"][s["key"] == k]
        rsi, ema = talib.RSI(x, timeperiod=14), talib.EMA(x, timeperiod=20)
        same(got["rsi"][mine].to_numpy(dtype=np.float64, na_value=np.nan), rsi)
        same(got["ema"][mine].to_numpy(dtype=np.float64, na_value=np.nan), ema)
        assert got["rsi"][mine].isna().sum() == 14 and got["ema"][mine].isna().sum() == 19  # nulls, not NaN
        np.testing.assert_allclose(got["vol"][mine].to_numpy(dtype=np.float64, na_value=np.nan),
                                   vol[s["key"] == k], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(got["vwap"][mine].to_numpy(dtype=np.float64), vwap[s["key"] == k], rtol=1e-12)


def test_indicator_engine_resets_at_end_of_day_and_ignores_other_tables() -> None:
    s = trade_series(6, 100, 1)
    engine = IndicatorEngine(rsi=3, ema=3)
    msg = trade_message(1, s, slice(0, 100), ["BTCUSD"])
    first = engine.on_upd(msg)[0][1]
    assert engine.on_eod("2026-11-24") == []
    again = engine.on_upd(msg)[0][1]
    assert first.equals(again)  # the new day starts clean: same input, same rows
    quote = Message("quote", 2, 0, batch("quote", {"time": [T0], "sym": ["BTCUSD"], "bid_price": [1.0]}))
    assert engine.on_upd(quote) == []


def test_indicator_engine_on_what_a_real_tp_publishes(tp: Any) -> None:
    """Trades through a real TP (several batch sizes) give the same indicator rows as the direct computation."""
    s = trade_series(8, 900, 3)
    names = ["BTCUSD", "ETHUSD", "SOLUSD"]
    with Collector(Subscriber(tp.address, tables=["trade"])) as col:
        col.wait_subscribed()
        with Publisher(tp.address, name="indicator test") as pub:
            for part in chunks(900, [1, 2, 3, 100, 101, 500]):
                pub.publish("trade", {"time": s["time"][part], "sym": [names[k] for k in s["key"][part]],
                                      "price": s["price"][part], "size": s["size"][part]})
            pub.flush(durable=True)
        col.wait_rows(900)
        got = engine_rows(IndicatorEngine(), col.messages)
    want = engine_rows(IndicatorEngine(), [trade_message(1, s, slice(0, 900), names)])
    pd.testing.assert_frame_equal(got, want)


def test_key_index_is_stable_and_maps_null_to_minus_one() -> None:
    index = KeyIndex()
    assert index.encode(pa.array(["b", "a", None, "b"])).tolist() == [0, 1, -1, 0]
    assert index.encode(pa.array(["a"])).tolist() == [1]
    assert index.encode(pa.array(["c", "a"])).tolist() == [2, 1]
    assert index.names == ["b", "a", "c"]


def test_negative_keys_are_refused() -> None:
    """A null sym encodes as -1: it must not silently index (and corrupt) another key's state."""
    for update in (lambda k: Rsi(3).update(k, np.ones(k.shape[0])), lambda k: Ema(3).update(k, np.ones(k.shape[0])),
                   lambda k: RealizedVol(MIN).update(k, np.arange(k.shape[0]), np.ones(k.shape[0]))):
        for keys in (np.array([-1]), np.array([0, -1, 2])):
            with pytest.raises(ValueError, match="dense ids >= 0"):
                update(keys.astype(np.int64))
