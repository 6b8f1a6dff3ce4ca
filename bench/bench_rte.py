"""Indicator speed: VWAP + RSI + EMA vectorized over many trades, and the per-tick latency of the engines.

What is timed (one process, pinned to one core with ``os.sched_setaffinity(0, {0})`` where the
OS has it; the data already in memory as numpy columns):

* the data: ``--trades`` (default 10,000,000) trades over ``--syms`` (default 100) syms, in
  arrival order: a sym drawn at random per trade, one trading day of event times (so a 5-minute
  window holds ~350 trades per sym at the default size), a random-walk price per sym, sizes
  from a small set;
* ``vectorized`` (the goal's figure): ``Rsi(14).update``, ``Ema(20).update`` and
  ``SlidingVwap(5m).update`` of ``rte.indicators`` over all the trades, fresh state each run
  (the numba kernels compiled beforehand), two ways: ``one_batch`` (one call each over the
  whole array) and ``batches`` (``--batch`` rows per call, default 10,000, state carried
  across calls). ticks/s = trades / (RSI + EMA + VWAP seconds). Figures are the median of
  ``max(3, --repeats)`` runs (``--quick``: one run, 200,000 trades).
* ``engine_batches`` (for information): ``IndicatorEngine.on_upd`` (RSI, EMA, realized
  volatility, Arrow in and out) on ``--batch``-row trade messages of the same data.
* ``latency``: ``IndicatorEngine.on_upd(msg)`` on ``--latency-ticks`` (default 100,000;
  ``--quick`` 2,000) one-row trade messages, built beforehand, cycling through the syms, after
  1,000 untimed ticks; each call timed with ``time.perf_counter_ns``; p50 / p99 / p99.9 / max in µs.
* ``baseline`` (skipped by ``--no-baselines``): the same three indicators the usual way, per sym
  after a stable sort by sym: ``talib.RSI`` and ``talib.EMA`` (C) and pandas
  ``rolling("300s", on="time")`` sums for the VWAP; ``ratio_vs_baseline`` = our one-batch
  ticks/s / the baseline's, from the same run.

* ``windows`` (skipped by ``--no-windows``): the event-time window engines of ``rte.bars``,
  ``BarEngine(1s)`` and ``VwapEngine(5s window, 1s slide)``, on their own stream: 100 syms (``--syms``),
  ``--window-rate`` (default 1,000) trades per second of event time, a sym drawn at random per
  trade, event times jittered up to 50 ms backwards (out of order, within the 1 s bound), ``tp_time``
  a millisecond after the latest event time, so the watermark moves and windows fire as they would
  live (all syms' windows of one second fire on the update that moves the slowest sym past it).
  ``latency``: ``on_upd(msg)`` per 1-row message (``--window-ticks``, default 100,000; ``--quick``
  2,000; 1,000 untimed first), p50 / p99 / p99.9 / max in µs, with the garbage collector disabled
  while timing and again with it enabled (``gc_p99_us``), and separately the updates that fired
  windows (``firing``: how many, their p50 and max). ``before``: the same on the first
  ``--window-before-ticks`` (default 20,000) messages with the row path switched off
  (``windows.scalar_rows = 0``: every update through the whole-batch numpy path, which is how every
  update ran before the row path existed). ``throughput``: ``on_upd`` on 1,000-row messages of
  ``--window-trades`` (default 1,000,000; ``--quick`` 50,000) trades, Arrow in and out.

Goals (issue 5): >= 5M ticks/s for VWAP+RSI+EMA vectorized; <= 50 µs p99 per tick added by an
engine (here: the indicator engine, ``BarEngine`` and ``VwapEngine``). Run ``python bench/bench_rte.py``
(``--trades``, ``--syms``, ``--batch``, ``--latency-ticks``, ``--repeats``, ``--quick``, ``--no-baselines``,
``--window-ticks``, ``--window-before-ticks``, ``--window-trades``, ``--window-rate``, ``--no-windows``,
``--json`` for JSON only).
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``rte`` / ``tickerplant`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa

from rte.bars import BarEngine, VwapEngine
from rte.engine import Engine
from rte.indicators import Ema, IndicatorEngine, Rsi, SlidingVwap
from tickerplant.message import Message
from tickerplant.schema import Registry

TRADES = 10_000_000
QUICK_TRADES = 200_000
SYMS = 100
BATCH = 10_000
LATENCY_TICKS = 100_000
QUICK_LATENCY_TICKS = 2_000
WARMUP_TICKS = 1_000
WINDOW_NS = 300_000_000_000  # 5 minutes
DAY_NS = 86_400_000_000_000
T0 = 1_700_000_000_000_000_000
GOAL_TICKS_PER_S = 5_000_000.0
GOAL_P99_US = 50.0
WINDOW_TICKS = 100_000
QUICK_WINDOW_TICKS = 2_000
WINDOW_BEFORE_TICKS = 20_000
WINDOW_TRADES = 1_000_000
QUICK_WINDOW_TRADES = 50_000
WINDOW_RATE = 1_000  # trades per second of event time
WINDOW_BATCH = 1_000
SECOND_NS = 1_000_000_000
WindowEngine = BarEngine | VwapEngine


def make_trades(n: int, syms: int, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, syms, n).astype(np.int64)
    time_ns = T0 + np.sort(rng.integers(0, DAY_NS, n)).astype(np.int64)
    start = rng.uniform(10, 1000, syms)
    # Each sym's own random walk: cumulative sums of log steps within each sym's rows, in arrival order.
    steps = rng.normal(0, 2e-4, n)
    order = np.argsort(keys, kind="stable")
    walked = np.empty(n)
    sorted_keys = keys[order]
    sums = np.cumsum(steps[order])
    firsts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    offsets = np.repeat(sums[firsts] - steps[order][firsts], np.diff(np.r_[firsts, n]))
    walked[order] = sums - offsets
    price = start[keys] * np.exp(walked)
    size = rng.choice(np.array([0.001, 0.01, 0.1, 0.5, 1.0, 2.5]), n)
    return {"key": keys, "time": time_ns, "price": price, "size": size}


def _median_run(run: Callable[[], dict[str, float]], repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        gc.collect()
        runs.append(run())
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def vectorized(data: dict[str, np.ndarray], batch: int | None) -> dict[str, float]:
    """Seconds for RSI, EMA and VWAP over all trades (``batch`` rows per call, or one call)."""
    n = data["key"].shape[0]
    rsi, ema, vwap = Rsi(14), Ema(20), SlidingVwap(WINDOW_NS)
    step = batch or n
    took = {"rsi": 0.0, "ema": 0.0, "vwap": 0.0}
    for a in range(0, n, step):
        k, t, p, q = (data[c][a:a + step] for c in ("key", "time", "price", "size"))
        t0 = time.perf_counter()
        rsi.update(k, p)
        t1 = time.perf_counter()
        ema.update(k, p)
        t2 = time.perf_counter()
        vwap.update(k, t, p, q)
        t3 = time.perf_counter()
        took["rsi"] += t1 - t0
        took["ema"] += t2 - t1
        took["vwap"] += t3 - t2
    took["seconds"] = took["rsi"] + took["ema"] + took["vwap"]
    return took


def baseline(data: dict[str, np.ndarray]) -> dict[str, float]:
    """The same indicators the usual way: stable sort by sym, then talib and pandas per sym."""
    import pandas as pd
    import talib

    t0 = time.perf_counter()
    order = np.argsort(data["key"], kind="stable")
    keys = data["key"][order]
    bounds = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, keys.shape[0]]
    price, size, times = data["price"][order], data["size"][order], data["time"][order]
    rsi = np.empty_like(price)
    ema = np.empty_like(price)
    vwap = np.empty_like(price)
    for a, b in itertools.pairwise(bounds):
        rsi[a:b] = talib.RSI(price[a:b], timeperiod=14)
        ema[a:b] = talib.EMA(price[a:b], timeperiod=20)
        frame = pd.DataFrame({"t": pd.to_datetime(times[a:b]), "pq": price[a:b] * size[a:b], "q": size[a:b]})
        sums = frame.rolling(pd.Timedelta(WINDOW_NS, "ns"), on="t")[["pq", "q"]].sum()
        vwap[a:b] = (sums["pq"] / sums["q"]).to_numpy()
    out = np.empty((3, price.shape[0]))
    out[:, order] = np.stack((rsi, ema, vwap))  # back to arrival order, as ours returns them
    return {"seconds": time.perf_counter() - t0}


def trade_batch(data: dict[str, np.ndarray], rows: slice, names: pa.Array, schema: pa.Schema) -> pa.RecordBatch:
    n = data["key"][rows].shape[0]
    cols = []
    for field in schema:
        if field.name in ("time", "tp_time"):  # tp_time: the data's own if it has one, else the event time
            cols.append(pa.array(data.get(field.name, data["time"])[rows]).view(field.type))
        elif field.name == "sym":
            cols.append(names.take(pa.array(data["key"][rows])))
        elif field.name in ("price", "size"):
            cols.append(pa.array(data[field.name][rows]))
        else:
            cols.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def engine_batches(data: dict[str, np.ndarray], batch: int, names: pa.Array, schema: pa.Schema) -> dict[str, float]:
    n = data["key"].shape[0]
    msgs = [Message("trade", i + 1, 0, trade_batch(data, slice(a, a + batch), names, schema))
            for i, a in enumerate(range(0, n, batch))]
    engine = IndicatorEngine()
    t0 = time.perf_counter()
    for m in msgs:
        engine.on_upd(m)
    return {"seconds": time.perf_counter() - t0}


def latency(data: dict[str, np.ndarray], ticks: int, names: pa.Array, schema: pa.Schema) -> dict[str, Any]:
    total = WARMUP_TICKS + ticks
    msgs = [Message("trade", i + 1, int(data["time"][i % data["key"].shape[0]]),
                    trade_batch(data, slice(i % data["key"].shape[0], i % data["key"].shape[0] + 1), names, schema))
            for i in range(total)]
    engine = IndicatorEngine()
    samples = np.empty(ticks, dtype=np.int64)
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()  # the collector's pauses are the process's, not the engine's
    try:
        for m in msgs[:WARMUP_TICKS]:
            engine.on_upd(m)
        for i, m in enumerate(msgs[WARMUP_TICKS:]):
            t0 = clock()
            engine.on_upd(m)
            samples[i] = clock() - t0
    finally:
        gc.enable()
    us = samples / 1000.0
    return {"ticks": ticks, "p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "p999_us": float(np.percentile(us, 99.9)), "max_us": float(us.max()), "mean_us": float(us.mean())}


def window_stream(n: int, syms: int, rate: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Trades for the window engines: ``rate`` per second of event time, slightly out of order, with tp_time."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, syms, n).astype(np.int64)
    base = T0 + (np.arange(n, dtype=np.int64) * SECOND_NS) // rate
    time_ns = base - rng.integers(0, 50_000_000, n)  # up to 50 ms late: within the 1 s bound
    tp_time = np.maximum.accumulate(time_ns) + 1_000_000
    price = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    size = rng.choice(np.array([0.001, 0.01, 0.1, 0.5, 1.0, 2.5]), n)
    return {"key": keys, "time": time_ns, "tp_time": tp_time, "price": price, "size": size}


def window_engines() -> dict[str, Callable[[], WindowEngine]]:
    return {"bars_1s": lambda: BarEngine(SECOND_NS),
            "vwap_5s_1s": lambda: VwapEngine(5 * SECOND_NS, SECOND_NS)}


def _percentiles(samples: np.ndarray) -> dict[str, float]:
    us = samples / 1000.0
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "p999_us": float(np.percentile(us, 99.9)), "max_us": float(us.max()), "mean_us": float(us.mean())}


def _time_updates(engine: Engine, msgs: list[Message], collect: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each ``on_upd`` timed; and whether it produced rows. Warm-up is the caller's."""
    samples = np.empty(len(msgs), dtype=np.int64)
    fired = np.zeros(len(msgs), dtype=bool)
    clock = time.perf_counter_ns
    gc.collect()
    if not collect:
        gc.disable()  # the collector's pauses are the process's, not the engine's (measured apart)
    try:
        for i, m in enumerate(msgs):
            t0 = clock()
            out = engine.on_upd(m)
            samples[i] = clock() - t0
            fired[i] = bool(out)
    finally:
        gc.enable()
    return samples, fired


