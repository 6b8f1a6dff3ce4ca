"""`make demo`: the whole pipeline on simulated feeds, as separate processes.

1. starts a tickerplant (`tick tp`) on a free port, logging to ./demo-data/tplogs, and the
   real-time engines (`tick rte bars|vwap|indicators|qc`, `tick strategy run`), which publish
   their tables back to it;
2. starts the simulated feed (`tick feed sim`): 4 symbols on 3 venues, 20,000 events/s, with a
   few injected sequence gaps, stale periods and outlier prints for QC to catch;
3. subscribes here, printing a few BTCUSD trades and the live rows/s each second;
4. kills the tickerplant with SIGKILL mid-stream and restarts it: the feed reconnects
   and re-sends, the subscriber resumes, and nothing acknowledged is lost;
5. replays the day from sequence 1 and checks the log; shows what the engines published, then
   kills the strategy with SIGKILL and restarts it: it replays the log and publishes no order twice;
6. an RDB (`tick rdb`), running since step 1, holds the day in memory; three days are rolled
   with `tick eod` (a short simulated feed each), so the RDB writes two days of Parquet
   partitions to ./demo-data/hdb; an HDB service (`tick hdb`) serves them, and sample SQL
   queries span history and today (plus a kdb+-style as-of join with q_like.aj), including
   two the service refuses.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from q_like import aj
from tickerplant import QueryError, Subscriber, connect, log

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo-data"
TICK = str(Path(sys.executable).with_name("tick"))
RATE = 20_000
# The real-time engines, each a process subscribed to the TP (name -> `tick` arguments).
ENGINES = {
    "bars": ["rte", "bars", "--every", "1s"],
    "vwap": ["rte", "vwap", "--window", "5s", "--slide", "1s"],
    "indicators": ["rte", "indicators", "--rsi", "14", "--ema", "20", "--vol", "30s", "--vwap", "30s"],
    "qc": ["rte", "qc"],
    "strategy": ["strategy", "run", str(ROOT / "examples" / "vwap_reversion.py")],
}
# Faults the simulator injects (per-event probabilities), so QC has something to catch.
FAULTS = ["--gaps", "0.0002", "--gap-events", "--stale", "0.00002", "--stale-for", "3", "--outliers", "0.0002"]


def start_tp(port: int = 0) -> tuple[subprocess.Popen[str], str]:
    with open(DATA / "tp.log", "a") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([TICK, "tp", "--port", str(port), "--log-dir", str(DATA / "tplogs")],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, ready["listening"]


def start_service(*args: str, name: str) -> tuple[subprocess.Popen[str], str]:
    with open(DATA / f"{name}.log", "a") as err:
        proc = subprocess.Popen([TICK, *args, "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["listening"]


def start_engine(name: str, address: str) -> subprocess.Popen[str]:
    with open(DATA / f"{name}.log", "a") as err:
        return subprocess.Popen([TICK, *ENGINES[name], "--tp", address], stdout=subprocess.PIPE, stderr=err,
                                text=True)


def run_feed(address: str, seconds: float) -> None:
    subprocess.run([TICK, "feed", "sim", "--tp", address, "--rate", str(RATE), "--duration", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL)


def show(db: object, sql: str) -> None:
    print(f"\n> {' '.join(sql.split())}")
    try:
        print(db.sql(sql).df().to_string(index=False))  # type: ignore[attr-defined]
    except QueryError as exc:
        print(f"refused: {exc}")


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir()
    section("start: tickerplant + simulated feed (4 syms x 3 venues, 20,000 events/s)")
    tp, address = start_tp()
    port = int(address.rsplit(":", 1)[1])
    print(f"tick tp listening on {address}; log {DATA / 'tplogs'}")
    rdb, rdb_address = start_service("rdb", "--tp", address, "--hdb", str(DATA / "hdb"), name="rdb")
    print(f"tick rdb listening on {rdb_address}; HDB {DATA / 'hdb'}")
    engines = {name: start_engine(name, address) for name in ENGINES}
    for name, args in ENGINES.items():
        print(f"tick {' '.join(args[:2])} ...  ({name}, pid {engines[name].pid})")
    with open(DATA / "feed.log", "w") as err:
        feed = subprocess.Popen([TICK, "feed", "sim", "--tp", address, "--rate", str(RATE), "--duration", "8",
                                 "--seed", "7", *FAULTS], stdout=subprocess.PIPE, stderr=err, text=True)

    section("a subscriber with a sym filter: first BTCUSD trades")
    with Subscriber(address, tables=["trade"], syms=["BTCUSD"], name="demo-btc") as btc:
        for msg in btc:
            cols = ["time", "sym", "exchange", "price", "size", "side", "tp_time"]
            print(msg.data.select(cols).slice(0, 5).to_pandas().to_string(index=False))
            break

    section("live: every table, rows per second (SIGKILL of the tickerplant after 3 s)")
    counts: dict[str, int] = {}
    first: list[int] = []
    sub = Subscriber(address, name="demo-all")
    done = threading.Event()

    def consume() -> None:
        for msg in sub:
            if not first:
                first.append(msg.seq)
            counts[msg.table] = counts.get(msg.table, 0) + msg.data.num_rows
            if done.is_set():
                break

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    last = 0
    for second in range(1, 10):
        time.sleep(1)
        total = sum(counts.values())
        print(f"t={second}s  {total - last:>7,} rows/s   trade {counts.get('trade', 0):>7,}  "
              f"quote {counts.get('quote', 0):>7,}   position seq {sub.position}", flush=True)
        last = total
        if second == 3:
            tp.send_signal(signal.SIGKILL)
            tp.wait()
            print("   ... tickerplant killed with SIGKILL; restarting it on the same log")
            tp, _ = start_tp(port)
    feed.wait(timeout=30)
    fed = json.loads(feed.stdout.read()) if feed.stdout else {}
    print(f"feed finished: {fed}")
    time.sleep(0.5)
    done.set()

    section("replay: a new subscriber from seq 1 gets the whole day, once")
    day_log = next((DATA / "tplogs").glob("*.log"))
    status = log.check(day_log)
    replayed = 0
    with Subscriber(address, from_seq=1, name="demo-replay") as again:
        for msg in again:
            replayed += msg.data.num_rows
            if msg.seq >= status.last_seq:
                break
    print(f"log: {status.messages:,} updates, {status.rows:,} rows, seq 1..{status.last_seq}, ok={status.ok}")
    print(f"replayed from seq 1: {replayed:,} rows")
    expected = sum(m.data.num_rows for m in log.replay(day_log, from_seq=first[0]))
    print(f"live subscriber (joined at seq {first[0]}): {sum(counts.values()):,} rows, the log has {expected:,} "
          f"from that seq on; {sub.reconnects} reconnect(s), {sub.state.gaps} gaps")
    sub.close()

    section("tick log check")
    subprocess.run([TICK, "log", "check", str(day_log)], check=True)

    section("real-time engines: their tables, published back to the TP (SQL on the RDB)")
    time.sleep(2)  # the last windows close 1 s (the watermark bound) after the feed's last event
    with connect(rdb_address) as db:
        show(db, """SELECT time, sym, open, high, low, close, round(volume, 3) AS volume, round(vwap, 2) AS vwap,
                    count FROM bar_1s WHERE sym = 'BTCUSD' ORDER BY time DESC LIMIT 3""")
        show(db, """SELECT time, window_end, sym, round(vwap, 2) AS vwap, count FROM vwap
                    WHERE sym = 'ETHUSD' ORDER BY time DESC LIMIT 2""")
        show(db, """SELECT time, sym, price, round(rsi, 2) AS rsi, round(ema, 2) AS ema, round(vol, 6) AS vol,
                    round(vwap, 2) AS vwap FROM indicator WHERE sym = 'BTCUSD' ORDER BY time DESC LIMIT 3""")
        print(f"\nthe simulator injected: {fed.get('injected')}")
        show(db, "SELECT check_name, severity, state, count(*) AS alerts FROM qc_alert GROUP BY ALL ORDER BY ALL")
        show(db, """SELECT strategy, count(*) AS orders, count(DISTINCT order_id) AS ids,
                    (SELECT count(*) FROM fill) AS fills FROM orders GROUP BY ALL""")
        show(db, """SELECT sym, position, round(avg_cost, 2) AS avg_cost, round(realized_pnl, 2) AS realized,
                    round(unrealized_pnl, 2) AS unrealized FROM position
                    QUALIFY row_number() OVER (PARTITION BY sym ORDER BY time DESC, src_seq DESC) = 1 ORDER BY sym""")
        before = db.sql("SELECT count(*) FROM orders").fetchall()[0][0]
    engines["strategy"].send_signal(signal.SIGKILL)
    engines["strategy"].wait()
    print("\nstrategy killed with SIGKILL; restarted: it replays today's log and rebuilds its state")
    engines["strategy"] = start_engine("strategy", address)
    run_feed(address, 2)
    time.sleep(1)
    with connect(rdb_address) as db:
        show(db, """SELECT count(*) AS orders, count(DISTINCT order_id) AS distinct_ids, max(order_id) AS last_id
                    FROM orders""")
        print(f"({before} orders before the kill; ids still 1..n with no duplicate: none lost, none twice)")

    section("end of day x2: the RDB writes each day to Parquet; a third day stays in memory")
    with connect(rdb_address) as db:
        print(f"RDB holds {db.sql('SELECT count(*) FROM trade').fetchall()[0][0]:,} trades of today "
              f"(the log has {log.read_table(day_log, 'trade').num_rows:,})")
    for _ in range(2):
        subprocess.run([TICK, "eod", "--tp", address], check=True)
        run_feed(address, 2)
    time.sleep(1)
    print("HDB:", ", ".join(str(p.relative_to(DATA)) for p in sorted((DATA / "hdb").glob("*/date=*"))))
    hdb, hdb_address = start_service("hdb", "--dir", str(DATA / "hdb"), name="hdb")

    section(f"SQL: tick rdb ({rdb_address}) is today + history in one relation; tick hdb ({hdb_address}) history")
    print("(the days were rolled by `tick eod`, so every row's event time is today's clock: rows are\n"
          " partitioned by the TP's date, as in kdb+, not by their event time)")
    with connect(rdb_address) as db:
        show(db, "SELECT date, count(*) AS trades, count(DISTINCT sym) AS syms FROM trade GROUP BY date ORDER BY date")
        show(db, """SELECT sym, count(*) AS n, round(sum(price * size) / sum(size), 2) AS vwap
                    FROM trade WHERE date = (SELECT max(date) FROM trade) GROUP BY sym ORDER BY sym""")
        show(db, """SELECT sym, time_bucket(INTERVAL '1 second', time) AS bar, first(price ORDER BY time) AS open,
                    max(price) AS high, min(price) AS low, last(price ORDER BY time) AS close, sum(size) AS volume
                    FROM trade WHERE sym = 'BTCUSD' GROUP BY ALL ORDER BY bar DESC LIMIT 3""")
        today = "date = (SELECT max(date) FROM trade) AND sym = 'BTCUSD' AND exchange = 'SIMA'"
        trades = db.sql(f"SELECT time, sym, price, size FROM trade WHERE {today} ORDER BY time").arrow()
        quotes = db.sql(f"SELECT time, sym, bid_price, ask_price FROM quote WHERE {today} ORDER BY time").arrow()
        print("\n> q_like.aj(['sym', 'time'], trades, quotes): the prevailing quote at each trade (kdb+ aj)")
        print(aj(["sym", "time"], trades, quotes).slice(0, 4).to_pandas().to_string(index=False))
        show(db, f"COPY trade TO '{DATA}/leak.csv'")
        show(db, "SELECT * FROM read_csv('/etc/passwd')")
    with connect(hdb_address) as db:
        show(db, "SELECT date, count(*) AS trades FROM trade GROUP BY date ORDER BY date")
    subprocess.run([TICK, "query", "--connect", rdb_address, "--format", "csv",
                    "SELECT date, sym, count(*) AS n FROM trade GROUP BY ALL ORDER BY ALL LIMIT 4"], check=True)

    for name, proc in (*engines.items(), ("hdb", hdb), ("rdb", rdb), ("tickerplant", tp)):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        print(f"{name} stopped (SIGTERM, exit {proc.returncode})")
    print(f"Data in {DATA}: tplogs/, hdb/; process logs in {DATA}/*.log.")


if __name__ == "__main__":
    main()
