"""The simulated feed: schemas, determinism, market invariants, statistics and pacing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.sim import DEFAULT_SYMS, Simulator
from tickerplant.exceptions import SchemaError
from tickerplant.schema import Registry

REGISTRY = Registry.default()
START = 1_700_000_000_000_000_000
NS_PER_EVENT = 1_000  # >= 1 ns per event, so event times are strictly increasing


def collect(sim: Simulator, n: int, steps: int = 1) -> dict[str, pd.DataFrame]:
    """Run ``steps`` steps of ``n`` events with explicit end times; frames per table."""
    parts: dict[str, list[pa.RecordBatch]] = {"trade": [], "quote": []}
    for _ in range(steps):
        end = sim.last_time_ns + n * NS_PER_EVENT
        for table, batch in sim.step(n, end_ns=end).items():
            parts[table].append(batch)
    out = {}
    for table, batches in parts.items():
        if batches:
            out[table] = pa.Table.from_batches(batches).to_pandas()
    return out


def quote_mids(quotes: pd.DataFrame) -> pd.DataFrame:
    return quotes.assign(mid=(quotes.bid_price + quotes.ask_price) / 2)


@pytest.fixture(scope="module")
def big() -> dict[str, pd.DataFrame]:
    """100k events in 10 steps from the default simulator."""
    return collect(Simulator(seed=7, start_ns=START), 10_000, steps=10)


# --------------------------------------------------------------------- construction


def test_default_names() -> None:
    sim = Simulator()
    assert sim.syms == ["BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD"]
    assert sim.venues == ["SIMA", "SIMB", "SIMC"]
    many = Simulator(syms=len(DEFAULT_SYMS) + 2, venues=2)
    assert many.syms[: len(DEFAULT_SYMS)] == list(DEFAULT_SYMS)
    assert many.syms[len(DEFAULT_SYMS) :] == [f"SYM{len(DEFAULT_SYMS) + 1}", f"SYM{len(DEFAULT_SYMS) + 2}"]
    assert many.venues == ["SIMA", "SIMB"]
    custom = Simulator(syms=["BTCUSD", "FOO"], venues=["X"])
    assert custom.syms == ["BTCUSD", "FOO"] and custom.venues == ["X"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"syms": 0},
        {"venues": []},
        {"syms": ["A", "A"]},
        {"trade_share": 1.5},
        {"trade_share": -0.1},
        {"sigma": -1.0},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Simulator(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------- schemas


def test_schemas_match_registry_exactly() -> None:
    sim = Simulator(seed=1, start_ns=START)
    for _ in range(3):
        out = sim.step(1_000, end_ns=sim.last_time_ns + 10**6)
        assert set(out) == {"trade", "quote"}
        for table, batch in out.items():
            assert batch.schema.equals(REGISTRY[table].wire, check_metadata=True)
            assert "tp_time" not in batch.schema.names
            assert batch.num_rows > 0
            batch.validate(full=True)
    assert sum(b.num_rows for b in out.values()) == 1_000


def test_empty_tables_are_omitted() -> None:
    assert Simulator(start_ns=START).step(0, end_ns=START) == {}
    quotes_only = Simulator(trade_share=0.0, start_ns=START).step(500, end_ns=START + 10**6)
    assert set(quotes_only) == {"quote"} and quotes_only["quote"].num_rows == 500
    sim = Simulator(trade_share=1.0, start_ns=START)
    first = sim.step(12, end_ns=START + 10**6)  # 4 syms x 3 venues: the opening snapshot
    assert set(first) == {"quote"}
    later = sim.step(500, end_ns=START + 2 * 10**6)
    assert set(later) == {"trade"} and later["trade"].num_rows == 500


def test_opening_snapshot_quotes_every_pair() -> None:
    sim = Simulator(syms=3, venues=2, trade_share=0.9, seed=3, start_ns=START)
    q = sim.step(6, end_ns=START + 10**6)["quote"].to_pandas()
    assert len(q) == 6
    assert set(zip(q.sym, q.exchange, strict=True)) == {
        (s, v) for s in sim.syms for v in sim.venues
    }


def test_evolved_registry_gets_nulls_for_unknown_columns() -> None:
    text = """
    [tables.trade]
    version = 2
    columns = [
      { name = "time", type = "timestamp", nullable = false },
      { name = "sym", type = "string", nullable = false },
      { name = "price", type = "float64", nullable = false },
      { name = "size", type = "float64", nullable = false },
      { name = "venue_flags", type = "int32" },
    ]
    [tables.quote]
    version = 1
    columns = [
      { name = "time", type = "timestamp", nullable = false },
      { name = "sym", type = "string", nullable = false },
      { name = "bid_price", type = "float64" },
      { name = "ask_price", type = "float64" },
    ]
    """
    reg = Registry.parse(text)
    out = Simulator(registry=reg, start_ns=START).step(2_000, end_ns=START + 10**7)
    assert out["trade"].schema.equals(reg["trade"].wire)
    assert out["quote"].schema.equals(reg["quote"].wire)
    assert out["trade"].column("venue_flags").null_count == out["trade"].num_rows


def test_registry_requiring_unknown_column_is_refused() -> None:
    text = """
    [tables.trade]
    columns = [
      { name = "time", type = "timestamp", nullable = false },
      { name = "sym", type = "string", nullable = false },
      { name = "venue_flags", type = "int32", nullable = false },
    ]
    [tables.quote]
    columns = [
      { name = "time", type = "timestamp", nullable = false },
      { name = "sym", type = "string", nullable = false },
    ]
    """
    with pytest.raises(SchemaError, match="venue_flags"):
        Simulator(registry=Registry.parse(text))


# --------------------------------------------------------------------- determinism and time


def test_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[dict[str, pa.RecordBatch]]:
        sim = Simulator(seed=seed, start_ns=START)
        return [sim.step(n, end_ns=START + (i + 1) * 10**8) for i, n in enumerate([13, 700, 5_000])]

    a, b, c = run(42), run(42), run(43)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for table in x:
            assert x[table].equals(y[table])
    assert not a[2]["quote"].equals(c[2]["quote"])


def test_times_non_decreasing_and_spread_to_end() -> None:
    sim = Simulator(seed=5, start_ns=START)
    ends = [START + 10**6, START + 10**6, START + 5 * 10**6, START + 3 * 10**6]  # the 2nd stalls, the 4th goes back
    last = START
    all_times = []
    for end in ends:
        out = sim.step(3_000, end_ns=end)
        times = np.sort(
            np.concatenate([b.column("time").cast(pa.int64()).to_numpy() for b in out.values()])
        )
        assert times[0] >= last
        assert times[-1] == max(end, last)  # the clock never goes back
        last = times[-1]
        all_times.append(times)
        for batch in out.values():
            t = batch.column("time").cast(pa.int64()).to_numpy()
            recv = batch.column("recv_time").cast(pa.int64()).to_numpy()
            assert np.all(np.diff(t) >= 0)
            assert np.all(recv > t)
            assert np.all(recv - t < 10**7)  # latency is small: well under 10 ms
    merged = np.concatenate(all_times)
    assert np.all(np.diff(merged) >= 0)
    # Evenly spread: within one step the gaps are all the same to the nanosecond.
    gaps = np.diff(all_times[0])
    assert gaps.max() - gaps.min() <= 1


def test_default_clock_is_now() -> None:
    before = time.time_ns()
    sim = Simulator()
    out = sim.step(100)
    after = time.time_ns()
    t = out["quote"].column("time").cast(pa.int64()).to_numpy()
    assert before <= t.min() and t.max() <= after


# --------------------------------------------------------------------- market invariants


def test_quotes_are_sane(big: dict[str, pd.DataFrame]) -> None:
    q = big["quote"]
    assert (q.bid_price < q.ask_price).all()
    assert (q.bid_price > 0).all()
    assert (q.bid_size > 0).all() and (q.ask_size > 0).all()
    assert q[["bid_price", "ask_price", "bid_size", "ask_size"]].notna().all().all()


def test_prices_are_on_the_tick() -> None:
    # BTCUSD ticks 0.1, ETHUSD 0.01.
    q = collect(Simulator(syms=2, seed=2, start_ns=START), 5_000)["quote"]
    for sym, ticks in (("BTCUSD", 10), ("ETHUSD", 100)):
        px = q.loc[q.sym == sym, ["bid_price", "ask_price"]].to_numpy() * ticks
        assert np.allclose(px, np.rint(px), rtol=0, atol=1e-6)
        spread = np.rint((q.loc[q.sym == sym, "ask_price"] - q.loc[q.sym == sym, "bid_price"]) * ticks)
        assert spread.between(1, Simulator.MAX_SPREAD_TICKS).all()


def test_trades_are_sane(big: dict[str, pd.DataFrame]) -> None:
    t = big["trade"]
    assert len(t) > 20_000
    assert (t.price > 0).all() and (t["size"] > 0).all()
    assert set(t.side) == {"buy", "sell"}
    assert set(t.exchange) == {"SIMA", "SIMB", "SIMC"}
    assert set(t.sym) == {"BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD"}
    share = len(t) / (len(t) + len(big["quote"]))
    assert 0.28 < share < 0.32


def test_trades_execute_at_the_venue_book(big: dict[str, pd.DataFrame]) -> None:
    trades = big["trade"].sort_values("time")
    quotes = big["quote"].sort_values("time")
    book = pd.merge_asof(
        trades,
        quotes[["time", "sym", "exchange", "bid_price", "ask_price"]],
        on="time",
        by=["sym", "exchange"],
        allow_exact_matches=False,
    )
    assert book.bid_price.notna().all()  # the opening snapshot quoted every pair
    buy = book.side == "buy"
    assert (book.price[buy] == book.ask_price[buy]).all()
    assert (book.price[~buy] == book.bid_price[~buy]).all()


def test_per_venue_seq_and_trade_id(big: dict[str, pd.DataFrame]) -> None:
    for _, t in big["trade"].groupby("exchange"):
        seq = t.seq.to_numpy()
        assert np.all(np.diff(seq) == 1)  # strictly increasing and gap-free
        assert seq[0] == 1
        ids = t.trade_id.tolist()
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert ids == [f"{s:012d}" for s in seq]


def test_venue_prices_stay_in_a_band(big: dict[str, pd.DataFrame]) -> None:
    q = quote_mids(big["quote"])
    for sym, g in q.groupby("sym"):
        wide = g.pivot(index="time", columns="exchange", values="mid").ffill().dropna()
        assert len(wide) > 5_000
        band = wide.max(axis=1) / wide.min(axis=1) - 1
        assert band.max() < 0.005, sym
        # ...but the venues do differ a little: persistent offsets
        assert band.mean() > 1e-6, sym
    t = big["trade"]
    for sym, g in t.groupby("sym"):
        by_venue = g.groupby("exchange").price.median()
        assert by_venue.max() / by_venue.min() - 1 < 0.005, sym


@pytest.mark.parametrize("sigma", [5e-5, 1e-3])
def test_log_returns_have_the_configured_sigma(sigma: float) -> None:
    # One venue and quotes only: consecutive quotes of a sym are consecutive sym events.
    sim = Simulator(
        syms=["BTCUSD", "ETHUSD"], venues=1, trade_share=0.0, sigma=sigma, seed=11, start_ns=START
    )
    q = quote_mids(collect(sim, 20_000, steps=2)["quote"])
    for sym, g in q.groupby("sym"):
        r = np.diff(np.log(g.mid.to_numpy()))
        assert len(r) > 15_000
        assert abs(r.mean()) < 5 * sigma / np.sqrt(len(r)) + 1e-6, sym
        assert r.std() == pytest.approx(sigma, rel=0.1), sym


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    syms=st.integers(1, 10),
    venues=st.integers(1, 4),
    share=st.floats(0.0, 1.0),
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=4),
)
def test_invariants_hold_for_any_configuration(
    seed: int, syms: int, venues: int, share: float, sizes: list[int]
) -> None:
    sim = Simulator(syms=syms, venues=venues, seed=seed, trade_share=share, start_ns=START)
    parts: dict[str, list[pa.RecordBatch]] = {"trade": [], "quote": []}
    for n in sizes:
        out = sim.step(n, end_ns=sim.last_time_ns + n * NS_PER_EVENT)
        assert sum(b.num_rows for b in out.values()) == n
        for table, batch in out.items():
            assert batch.schema.equals(REGISTRY[table].wire)
            assert batch.num_rows > 0
            parts[table].append(batch)
    if parts["quote"]:
        q = pa.Table.from_batches(parts["quote"]).to_pandas()
        assert (q.bid_price < q.ask_price).all()
        assert (q.bid_size > 0).all() and (q.ask_size > 0).all()
    if parts["trade"]:
        t = pa.Table.from_batches(parts["trade"]).to_pandas()
        assert (t["size"] > 0).all() and (t.price > 0).all()
        for _, g in t.groupby("exchange"):
            assert np.all(np.diff(g.seq.to_numpy()) == 1)
        q = pa.Table.from_batches(parts["quote"]).to_pandas()
        book = pd.merge_asof(
            t.sort_values("time"),
            q.sort_values("time")[["time", "sym", "exchange", "bid_price", "ask_price"]],
            on="time",
            by=["sym", "exchange"],
            allow_exact_matches=False,
        )
        expected = np.where(book.side == "buy", book.ask_price, book.bid_price)
        assert np.array_equal(book.price.to_numpy(), expected)


# --------------------------------------------------------------------- pacing


def test_run_paces_at_the_rate() -> None:
    sent: list[tuple[str, pa.RecordBatch]] = []

    def publish(table: str, batch: pa.RecordBatch) -> None:
        sent.append((table, batch))

    t0 = time.monotonic()
    counts = Simulator(seed=1).run(publish, rate=20_000, duration=0.5)
    elapsed = time.monotonic() - t0
    total = sum(b.num_rows for _, b in sent)
    assert 8_000 <= total <= 12_000
    assert counts == {
        "trade": sum(b.num_rows for t, b in sent if t == "trade"),
        "quote": sum(b.num_rows for t, b in sent if t == "quote"),
    }
    assert 0.45 <= elapsed < 1.5
    assert len(sent) >= 20  # many small batches, not one big one
    for table, batch in sent:
        assert batch.schema.equals(REGISTRY[table].wire)
    times = np.concatenate([b.column("time").cast(pa.int64()).to_numpy() for _, b in sent])
    assert times.max() - times.min() < 2 * 10**9


def test_run_stops_on_event_without_spinning() -> None:
    stop = threading.Event()
    sent: list[int] = []
    threading.Timer(0.3, stop.set).start()
    t0, c0 = time.monotonic(), time.process_time()
    counts = Simulator().run(lambda _t, b: sent.append(b.num_rows), rate=1_000, batch_ms=20, stop=stop)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    assert wall < 1.0
    assert 150 <= sum(counts.values()) == sum(sent) <= 450
    assert cpu < 0.5 * wall  # it sleeps between batches


def test_run_catches_up_after_a_slow_publish() -> None:
    slow = [True]
    sent: list[int] = []

    def publish(_table: str, batch: pa.RecordBatch) -> None:
        if slow[0]:
            slow[0] = False
            time.sleep(0.2)
        sent.append(batch.num_rows)

    Simulator().run(publish, rate=10_000, duration=0.4)
    assert sum(sent) == 4_000


def test_run_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        Simulator().run(lambda _t, _b: None, rate=0, duration=0.1)
    with pytest.raises(ValueError):
        Simulator().run(lambda _t, _b: None, rate=10, duration=0.1, batch_ms=0)
