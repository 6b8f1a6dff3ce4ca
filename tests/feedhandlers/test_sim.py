"""The simulated feed: schemas, determinism, market invariants, statistics, L2 books, injected faults and pacing."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feedhandlers.book import Book
from feedhandlers.normalize import EVENT_KINDS
from feedhandlers.sim import DEFAULT_SYMS, INJECTED_SCHEMA, Simulator
from tests.conftest import TICK, Collector, TPProcess
from tickerplant.exceptions import SchemaError
from tickerplant.schema import Registry

REGISTRY = Registry.default()
START = 1_700_000_000_000_000_000
NS_PER_EVENT = 1_000  # >= 1 ns per event, so event times are strictly increasing


def collect(sim: Simulator, n: int, steps: int = 1) -> dict[str, pd.DataFrame]:
    """Run ``steps`` steps of ``n`` events with explicit end times; frames per table."""
    return frames(sim, [n] * steps)


def frames(sim: Simulator, sizes: list[int]) -> dict[str, pd.DataFrame]:
    """One step per size, NS_PER_EVENT apart; frames per table, with ``t``: the time as int ns.

    Event ``i`` of the run (from 0, counting events a stale period silenced) is at
    ``START + (i + 1) * NS_PER_EVENT``: see :func:`event_no`.
    """
    parts: dict[str, list[pa.RecordBatch]] = {}
    for n in sizes:
        for table, batch in sim.step(n, end_ns=sim.last_time_ns + n * NS_PER_EVENT).items():
            parts.setdefault(table, []).append(batch)
    out = {}
    for table, batches in parts.items():
        t = pa.Table.from_batches(batches)
        df = t.to_pandas()
        df["t"] = t.column("time").cast(pa.int64()).to_numpy()
        out[table] = df
    return out


def event_no(t: Any) -> Any:
    """The run's event number (from 0) of an event time, for runs made by :func:`frames`."""
    return (t - START) // NS_PER_EVENT - 1


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
        {"l2_depth": -1},
        {"l2_depth": 1_001},
        {"gaps": 1.5},
        {"stale": -0.1},
        {"outliers": 2.0},
        {"stale_ns": 0},
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
# The old top of an ADAUSD book became the level behind the new top at the size it had as the
# top (its hashed size): the delta re-sent an unchanged level.
@example(seed=36249, syms=9, venues=4, share=0.01171875, sizes=[317, 191], depth=2)
@given(
    seed=st.integers(0, 2**32),
    syms=st.integers(1, 10),
    venues=st.integers(1, 4),
    share=st.floats(0.0, 1.0),
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=4),
    depth=st.integers(0, 6),
)
def test_invariants_hold_for_any_configuration(
    seed: int, syms: int, venues: int, share: float, sizes: list[int], depth: int
) -> None:
    sim = Simulator(syms=syms, venues=venues, seed=seed, trade_share=share, start_ns=START, l2_depth=depth)
    parts: dict[str, list[pa.RecordBatch]] = {"trade": [], "quote": [], "l2": []}
    for n in sizes:
        out = sim.step(n, end_ns=sim.last_time_ns + n * NS_PER_EVENT)
        assert sum(b.num_rows for t, b in out.items() if t != "l2") == n
        for table, batch in out.items():
            assert batch.schema.equals(REGISTRY[table].wire)
            assert batch.num_rows > 0
            parts[table].append(batch)
    f = {}
    for table, batches in parts.items():
        if batches:
            tab = pa.Table.from_batches(batches)
            f[table] = tab.to_pandas().assign(t=tab.column("time").cast(pa.int64()).to_numpy())
    if sim.events >= sim.pairs:  # the opening is done: every pair has been heard from
        assert longest_silences(f, sim).max() <= sim.max_normal_gap_events
    assert sim.injected.num_rows == 0
    if "quote" in f:
        q = f["quote"]
        assert (q.bid_price < q.ask_price).all()
        assert (q.bid_size > 0).all() and (q.ask_size > 0).all()
        assert q.derived.eq(depth > 0).all()
        if depth:
            rebuild_books(f["l2"], q, depth)
    if "trade" in f:
        t = f["trade"]
        assert (t["size"] > 0).all() and (t.price > 0).all()
        for _, g in t.groupby("exchange"):
            assert g.seq.tolist() == list(range(1, len(g) + 1))
        book = pd.merge_asof(
            t.sort_values("time"),
            f["quote"].sort_values("time")[["time", "sym", "exchange", "bid_price", "ask_price"]],
            on="time",
            by=["sym", "exchange"],
            allow_exact_matches=False,
        )
        expected = np.where(book.side == "buy", book.ask_price, book.bid_price)
        assert np.array_equal(book.price.to_numpy(), expected)


