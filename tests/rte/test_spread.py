"""SpreadEngine (rte/spread.py): cross-venue spreads and their z-scores against a Python + pandas oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from rte.spread import SpreadEngine
from tests.rte.test_indicators import MIN, SETTINGS, T0, batch, chunks
from tickerplant.message import Message


def quote_series(seed: int, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    venues = ["binance", "coinbase", "kraken", None]
    syms = ["BTCUSD", "ETHUSD"]
    mid = 100 + rng.normal(0, 0.05, n)
    half = rng.uniform(0.005, 0.02, n)
    bid, ask = mid - half, mid + half
    bid[rng.random(n) < 0.03] = np.nan  # one-sided quotes make no mid
    return {"time": T0 + np.cumsum(rng.integers(0, 3_000_000_000, n)).astype(np.int64),
            "sym": [syms[i] for i in rng.integers(0, 2, n)],
            "exchange": [venues[i] for i in rng.choice(4, n, p=[0.4, 0.3, 0.28, 0.02])],
            "bid_price": bid, "ask_price": ask}


def oracle_spreads(q: dict[str, Any], window_ns: int, min_periods: int) -> pd.DataFrame:
    """Row by row in plain Python (the latest mid per venue), then pandas rolling mean/std per pair."""
    latest: dict[tuple[str, str], float] = {}
    seen: list[str] = []  # venues by first appearance (over all syms)
    rows = []
    for i in range(len(q["sym"])):
        sym, ven, b, a = q["sym"][i], q["exchange"][i], q["bid_price"][i], q["ask_price"][i]
        if ven is not None and ven not in seen:
            seen.append(ven)
        if ven is None or not (b > 0 and a > 0):
            continue
        mid = (b + a) * 0.5
        latest[(sym, ven)] = mid
        for other in seen:
            if other != ven and (sym, other) in latest:
                om = latest[(sym, other)]
                rows.append((i, q["time"][i], sym, ven, other, (mid - om) / om * 1e4))
    frame = pd.DataFrame(rows, columns=["row", "t", "sym", "exchange", "other", "spread_bps"])
    frame["t"] = pd.to_datetime(frame["t"])
    z = pd.Series(np.nan, index=frame.index)
    for _, g in frame.groupby(["sym", "exchange", "other"]):
        r = g.rolling(pd.Timedelta(window_ns, "ns"), on="t", min_periods=min_periods)["spread_bps"]
        z[g.index] = (g["spread_bps"] - r.mean()) / r.std()
    frame["zscore"] = z
    return frame


def spread_rows(engine: SpreadEngine, q: dict[str, Any], parts: list[slice]) -> pd.DataFrame:
    out = []
    for seq, part in enumerate(parts, 1):
        cols = {k: (v[part] if isinstance(v, np.ndarray) else v[part.start:part.stop]) for k, v in q.items()}
        for table, rows in engine.on_upd(Message("quote", seq, 0, batch("quote", cols))):
            assert table == "spread_z"
            out.append(rows)
    return pa.Table.from_batches(out).to_pandas()


def test_spread_engine_equals_python_and_pandas_oracle() -> None:
    q = quote_series(4, 3000)
    got = spread_rows(SpreadEngine(window_ns=2 * MIN, min_periods=5), q, chunks(3000, [7, 8, 1000, 2222]))
    want = oracle_spreads(q, 2 * MIN, 5)
    assert len(got) == len(want) > 2000
    assert got["exchange"].tolist() == want["exchange"].tolist()
    assert got["other"].tolist() == want["other"].tolist()
    assert got["sym"].tolist() == want["sym"].tolist()
    assert (got["time"].astype("int64").to_numpy() == want["t"].astype("int64").to_numpy()).all()
    np.testing.assert_allclose(got["spread_bps"], want["spread_bps"], rtol=1e-12, atol=1e-12)
    gz = got["zscore"].to_numpy(dtype=np.float64, na_value=np.nan)
    wz = want["zscore"].to_numpy(dtype=np.float64)
    assert np.array_equal(np.isnan(gz), np.isnan(wz))
    np.testing.assert_allclose(gz, wz, rtol=1e-6, atol=1e-9)


@SETTINGS
@given(cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_spread_engine_streaming_equals_one_batch(cuts: list[int]) -> None:
    q = quote_series(9, 800)
    whole = spread_rows(SpreadEngine(MIN, 3), q, [slice(0, 800)])
    parts = spread_rows(SpreadEngine(MIN, 3), q, chunks(800, cuts))
    pd.testing.assert_frame_equal(parts, whole, check_exact=True)


def test_spread_engine_flat_spreads_have_no_zscore() -> None:
    q = {"time": T0 + np.arange(6, dtype=np.int64), "sym": ["X"] * 6, "exchange": ["a", "b"] * 3,
         "bid_price": np.full(6, 99.0), "ask_price": np.full(6, 101.0)}
    got = spread_rows(SpreadEngine(MIN, 2), q, [slice(0, 6)])
    assert got["spread_bps"].tolist() == [0.0] * 5
    assert got["zscore"].isna().all()


