"""The strategy engine: accounting, simulated matching, loading, and the crash-recovery proof.

Accounting is checked on hand-computed cases and, as a property, against cash flow: for
any fills, realized + unrealized P&L = -(sum of signed qty x price) + position x mark.
The proof runs the example strategy (examples/vwap_reversion.py) twice on the same
simulated data, each on its own TP: once uninterrupted, once killed with SIGKILL mid-run
and restarted; the orders, fills and positions logged must be identical.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.sim import Simulator
from rte import Strategy
from rte.engine import EngineError
from rte.strategy import Position, load
from tests.conftest import REPO, T0, TPFactory, wait_until
from tests.rte.test_engine import frame, read_day
from tickerplant import Message, Publisher

TS = pa.timestamp("ns", tz="UTC")
EXAMPLE = REPO / "examples" / "vwap_reversion.py"


# -- accounting ------------------------------------------------------------------------------


def test_average_cost_long_then_flip_short_then_flat() -> None:
    p = Position()
    p.fill(10, 100.0)
    p.fill(10, 110.0)
    assert (p.qty, p.avg_cost, p.realized) == (20, 105.0, 0.0)
    p.fill(-5, 120.0)  # realizes 5 x (120 - 105)
    assert (p.qty, p.avg_cost, p.realized) == (15, 105.0, 75.0)
    p.fill(-20, 90.0)  # closes 15 at 90 (-225), opens 5 short at 90
    assert (p.qty, p.avg_cost, p.realized) == (-5, 90.0, -150.0)
    p.mark = 95.0
    assert p.unrealized == -25.0 and p.pnl == -175.0
    p.fill(5, 80.0)  # short covered 10 below its cost
    assert (p.qty, p.avg_cost, p.realized, p.unrealized) == (0, 0.0, -100.0, 0.0)


def test_average_cost_short_then_flip_long() -> None:
    p = Position()
    p.fill(-10, 100.0)
    p.fill(-10, 90.0)
    assert (p.qty, p.avg_cost) == (-20, 95.0)
    p.fill(5, 80.0)
    assert (p.qty, p.avg_cost, p.realized) == (-15, 95.0, 75.0)
    p.fill(20, 100.0)  # 15 covered at a loss of 5 each, 5 long opened at 100
    assert (p.qty, p.avg_cost, p.realized) == (5, 100.0, 0.0)
    p.mark = 110.0
    assert p.unrealized == 50.0


def test_float_residue_is_flat() -> None:
    p = Position()
    for q in (0.1, 0.2):
        p.fill(q, 10.0)
    p.fill(-0.3, 11.0)
    assert p.qty == 0.0 and p.avg_cost == 0.0 and p.realized == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(fills=st.lists(st.tuples(st.integers(-50, 50).filter(bool), st.integers(1, 1000)), min_size=1, max_size=30),
       mark=st.integers(1, 1000))
def test_pnl_equals_cash_flow_plus_marked_position(fills: list[tuple[int, int]], mark: int) -> None:
    p = Position()
    for qty, price in fills:
        p.fill(float(qty), float(price))
    p.mark = float(mark)
    cash = -sum(q * pr for q, pr in fills)
    qty = sum(q for q, _ in fills)
    assert p.qty == qty
    assert p.pnl == pytest.approx(cash + qty * mark, rel=1e-9, abs=1e-6)


# -- matching --------------------------------------------------------------------------------

QuoteRow = tuple[int, str, str, float | None, float | None]  # time offset, sym, venue, bid, ask


def quotes(seq: int, rows: list[QuoteRow]) -> Message:
    data = pa.RecordBatch.from_pydict({
        "time": pa.array([T0 + r[0] for r in rows], pa.int64()).cast(TS),
        "sym": pa.array([r[1] for r in rows], pa.string()), "exchange": pa.array([r[2] for r in rows], pa.string()),
        "bid_price": pa.array([r[3] for r in rows], pa.float64()),
        "ask_price": pa.array([r[4] for r in rows], pa.float64())})
    return Message("quote", seq, T0 + seq, data)


def trade(seq: int, t: int, sym: str = "BTC", price: float = 100.0) -> Message:
    data = pa.RecordBatch.from_pydict({
        "time": pa.array([T0 + t], pa.int64()).cast(TS), "sym": pa.array([sym]),
        "price": pa.array([price]), "size": pa.array([1.0])})
    return Message("trade", seq, T0 + seq, data)


class Scripted(Strategy):
    """Runs the next queued action on each trade update."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.script: list[Callable[[Strategy], Any]] = []

    def on_trade(self, batch: pa.RecordBatch) -> None:
        if self.script:
            self.script.pop(0)(self)


