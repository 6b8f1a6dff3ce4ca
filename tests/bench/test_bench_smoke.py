"""Smoke tests for the benchmark scripts: they run end to end (tiny counts) and print the JSON they promise.

Speed is never asserted here; only that every figure is present and the rows arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--no-baselines", "--json", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{script} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and v >= 0


def _check_replay(r: dict[str, Any], rows: int | None = None) -> None:
    for key in ("read_table", "read_table_lz4", "check", "check_lz4"):
        fig = r[key]
        assert _is_number(fig["rows_per_s"]) and fig["rows_per_s"] > 0, key
        assert _is_number(fig["seconds"]) and _is_number(fig["mb_per_s"]), key
        if rows is not None:
            assert fig["rows"] == rows, (key, fig["rows"], rows)
    assert r["read_table"]["rows"] == r["check"]["rows"] == r["read_table_lz4"]["rows"]
    assert _is_number(r["rows_per_s"]) and _is_number(r["lz4_rows_per_s"]) and _is_number(r["check_rows_per_s"])
    assert isinstance(r["goal_met"], bool)


def test_bench_replay_quick() -> None:
    r = _run("bench_replay.py")
    _check_replay(r, rows=20_000)
    assert "arrow_ipc_stream" not in r  # --no-baselines skips the reference read
    assert r["nproc"] >= 1 and r["versions"]["pyarrow"]


def test_bench_e2e_quick() -> None:
    r = _run("bench_e2e.py")
    assert r["machine"]["nproc"] >= 1
    for pkg in ("python", "pyarrow", "tickerplant"):
        assert r["versions"][pkg]
    assert len(r["loadavg_before"]) == 3 and len(r["loadavg_after"]) == 3
    assert "baselines" not in r
    scen = r["scenarios"]

    runs = [scen["batch_1000"], scen["per_tick"]["built"], scen["per_tick"]["prebuilt"]]
    runs += [scen["latency"]["sync"], scen["latency"]["async"]]
    for run in runs:
        assert _is_number(run["rows_per_s"]) and run["rows_per_s"] > 0
        assert _is_number(run["seconds"])
        assert set(run["cpu_s"]) == {"tp", "publisher", "subscriber"}
        assert all(_is_number(v) for v in run["cpu_s"].values())
        assert run["messages_received"] >= 1
        assert run["tp_stats"]["rejected"] == 0
        assert len(run["samples"]) == 1
    assert scen["batch_1000"]["rows"] == r["config"]["batch_rows"]
    assert scen["per_tick"]["ticks_per_s"] == scen["per_tick"]["built"]["rows_per_s"]
    assert scen["per_tick"]["built"]["rows"] == r["config"]["ticks"]

    for variant in ("sync", "async"):
        lat = scen["latency"][variant]["latency"]
        for k in ("p50_us", "p99_us", "p999_us", "max_us"):
            assert _is_number(lat[k]), (variant, k)
        assert lat["p50_us"] <= lat["p99_us"] <= lat["p999_us"] <= lat["max_us"]
        assert lat["rows_measured"] == scen["latency"]["ticks"]
        for part in ("publisher_to_tp", "tp_to_subscriber", "schedule"):
            assert "p50_us" in lat[part]

    _check_replay(scen["replay"])
    assert set(r["goals"]) == {"batch_1000_rows_per_s", "per_tick_ticks_per_s", "latency_p50_us", "latency_p99_us",
                               "replay_rows_per_s"}
    for goal in r["goals"].values():
        assert _is_number(goal["goal"]) and _is_number(goal["value"]) and isinstance(goal["met"], bool)
    assert r["ratios"] == {}  # no baselines, no ratios


def test_bench_aj_quick() -> None:
    r = _run("bench_aj.py")
    for layout in ("rdb", "rdb_dict", "hdb"):
        fig = r[layout]
        assert _is_number(fig["ours_seconds"]) and fig["ours_rows_per_s"] > 0, layout
        assert fig["matched"] > 0, layout


def test_bench_query_quick() -> None:
    r = _run("bench_query.py")
    v, m = r["vwap_bars"], r["rdb_memory"]
    assert v["rows"] == 40_000 and v["result_rows"] > 0
    assert _is_number(v["raw_duckdb_s"]) and _is_number(v["service_s"]) and _is_number(v["ratio"])
    assert isinstance(v["goal_met"], bool)
    assert m["rows"] == 20_000 and m["raw_arrow_bytes"] > 0 and isinstance(m["ratio"], float)


def test_bench_eod_quick() -> None:
    r = _run("bench_eod.py")
    fig = r["write_partition"]
    assert fig["rows"] == r["rows"] == 50_000 and _is_number(fig["rows_per_s"]) and fig["rows_per_s"] > 0
    assert _is_number(fig["seconds"]) and _is_number(fig["cpu_seconds"]) and fig["file_bytes"] > 0
    assert r["rows_per_s"] == fig["rows_per_s"] and isinstance(r["goal_met"], bool)
    assert "baseline" not in r and "ratio_vs_baseline" not in r  # --no-baselines: ours only


def test_bench_feed_quick() -> None:
    r = _run("bench_feed.py")
    assert r["messages"] == 2000 and r["pinned_cpus"] in (None, [0])
    assert {"binance", "coinbase", "kraken"} <= set(r["parse"])
    for venue, kinds in r["parse"].items():
        for kind in ("trade", "book"):
            fig = kinds[kind]
            assert fig["messages"] >= 1 and fig["rows"] >= fig["messages"], (venue, kind)  # >= 1 row per message
            assert _is_number(fig["messages_per_s"]) and fig["messages_per_s"] > 0, (venue, kind)
            assert _is_number(fig["rows_per_s"]) and _is_number(fig["seconds"]), (venue, kind)
            assert fig["feed_events"] == {}, (venue, kind)  # valid messages: no gap, checksum or bad_message
            goal = r["goals"][f"{venue}_{kind}_messages_per_s"]
            assert goal["goal"] == {"trade": 200_000, "book": 100_000}[kind] and isinstance(goal["met"], bool)
    assert isinstance(r["goal_met"], bool)
    for kind in ("trade", "book"):
        e2e = r["e2e"]["binance"][kind]
        assert e2e["messages"] >= 2000 and e2e["rows"] >= 2000 and e2e["overflow"] == 0, kind
        assert _is_number(e2e["messages_per_s"]) and e2e["rows_per_s"] > 0, kind
    assert r["e2e"]["binance"]["book"]["rows_by_table"]["l2"] >= 2 * 2000 + 2 * 1000  # deltas + the snapshot


def test_bench_rte_quick() -> None:
    r = _run("bench_rte.py", "--trades", "20000", "--latency-ticks", "300", "--window-ticks", "3000",
             "--window-before-ticks", "200", "--window-trades", "20000")
    assert r["trades"] == 20_000 and r["syms"] == 100 and "baseline" not in r  # --no-baselines: ours only
    for key in ("one_batch", "batches"):
        fig = r["vectorized"][key]
        assert _is_number(fig["ticks_per_s"]) and fig["ticks_per_s"] > 0, key
        assert all(_is_number(fig[part]) for part in ("rsi", "ema", "vwap", "seconds")), key
    assert _is_number(r["engine_batches"]["ticks_per_s"]) and r["engine_batches"]["ticks_per_s"] > 0
    lat = r["latency"]
    assert lat["ticks"] == 300
    assert 0 < lat["p50_us"] <= lat["p99_us"] <= lat["p999_us"] <= lat["max_us"]
    assert set(r["goals"]) == {"vectorized_ticks_per_s", "latency_p99_us", "bars_1s_latency_p99_us",
                               "vwap_5s_1s_latency_p99_us"}
    w = r["windows"]
    assert w["syms"] == 100 and w["throughput_trades"] == 20_000
    for label in ("bars_1s", "vwap_5s_1s"):
        for key, ticks in (("latency", 3000), ("before", 200)):
            lat = w[label][key]
            assert lat["ticks"] == ticks, (label, key)
            assert 0 < lat["p50_us"] <= lat["p99_us"] <= lat["p999_us"] <= lat["max_us"], (label, key)
            assert isinstance(lat["firing"]["updates"], int), (label, key)
        assert w[label]["latency"]["firing"]["updates"] >= 2  # 4 s of event time at 1,000 trades/s: windows fired
        assert _is_number(w[label]["latency"]["gc_p99_us"])
        assert _is_number(w[label]["throughput"]["trades_per_s"]) and w[label]["throughput"]["trades_per_s"] > 0
    for goal in r["goals"].values():
        assert _is_number(goal["goal"]) and _is_number(goal["value"]) and isinstance(goal["met"], bool)
    assert isinstance(r["goal_met"], bool)