def window_latency(make: Callable[[], WindowEngine], msgs: list[Message], ticks: int, row_path: bool) -> dict[str, Any]:
    engine = make()
    if not row_path:
        engine.windows.scalar_rows = 0  # every update through the batch path
    for m in msgs[:WARMUP_TICKS]:
        engine.on_upd(m)
    timed = msgs[WARMUP_TICKS:WARMUP_TICKS + ticks]
    samples, fired = _time_updates(engine, timed, collect=False)
    res: dict[str, Any] = {"ticks": len(timed), **_percentiles(samples)}
    res["firing"] = {"updates": int(fired.sum()), **(_percentiles(samples[fired]) if fired.any() else {})}
    if row_path:  # the same again, fresh engine, with the collector on
        engine = make()
        for m in msgs[:WARMUP_TICKS]:
            engine.on_upd(m)
        gc_samples, _ = _time_updates(engine, timed, collect=True)
        gc_fig = _percentiles(gc_samples)
        res["gc_p99_us"], res["gc_p999_us"], res["gc_max_us"] = gc_fig["p99_us"], gc_fig["p999_us"], gc_fig["max_us"]
    return res


def window_throughput(make: Callable[[], WindowEngine], msgs: list[Message], trades: int) -> dict[str, float]:
    engine = make()
    gc.collect()
    t0 = time.perf_counter()
    for m in msgs:
        engine.on_upd(m)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "trades_per_s": trades / seconds}