def rows(outs: list[tuple[str, pa.RecordBatch]], table: str) -> list[dict[str, Any]]:
    return [r for t, b in outs if t == table for r in b.to_pylist()]


def test_market_orders_fill_at_the_best_quote_across_venues() -> None:
    s = Scripted()
    assert s.name == "Scripted" and s.inputs == ("trade", "quote")
    s.on_upd(quotes(1, [(0, "BTC", "SIMA", 100.2, 101.0), (1, "BTC", "SIMB", 100.0, 100.5)]))
    s.script += [lambda s: s.buy("BTC", 2), lambda s: s.sell("BTC", 3)]
    out = s.on_upd(trade(2, 5))
    assert rows(out, "orders") == [{"time": pd.Timestamp(T0 + 5, tz="UTC"), "sym": "BTC", "strategy": "Scripted",
                                    "order_id": 1, "side": "buy", "qty": 2.0, "limit_price": None}]
    (fill,) = rows(out, "fill")
    assert (fill["price"], fill["exchange"], fill["order_id"]) == (100.5, "SIMB", 1)
    (pos,) = rows(out, "position")
    # mark = mid of best bid 100.2 (SIMA) and best ask 100.5 (SIMB)
    assert pos["position"] == 2 and pos["avg_cost"] == 100.5 and pos["mark"] == pytest.approx(100.35)
    assert pos["unrealized_pnl"] == pytest.approx(2 * (100.35 - 100.5))
    out = s.on_upd(trade(3, 6))
    (fill,) = rows(out, "fill")
    assert (fill["price"], fill["exchange"], fill["order_id"], fill["side"]) == (100.2, "SIMA", 2, "sell")
    (pos,) = rows(out, "position")
    assert pos["position"] == -1 and pos["realized_pnl"] == pytest.approx(2 * (100.2 - 100.5))
    assert s.pnl() == pytest.approx(pos["realized_pnl"] + pos["unrealized_pnl"])


def test_resting_limit_fills_on_the_first_quote_that_crosses_it_at_the_quote_price() -> None:
    s = Scripted()
    s.on_upd(quotes(1, [(0, "BTC", "SIMA", 99.0, 100.0)]))
    s.script.append(lambda s: s.buy("BTC", 1, limit=99.0))
    out = s.on_upd(trade(2, 1))
    assert rows(out, "orders")[0]["limit_price"] == 99.0 and not rows(out, "fill")
    assert [o.order_id for o in s.open_orders("BTC")] == [1]
    out = s.on_upd(quotes(3, [(10, "BTC", "SIMA", 98.0, 99.5), (11, "ETH", "SIMB", 1.0, 98.0),
                              (12, "BTC", "SIMB", 98.0, 98.9), (13, "BTC", "SIMA", 98.0, 98.5)]))
    (fill,) = rows(out, "fill")
    assert (fill["price"], fill["exchange"], fill["time"]) == (98.9, "SIMB", pd.Timestamp(T0 + 12, tz="UTC"))
    assert not s.open_orders() and s.position("BTC") == 1.0
    # A marketable limit fills at once, at the best quote (better than its limit).
    s.script.append(lambda s: s.sell("BTC", 1, limit=90.0))
    (fill,) = rows(s.on_upd(trade(4, 20)), "fill")
    assert fill["price"] == 98.0 and s.position("BTC") == 0.0


def test_a_market_order_without_quotes_waits_for_one() -> None:
    s = Scripted()
    s.script.append(lambda s: s.buy("ETH", 1))
    assert not rows(s.on_upd(trade(1, 0, "ETH")), "fill")
    out = s.on_upd(quotes(2, [(5, "ETH", "SIMA", 10.0, None), (6, "ETH", "SIMB", 10.0, 10.2)]))
    assert [(f["price"], f["exchange"]) for f in rows(out, "fill")] == [(10.2, "SIMB")]


