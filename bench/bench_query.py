"""Query service overhead over raw DuckDB, and RDB memory per row.

What this measures:

* ``vwap_bars``: VWAP per sym per 5-minute bar over ``--days`` x ``--rows`` trade rows in
  an HDB of date partitions (written by ``hdb.partition.write_partition``, as end of day
  writes them). Raw DuckDB: one in-process ``duckdb.connect()`` running the query on
  ``read_parquet('<hdb>/trade/*/*.parquet', hive_partitioning=true)`` and fetching the
  result as Arrow. Service: the same query by name (``FROM trade``) through a real
  ``tick hdb`` process on a TCP port, from ``tickerplant.connect``, result as Arrow.
  Both take the median of ``--repeats`` runs after one warm-up; the ratio service/raw is
  the overhead. Goal: <= 1.10.
* ``rdb_memory``: a real TP and ``tick rdb``; ``--rdb-rows`` trade rows published in
  1,000-row batches (and a tenth of them as single-row updates); the RDB's resident
  memory growth (``/proc/<pid>/status`` VmRSS, after minus before), and the Arrow buffers
  it holds (reported in its WELCOME), each against the raw Arrow size of the same rows
  (the log's rows as one table, ``get_total_buffer_size``).

Run ``python bench/bench_query.py`` (``--quick`` for a smoke run, ``--json`` for JSON only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import numpy as np
import pyarrow as pa

from hdb import partition
from tickerplant import Publisher, connect
from tickerplant import log as tplog
from tickerplant.schema import Registry

ROOT = Path(__file__).resolve().parents[1]
TICK = str(Path(sys.executable).parent / "tick")
GOAL_RATIO = 1.10
VWAP = ("SELECT sym, time_bucket(INTERVAL '5 minutes', {time}) AS bar, sum(price * size) / sum(size) AS vwap "
        "FROM {source} GROUP BY ALL")
# Raw DuckDB reads Parquet's timestamp[ns, UTC] as TIMESTAMPTZ_NS, which time_bucket does not take;
# the service's views cast it to TIMESTAMP_NS (docs/rdb-hdb.md), so the raw query does the same.
RAW_TIME = "time::TIMESTAMP_NS"


def day_of_trades(rows: int, day: dt.date, seed: int) -> pa.Table:
    """``rows`` trades over one day: 100 syms, 3 venues, random-walk prices."""
    rng = np.random.default_rng(seed)
    t0 = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    syms = np.array([f"SYM{i:03d}" for i in range(100)])
    schema = Registry.default()["trade"].schema
    times = t0 + np.sort(rng.integers(0, 86_400_000_000_000, rows))
    sym_idx = rng.integers(0, 100, rows)
    cols: dict[str, Any] = {
        "time": pa.array(times, pa.timestamp("ns", tz="UTC")),
        "sym": pa.array(syms[sym_idx]),
        "exchange": pa.array(np.array(["binance", "coinbase", "kraken"])[rng.integers(0, 3, rows)]),
        "price": pa.array(100 + np.cumsum(rng.normal(0, 0.01, rows))),
        "size": pa.array(rng.uniform(0.01, 2, rows)),
        "side": pa.array(np.array(["buy", "sell"])[rng.integers(0, 2, rows)]),
        "trade_id": pa.nulls(rows, pa.string()),
        "seq": pa.array(np.arange(rows)),
        "recv_time": pa.array(times, pa.timestamp("ns", tz="UTC")),
        "tp_time": pa.array(times, pa.timestamp("ns", tz="UTC")),
    }
    return pa.table([cols.get(f.name, pa.nulls(rows, f.type)) for f in schema], schema=schema)  # others null


def _start(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([TICK, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"tick {' '.join(args)} did not start")
    return proc, json.loads(line)["listening"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _median_seconds(fn: Any, repeats: int) -> tuple[float, Any]:
    result = fn()  # warm-up: page cache, DuckDB metadata cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_vwap(work: Path, days: int, rows: int, repeats: int) -> dict[str, Any]:
    hdb = work / "hdb"
    first = dt.date(2026, 11, 16)
    for i in range(days):
        day = first + dt.timedelta(days=i)
        partition.write_partition(hdb, "trade", day, day_of_trades(rows, day, seed=i))
    raw_con = duckdb.connect()
    raw_sql = VWAP.format(time=RAW_TIME, source=f"read_parquet('{hdb}/trade/*/*.parquet', hive_partitioning=true)")
    raw_s, raw = _median_seconds(lambda: raw_con.sql(raw_sql).to_arrow_table(), repeats)
    proc, address = _start(["hdb", "--dir", str(hdb), "--port", "0"])
    try:
        with connect(address) as db:
            svc_s, svc = _median_seconds(lambda: db.sql(VWAP.format(time="time", source="trade")).arrow(), repeats)
    finally:
        _stop(proc)
    assert svc.num_rows == raw.num_rows, (svc.num_rows, raw.num_rows)
    return {"rows": days * rows, "days": days, "result_rows": raw.num_rows, "raw_duckdb_s": raw_s,
            "service_s": svc_s, "ratio": svc_s / raw_s, "goal_met": svc_s / raw_s <= GOAL_RATIO}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def bench_rdb_memory(work: Path, rows: int) -> dict[str, Any]:
    tp, tp_addr = _start(["tp", "--port", "0", "--log-dir", str(work / "tplogs")])
    try:
        rdb, rdb_addr = _start(["rdb", "--tp", tp_addr, "--hdb", str(work / "rdbhdb"), "--port", "0"])
        try:
            time.sleep(1.0)
            before = _rss(rdb.pid)
            table = day_of_trades(rows, dt.date(2026, 11, 24), seed=9).drop_columns(["tp_time"])
            singles = rows // 10
            with Publisher(tp_addr) as pub:
                for start in range(0, rows - singles, 1000):
                    pub.publish("trade", table.slice(start, min(1000, rows - singles - start)))
                for i in range(rows - singles, rows):
                    pub.publish("trade", table.slice(i, 1))
                pub.flush(durable=True)
            with connect(rdb_addr) as db:
                deadline = time.monotonic() + 120
                while db.sql("SELECT count(*) FROM trade").fetchall()[0][0] < rows:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the RDB did not receive every row")
                    time.sleep(0.2)
            with connect(rdb_addr) as fresh:  # the WELCOME reports the Arrow bytes the RDB holds
                held = sum(t["bytes"] for t in fresh.info["memory"].values())
            after = _rss(rdb.pid)
        finally:
            _stop(rdb)
        log = next((work / "tplogs").glob("*.log"))
        raw = tplog.read_table(log, "trade", Registry.default()).combine_chunks().get_total_buffer_size()
    finally:
        _stop(tp)
    return {"rows": rows, "single_row_updates": singles, "rss_growth_bytes": after - before,
            "raw_arrow_bytes": raw, "ratio": (after - before) / raw, "arrow_held_bytes": held,
            "arrow_held_ratio": held / raw,
            "rss_bytes_per_row": (after - before) / rows, "raw_bytes_per_row": raw / rows}


def format_table(res: dict[str, Any]) -> str:
    v, m = res["vwap_bars"], res["rdb_memory"]
    return "\n".join([
        f"{'figure':<38}{'value':>16}",
        f"{'VWAP 5m bars, raw DuckDB (s)':<38}{v['raw_duckdb_s']:>16.4f}",
        f"{'VWAP 5m bars, tick hdb service (s)':<38}{v['service_s']:>16.4f}",
        f"{'service / raw (goal <= 1.10)':<38}{v['ratio']:>16.3f}",
        f"{'RDB RSS growth per row (B)':<38}{m['rss_bytes_per_row']:>16.1f}",
        f"{'raw Arrow per row (B)':<38}{m['raw_bytes_per_row']:>16.1f}",
        f"{'RDB RSS growth / raw Arrow':<38}{m['ratio']:>16.3f}",
        f"{'RDB Arrow buffers held / raw Arrow':<38}{m['arrow_held_ratio']:>16.3f}",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--rows", type=int, default=2_000_000, help="trade rows per day")
    ap.add_argument("--rdb-rows", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    ap.add_argument("--no-baselines", action="store_true", help="accepted for the smoke runner; no effect")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    if args.quick:
        args.days, args.rows, args.rdb_rows, args.repeats = 2, 20_000, 20_000, 1
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        work = Path(tmp)
        res = {
            "vwap_bars": bench_vwap(work, args.days, args.rows, args.repeats),
            "rdb_memory": bench_rdb_memory(work, args.rdb_rows),
            "nproc": os.cpu_count(),
            "versions": {"duckdb": duckdb.__version__, "pyarrow": pa.__version__},
        }
    print(json.dumps(res, indent=2, sort_keys=True))
    if not args.json:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