def windows(syms: int, ticks: int, before_ticks: int, trades: int, rate: int, repeats: int) -> dict[str, Any]:
    """The ``windows`` section: per-update latency on 1-row messages and throughput on 1,000-row ones."""
    schema = Registry.default()["trade"].schema
    names = pa.array([f"SYM{i:03d}" for i in range(syms)], type=pa.string())
    n_small = WARMUP_TICKS + ticks
    data = window_stream(max(n_small, trades), syms, rate)
    small = [Message("trade", i + 1, int(data["tp_time"][i]), trade_batch(data, slice(i, i + 1), names, schema))
             for i in range(n_small)]
    big = [Message("trade", j + 1, int(data["tp_time"][min(a + WINDOW_BATCH, trades) - 1]),
                   trade_batch(data, slice(a, a + WINDOW_BATCH), names, schema))
           for j, a in enumerate(range(0, trades, WINDOW_BATCH))]
    out: dict[str, Any] = {"syms": syms, "rate_per_s": rate, "throughput_batch_rows": WINDOW_BATCH,
                           "throughput_trades": trades}
    for label, make in window_engines().items():
        fig: dict[str, Any] = {"latency": window_latency(make, small, ticks, row_path=True),
                               "before": window_latency(make, small, min(ticks, before_ticks), row_path=False)}
        fig["throughput"] = _median_run(functools.partial(window_throughput, make, big, trades), repeats)
        out[label] = fig
    return out