# --------------------------------------------------------------------- L2 books


def rebuild_books(l2: pd.DataFrame, quotes: pd.DataFrame, depth: int) -> dict[tuple[str, str], Book]:
    """The oracle: every book rebuilt from its l2 rows with :class:`Book`, checked after each update.

    After every update (the rows of one (exchange, sym, update id), contiguous) the top of the
    book must be the quote published at the same time, with ``depth`` levels a side; a delta
    may only remove levels the book has and send sizes that change (the tops excepted: each
    update re-sends both); update ids run on by one, except a snapshot (the opening, or after
    a gap) which rebuilds the book; a level behind the top always has the same size at the
    same price (the model: only the top re-sizes), so a stale size left behind shows up.
    """
    quote_at = {
        (e, s, t): (bp, bs, ap, az)
        for e, s, t, bp, bs, ap, az in zip(quotes.exchange, quotes.sym, quotes.t, quotes.bid_price, quotes.bid_size,
                                          quotes.ask_price, quotes.ask_size, strict=True)
    }
    books: dict[tuple[str, str], Book] = {}
    behind: dict[tuple[str, str, int, str], str] = {}  # (exchange, sym, side, price) -> size, below the top
    rows = zip(l2.exchange, l2.sym, l2.seq_first, l2.seq_last, l2.t, l2.side, l2.price, l2["size"], l2.is_snapshot,
               strict=True)
    for (ex, sym, seq, seq_last, t), group in itertools.groupby(rows, key=lambda r: r[:5]):
        assert seq == seq_last
        levels = list(group)
        snapshot = levels[0][8]
        assert all(r[8] == snapshot for r in levels), "an update is all snapshot or all delta"
        bids = [(repr(r[6]), repr(r[7])) for r in levels if r[5] == "bid"]
        asks = [(repr(r[6]), repr(r[7])) for r in levels if r[5] == "ask"]
        assert [r[5] for r in levels] == ["bid"] * len(bids) + ["ask"] * len(asks)  # bids, then asks
        for side in (bids, asks):
            assert len({p for p, _ in side}) == len(side), "one row per price and update"
        book = books.get((ex, sym))
        if snapshot:
            assert book is None or seq > book.seq + 1  # type: ignore[operator]  # the opening, or after a gap
            book = books[ex, sym] = Book(ex, sym)
            book.apply_snapshot(bids, asks, seq)
            assert book.counts == (len(bids), len(asks))
        else:
            assert book is not None and book.seq == seq - 1, (ex, sym, seq)
            before = book.top_raw(depth)
            for side, levels_now in ((bids, before[0]), (asks, before[1])):
                have = {Decimal(p): Decimal(z) for p, z in levels_now}
                for i, (p, z) in enumerate(side):
                    if Decimal(z) == 0:
                        assert Decimal(p) in have, "a delta removes only levels the book has"
                    elif i > 0 and have.get(Decimal(p)) == Decimal(z):
                        # The only unchanged level a delta may re-send is the top.
                        assert Decimal(p) == max(
                            (Decimal(q) for q, w in side if Decimal(w) > 0),
                            key=lambda x: x if side is bids else -x,
                        )
            book.apply_many(bids, asks, seq)
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None and not book.crossed
        assert (float(bid[0]), float(bid[1]), float(ask[0]), float(ask[1])) == quote_at[ex, sym, t], (ex, sym, seq)
        assert book.counts == (depth, depth)
        for side_no, side_levels in enumerate(book.top_raw(depth)):
            for p, z in side_levels[1:]:
                assert behind.setdefault((ex, sym, side_no, p), z) == z, (ex, sym, seq, side_no, p)
    return books


