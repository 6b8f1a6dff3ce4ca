"""Moving windows (msum, mcount, mavg, mmax, mmin) and ema against pandas rolling/ewm, grouped and not,
plus q's reference examples and its null rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import ema, mavg, mcount, mmax, mmin, msum
from tickerplant.exceptions import DataError


def close(got: pa.Array, want: pd.Series) -> None:
    g = np.array([np.nan if x is None else x for x in got.to_pylist()], dtype=np.float64)
    np.testing.assert_allclose(g, want.to_numpy(dtype=np.float64), rtol=1e-9, atol=1e-6, equal_nan=True)


def rolling(s: pd.Series, keys: list[str] | None, n: int, how: str) -> pd.Series:
    """pandas' answer with q's null rules (see q_like.moving)."""
    def one(x: pd.Series) -> pd.Series:
        r = x.rolling(n, min_periods=1)
        if how == "msum":
            return r.sum().fillna(0.0)  # q: a window of nulls sums to 0
        if how == "mcount":
            return r.count()
        if how == "mavg":
            return r.mean()
        if how == "mmax":
            return r.max()
        has_null = x.isna().astype(float).rolling(n, min_periods=1).max() > 0
        return r.min().mask(has_null)  # q: null is the minimum

    if keys is None:
        return one(s)
    return s.groupby(pd.Series(keys, index=s.index), sort=False).transform(one)


values = st.lists(st.one_of(st.none(), st.floats(-1e4, 1e4)), max_size=60)


@pytest.mark.parametrize("how", ["msum", "mcount", "mavg", "mmax", "mmin"])
@settings(max_examples=60, deadline=None)
@given(xs=values, n=st.integers(1, 8), grouped=st.booleans(), data=st.data())
def test_moving_matches_pandas_rolling(how: str, xs: list[float | None], n: int, grouped: bool,
                                       data: st.DataObject) -> None:
    keys = data.draw(st.lists(st.sampled_from("xyz"), min_size=len(xs), max_size=len(xs))) if grouped else None
    func = {"msum": msum, "mcount": mcount, "mavg": mavg, "mmax": mmax, "mmin": mmin}[how]
    got = func(n, pa.array(xs, pa.float64()), by=keys)
    assert len(got) == len(xs)
    close(got, rolling(pd.Series(xs, dtype=np.float64), keys, n, how))


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(st.integers(-1000, 1000), max_size=50), n=st.integers(1, 6))
def test_integer_inputs_keep_integer_results(xs: list[int], n: int) -> None:
    arr = np.array(xs, dtype=np.int32)
    s = pd.Series(xs, dtype=np.float64)
    assert msum(n, arr).type == pa.int64()
    assert msum(n, arr).to_pylist() == [int(v) for v in s.rolling(n, min_periods=1).sum()]
    assert mmax(n, arr).type == pa.int32() and mmin(n, arr).type == pa.int32()
    assert mmax(n, arr).to_pylist() == [int(v) for v in s.rolling(n, min_periods=1).max()]
    assert mmin(n, arr).to_pylist() == [int(v) for v in s.rolling(n, min_periods=1).min()]
    assert mavg(n, arr).to_pylist() == pytest.approx(list(s.rolling(n, min_periods=1).mean()))


@settings(max_examples=60, deadline=None)
@given(xs=st.lists(st.floats(-1e4, 1e4), max_size=80), alpha=st.floats(0, 1), grouped=st.booleans(),
       data=st.data())
def test_ema_matches_pandas_ewm(xs: list[float], alpha: float, grouped: bool, data: st.DataObject) -> None:
    keys = data.draw(st.lists(st.sampled_from("xy"), min_size=len(xs), max_size=len(xs))) if grouped else None
    got = ema(alpha, xs, by=keys)
    s = pd.Series(xs, dtype=np.float64)
    if alpha == 0:  # pandas refuses alpha=0; q's 0 ema x repeats the first item
        want = s.groupby(keys, sort=False).transform("first") if keys else pd.Series([xs[0]] * len(xs) if xs else [])
    elif keys is None:
        want = s.ewm(alpha=alpha, adjust=False).mean()
    else:
        want = s.groupby(pd.Series(keys), sort=False).transform(lambda x: x.ewm(alpha=alpha, adjust=False).mean())
    close(got, want.astype(np.float64))


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(st.one_of(st.none(), st.floats(-100, 100)), max_size=40), alpha=st.floats(0.01, 1))
def test_ema_recursion_and_null_propagation(xs: list[float | None], alpha: float) -> None:
    """q's definition, item by item: s0 = x0, s = alpha*x + (1-alpha)*s, a null poisoning what follows."""
    want: list[float | None] = []
    prev: float | None = None
    for i, x in enumerate(xs):
        if x is not None and i == 0:
            prev = x
        elif x is not None and prev is not None:
            prev = alpha * x + (1 - alpha) * prev
        else:
            prev = None  # a null, or anything after one
        want.append(prev)
    got = ema(alpha, pa.array(xs, pa.float64())).to_pylist()
    assert [g is None for g in got] == [w is None for w in want]
    assert all(g is None or math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
               for g, w in zip(got, want, strict=True))