def run(trades: int, syms: int, batch: int, latency_ticks: int, repeats: int, baselines: bool,
        window_args: dict[str, int] | None = None) -> dict[str, Any]:
    pinned = None
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
        pinned = sorted(os.sched_getaffinity(0))
    data = make_trades(trades, syms)
    small = {k: v[:2000] for k, v in data.items()}
    vectorized(small, 500)  # compile (or load) the numba kernels: not timed
    schema = Registry.default()["trade"].schema
    names = pa.array([f"SYM{i:03d}" for i in range(syms)], type=pa.string())
    engine_batches(small, 500, names, schema)

    res: dict[str, Any] = {"trades": trades, "syms": syms, "batch_rows": batch, "window_ns": WINDOW_NS,
                           "repeats": repeats, "pinned_cpus": pinned}
    vec: dict[str, Any] = {}
    for label, size in (("one_batch", None), ("batches", batch)):
        fig = _median_run(functools.partial(vectorized, data, size), repeats)
        vec[label] = {**fig, "ticks_per_s": trades / fig["seconds"]}
    res["vectorized"] = vec
    eng = _median_run(lambda: engine_batches(data, batch, names, schema), repeats)
    res["engine_batches"] = {**eng, "ticks_per_s": trades / eng["seconds"]}
    res["latency"] = latency(data, latency_ticks, names, schema)
    best = max(vec["one_batch"]["ticks_per_s"], vec["batches"]["ticks_per_s"])
    res["goals"] = {
        "vectorized_ticks_per_s": {"goal": GOAL_TICKS_PER_S, "value": vec["one_batch"]["ticks_per_s"],
                                   "met": vec["one_batch"]["ticks_per_s"] >= GOAL_TICKS_PER_S},
        "latency_p99_us": {"goal": GOAL_P99_US, "value": res["latency"]["p99_us"],
                           "met": res["latency"]["p99_us"] <= GOAL_P99_US},
    }
    if window_args is not None:
        res["windows"] = windows(syms, repeats=repeats, **window_args)
        for label in window_engines():
            p99 = res["windows"][label]["latency"]["p99_us"]
            res["goals"][f"{label}_latency_p99_us"] = {"goal": GOAL_P99_US, "value": p99, "met": p99 <= GOAL_P99_US}
    res["best_vectorized_ticks_per_s"] = best
    res["goal_met"] = all(g["met"] for g in res["goals"].values())
    if baselines:
        base = _median_run(lambda: baseline(data), 1)
        res["baseline"] = {**base, "ticks_per_s": trades / base["seconds"],
                           "what": "per sym: talib.RSI + talib.EMA + pandas rolling('300s') VWAP"}
        res["ratio_vs_baseline"] = vec["one_batch"]["ticks_per_s"] / res["baseline"]["ticks_per_s"]
    return res