@pytest.mark.parametrize("depth", [1, 5, 20])
def test_l2_books_rebuild_to_the_quotes(depth: int) -> None:
    sim = Simulator(syms=["BTCUSD", "XRPUSD", "FOO"], venues=2, seed=depth, start_ns=START, l2_depth=depth)
    f = frames(sim, [5, 1_000, 7_000, 1, 3_000])
    l2, q = f["l2"], f["quote"]
    books = rebuild_books(l2, q, depth)
    assert len(books) == 6
    # One update per quote, at its time, ids 1, 2, 3... per book; the first is the only snapshot.
    updates = l2.drop_duplicates(["exchange", "sym", "seq_first"])
    assert len(updates) == len(q)
    assert (updates.t.to_numpy() == q.t.to_numpy()).all()
    for _, u in updates.groupby(["exchange", "sym"]):
        assert u.seq_first.tolist() == list(range(1, len(u) + 1))
        assert u.is_snapshot.tolist() == [True] + [False] * (len(u) - 1)
    assert (l2.loc[l2.is_snapshot, "size"] > 0).all()
    assert (l2["size"] >= 0).all() and (l2.price > 0).all()
    # Levels behind the top keep their size while in the book: an update is far smaller than a snapshot.
    if depth == 20:
        assert len(l2) / len(q) < depth
    assert sim.injected.num_rows == 0


def test_l2_schema_and_the_derived_flag() -> None:
    sim = Simulator(seed=2, start_ns=START, l2_depth=5)
    plain = Simulator(seed=2, start_ns=START)
    for _ in range(3):
        end = sim.last_time_ns + 10**6
        out, ref = sim.step(2_000, end_ns=end), plain.step(2_000, end_ns=end)
        assert set(out) == {"trade", "quote", "l2"} and set(ref) == {"trade", "quote"}
        for table, batch in out.items():
            assert batch.schema.equals(REGISTRY[table].wire, check_metadata=True)
            batch.validate(full=True)
            assert batch.column("venue_sym").null_count == batch.num_rows  # sims name venue symbols as sym
        assert set(out["l2"].column("side").to_pylist()) == {"bid", "ask"}
        assert out["quote"].column("derived").to_pylist() == [True] * out["quote"].num_rows
        assert ref["quote"].column("derived").to_pylist() == [False] * ref["quote"].num_rows
        # L2 takes no random numbers: the market is the same with it on or off.
        assert out["trade"].equals(ref["trade"])
        assert out["quote"].drop_columns(["derived"]).equals(ref["quote"].drop_columns(["derived"]))


def test_l2_levels_stop_at_one_tick() -> None:
    # A one-lot, ten-tick instrument: the grid behind the bid would go below zero.
    sim = Simulator(syms=["FOO"], venues=1, seed=4, start_ns=START, l2_depth=1000, trade_share=0.0, sigma=0.0)
    sim._log_mid[:] = np.log(0.012)  # 12 ticks of 0.001
    f = frames(sim, [200])
    assert (f["l2"].price > 0).all()
    bids = f["l2"][(f["l2"].side == "bid") & f["l2"].is_snapshot]
    assert 0 < len(bids) < 1000


# --------------------------------------------------------------------- clean runs


