"""xbar: the SQL expression (run by DuckDB) and the array form, against pandas' dt.floor and plain floor."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import duration_ns, xbar, xbar_array
from tickerplant.exceptions import DataError

NS = pa.timestamp("ns", tz="UTC")
# (our width, pandas' frequency)
WIDTHS = [("1s", "1s"), ("250ms", "250ms"), ("5m", "5min"), ("7m", "7min"), ("1h", "1h"), ("1d", "1D"),
          ("1h30m", "90min"), ("3us", "3us"), ("7d", "7D")]


def run_sql(expr: str, table: pa.Table) -> pa.Array:
    con = duckdb.connect()
    con.register("t", table)
    return con.sql(f"SELECT {expr} AS b FROM t").to_arrow_table().column("b").combine_chunks()


@settings(max_examples=50, deadline=None)
@given(ns=st.lists(st.one_of(st.none(), st.integers(-(10**18), 4 * 10**18)), max_size=30),
       width=st.sampled_from(WIDTHS))
def test_time_buckets_match_pandas_floor(ns: list[int | None], width: tuple[str, str]) -> None:
    ours, freq = width
    arr = pa.array(ns, pa.int64()).cast(NS)
    want = pd.Series(pd.to_datetime(pd.Series(ns, dtype="Int64"), unit="ns", utc=True)).dt.floor(freq)
    want_ns = [None if pd.isna(x) else pd.Timestamp(x).value for x in want]
    got = xbar_array(ours, arr)
    assert got.type == NS
    assert got.cast(pa.int64()).to_pylist() == want_ns
    assert xbar_array(ours, pa.chunked_array([arr])).cast(pa.int64()).to_pylist() == want_ns
    sql = run_sql(xbar(ours, "time"), pa.table({"time": arr}))
    assert sql.cast(pa.int64()).to_pylist() == want_ns
    naive = arr.cast(pa.timestamp("ns"))
    assert run_sql(xbar(ours, "time", tz=None), pa.table({"time": naive})).cast(pa.int64()).to_pylist() == want_ns
    as_numpy = naive.to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(xbar_array(ours, as_numpy), xbar_array(ours, naive).to_numpy(zero_copy_only=False))


@settings(max_examples=50, deadline=None)
@given(xs=st.lists(st.one_of(st.none(), st.integers(-(10**9), 10**9)), max_size=30), w=st.integers(1, 1000))
def test_integer_buckets(xs: list[int | None], w: int) -> None:
    want = [None if x is None else (x // w) * w for x in xs]
    arr = pa.array(xs, pa.int64())
    assert xbar_array(w, arr).to_pylist() == want
    assert run_sql(xbar(w, "x"), pa.table({"x": arr})).to_pylist() == want
    assert xbar_array(w, pa.array(xs, pa.int32())).type == pa.int32()


@settings(max_examples=50, deadline=None)
@given(xs=st.lists(st.floats(-1e6, 1e6), max_size=30), w=st.sampled_from([0.5, 2.5, 0.25, 10.0, 0.1]))
def test_float_buckets(xs: list[float], w: float) -> None:
    want = [w * np.floor(x / w) for x in xs]
    assert xbar_array(w, np.array(xs)).tolist() == want
    assert xbar_array(w, pa.array(xs, pa.float64())).to_pylist() == want
    assert run_sql(xbar(w, "x"), pa.table({"x": pa.array(xs, pa.float64())})).to_pylist() == want


def test_q_reference_examples() -> None:
    """code.kx.com/q/ref/xbar."""
    assert xbar_array(3, np.arange(16)).tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9, 9, 12, 12, 12, 15]
    # The page prints "0 0 0 2.5 2.5 2.5 5 5 5 ..." for 2.5 xbar til 16, which is 3 xbar's pattern; q
    # computes x*floor y%x, which puts 5 in the bucket 5.
    assert xbar_array(2.5, np.arange(16)).tolist() == [0, 0, 0, 2.5, 2.5, 5, 5, 5, 7.5, 7.5, 10, 10, 10, 12.5, 12.5,
                                                         15]
    minutes = pa.array([dt.time(11, m) for m in (0, 2, 3, 5, 7, 11, 13)], pa.time64("us"))
    assert [t.strftime("%H:%M") for t in xbar_array("5m", minutes).to_pylist()] == [
        "11:00", "11:00", "11:00", "11:05", "11:05", "11:10", "11:10"]


def test_widths_and_other_types() -> None:
    assert duration_ns("5m") == duration_ns(dt.timedelta(minutes=5)) == duration_ns(np.timedelta64(5, "m"))
    assert duration_ns("1.5s") == 1_500_000_000 and duration_ns("2min") == 120 * 10**9
    days = pa.array([dt.date(2024, 1, d) for d in (1, 2, 3, 8)], pa.date32())
    assert xbar_array("7d", days).to_pylist() == [dt.date(2023, 12, 28)] * 3 + [dt.date(2024, 1, 4)]  # epoch-aligned
    assert xbar_array(dt.timedelta(seconds=2), np.array([3, 4, -1], dtype="m8[s]")).tolist() == [
        dt.timedelta(seconds=2), dt.timedelta(seconds=4), dt.timedelta(seconds=-2)]
    assert np.isnat(xbar_array("1s", np.array(["NaT", "2024-01-01T00:00:01.5"], dtype="M8[ms]"))[0])


def test_errors() -> None:
    with pytest.raises(DataError, match="not a duration"):
        xbar("5 minutes", "time")
    with pytest.raises(DataError, match="must be positive"):
        xbar("0s", "time")
    with pytest.raises(DataError, match="positive finite number"):
        xbar(-2, "x")
    with pytest.raises(DataError, match="need a duration width"):
        xbar_array(5, pa.array([1], NS))
    with pytest.raises(DataError, match="whole number"):
        xbar_array("1ms", pa.array([1], pa.timestamp("s")))
    with pytest.raises(DataError, match="numeric or temporal"):
        xbar_array(1, pa.array(["a"]))
