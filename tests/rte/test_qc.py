"""rte.qc: the simulator's injected faults are all caught and a clean run raises nothing;
each check on hand-made updates (raise, hysteresis, clear, thresholds in the rows); the
jump and cross-source checks against per-row reference implementations."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.sim import Simulator
from rte.qc import SEC, QcConfig, QcEngine, parse_stale
from tests.conftest import TICK, TPProcess, wait_until
from tickerplant import Publisher
from tickerplant.log import read_table
from tickerplant.message import Message
from tickerplant.schema import Registry, stamp

REG = Registry.default()
START = 1_700_000_000 * SEC
MS = 1_000_000

# The simulated market below runs at 20,000 events/s (50 us apart) in steps of 10 ms, so a
# pair's quotes are at most ~20 ms apart and its trades ~50 ms on a clean run; the injected
# stale periods last 500 ms.
NS_PER_EVENT = 50_000
PER_STEP = 200
TP_LATENCY = 300_000
FAST = QcConfig(stale={"quote": 100 * MS, "l2": 100 * MS, "trade": 300 * MS}, heartbeat_ns=100 * MS)


def msg(table: str, seq: int, tp_time: int, /, **cols: Any) -> Message:
    """A message of ``table`` from columns given as lists (missing nullable columns: nulls)."""
    wire = REG[table].wire
    n = len(next(iter(cols.values())))
    arrays = [pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in wire]
    return Message(table, seq, tp_time, stamp(pa.RecordBatch.from_arrays(arrays, schema=wire), tp_time,
                                              REG[table].schema))


class Feed:
    """Hands updates to an engine with rising seq and collects the alerts as a DataFrame."""

    def __init__(self, engine: QcEngine) -> None:
        self.engine = engine
        self.seq = 0
        self.batches: list[pa.RecordBatch] = []

    def __call__(self, table: str, tp_time: int, /, **cols: Any) -> pd.DataFrame:
        self.seq += 1
        return self.send(msg(table, self.seq, tp_time, **cols))

    def send(self, m: Message) -> pd.DataFrame:
        new = [b for name, b in self.engine.on_upd(m) if name == "qc_alert"]
        self.batches.extend(new)
        return frame(new, self.engine)

    @property
    def alerts(self) -> pd.DataFrame:
        return frame(self.batches, self.engine)


def frame(batches: list[pa.RecordBatch], engine: QcEngine) -> pd.DataFrame:
    table = pa.Table.from_batches(batches, schema=engine.schema)
    df: pd.DataFrame = table.to_pandas()
    df["t"] = table.column("time").cast(pa.int64()).to_numpy()
    return df


def run_sim(sim: Simulator, engine: QcEngine, events: int, outliers_from_step: int = 20,
            outliers: float = 0.0) -> pd.DataFrame:
    """Drive ``engine`` with the simulator's steps, each table's batch one message stamped at the step's end."""
    feed = Feed(engine)
    for k in range(events // PER_STEP):
        if k == outliers_from_step:  # after the jump check's warm-up
            sim.outliers = outliers
        end = sim.last_time_ns + PER_STEP * NS_PER_EVENT
        for table, batch in sim.step(PER_STEP, end).items():
            feed.seq += 1
            tp_time = end + TP_LATENCY
            feed.send(Message(table, feed.seq, tp_time, stamp(batch, tp_time, REG[table].schema)))
    return feed.alerts


SIM: dict[str, Any] = {"syms": 4, "venues": 3, "seed": 7, "start_ns": START, "l2_depth": 5}
FAULTS: dict[str, Any] = {"gaps": 3e-4, "stale": 5e-5, "stale_ns": 500 * MS}


# --------------------------------------------------------------------- the simulator's ground truth


@pytest.mark.parametrize("gap_events", [False, True])
def test_every_injected_fault_is_caught_and_nothing_else(gap_events: bool) -> None:
    sim = Simulator(**SIM, **FAULTS, gap_events=gap_events)
    alerts = run_sim(sim, QcEngine(FAST), 200_000, outliers=3e-4)
    truth = sim.injected.to_pandas()
    for col in ("start", "end"):
        truth[col] = sim.injected.column(col).cast(pa.int64()).to_numpy()
    kinds = truth.kind.value_counts()
    assert kinds["gap"] > 20 and kinds["stale"] >= 3 and kinds["outlier"] >= 5, kinds
    explained = pd.Series(False, index=alerts.index)

    gaps = alerts[alerts.check_name == "gap"]
    for f in truth[truth.kind == "gap"].itertuples():
        same_sym = gaps.sym == f.sym if isinstance(f.sym, str) else gaps.sym.isna()  # trade seq: per venue
        hit = gaps[(gaps.exchange == f.exchange) & same_sym & (gaps.t == f.end) & (gaps.value == f.got - f.expected)]
        assert len(hit) == 1, f  # one alert per gap, also when the feed_event reports it too
        assert f"expected {int(f.expected)}, got {int(f.got)}" in hit.detail.iloc[0]
        explained[hit.index] = True

    stale = alerts[alerts.check_name == "stale"]
    run_end = sim.last_time_ns
    for f in truth[truth.kind == "stale"].itertuples():
        mine = stale[(stale.exchange == f.exchange) & (stale.sym == f.sym)]
        raised = mine[(mine.state == "raised") & (mine.t >= f.start + 100 * MS) & (mine.t <= f.end + 400 * MS)]
        cleared = mine[(mine.state == "cleared") & (mine.t > f.end) & (mine.t <= f.end + 400 * MS)]
        explained[raised.index] = True
        explained[cleared.index] = True
        if f.end + 400 * MS > run_end:  # the run ends during the silence or right after it
            assert f.start + 200 * MS > run_end or "quote" in set(raised.detail.str.split().str[3]), (f, mine)
            continue
        # Quotes, l2 rows and trades all stop: one alert per table, and each clears when the pair is back.
        assert set(raised.detail.str.split().str[3]) == {"quote", "l2", "trade"}, (f, mine)
        assert len(cleared) == 3 and (cleared.value >= 0.1).all(), (f, mine)

    jumps = alerts[alerts.check_name == "jump"]
    for f in truth[truth.kind == "outlier"].itertuples():
        hit = jumps[(jumps.exchange == f.exchange) & (jumps.sym == f.sym) & (jumps.t == f.start)]
        assert len(hit) == 1, f
        assert hit.value.iloc[0] == pytest.approx(abs(math.log(f.price / f.mid)) * 1e4, rel=0.05, abs=10)
        explained[hit.index] = True

    assert explained.all(), alerts[~explained]  # no false alert
    assert (alerts.severity == "warning").all()


def test_a_clean_run_of_the_same_length_raises_nothing() -> None:
    alerts = run_sim(Simulator(**SIM), QcEngine(FAST), 200_000)
    assert alerts.empty, alerts


def test_the_default_thresholds_raise_nothing_on_a_clean_run_without_l2() -> None:
    sim = Simulator(syms=3, venues=4, seed=3, start_ns=START)
    alerts = run_sim(sim, QcEngine(), 60_000)
    assert alerts.empty, alerts


# --------------------------------------------------------------------- stale data and heartbeats


def quote(feed: Feed, tp: int, ex: str, sym: str, bid: float = 100.0, ask: float = 100.1,
          t: int | None = None) -> pd.DataFrame:
    return feed("quote", tp, time=[tp if t is None else t], sym=[sym], exchange=[ex], bid_price=[bid],
                bid_size=[1.0], ask_price=[ask], ask_size=[1.0])


def test_stale_is_raised_after_the_table_threshold_and_cleared_when_the_pair_updates() -> None:
    feed = Feed(QcEngine(QcConfig(stale={"quote": 2 * SEC, "trade": 30 * SEC}, heartbeat_ns=60 * SEC)))
    t0 = START
    quote(feed, t0, "A", "X")
    quote(feed, t0, "A", "Y")
    assert quote(feed, t0 + 2 * SEC, "A", "Y").empty  # X silent exactly 2 s: not beyond the threshold
    out = quote(feed, t0 + 2 * SEC + 1, "A", "Y")
    assert out[["check_name", "state", "exchange", "sym"]].values.tolist() == [["stale", "raised", "A", "X"]]
    assert out.value.iloc[0] == pytest.approx(2.0) and out.threshold.iloc[0] == 2.0
    assert out.severity.iloc[0] == "warning" and out.t.iloc[0] == t0 + 2 * SEC + 1
    assert quote(feed, t0 + 3 * SEC, "A", "Y").empty  # raised once, not again
    out = quote(feed, t0 + 4 * SEC, "A", "X")
    assert out[["check_name", "state", "sym"]].values.tolist() == [["stale", "cleared", "X"]]
    assert out.value.iloc[0] == pytest.approx(4.0)


def test_per_table_thresholds_and_a_silence_noticed_only_when_the_pair_speaks_again() -> None:
    feed = Feed(QcEngine(QcConfig(stale=parse_stale("quote=1s,trade=10s"), heartbeat_ns=60 * SEC)))
    feed("trade", START, time=[START], sym=["X"], exchange=["A"], price=[10.0], size=[1.0])
    quote(feed, START, "A", "X")
    # Nothing else arrives for 5 s: the quote silence is seen late, raised and cleared at once.
    out = quote(feed, START + 5 * SEC, "A", "X")
    assert out[["check_name", "state"]].values.tolist() == [["stale", "raised"], ["stale", "cleared"]]
    assert (out.value == 5.0).all() and (out.threshold == 1.0).all()
    for i in range(11, 21):  # quotes every 0.5 s; the trade is up to 10 s old: within its threshold
        assert quote(feed, START + i * SEC // 2, "A", "X").empty
    out = quote(feed, START + 21 * SEC // 2, "A", "X")
    assert out[["check_name", "state", "threshold"]].values.tolist() == [["stale", "raised", 10.0]]
    assert "trade" in out.detail.iloc[0]


def test_heartbeat_is_per_venue_from_any_table() -> None:
    feed = Feed(QcEngine(QcConfig(stale={"quote": 60 * SEC}, heartbeat_ns=5 * SEC)))
    quote(feed, START, "A", "X")
    quote(feed, START, "B", "X")
    # Venue A keeps talking through feed_event rows only (no sym): that is a heartbeat too.
    feed("feed_event", START + 4 * SEC, time=[START + 4 * SEC], exchange=["A"], kind=["subscribed"])
    out = quote(feed, START + 6 * SEC, "C", "X")
    assert out[["check_name", "severity", "state", "exchange"]].values.tolist() == [
        ["heartbeat", "critical", "raised", "B"]]
    assert out.sym.isna().all() and out.threshold.iloc[0] == 5.0
    out = quote(feed, START + 7 * SEC, "B", "Y")
    assert out[["check_name", "state", "exchange"]].values.tolist() == [["heartbeat", "cleared", "B"]]


# --------------------------------------------------------------------- gaps


def test_feed_event_gaps_are_raised_once_with_the_data_gap() -> None:
    feed = Feed(QcEngine(QcConfig(trade_seq={"V*": "venue"}, l2_seq=())))
    trade = {"sym": ["X", "Y"], "exchange": ["V1", "V1"], "price": [1.0, 1.0], "size": [1.0, 1.0]}
    assert feed("trade", START, time=[START, START], seq=[1, 2], **trade).empty
    out = feed("trade", START + 1, time=[START + 1, START + 1], seq=[3, 6], **trade)
    assert out[["check_name", "state", "exchange", "value"]].values.tolist() == [["gap", "raised", "V1", 2.0]]
    assert out.sym.isna().all() and "expected 4, got 6" in out.detail.iloc[0]
    # The feed handler's own report of that gap adds nothing; another one is raised as it is.
    ev = {"exchange": ["V1", "K"], "sym": [None, "X"], "kind": ["gap", "gap"], "expected": [4, 10],
          "got": [6, 12], "detail": ["trade seq", "book gap"]}
    out = feed("feed_event", START + 2, time=[START + 2, START + 2], **ev)
    assert out[["exchange", "sym", "value", "t"]].values.tolist() == [["K", "X", 2.0, START + 2]]
    assert out.detail.iloc[0] == "feed_event: book gap"
    # A repeated or older seq is no gap; a venue whose seq is not declared gap-free is not checked.
    assert feed("trade", START + 3, time=[START + 3] * 2, seq=[5, 7], **trade).empty
    other = dict(trade, exchange=["K", "K"])
    assert feed("trade", START + 4, time=[START + 4] * 2, seq=[1, 9], **other).empty


def test_feed_handler_disconnects_and_checksum_failures_are_alerts() -> None:
    feed = Feed(QcEngine(QcConfig(heartbeat_ns=60 * SEC)))

    def events(t: int, *rows: tuple[str, str | None, str]) -> pd.DataFrame:
        return feed("feed_event", t, time=[t] * len(rows), exchange=[r[0] for r in rows], sym=[r[1] for r in rows],
                    kind=[r[2] for r in rows], detail=[f"{r[2]} detail" for r in rows])

    assert events(START, ("binance", None, "connect"), ("binance", "BTCUSD", "subscribed")).empty
    out = events(START + SEC, ("binance", None, "disconnect"))
    assert out[["check_name", "severity", "state", "exchange"]].values.tolist() == [
        ["connection", "critical", "raised", "binance"]]
    assert out.sym.isna().all() and out.detail.iloc[0] == "feed_event: disconnect detail"
    assert events(START + 2 * SEC, ("binance", None, "disconnect")).empty  # still down: raised once
    out = events(START + 3 * SEC, ("binance", None, "reconnect"), ("kraken", None, "reconnect"))
    assert out[["check_name", "state", "exchange"]].values.tolist() == [["connection", "cleared", "binance"]]
    out = events(START + 4 * SEC, ("kraken", "BTCUSD", "checksum"), ("kraken", "BTCUSD", "resync"))
    assert out[["check_name", "severity", "state", "sym"]].values.tolist() == [
        ["checksum", "warning", "raised", "BTCUSD"]]  # one-off; the resync that follows is the feed healing


def test_trade_seq_per_sym_and_l2_update_id_chains() -> None:
    feed = Feed(QcEngine(QcConfig(trade_seq={"B": "sym"}, l2_seq=("B",))))
    trade = {"exchange": ["B"] * 4, "price": [1.0] * 4, "size": [1.0] * 4, "time": [START] * 4}
    out = feed("trade", START, sym=["X", "Y", "X", "Y"], seq=[1, 1, 2, 3], **trade)
    assert out[["sym", "value"]].values.tolist() == [["Y", 1.0]]
    l2 = {"exchange": ["B"] * 5, "sym": ["X"] * 5, "side": ["bid", "ask", "bid", "bid", "ask"],
          "price": [1.0, 2.0, 1.0, 1.0, 2.0], "size": [1.0] * 5, "time": [START] * 5}
    # One update of several rows shares its ids; the jump to 5 (a snapshot after a loss) is one gap.
    out = feed("l2", START, seq_first=[1, 1, 2, 5, 5], seq_last=[1, 1, 2, 5, 5],
               is_snapshot=[True, True, False, True, True], **l2)
    assert out[["check_name", "sym", "value"]].values.tolist() == [["gap", "X", 2.0]]
    assert "expected 3, got 5" in out.detail.iloc[0]


# --------------------------------------------------------------------- books and prices


def test_crossed_and_locked_books_raise_and_clear() -> None:
    feed = Feed(QcEngine(QcConfig(xsource_min_others=5)))
    bids = [100.0, 100.2, 100.2, 100.1, 100.0, 100.0]
    asks = [100.1, 100.1, 100.1, 100.1, 100.1, 100.1]
    n = len(bids)
    out = feed("quote", START, time=[START + i for i in range(n)], sym=["X"] * n, exchange=["A"] * n,
               bid_price=bids, ask_price=asks, bid_size=[1.0] * n, ask_size=[1.0] * n)
    got = out[["check_name", "severity", "state", "t"]].values.tolist()
    assert got == [
        ["crossed", "critical", "raised", START + 1],
        ["crossed", "critical", "cleared", START + 3],
        ["locked", "info", "raised", START + 3],
        ["locked", "info", "cleared", START + 4],
    ]
    assert out.value.iloc[0] == pytest.approx((100.2 - 100.1) / 100.15 * 1e4)


def test_bad_prices_and_sizes_are_one_off_critical_alerts() -> None:
    feed = Feed(QcEngine())
    out = feed("trade", START, time=[START] * 4, sym=["X"] * 4, exchange=["A"] * 4,
               price=[1.0, 0.0, -2.0, float("nan")], size=[1.0, 1.0, 0.0, 2.0])
    assert out[["check_name", "severity", "state"]].values.tolist() == [["price", "critical", "raised"]] * 3 + [
        ["size", "critical", "raised"]]
    assert out.value.tolist()[:2] == [0.0, -2.0] and out.sym.tolist() == ["X"] * 4
    out = quote(feed, START + 1, "A", "X", bid=-1.0, ask=1.0)
    assert out[["check_name", "value"]].values.tolist() == [["price", -1.0]]


def test_event_time_going_back_or_in_the_future() -> None:
    feed = Feed(QcEngine(QcConfig(future_ns=SEC)))
    tp = START + 10 * SEC
    out = feed("trade", tp, time=[START, START + 5, START + 3, START + 4, START + 11_500 * MS], sym=["X"] * 5,
               exchange=["A"] * 5, price=[1.0] * 5, size=[1.0] * 5)
    assert out[["check_name", "t"]].values.tolist() == [["time_back", START + 3], ["time_back", START + 4],
                                                        ["time_future", START + 11_500 * MS]]
    assert out.value.tolist() == pytest.approx([2e-9, 1e-9, 1.5])
    # Per (table, venue, sym): a quote older than the trades is fine, so is another sym.
    assert quote(feed, tp, "A", "X", t=START).empty
    assert feed("trade", tp, time=[START], sym=["Y"], exchange=["A"], price=[1.0], size=[1.0]).empty


# --------------------------------------------------------------------- cross-source


def xs_quotes(feed: Feed, tp: int, mids: dict[str, float]) -> pd.DataFrame:
    n = len(mids)
    return feed("quote", tp, time=[tp] * n, sym=["X"] * n, exchange=list(mids),
                bid_price=[m - 0.01 for m in mids.values()], ask_price=[m + 0.01 for m in mids.values()],
                bid_size=[1.0] * n, ask_size=[1.0] * n)


def test_xsource_raises_after_n_breaches_in_a_row_and_clears_with_hysteresis() -> None:
    cfg = QcConfig(xsource_bps=50, xsource_clear_bps=20, xsource_raise_after=3, xsource_clear_after=2)
    feed = Feed(QcEngine(cfg))
    good = {"A": 100.0, "B": 100.01, "C": 99.99}
    xs_quotes(feed, START, good)
    seen = []
    # D: 60bps off twice, back once (resets the count), then 3 in a row -> raised on the third.
    for i, off in enumerate([60, 60, 10, 60, 60, 60, 60, 30, 10, 30, 10, 10, 60]):
        out = xs_quotes(feed, START + (i + 1) * MS, {"D": 100.0 * (1 + off / 1e4)})
        seen += [(i, s, round(v), th) for s, v, th in zip(out.state, out.value, out.threshold, strict=True)]
    assert seen == [(5, "raised", 60, 50.0), (11, "cleared", 10, 20.0)]
    assert feed.alerts.sym.tolist() == ["X", "X"] and (feed.alerts.exchange == "D").all()
    assert (feed.alerts.check_name == "xsource").all() and (feed.alerts.severity == "warning").all()


def test_xsource_ignores_stale_venues_and_needs_enough_others() -> None:
    cfg = QcConfig(stale={"quote": SEC}, xsource_raise_after=1, xsource_min_others=2)
    feed = Feed(QcEngine(cfg))
    xs_quotes(feed, START, {"A": 100.0, "B": 100.0, "C": 101.0})  # C 100bps off: raised for C only
    assert feed.alerts[["exchange", "state"]].values.tolist() == [["C", "raised"]]
    # A is stale 2 s later: B and C are left, B has one other fresh venue -> no reading for B.
    out = xs_quotes(feed, START + 2 * SEC, {"B": 100.0, "C": 101.0})
    assert (out.check_name == "stale").all()


def xs_oracle(rows: list[tuple[int, str, float]], fresh_ns: int, cfg: QcConfig) -> list[tuple[int, str, str]]:
    """Per-row reference: (tp_time, venue, mid) -> (row, venue, state) of xsource alerts."""
    mids: dict[str, tuple[float, int]] = {}
    state: dict[str, list[int]] = {}
    out = []
    for i, (tp, v, mid) in enumerate(rows):
        others = [m for w, (m, t) in mids.items() if w != v and tp - t <= fresh_ns]
        mids[v] = (mid, tp)
        if len(others) < cfg.xsource_min_others:
            continue
        dev = abs(mid / float(np.median(others)) - 1) * 1e4
        raised, breach, calm = state.setdefault(v, [0, 0, 0])
        breach = breach + 1 if dev > cfg.xsource_bps else 0
        calm = calm + 1 if dev < cfg.clear_bps else 0
        if not raised and breach >= cfg.xsource_raise_after:
            raised = 1
            out.append((i, v, "raised"))
        elif raised and calm >= cfg.xsource_clear_after:
            raised = 0
            out.append((i, v, "cleared"))
        state[v] = [raised, breach, calm]
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), splits=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_xsource_matches_a_per_row_reference_however_the_rows_are_batched(seed: int, splits: list[int]) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    venues = rng.choice(list("ABCDE"), n)
    mids = 100 * (1 + np.where(rng.random(n) < 0.3, rng.normal(0, 60, n), rng.normal(0, 10, n)) / 1e4)
    cfg = QcConfig(stale={"quote": 50 * MS}, xsource_raise_after=2, xsource_clear_after=2)
    feed = Feed(QcEngine(cfg))
    rows, i, tp = [], 0, START
    for size in [*splits, n]:
        chunk = slice(i, min(i + size, n))
        if chunk.start >= n:
            break
        tp += int(rng.integers(0, 40)) * MS
        vs, ms = venues[chunk].tolist(), mids[chunk].tolist()
        k = len(vs)
        feed("quote", tp, time=[tp] * k, sym=["X"] * k, exchange=vs, bid_price=[m - 1e-4 for m in ms],
             ask_price=[m + 1e-4 for m in ms], bid_size=[1.0] * k, ask_size=[1.0] * k)
        rows += [(tp, v, 0.5 * ((m - 1e-4) + (m + 1e-4))) for v, m in zip(vs, ms, strict=True)]
        i = chunk.stop
    alerts = feed.alerts
    got = alerts[alerts.check_name == "xsource"][["t", "exchange", "state"]].values.tolist()
    expected = [[rows[i][0], v, s] for i, v, s in xs_oracle(rows, 50 * MS, cfg)]
    assert sorted(got) == sorted(expected)
    assert got == sorted(got, key=lambda r: r[0])  # alerts in time order


# --------------------------------------------------------------------- jumps


def jump_oracle(prices: list[float], times: list[int], cfg: QcConfig) -> list[int]:
    """Per-row reference of the jump rule for one (venue, sym): indices of the jumps."""
    last: tuple[float, int] | None = None
    good: tuple[float, int] | None = None
    vol, n, out = math.nan, 0, []
    a = 2 / (cfg.jump_span + 1)
    floor = cfg.jump_dt_floor_ns / SEC
    for i, (p, t) in enumerate(zip(prices, times, strict=True)):
        xs: list[float] = []
        moves: list[float] = []
        for ref in (last, good):
            if ref is not None:
                r = abs(math.log(p / ref[0]))
                moves.append(r)
                xs.append(r / math.sqrt(max((t - ref[1]) / SEC, floor)))
        last = (p, t)
        if not xs:
            good = (p, t)
            continue
        x, move = min(xs), min(moves)
        if n >= cfg.jump_warmup and x > cfg.jump_k * vol and move * 1e4 > cfg.jump_min_bps:
            out.append(i)
            continue
        vol = x if math.isnan(vol) else (1 - a) * vol + a * x
        n += 1
        good = (p, t)
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), splits=st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_jumps_match_a_per_row_reference_however_the_rows_are_batched(seed: int, splits: list[int]) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    times = START + np.cumsum(rng.integers(0, 5 * MS, n))
    steps = rng.normal(0, 3e-4, n)
    shift = rng.random(n) < 0.005  # level shifts, kept
    steps[shift] += rng.choice([-1, 1], shift.sum()) * 0.03
    prices = 100 * np.exp(np.cumsum(steps))
    bad = rng.random(n) < 0.02  # bad prints, not kept
    prices[bad] *= 1 + rng.choice([-1, 1], bad.sum()) * rng.uniform(0.01, 0.2, bad.sum())
    venues = rng.choice(["A", "B", "C"], n)  # three venues' trades interleaved, the same walk scaled
    prices *= np.select([venues == "A", venues == "B"], [1.0, 0.01], 50.0)
    cfg = QcConfig(jump_warmup=10, jump_span=int(rng.integers(2, 60)))
    feed = Feed(QcEngine(cfg))
    i = 0
    for size in [*splits, n]:
        if i >= n:
            break
        j = min(i + size, n)
        feed("trade", int(times[j - 1]), time=times[i:j].tolist(), sym=["X"] * (j - i), exchange=venues[i:j].tolist(),
             price=prices[i:j].tolist(), size=[1.0] * (j - i))
        i = j
    alerts = feed.alerts
    got = sorted(alerts[alerts.check_name == "jump"][["t", "exchange"]].itertuples(index=False, name=None))
    expected = []
    for v in "ABC":
        rows = np.flatnonzero(venues == v)
        expected += [(int(times[rows[k]]), v) for k in jump_oracle(prices[rows].tolist(), times[rows].tolist(), cfg)]
    assert got == sorted(expected)
    assert len(expected) >= bad[100:].sum() // 2  # the check has something to catch


def test_a_bad_print_is_one_alert_and_a_level_shift_one_alert() -> None:
    cfg = QcConfig(jump_warmup=5, jump_k=10, jump_min_bps=20)
    feed = Feed(QcEngine(cfg))
    prices = [100.0, 100.01, 100.0, 100.02, 100.01, 100.0, 100.01, 100.02,
              110.0,  # bad print
              100.01, 100.02, 100.0,
              105.0, 105.01, 105.02, 105.0]  # the market moved for good
    n = len(prices)
    times = [START + i * 100 * MS for i in range(n)]
    out = feed("trade", times[-1], time=times, sym=["X"] * n, exchange=["A"] * n, price=prices, size=[1.0] * n)
    assert out.t.tolist() == [times[8], times[12]]
    assert out.value.iloc[0] == pytest.approx(math.log(110 / 100.02) * 1e4)
    assert out.threshold.iloc[0] >= 20 and "110.0" in out.detail.iloc[0]
    assert (out.state == "raised").all()  # one-off: a print does not "recover"


def test_after_a_stale_period_trades_at_the_frozen_book_are_not_judged_against_the_live_one() -> None:
    """What `make demo` showed: a pair silent for 3 s resumes with a quote 60 bps away, and the TP logs
    that quote before a trade stamped earlier that still printed at the frozen book; the next trade,
    on the live book, is no jump."""
    cfg = QcConfig(stale={"quote": 2 * SEC, "trade": 30 * SEC}, heartbeat_ns=60 * SEC, jump_warmup=5)
    feed = Feed(QcEngine(cfg))
    t = START
    for i in range(30):  # warm up A/X's volatility with small moves
        t = START + i * 100 * MS
        quote(feed, t, "A", "X", bid=100.0, ask=100.02)
        feed("trade", t, time=[t], sym=["X"], exchange=["A"], price=[100.0 + 0.01 * (i % 3)], size=[1.0])
    for i in range(1, 31):  # A/X goes quiet for 3 s while B/X goes on
        quote(feed, t + i * 100 * MS, "B", "X", bid=99.4, ask=99.42)
    t += 3 * SEC + 100 * MS
    out = quote(feed, t + 2 * MS, "A", "X", bid=99.4, ask=99.42)  # resumes 60 bps lower
    assert out[["check_name", "state", "sym"]].values.tolist() == [["stale", "cleared", "X"]]
    out = feed("trade", t + 3 * MS, time=[t + MS, t + 3 * MS], sym=["X", "X"], exchange=["A", "A"],
               price=[100.0, 99.41], size=[1.0, 1.0])
    assert out.empty, out
    out = feed("trade", t + 4 * MS, time=[t + 4 * MS], sym=["X"], exchange=["A"], price=[93.0], size=[1.0])
    assert out.check_name.tolist() == ["jump"]  # the pair is judged again, from the live book's price


def test_trades_while_the_quotes_are_stale_are_not_judged() -> None:
    """The other order `make demo` showed: the pair's first trade after its silence comes before its first
    quote, 1% from the last trade before the silence (its book moved where we could not see it)."""
    cfg = QcConfig(stale={"quote": 2 * SEC, "trade": 30 * SEC}, heartbeat_ns=60 * SEC, jump_warmup=5)
    feed = Feed(QcEngine(cfg))
    t = START
    for i in range(30):
        t = START + i * 100 * MS
        quote(feed, t, "A", "X", bid=100.0, ask=100.02)
        feed("trade", t, time=[t], sym=["X"], exchange=["A"], price=[100.0 + 0.01 * (i % 3)], size=[1.0])
    for i in range(1, 31):
        out = quote(feed, t + i * 100 * MS, "B", "X", bid=99.0, ask=99.02)
    t += 3 * SEC + 100 * MS
    out = feed("trade", t, time=[t], sym=["X"], exchange=["A"], price=[99.01], size=[1.0])
    assert "jump" not in out.check_name.tolist(), out
    out = quote(feed, t + MS, "A", "X", bid=99.0, ask=99.02)
    assert out[["check_name", "state"]].values.tolist() == [["stale", "cleared"]]
    for k in range(2, 6):  # on the live book again: judged, and quiet
        assert feed("trade", t + k * MS, time=[t + k * MS], sym=["X"], exchange=["A"], price=[99.01],
                    size=[1.0]).empty


# --------------------------------------------------------------------- engine contract


def test_replay_gives_the_same_rows_and_a_new_day_starts_clean() -> None:
    sim = Simulator(**SIM, **FAULTS, gap_events=True)
    msgs: list[Message] = []
    for k in range(150):
        end = sim.last_time_ns + PER_STEP * NS_PER_EVENT
        if k == 20:
            sim.outliers = 1e-3
        for table, batch in sim.step(PER_STEP, end).items():
            msgs.append(Message(table, len(msgs) + 1, end, stamp(batch, end, REG[table].schema)))
    first, second = QcEngine(FAST), QcEngine(FAST)
    a = [rows for m in msgs for _, rows in first.on_upd(m)]
    b = [rows for m in msgs for _, rows in second.on_upd(m)]
    assert len(a) > 10 and all(x.equals(y) for x, y in zip(a, b, strict=True)) and len(a) == len(b)
    assert first.on_eod("2023.11.14") == []
    c = [rows for m in msgs for _, rows in first.on_upd(m)]
    assert len(c) == len(a) and all(x.equals(y) for x, y in zip(a, c, strict=True))
    for rows in a:
        assert rows.schema.equals(first.schema)
        assert first.schema.names == [f.name for f in REG["qc_alert"].wire if f.name != "src_seq"]


def test_parse_stale_and_config_errors() -> None:
    assert parse_stale("5s") == {"trade": 5 * SEC, "quote": 5 * SEC, "l2": 5 * SEC}
    assert parse_stale("quote=500ms, l2=1s") == {"quote": 500 * MS, "l2": SEC, "trade": 30 * SEC}
    assert parse_stale("5s,trade=1m")["trade"] == 60 * SEC
    with pytest.raises(ValueError, match="unknown table 'fx'"):
        parse_stale("fx=1s")
    with pytest.raises(ValueError, match="duration"):
        parse_stale("quote=soon")
    with pytest.raises(ValueError, match="clear threshold"):
        QcConfig(xsource_bps=50, xsource_clear_bps=80)
    with pytest.raises(ValueError, match="scope"):
        QcConfig(trade_seq={"X": "day"})


def test_tick_rte_qc_on_a_live_tp_catches_what_tick_feed_sim_injects(tp: TPProcess, tmp_path: Path) -> None:
    err = tmp_path / "qc.stderr"
    with open(err, "wb") as f:
        qc = subprocess.Popen([TICK, "rte", "qc", "--tp", tp.address, "--stale", "quote=200ms,l2=200ms,trade=500ms",
                               "--heartbeat", "300ms"], stdout=subprocess.DEVNULL, stderr=f, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: "live" in err.read_text(), 30, "the qc engine to go live")
        truth_path = tmp_path / "injected.parquet"
        subprocess.run([TICK, "feed", "sim", "--tp", tp.address, "--rate", "20000", "--duration", "3", "--l2", "5",
                        "--seed", "5", "--gaps", "3e-4", "--gap-events", "--stale", "2e-5", "--stale-for", "1",
                        "--outliers", "3e-4", "--injected", str(truth_path)],
                       check=True, capture_output=True, timeout=60)
        truth = pq.read_table(truth_path).to_pandas()
        assert (truth.kind == "gap").sum() >= 3, truth

        # A crossed quote after the feed: once its alert is logged, the engine has seen everything before it.
        sentinel = msg("quote", 0, 0, time=[time.time_ns()], sym=["X"], exchange=["END"], bid_price=[2.0],
                       ask_price=[1.0], bid_size=[1.0], ask_size=[1.0]).data
        with Publisher(tp.address) as pub:
            pub.publish("quote", sentinel.drop_columns(["tp_time"]))
            pub.flush()

        def alerts() -> list[pd.DataFrame]:
            df = read_table(tp.log, "qc_alert").to_pandas()
            return [df[df.exchange != "END"]] if (df.exchange == "END").any() else []

        got = wait_until(alerts, 30, "the qc alert of the crossed quote sent last")[0]
    finally:
        qc.kill()
        qc.wait(10)
    # One alert per gap (the sim's feed_event and the data both report it), matched by venue and time.
    gaps = got[got.check_name == "gap"]
    assert len(gaps) == (truth.kind == "gap").sum()
    assert sorted(zip(gaps.exchange, gaps.time, strict=True)) == sorted(
        zip(truth[truth.kind == "gap"].exchange, truth[truth.kind == "gap"].end, strict=True))
    # Every outlier after the jump check's warm-up (20 returns of its venue and sym) is one jump alert.
    trades = read_table(tp.log, "trade").to_pandas()
    n_before = trades.groupby(["exchange", "sym"]).cumcount()
    judged = trades[n_before > 25]
    for f in truth[truth.kind == "outlier"].itertuples():
        if ((judged.exchange == f.exchange) & (judged.sym == f.sym) & (judged.time == f.start)).any():
            assert ((got.check_name == "jump") & (got.exchange == f.exchange) & (got.time == f.start)).sum() == 1
    assert set(got.check_name) <= {"gap", "jump", "stale", "heartbeat"}  # a stalled machine may look stale
    assert got.src_seq.notna().all()