def pair_events(f: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every published trade and quote as (exchange, sym, event number), in event order."""
    ev = pd.concat([f[t][["exchange", "sym", "t"]] for t in ("trade", "quote") if t in f]).sort_values("t")
    return ev.assign(no=event_no(ev.t))


def longest_silences(f: dict[str, pd.DataFrame], sim: Simulator) -> pd.Series:
    """Per pair, the most events between two of its events (or the run's start or end)."""
    ev = pair_events(f)
    end = sim.events
    out = {}
    for key, g in ev.groupby(["exchange", "sym"]):
        no = np.concatenate([[-1], g.no.to_numpy(), [end]])
        out[key] = int(np.diff(no).max())
    assert len(out) == sim.pairs
    return pd.Series(out)


def test_clean_run_has_no_silence_gap_or_outlier() -> None:
    sim = Simulator(syms=5, venues=4, seed=9, start_ns=START, l2_depth=3)
    f = frames(sim, [30, 10_000, 1, 20_000, 999])
    assert sim.max_normal_gap_events == 8 * 20
    silences = longest_silences(f, sim)
    assert silences.max() <= sim.max_normal_gap_events
    assert silences.max() > 3 * sim.pairs  # ...but the arrivals are still random
    for _, t in f["trade"].groupby("exchange"):
        assert t.seq.tolist() == list(range(1, len(t) + 1))
    rebuild_books(f["l2"], f["quote"], 3)
    assert sim.injected.num_rows == 0 and sim.injected.schema.equals(INJECTED_SCHEMA)
    assert "feed_event" not in f


# --------------------------------------------------------------------- injected faults


FAULTS: dict[str, object] = {"l2_depth": 4, "gaps": 3e-3, "outliers": 2e-3, "gap_events": True}
SIZES = [7, 3_000, 20_000, 1, 6_000]


@pytest.fixture(scope="module")
def overlay() -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame]:
    """(clean run, the same seed with gaps and outliers, its ground truth)."""
    clean = frames(Simulator(seed=21, start_ns=START, l2_depth=4), SIZES)
    sim = Simulator(seed=21, start_ns=START, **FAULTS)  # type: ignore[arg-type]
    faulty = frames(sim, SIZES)
    truth = sim.take_injected().to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    truth["t0"] = event_no(truth.start.astype("int64") + 0) * NS_PER_EVENT + NS_PER_EVENT + START
    truth["t1"] = event_no(truth.end.astype("int64") + 0) * NS_PER_EVENT + NS_PER_EVENT + START
    assert sim.injected.num_rows == 0  # taken
    return clean, faulty, truth


def test_faults_are_recorded(overlay: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame]) -> None:
    _, _, truth = overlay
    kinds = truth.groupby(["kind", "table"]).size().to_dict()
    assert kinds.keys() == {("gap", "trade"), ("gap", "l2"), ("outlier", "trade")}
    assert min(kinds.values()) >= 10
    assert (truth.start <= truth.end).all()
    assert truth.t0.is_monotonic_increasing  # one step's faults in start order, steps in order
    # Gaps never drop a heartbeat: no pair is silent for longer than on a clean run.
    _, faulty, _ = overlay
    ev = pair_events(faulty)
    for _, g in ev.groupby(["exchange", "sym"]):
        assert np.diff(g.no.to_numpy()).max() <= 8 * 12