def test_q_reference_examples() -> None:
    """code.kx.com/q/ref: avg, max, min, sum, stats-moving pages."""
    assert mavg(2, [1, 2, 3, 5, 7, 10]).to_pylist() == [1, 1.5, 2.5, 4, 6, 8.5]
    assert mavg(5, [1, 2, 3, 5, 7, 10]).to_pylist() == pytest.approx([1, 1.5, 2, 2.75, 3.6, 5.4])
    assert mavg(5, [None, 2, None, 5, 7, None]).to_pylist() == pytest.approx([None, 2, 2, 3.5, 14 / 3, 14 / 3])
    assert mmax(3, [2, 7, 1, 3, 5, 2, 8]).to_pylist() == [2, 7, 7, 7, 5, 5, 8]
    assert mmax(3, [None, -3, -2, None, 1, 0]).to_pylist() == [None, -3, -2, -2, 1, 1]  # q: -0W first
    assert mmin(3, [None, -3, -2, 1, -9, 0]).to_pylist() == [None, None, None, -3, -9, -9]
    assert mmin(3, [None, -3, -2, 1, None, -9]).to_pylist() == [None, None, None, -3, None, None]
    assert msum(3, [1, 2, None, 4, 5]).to_pylist() == [1, 3, 3, 6, 9]
    assert mcount(3, [1, 2, None, 4, 5]).to_pylist() == [1, 2, 2, 2, 2]
    impulse = ema(1 / 3, [1] + [0] * 10).to_pylist()
    assert impulse == pytest.approx([(2 / 3) ** k for k in range(11)])
    p = [22.27, 22.19, 22.08, 22.17, 22.18, 22.13, 22.23, 22.43, 22.24, 22.29]
    assert [round(x, 5) for x in ema(2 / 11, p).to_pylist()] == [
        22.27, 22.25545, 22.22355, 22.21382, 22.20767, 22.19355, 22.20017, 22.24196, 22.2416, 22.2504]


def test_groups_keep_row_order_and_nan_is_null() -> None:
    got = mavg(2, np.array([1.0, 10.0, np.nan, 20.0, 3.0]), by=np.array(["a", "b", "a", "b", "a"]))
    assert got.to_pylist() == [1.0, 10.0, 1.0, 15.0, 3.0]
    assert mcount(3, pa.chunked_array([[1.0, None], [float("nan"), 4.0]])).to_pylist() == [1, 1, 1, 1]
    assert msum(2, [], by=[]).to_pylist() == []
    assert ema(0.5, [1.0, 3.0], by=[None, None]).to_pylist() == [1.0, 2.0]  # a null key is one group


def test_long_series_keeps_precision() -> None:
    rng = np.random.default_rng(7)
    x = 1e6 + rng.standard_normal(200_000)  # a large level: uncentred running sums would lose digits
    got = mavg(50, x).to_numpy()
    want = pd.Series(x).rolling(50, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    best = mmax(1000, x).to_numpy()
    np.testing.assert_array_equal(best, pd.Series(x).rolling(1000, min_periods=1).max().to_numpy())


def test_errors() -> None:
    with pytest.raises(DataError, match="positive number of items"):
        mavg(0, [1.0])
    with pytest.raises(DataError, match="alpha must be in"):
        ema(1.5, [1.0])
    with pytest.raises(DataError, match="one key per item"):
        msum(2, [1, 2], by=["a"])
    with pytest.raises(DataError, match="numeric"):
        mmax(2, ["a", "b"])