def test_position_rows_follow_fills_and_mark_moves_of_held_syms_only() -> None:
    s = Scripted()
    s.on_upd(quotes(1, [(0, "BTC", "SIMA", 99.0, 101.0), (0, "ETH", "SIMA", 9.0, 11.0)]))
    s.script += [lambda s: (s.buy("BTC", 1), s.buy("BTC", 1))]
    out = s.on_upd(trade(2, 1))
    assert len(rows(out, "fill")) == 2 and len(rows(out, "position")) == 1  # one row per sym per update
    assert [o["order_id"] for o in rows(out, "orders")] == [1, 2]
    # ETH (flat) moves: no row; BTC quote twice in one update: one row, at the last mark.
    out = s.on_upd(quotes(3, [(2, "ETH", "SIMA", 9.5, 11.0), (3, "BTC", "SIMA", 100.0, 102.0),
                              (4, "BTC", "SIMA", 101.0, 103.0)]))
    assert [(r["sym"], r["mark"], r["unrealized_pnl"]) for r in rows(out, "position")] == [("BTC", 102.0, 2.0)]
    assert s.on_upd(quotes(4, [(5, "BTC", "SIMA", 101.0, 103.0)])) == []  # mark unchanged
    assert s.on_eod("2026-11-24") == []
    assert s.position("BTC") == 0.0 and s.next_order_id == 1


def test_inputs_include_the_bar_table_only_when_on_bar_is_overridden() -> None:
    class Bars(Strategy):
        bars = "bar_1s"

        def on_bar(self, bar: pa.RecordBatch) -> None:
            pass

    assert Bars().inputs == ("trade", "quote", "bar_1s")
    assert Scripted(name="x").output_key == ("strategy", "x")
    with pytest.raises(TypeError, match="no parameter 'nope'"):
        Scripted(nope=1)
    with pytest.raises(ValueError, match="positive"):
        Scripted().buy("BTC", 0)


def test_load_finds_the_one_strategy(tmp_path: Path) -> None:
    cls = load(EXAMPLE)
    assert cls.__name__ == "VwapReversion" and issubclass(cls, Strategy)
    (tmp_path / "none.py").write_text("X = 1\n")
    with pytest.raises(EngineError, match="no Strategy subclass"):
        load(tmp_path / "none.py")
    (tmp_path / "two.py").write_text("from rte import Strategy\nclass A(Strategy): pass\nclass B(Strategy): pass\n")
    with pytest.raises(EngineError, match="2 Strategy subclasses"):
        load(tmp_path / "two.py")
    with pytest.raises(EngineError, match="not found"):
        load(tmp_path / "missing.py")


# -- the proof: kill -9 mid-run, restart, same result as an uninterrupted run ---------------------

PARAMS = {"window": "2s", "threshold_bps": 3.0, "cooldown": "200ms", "order_notional": 5000.0}

STRATEGY_SCRIPT = """
import asyncio, json, os, signal, sys
sys.path.insert(0, {repo!r})
from rte.engine import RunStats, run
from rte.strategy import load
from tickerplant.aio import install_uvloop
address, path, progress, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

async def main():
    stop, stats = asyncio.Event(), RunStats()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async def report():
        while True:  # the last input seq handled, for the test to wait on
            with open(progress + ".tmp", "w") as f:
                f.write(str(stats.seq))
            os.replace(progress + ".tmp", progress)
            await asyncio.sleep(0.02)
    reporter = asyncio.get_running_loop().create_task(report())
    await run(load(path)(**params), address, stop=stop, stats=stats)
    reporter.cancel()
    print(json.dumps({{"published": stats.published, "suppressed": stats.suppressed,
                       "mismatches": stats.mismatches}}), flush=True)

install_uvloop()
asyncio.run(main())
"""


class StrategyProcess:
    def __init__(self, address: str, tmp: Path, n: int) -> None:
        self.progress = tmp / f"strategy{n}.progress"
        self.stderr_path = tmp / f"strategy{n}.stderr"
        script = STRATEGY_SCRIPT.format(repo=str(REPO))
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", script, address, str(EXAMPLE), str(self.progress), json.dumps(PARAMS)],
                stdout=subprocess.PIPE, stderr=err, cwd=tmp)

    def handled(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.progress.read_text())
        return 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def finish(self, last_input: int) -> dict[str, Any]:
        """Wait until every input up to ``last_input`` is handled, then stop gracefully."""
        wait_until(lambda: self.handled() >= last_input or self.proc.poll() is not None, 60,
                   f"the strategy to handle seq {last_input}", interval=0.05)
        assert self.proc.poll() is None, self.stderr_path.read_text()
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, self.stderr_path.read_text()
        report: dict[str, Any] = json.loads(out)
        return report


