"""ohlc: bars from DuckDB against a pandas groupby on dt.floor buckets."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import ohlc, ohlc_sql
from tickerplant.exceptions import DataError

NS = pa.timestamp("ns", tz="UTC")
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def oracle(t: pa.Table, freq: str) -> pd.DataFrame:
    df = t.to_pandas()
    df["bar"] = df["time"].dt.floor(freq)
    df["pos"] = np.arange(len(df))
    df = df.sort_values(["time", "pos"], kind="stable")  # open/close: earliest/latest by time, ties by row
    pair = df["price"].notna() & df["size"].notna()
    df["pv"] = (df["price"] * df["size"]).where(pair)
    df["pw"] = df["size"].where(pair)
    g = df.groupby(["sym", "bar"], sort=True)
    out = pd.DataFrame({
        "open": g["price"].first(skipna=False), "high": g["price"].max(), "low": g["price"].min(),
        "close": g["price"].last(skipna=False), "volume": g["size"].sum(), "vwap": g["pv"].sum(min_count=1) /
        g["pw"].sum(min_count=1), "count": g.size(),
    })
    return out.reset_index()


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 900), st.one_of(st.none(), st.floats(1, 100)),
                               st.one_of(st.none(), st.integers(1, 10).map(float))), max_size=40),
       width=st.sampled_from([("1m", "1min"), ("5m", "5min"), ("7m", "7min"), ("90s", "90s")]))
def test_bars_match_pandas(rows: list[tuple[str, int, float | None, float | None]], width: tuple[str, str]) -> None:
    t = pa.table({"time": pa.array([T0 + r[1] * S for r in rows], NS),
                  "sym": pa.array([r[0] for r in rows], pa.string()),
                  "price": pa.array([r[2] for r in rows], pa.float64()),
                  "size": pa.array([r[3] for r in rows], pa.float64())})
    got = ohlc(t, width[0])
    assert got.column_names == ["sym", "time", "open", "high", "low", "close", "volume", "vwap", "count"]
    assert got.schema.field("time").type == NS
    if not rows:
        assert got.num_rows == 0
        return
    want = oracle(t, width[1])
    assert got.column("sym").to_pylist() == want["sym"].tolist()
    assert got.column("time").cast(pa.int64()).to_pylist() == [pd.Timestamp(x).value for x in want["bar"]]
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        np.testing.assert_allclose(got.column(col).to_numpy(zero_copy_only=False).astype(float),
                                   want[col].to_numpy(dtype=float), rtol=1e-12, equal_nan=True, err_msg=col)
    assert got.column("count").to_pylist() == want["count"].tolist()


def test_open_close_follow_time_then_row_order() -> None:
    t = pa.table({"time": pa.array([T0 + 30 * S, T0 + 10 * S, T0 + 10 * S, T0 + 61 * S], NS), "sym": ["a"] * 4,
                  "price": [3.0, 1.0, 2.0, 9.0], "size": [1, 1, 2, 5]})
    got = ohlc(t, dt.timedelta(minutes=1))
    assert got.to_pydict() | {"time": None} == {
        "sym": ["a", "a"], "time": None, "open": [1.0, 9.0], "high": [3.0, 9.0], "low": [1.0, 9.0],
        "close": [3.0, 9.0], "volume": [4, 5], "vwap": [2.0, 9.0], "count": [3, 1]}
    assert got.schema.field("volume").type == pa.int64()


def test_no_keys_numeric_time_and_relation_names() -> None:
    t = pa.table({"t": [0, 3, 5, 12], "p": [1.0, 2.0, 3.0, 4.0], "q": [1.0, 1.0, 1.0, 1.0]})
    got = ohlc(t, 5, by=None, time="t", price="p", size="q")
    assert got.column("t").to_pylist() == [0, 5, 10] and got.column("close").to_pylist() == [2.0, 3.0, 4.0]
    con = duckdb.connect()
    con.register("tr", pa.table({"time": pa.array([T0, T0 + 90 * S], NS), "sym": ["x", "x"], "price": [1.0, 2.0],
                                 "size": [1.0, 3.0]}))
    named = ohlc("tr", "1m", con=con)
    assert named.column("vwap").to_pylist() == [1.0, 2.0]
    assert con.sql(ohlc_sql("tr", "1m")).to_arrow_table().column("count").to_pylist() == [1, 1]


def test_errors() -> None:
    t = pa.table({"time": pa.array([T0], NS), "sym": ["a"], "price": [1.0]})
    with pytest.raises(DataError, match="no column 'size'"):
        ohlc(t, "1m")
    with pytest.raises(DataError, match="pass con="):
        ohlc("trade", "1m")
