"""`make demo`: the whole pipeline on simulated feeds, as separate processes.

1. starts a tickerplant (`tick tp`) on a free port, logging to ./demo-data/tplogs;
2. starts the simulated feed (`tick feed sim`): 4 symbols on 3 venues, 20,000 events/s;
3. subscribes here, printing a few BTCUSD trades and the live rows/s each second;
4. kills the tickerplant with SIGKILL mid-stream and restarts it: the feed reconnects
   and re-sends, the subscriber resumes, and nothing acknowledged is lost;
5. replays the day from sequence 1, checks the log, and rolls the day (`tick eod`).
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

from tickerplant import Subscriber, log

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo-data"
TICK = str(Path(sys.executable).with_name("tick"))
RATE = 20_000


def start_tp(port: int = 0) -> tuple[subprocess.Popen[str], str]:
    with open(DATA / "tp.log", "a") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([TICK, "tp", "--port", str(port), "--log-dir", str(DATA / "tplogs")],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, ready["listening"]


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir()
    section("start: tickerplant + simulated feed (4 syms x 3 venues, 20,000 events/s)")
    tp, address = start_tp()
    port = int(address.rsplit(":", 1)[1])
    print(f"tick tp listening on {address}; log {DATA / 'tplogs'}")
    with open(DATA / "feed.log", "w") as err:
        feed = subprocess.Popen([TICK, "feed", "sim", "--tp", address, "--rate", str(RATE), "--duration", "8"],
                                stdout=subprocess.PIPE, stderr=err, text=True)

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
    print(f"feed finished: {feed.stdout.read().strip() if feed.stdout else ''}")
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

    section("tick log check / tick eod")
    subprocess.run([TICK, "log", "check", str(day_log)], check=True)
    subprocess.run([TICK, "eod", "--tp", address], check=True)
    print("log files:", ", ".join(sorted(p.name for p in (DATA / "tplogs").iterdir())))
    tp.send_signal(signal.SIGTERM)
    tp.wait(timeout=10)
    print(f"\ntickerplant stopped (SIGTERM, exit {tp.returncode}). Data in {DATA}; logs in {DATA / 'tp.log'}.")


if __name__ == "__main__":
    main()