def format_table(res: dict[str, Any]) -> str:
    lines = [f"{'indicators (' + format(res['trades'], ',') + ' trades, ' + str(res['syms']) + ' syms)':<46} "
             f"{'ticks/s':>14} {'seconds':>9} {'rsi s':>7} {'ema s':>7} {'vwap s':>7}"]
    for label, key in (("VWAP+RSI+EMA, one batch", "one_batch"),
                       (f"VWAP+RSI+EMA, {res['batch_rows']:,}-row batches", "batches")):
        r = res["vectorized"][key]
        lines.append(f"{label:<46} {r['ticks_per_s']:>14,.0f} {r['seconds']:>9.3f} {r['rsi']:>7.3f} "
                     f"{r['ema']:>7.3f} {r['vwap']:>7.3f}")
    e = res["engine_batches"]
    lines.append(f"{'IndicatorEngine.on_upd, ' + format(res['batch_rows'], ',') + '-row msgs':<46} "
                 f"{e['ticks_per_s']:>14,.0f} {e['seconds']:>9.3f}")
    if "baseline" in res:
        b = res["baseline"]
        lines.append(f"{'baseline: talib + pandas per sym':<46} {b['ticks_per_s']:>14,.0f} {b['seconds']:>9.3f}")
        lines.append(f"ratio vs baseline (same run): {res['ratio_vs_baseline']:.1f}x")
    lat = res["latency"]
    lines.append(f"IndicatorEngine.on_upd, 1-row msgs ({lat['ticks']:,}): p50 {lat['p50_us']:.1f} us, "
                 f"p99 {lat['p99_us']:.1f} us, p99.9 {lat['p999_us']:.1f} us, max {lat['max_us']:.1f} us")
    if "windows" in res:
        w = res["windows"]
        lines.append(f"window engines, {w['syms']} syms, {w['rate_per_s']:,} trades per s of event time:")
        for label in window_engines():
            f = w[label]
            for tag, lat in (("1-row", f["latency"]), ("1-row, batch path (before)", f["before"])):
                line = (f"  {label} {tag} ({lat['ticks']:,}): p50 {lat['p50_us']:.1f} us, p99 {lat['p99_us']:.1f} us, "
                        f"p99.9 {lat['p999_us']:.1f} us, max {lat['max_us']:.1f} us")
                if lat["firing"]["updates"]:
                    line += (f"; {lat['firing']['updates']} firing updates: p50 {lat['firing']['p50_us']:.1f} us, "
                             f"max {lat['firing']['max_us']:.1f} us")
                if "gc_p99_us" in lat:
                    line += f"; gc on: p99 {lat['gc_p99_us']:.1f} us, p99.9 {lat['gc_p999_us']:.1f} us"
                lines.append(line)
            t = f["throughput"]
            lines.append(f"  {label} {w['throughput_batch_rows']:,}-row msgs: {t['trades_per_s']:,.0f} trades/s")
    for name, g in res["goals"].items():
        lines.append(f"goal {name}: {g['goal']:,.0f} -> {g['value']:,.1f} {'met' if g['met'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--trades", type=int, default=None, help=f"trades (default {TRADES:,}; --quick {QUICK_TRADES:,})")
    ap.add_argument("--syms", type=int, default=SYMS)
    ap.add_argument("--batch", type=int, default=BATCH, help="rows per update call in the batched runs")
    ap.add_argument("--latency-ticks", type=int, default=None,
                    help=f"1-row messages timed (default {LATENCY_TICKS:,}; --quick {QUICK_LATENCY_TICKS:,})")
    ap.add_argument("--repeats", type=int, default=1, help="runs per figure is max(3, N); median reported")
    ap.add_argument("--quick", action="store_true", help="small counts, one run (smoke run)")
    ap.add_argument("--no-baselines", action="store_true", help="skip the talib + pandas baseline")
    ap.add_argument("--window-ticks", type=int, default=None,
                    help=f"1-row messages timed per window engine (default {WINDOW_TICKS:,}; --quick "
                         f"{QUICK_WINDOW_TICKS:,})")
    ap.add_argument("--window-before-ticks", type=int, default=WINDOW_BEFORE_TICKS,
                    help="1-row messages timed with the row path off")
    ap.add_argument("--window-trades", type=int, default=None,
                    help=f"trades in 1,000-row messages (default {WINDOW_TRADES:,}; --quick {QUICK_WINDOW_TRADES:,})")
    ap.add_argument("--window-rate", type=int, default=WINDOW_RATE, help="trades per second of event time")
    ap.add_argument("--no-windows", action="store_true", help="skip the window engines")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    trades = args.trades or (QUICK_TRADES if args.quick else TRADES)
    ticks = args.latency_ticks or (QUICK_LATENCY_TICKS if args.quick else LATENCY_TICKS)
    repeats = 1 if args.quick else max(3, args.repeats)
    loadavg_before = list(os.getloadavg())
    window_args = None if args.no_windows else {
        "ticks": args.window_ticks or (QUICK_WINDOW_TICKS if args.quick else WINDOW_TICKS),
        "before_ticks": args.window_before_ticks,
        "trades": args.window_trades or (QUICK_WINDOW_TRADES if args.quick else WINDOW_TRADES),
        "rate": args.window_rate}
    res = run(trades, args.syms, args.batch, ticks, repeats, baselines=not args.no_baselines,
              window_args=window_args)
    res["nproc"] = os.cpu_count()
    res["loadavg_before"] = loadavg_before
    res["loadavg_after"] = list(os.getloadavg())
    import numba

    res["versions"] = {"python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
                       "pyarrow": pa.__version__}
    print(json.dumps(res, indent=2, sort_keys=True))
    if not args.json:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