def test_trade_gaps_skip_exactly_the_recorded_seqs(
    overlay: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    clean, faulty, truth = overlay
    gaps = truth[(truth.kind == "gap") & (truth.table == "trade")].astype({"expected": "int64", "got": "int64"})
    assert gaps.sym.isna().all()
    assert (gaps.got - gaps.expected).between(1, Simulator.GAP_MAX_LEN).all()
    for venue, t in faulty["trade"].groupby("exchange"):
        ref = clean["trade"][clean["trade"].exchange == venue].set_index("seq")
        published = t.seq.to_numpy()
        assert np.all(np.diff(published) > 0)
        missing = set(ref.index) - set(published)
        g = gaps[gaps.exchange == venue]
        assert missing == {s for e, x in zip(g.expected, g.got, strict=True) for s in range(e, x)}
        at = t.set_index("seq")
        for e, x, t0, t1 in zip(g.expected, g.got, g.t0, g.t1, strict=True):
            assert e - 1 in at.index and x in at.index  # seen: the row before and the row after
            assert ref.t[e] == t0 and at.t[x] == t1
        # Nothing else changed (prices aside: outliers are checked below).
        kept = ref.drop(index=sorted(missing)).reset_index()[t.columns]
        pd.testing.assert_frame_equal(kept.drop(columns="price"), t.drop(columns="price").reset_index(drop=True))


def test_l2_gaps_skip_exactly_the_recorded_updates_then_resnapshot(
    overlay: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    clean, faulty, truth = overlay
    gaps = truth[(truth.kind == "gap") & (truth.table == "l2")].astype({"expected": "int64", "got": "int64"})
    l2, ref = faulty["l2"], clean["l2"]
    rebuild_books(l2, faulty["quote"], 4)  # the books are right at every update published
    pd.testing.assert_frame_equal(faulty["quote"], clean["quote"])
    for (venue, sym), u in l2.drop_duplicates(["exchange", "sym", "seq_first"]).groupby(["exchange", "sym"]):
        ids = u.seq_first.to_numpy()
        g = gaps[(gaps.exchange == venue) & (gaps.sym == sym)]
        assert set(range(1, ids[-1] + 1)) - set(ids) == {
            s for e, x in zip(g.expected, g.got, strict=True) for s in range(e, x)
        }
        snaps = u[u.is_snapshot]
        assert snaps.seq_first.tolist() == [1, *g.got]  # after each gap, the whole book again
        assert snaps.t.tolist()[1:] == g.t1.tolist()
        ref_u = ref[(ref.exchange == venue) & (ref.sym == sym)].drop_duplicates("seq_first").set_index("seq_first")
        assert (ref_u.t[g.expected].to_numpy() == g.t0.to_numpy()).all()
    # Every other update is the clean run's, row for row.
    resent = set(zip(gaps.exchange, gaps.sym, gaps.got, strict=True))
    key = list(zip(l2.exchange, l2.sym, l2.seq_first, strict=True))
    deltas = l2[[k not in resent for k in key]].reset_index(drop=True)
    ref_key = pd.MultiIndex.from_frame(ref[["exchange", "sym", "seq_first"]])
    ours = pd.MultiIndex.from_frame(deltas[["exchange", "sym", "seq_first"]])
    pd.testing.assert_frame_equal(ref[ref_key.isin(ours)].reset_index(drop=True), deltas)


def test_outliers_are_the_recorded_prints(
    overlay: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    clean, faulty, truth = overlay
    out = truth[truth.kind == "outlier"].astype({"seq": "int64"}).set_index(["exchange", "seq"]).sort_index()
    t = faulty["trade"].set_index(["exchange", "seq"]).sort_index()
    ref = clean["trade"].set_index(["exchange", "seq"]).loc[t.index]
    changed = t.index[t.price != ref.price]
    assert sorted(changed) == sorted(out.index)
    mine = t.loc[out.index]
    assert (mine.price == out.price).all() and (mine.sym == out.sym).all() and (mine.t == out.t0).all()
    # 5-20% off the venue's mid (to the tick), and far outside its spread.
    book = pd.merge_asof(
        t.reset_index().sort_values("t"), clean["quote"][["t", "sym", "exchange", "bid_price", "ask_price"]],
        on="t", by=["sym", "exchange"], allow_exact_matches=False,
    ).set_index(["exchange", "seq"])
    mid = (book.bid_price + book.ask_price) / 2
    assert np.allclose(out.mid, mid[out.index], rtol=1e-12)
    off = (out.price / out.mid - 1).abs()
    assert off.between(Simulator.OUTLIER_MIN - 1e-4, Simulator.OUTLIER_MAX + 1e-4).all()
    assert (out.price > 0).all()
    assert (out.price > out.mid).any() and (out.price < out.mid).any()  # up and down
    assert ((out.price > book.ask_price[out.index]) | (out.price < book.bid_price[out.index])).all()
    normal = book.drop(index=out.index)
    assert ((normal.price == normal.bid_price) | (normal.price == normal.ask_price)).all()


def test_gap_events_are_what_a_handler_would_publish(
    overlay: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    _, faulty, truth = overlay
    ev = faulty["feed_event"]
    assert set(ev.kind) <= EVENT_KINDS and set(ev.kind) == {"gap", "resync"}
    assert ev.t.is_monotonic_increasing
    gaps = truth[truth.kind == "gap"].sort_values("t1", kind="stable").astype({"expected": "int64", "got": "int64"})
    got = ev[ev.kind == "gap"].astype({"expected": "int64", "got": "int64"})
    assert got.t.tolist() == gaps.t1.tolist()  # when the row after the gap arrives
    assert list(zip(got.exchange, got.expected, got.got, strict=True)) == list(
        zip(gaps.exchange, gaps.expected, gaps.got, strict=True)
    )
    assert got.sym.isna().tolist() == (gaps.table == "trade").tolist()
    first = got.iloc[0]
    assert f"expected {first.expected}, got {first.got}" in first.detail
    resync = ev[ev.kind == "resync"]
    books = gaps[gaps.table == "l2"]
    assert list(zip(resync.t, resync.exchange, resync.sym, strict=True)) == list(
        zip(books.t1, books.exchange, books.sym, strict=True)
    )


def test_gaps_never_drop_first_rows_heartbeats_or_a_steps_last_row() -> None:
    sim = Simulator(syms=2, venues=3, seed=8, start_ns=START, l2_depth=2, gaps=0.5)
    sizes = [500, 6, 2_000, 1_500]
    f = frames(sim, sizes)
    truth = sim.injected.to_pandas()
    assert len(truth) > 500
    assert longest_silences(f, sim).max() <= sim.max_normal_gap_events
    for _, t in f["trade"].groupby("exchange"):
        assert t.seq.iloc[0] == 1
    for _, u in f["l2"].groupby(["exchange", "sym"]):
        assert u.seq_first.iloc[0] == 1 and u.is_snapshot.iloc[0]
    rebuild_books(f["l2"], f["quote"], 2)
    # Every gap is seen (its `got` row published) in the step that made it.
    step_of = np.searchsorted(np.cumsum(sizes), [event_no(truth.start.astype("int64")),
                                                 event_no(truth.end.astype("int64"))], side="right")
    assert (step_of[0] == step_of[1]).all()


@pytest.fixture(scope="module")
def stale_run() -> tuple[Simulator, dict[str, pd.DataFrame], pd.DataFrame]:
    sim = Simulator(syms=3, venues=3, seed=5, start_ns=START, l2_depth=2, stale=1e-3, stale_ns=1_000 * NS_PER_EVENT)
    f = frames(sim, [9, 5_000, 1, 25_000, 3_000])
    return sim, f, sim.injected.to_pandas()


def test_stale_periods_silence_exactly_the_recorded_pairs(
    stale_run: tuple[Simulator, dict[str, pd.DataFrame], pd.DataFrame],
) -> None:
    sim, f, truth = stale_run
    assert set(truth.kind) == {"stale"} and truth.table.isna().all()
    assert len(truth) >= 5
    start = truth.start.astype("int64").to_numpy()
    end = truth.end.astype("int64").to_numpy()
    assert (end - start == 1_000 * NS_PER_EVENT).all()
    ev = pair_events(f)
    rows = pd.concat([f[t][["exchange", "sym", "t"]] for t in ("trade", "quote", "l2")])
    for venue, sym, s, e in zip(truth.exchange, truth.sym, start, end, strict=True):
        mine = rows[(rows.exchange == venue) & (rows.sym == sym)].t
        assert not ((mine > s) & (mine <= e)).any()
        assert (mine == s).any()  # the pair's last event before the silence
        assert (mine > e).any() or e >= sim.last_time_ns
    # Every long silence is one of them; the others keep the normal bound.
    recorded = set(zip(truth.exchange, truth.sym, event_no(start), strict=True))
    for (venue, sym), g in ev.groupby(["exchange", "sym"]):
        no = g.no.to_numpy()
        long = np.flatnonzero(np.diff(no) > sim.max_normal_gap_events)
        assert {(venue, sym, int(no[i])) for i in long} <= recorded
    # Silenced trades take no seq numbers; books go on from where they were.
    for _, t in f["trade"].groupby("exchange"):
        assert t.seq.tolist() == list(range(1, len(t) + 1))
    rebuild_books(f["l2"], f["quote"], 2)
    assert sim.events == 33_010 and len(ev) < sim.events


def test_faults_are_deterministic_for_a_seed() -> None:
    def run(seed: int) -> tuple[list[dict[str, pa.RecordBatch]], pa.Table]:
        sim = Simulator(seed=seed, start_ns=START, l2_depth=3, gaps=0.01, stale=1e-3, stale_ns=10**6,
                        outliers=0.01, gap_events=True)
        steps = [sim.step(n, end_ns=START + (i + 1) * 10**7) for i, n in enumerate([13, 700, 5_000])]
        return steps, sim.injected

    (a, ta), (b, tb), (_, tc) = run(42), run(42), run(43)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for table in x:
            assert x[table].equals(y[table])
    assert ta.equals(tb) and ta.num_rows > 10
    assert not ta.equals(tc)


def test_take_injected_hands_over_and_clears() -> None:
    sim = Simulator(seed=1, start_ns=START, outliers=0.2)
    sim.step(1_000, end_ns=START + 10**6)
    first = sim.take_injected()
    assert first.num_rows > 10 and sim.injected.num_rows == 0
    sim.step(1_000, end_ns=START + 2 * 10**6)
    second = sim.take_injected()
    assert second.num_rows > 10
    assert pc_min(second) > pc_max(first)


def pc_min(t: pa.Table) -> int:
    return int(t.column("start").cast(pa.int64()).to_numpy().min())


def pc_max(t: pa.Table) -> int:
    return int(t.column("start").cast(pa.int64()).to_numpy().max())


def test_tables_the_registry_lacks_are_refused() -> None:
    cols = '[{ name = "time", type = "timestamp", nullable = false }, { name = "sym", type = "string" }]'
    text = f"[tables.trade]\ncolumns = {cols}\n[tables.quote]\ncolumns = {cols}\n"
    reg = Registry.parse(text)
    Simulator(registry=reg)  # no L2, no feed events: fine
    with pytest.raises(SchemaError, match="'l2'"):
        Simulator(registry=reg, l2_depth=5)
    with pytest.raises(SchemaError, match="'feed_event'"):
        Simulator(registry=reg, gap_events=True)


# --------------------------------------------------------------------- tick feed sim


def test_tick_feed_sim_publishes_books_and_faults(tp: TPProcess, collect: Callable[..., Collector],
                                                  tmp_path: Path) -> None:
    sub = collect(tp.address, from_seq=1)
    truth_path = tmp_path / "truth.parquet"
    r = subprocess.run(
        [TICK, "feed", "sim", "--tp", tp.address, "--symbols", "BTCUSD,ETHUSD", "--venues", "2", "--rate", "5000",
         "--duration", "1", "--seed", "3", "--l2", "5", "--gaps", "0.01", "--gap-events", "--outliers", "0.01",
         "--stale", "0.002", "--stale-for", "0.05", "--injected", str(truth_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts.keys() == {"trade", "quote", "l2", "feed_event", "injected"}
    truth = pq.read_table(truth_path)
    assert truth.schema.equals(INJECTED_SCHEMA)
    kinds = truth.column("kind").to_pylist()
    assert counts["injected"] == {k: kinds.count(k) for k in ("gap", "stale", "outlier")}
    assert all(counts["injected"].values())
    tables = ("trade", "quote", "l2", "feed_event")
    sub.wait(lambda c: all(sum(m.data.num_rows for m in c.messages if m.table == t) == counts[t] for t in tables),
             20, "every row the feed published")
    got = {t: pa.Table.from_batches([m.data for m in sub.messages if m.table == t]) for t in tables}
    assert set(got["trade"].column("sym").to_pylist()) == {"BTCUSD", "ETHUSD"}
    assert set(got["l2"].column("exchange").to_pylist()) == {"SIMA", "SIMB"}
    assert all(got["quote"].column("derived").to_pylist())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gaps", "2"], "gaps"),
        (["--l2", "-1"], "l2_depth"),
        (["--stale-for", "0"], "--stale-for"),
        (["--symbols", "A,A"], "unique"),
    ],
)
def test_tick_feed_sim_refuses_bad_options(args: list[str], message: str) -> None:
    r = subprocess.run([TICK, "feed", "sim", "--tp", "127.0.0.1:9", "--duration", "1", *args],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr


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
