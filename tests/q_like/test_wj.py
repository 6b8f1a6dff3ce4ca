"""wj / wj1: kdb+ window joins, checked against a row-by-row pandas computation and q's reference example."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import wj, wj1
from tickerplant.exceptions import DataError

NS = pa.timestamp("ns", tz="UTC")
T0 = 1_700_000_000_000_000_000
AGGS = {"n": ("count", "v"), "s": ("sum", "v"), "a": ("avg", "v"), "lo": ("min", "v"), "hi": ("max", "v"),
        "f": ("first", "v"), "l": ("last", "v"), "w": ("wavg", "w", "v"), "ws": ("wsum", "w", "v")}


def window_rows(rd: pd.DataFrame, sym: str, begin: int, end: int, prevailing: bool) -> pd.DataFrame:
    """The right rows of one window, straight from the definition (rd is in time order, ties by row)."""
    same = rd[rd["sym"] == sym]
    if prevailing:
        before = same[same["t"] <= begin]
        inside = same[(same["t"] > begin) & (same["t"] <= end)]
        return pd.concat([before.tail(1), inside]) if len(before) else inside
    return same[(same["t"] >= begin) & (same["t"] <= end)]


def oracle(left: pa.Table, right: pa.Table, lo: int, hi: int, prevailing: bool) -> dict[str, list[object]]:
    rd = right.to_pandas()
    rd["t"] = right.column("time").cast(pa.int64()).to_numpy()
    rd = rd.sort_values("t", kind="stable")
    out: dict[str, list[object]] = {k: [] for k in AGGS}
    for sym, t in zip(left.column("sym").to_pylist(), left.column("time").cast(pa.int64()).to_pylist(), strict=True):
        rows = window_rows(rd, sym, t + lo, t + hi, prevailing)
        v, w = rows["v"], rows["w"]
        pair = v.notna() & w.notna()
        out["n"].append(len(rows))
        out["s"].append(float(v.sum()))
        out["a"].append(v.mean() if v.notna().any() else None)
        out["lo"].append(v.min() if v.notna().any() else None)
        out["hi"].append(v.max() if v.notna().any() else None)
        out["f"].append(v.iloc[0] if len(rows) else None)
        out["l"].append(v.iloc[-1] if len(rows) else None)
        out["w"].append((w[pair] * v[pair]).sum() / w[pair].sum() if pair.any() else None)
        out["ws"].append(float((w[pair] * v[pair]).sum()))
    return out


def same(got: list[object], want: list[object]) -> bool:
    for g, w in zip(got, want, strict=True):
        gnull = g is None or (isinstance(g, float) and math.isnan(g))
        wnull = w is None or (isinstance(w, float) and math.isnan(w))
        if gnull or wnull:
            if gnull != wnull:
                return False
        elif not math.isclose(float(g), float(w), rel_tol=1e-9, abs_tol=1e-9):  # type: ignore[arg-type]
            return False
    return True


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, pa.Table]:
    syms = st.sampled_from(["a", "b"])
    n_left, n_right = draw(st.integers(0, 12)), draw(st.integers(0, 30))
    value = st.one_of(st.none(), st.integers(-50, 50).map(float))
    left = pa.table({
        "time": pa.array([T0 + t for t in draw(st.lists(st.integers(0, 40), min_size=n_left, max_size=n_left))], NS),
        "sym": pa.array(draw(st.lists(syms, min_size=n_left, max_size=n_left)), pa.string()),
    })
    right = pa.table({
        "time": pa.array([T0 + t for t in draw(st.lists(st.integers(0, 40), min_size=n_right, max_size=n_right))],
                         NS),
        "sym": pa.array(draw(st.lists(syms, min_size=n_right, max_size=n_right)), pa.string()),
        "v": pa.array(draw(st.lists(value, min_size=n_right, max_size=n_right)), pa.float64()),
        "w": pa.array(draw(st.lists(st.integers(1, 5).map(float), min_size=n_right, max_size=n_right)), pa.float64()),
    })
    if draw(st.booleans()):
        right = right.sort_by([("sym", "ascending"), ("time", "ascending")])  # the HDB layout
    return left, right


@pytest.mark.parametrize("prevailing", [True, False])
@settings(max_examples=50, deadline=None)
@given(data=tables(), lo=st.integers(-10, 3), width=st.integers(0, 12))
def test_window_join_matches_definition(prevailing: bool, data: tuple[pa.Table, pa.Table], lo: int,
                                        width: int) -> None:
    left, right = data
    hi = lo + width
    join = wj if prevailing else wj1
    got = join((np.timedelta64(lo, "ns"), np.timedelta64(hi, "ns")), ["sym", "time"], left, right, AGGS)
    want = oracle(left, right, lo, hi, prevailing)
    assert got.column_names == ["time", "sym", *AGGS]
    for name in AGGS:
        assert same(got.column(name).to_pylist(), want[name]), (name, got.column(name).to_pylist(), want[name])
    begin = pa.array(left.column("time").cast(pa.int64()).to_numpy() + lo, pa.int64()).cast(NS)
    end = pa.array(left.column("time").cast(pa.int64()).to_numpy() + hi, pa.int64()).cast(NS)
    assert join((begin, end), ["sym", "time"], left, right, AGGS).equals(got)  # q's w: arrays of begin, end


def test_q_reference_example() -> None:
    """code.kx.com/q/ref/wj: trades at 10:01:01/04/08, quotes every second from 10:01:01, w = -2 1 s."""
    def at(*s: int) -> pa.Array:
        return pa.array([dt.datetime(2024, 1, 2, 10, 1, x, tzinfo=dt.UTC) for x in s], NS)

    t = pa.table({"sym": ["ibm"] * 3, "time": at(1, 4, 8), "price": [100, 101, 105]})
    q = pa.table({"sym": ["ibm"] * 9, "time": at(*range(1, 10)), "ask": [101, 103, 103, 104, 104, 107, 108, 107, 108],
                  "bid": [98, 99, 102, 103, 103, 104, 106, 106, 107]})
    got = wj(("-2s", "1s"), ["sym", "time"], t, q, [("max", "ask"), ("min", "bid")])
    assert got.column_names == ["sym", "time", "price", "ask", "bid"]
    assert got.column("ask").to_pylist() == [103, 104, 108]
    assert got.column("bid").to_pylist() == [98, 99, 104]
    assert got.schema.field("ask").type == pa.int64()
    got1 = wj1((dt.timedelta(seconds=-2), dt.timedelta(seconds=1)), ["sym", "time"], t, q,
               {"ask": ("max", "ask"), "bid": ("min", "bid")})
    assert got1.column("ask").to_pylist() == [103, 104, 108]


def test_prevailing_row_is_the_last_one_at_or_before_begin() -> None:
    t = pa.table({"sym": ["a"], "time": pa.array([T0 + 10], NS)})
    q = pa.table({"sym": ["a"] * 4, "time": pa.array([T0 + 1, T0 + 5, T0 + 5, T0 + 12], NS), "v": [1, 2, 3, 4]})
    aggs = {"all": ("sum", "v"), "n": ("count", "v"), "first": ("first", "v")}
    prev = wj(("-5ns", "2ns"), ["sym", "time"], t, q, aggs)  # begin 5: prevailing is the second row at 5
    assert prev.to_pydict() | {} == {"sym": ["a"], "time": t.column("time").to_pylist(), "all": [7], "n": [2],
                                     "first": [3]}
    inside = wj1(("-5ns", "2ns"), ["sym", "time"], t, q, aggs)  # both rows at 5 are inside [5, 12]
    assert inside.column("all").to_pylist() == [9] and inside.column("first").to_pylist() == [2]
    none_before = wj(("-9ns", "-6ns"), ["sym", "time"], t, q, aggs)  # [1, 4]: row at 1 is at begin
    assert none_before.column("all").to_pylist() == [1]
    empty = wj(("-20ns", "-15ns"), ["sym", "time"], t, q, aggs)
    assert empty.column("all").to_pylist() == [0] and empty.column("first").to_pylist() == [None]


def test_numeric_times_and_a_result_name_replacing_a_left_column() -> None:
    t = pa.table({"sym": ["a", "b"], "time": [10, 10], "v": [0.5, 0.5]})
    q = pa.table({"sym": ["a", "a", "b"], "time": [8, 11, 3], "v": [1.0, 2.0, 3.0]})
    got = wj1((-2, 1), ["sym", "time"], t, q, {"v": ("max", "v")})
    assert got.column_names == ["sym", "time", "v"]
    assert got.column("v").to_pylist() == [2.0, None]


def test_errors() -> None:
    t = pa.table({"sym": ["a"], "time": pa.array([T0], NS)})
    q = pa.table({"sym": ["a"], "time": pa.array([T0], NS), "v": [1.0]})
    with pytest.raises(DataError, match="unknown aggregation 'median'"):
        wj(("-1s", "0s"), ["sym", "time"], t, q, {"m": ("median", "v")})
    with pytest.raises(DataError, match="no column 'x'"):
        wj(("-1s", "0s"), ["sym", "time"], t, q, [("max", "x")])
    with pytest.raises(DataError, match="must be a duration"):
        wj((-1, 0), ["sym", "time"], t, q, [("max", "v")])
    with pytest.raises(DataError, match="distinct result names"):
        wj(("-1s", "0s"), ["sym", "time"], t, q, [("max", "v"), ("min", "v")])
    with pytest.raises(DataError, match="2 values for 1 left rows"):
        wj((pa.array([T0, T0], NS), pa.array([T0, T0], NS)), ["sym", "time"], t, q, [("max", "v")])