@pytest.fixture
def strategies(tmp_path: Path) -> Iterator[Callable[[str], StrategyProcess]]:
    made: list[StrategyProcess] = []

    def start(address: str) -> StrategyProcess:
        made.append(StrategyProcess(address, tmp_path, len(made)))
        return made[-1]

    yield start
    for p in made:
        with contextlib.suppress(Exception):
            p.kill()


def market_data(steps: int = 120) -> list[tuple[str, pa.RecordBatch]]:
    """Deterministic simulated trades and quotes: 3 syms x 3 venues, 300 events per 100 ms."""
    sim = Simulator(3, 3, seed=11, start_ns=T0)
    out: list[tuple[str, pa.RecordBatch]] = []
    for k in range(steps):
        out += sorted(sim.step(300, T0 + (k + 1) * 100_000_000).items())
    return out


def publish(address: str, data: list[tuple[str, pa.RecordBatch]], pause: float = 0.0) -> None:
    """One UPD per batch, in this order on every TP (the publisher would otherwise group a window by table)."""
    with Publisher(address, name="test feed") as pub:
        for table, batch in data:
            pub.publish(table, batch)
            pub.flush(durable=False)
            if pause:
                time.sleep(pause)
        pub.flush()


def last_input(address: str) -> int:
    return max(m.seq for m in read_day(address, ["trade", "quote"]) if isinstance(m, Message))


def strategy_tables(address: str) -> dict[str, pd.DataFrame]:
    items = [m for m in read_day(address, ["orders", "fill", "position"]) if isinstance(m, Message)]
    return {t: frame(items, t).drop(columns=["tp_time", "seq", "src_seq"], errors="ignore").reset_index(drop=True)
            for t in ("orders", "fill", "position")}


def test_kill_9_mid_run_then_restart_equals_an_uninterrupted_run(
        tp_process: TPFactory, strategies: Callable[[str], StrategyProcess], tmp_path: Path) -> None:
    data = market_data()
    # Uninterrupted, on its own TP.
    clean_tp = tp_process("--heartbeat", "0.2")
    clean = strategies(clean_tp.address)
    publish(clean_tp.address, data)
    report = clean.finish(last_input(clean_tp.address))
    assert report["mismatches"] == 0 and not report["suppressed"]
    expected = strategy_tables(clean_tp.address)
    assert len(expected["orders"]) >= 10, "the example strategy should trade on this data"

    # Killed mid-run with SIGKILL while the feed is still publishing, then restarted.
    tp = tp_process("--heartbeat", "0.2", log_dir=tmp_path / "second")  # not the first TP's log directory
    first = strategies(tp.address)
    feed = threading.Thread(target=publish, args=(tp.address, data, 0.004))
    feed.start()
    wait_until(lambda: len(strategy_tables(tp.address)["orders"]) >= 3, 60, "some orders", interval=0.1)
    first.kill()
    assert feed.is_alive(), "the feed was over before the kill: not mid-run"
    second = strategies(tp.address)
    feed.join(60)
    report = second.finish(last_input(tp.address))
    assert report["mismatches"] == 0 and report["suppressed"].get("orders", 0) >= 3, report
    got = strategy_tables(tp.address)

    assert got["orders"].order_id.is_unique and got["fill"].order_id.is_unique
    for table in ("orders", "fill", "position"):
        pd.testing.assert_frame_equal(got[table], expected[table], obj=table)
    # Final P&L per sym, checked against cash flow from the fills and the last mark.
    final = got["position"].groupby("sym").tail(1).set_index("sym")
    fills = got["fill"].assign(signed=lambda f: f.qty.where(f.side == "buy", -f.qty))
    for sym, f in fills.groupby("sym"):
        row = final.loc[sym]
        cash = -(f.signed * f.price).sum()
        assert row.position == pytest.approx(f.signed.sum(), abs=1e-9)
        assert row.realized_pnl + row.unrealized_pnl == pytest.approx(cash + row.position * row.mark, abs=1e-6)
    assert not math.isnan(final.mark.sum())
