"""Feed adapter speed: parse + normalize throughput per venue, and a capture replayed into a real TP.

What is timed:

* ``parse`` (per venue and message kind): ``venue.on_message(raw, recv_ns, out)`` over N
  synthetic raw messages in exactly the venue's wire format, plus
  ``normalize.to_batches(out.take(), registry)`` every 1,000 messages (and once at the end),
  i.e. "parse + normalize" as the feed shell does it. One process, pinned to one core with
  ``os.sched_setaffinity(0, {0})`` where the OS has it. Figures: messages/s and rows/s (rows
  of every table the adapter wrote: trade, l2, derived quotes, feed events).
  Kinds: ``trade`` (one trade per message) and ``book`` (one delta message changing 1 bid and
  1 ask level of a ~1,000-level-per-side book, after the snapshot). Set-up (building the
  venue, the snapshot: Binance's REST answer asked for by the first depth message, Coinbase's
  and Kraken's snapshot message) is not timed. Kraken book messages carry real CRC32
  checksums, computed with ``feedhandlers.book.kraken_checksum`` on a shadow ``Book``, and the
  adapter checks every one. OKX book messages carry checksum 0, as OKX has sent since June
  2026 (the ``seqId`` chain guards the book). Venues: every one of
  ``feedhandlers.venues.VENUES`` (bybit-linear and bybit-inverse run bybit's parser).
* ``e2e`` (binance spot, both kinds): the same messages written to a capture file with
  ``CaptureWriter`` as ``feedhandlers.shell`` writes one (OPEN, the SENT subscription, the
  frames, the REST snapshot record after the first depth message), then
  ``feedhandlers.shell.replay(path, venue, FeedConfig(tp=addr), speed=None)`` into a real
  ``tick tp --port 0`` subprocess (not pinned), timed from the start of the replay until the
  TP's ``rows_in`` (``tickerplant.admin.stats``) has grown by every row the replay published.

Goals (issue 4, parse-only on one core): trade >= 200k messages/s, book deltas >= 100k
messages/s, per venue. Each parse figure is the median of ``max(3, --repeats)`` runs
(``--quick``: one run, N = 2,000). Run ``python bench/bench_feed.py`` (``--json`` for JSON only;
``--no-baselines`` is accepted: there is no baseline here).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``feedhandlers`` / ``tickerplant`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa

from feedhandlers import capture as cap
from feedhandlers.book import Book, kraken_checksum
from feedhandlers.bybit import Bybit
from feedhandlers.capture import CaptureWriter
from feedhandlers.kraken import Kraken
from feedhandlers.normalize import Out, to_batches
from feedhandlers.shell import FeedConfig, replay
from feedhandlers.venue import Rest, Venue
from feedhandlers.venues import VENUES, venue_class
from tickerplant import admin
from tickerplant.schema import Registry

ROOT = Path(__file__).resolve().parents[1]
TICK = str(Path(sys.executable).parent / "tick")
MESSAGES = 200_000
QUICK_MESSAGES = 2_000
LEVELS = 1000  # per side of the book
FLUSH_EVERY = 1000  # messages between to_batches calls
GOALS = {"trade": 200_000.0, "book": 100_000.0}  # messages/s, parse-only, one core
RECV0 = 1_700_000_000_000_000_000
T_MS = 1_700_000_000_000


@dataclass
class Workload:
    """One (venue, kind): a fresh venue already through its snapshot, and the N timed messages."""

    venue: str
    kind: str
    make: Callable[[], Venue]  # a new venue, set up (snapshot applied); nothing of it is timed
    messages: list[str]
    setup_rows: int = 0
    rest: tuple[str, bytes] | None = None  # Binance: (path, body) of the REST snapshot
    first: list[str] = field(default_factory=list)  # messages before the snapshot (Binance: 1 depth)


def _bid(k: int) -> str:
    return f"{97000 - k * 0.01:.2f}"


def _ask(k: int) -> str:
    return f"{97000.01 + k * 0.01:.2f}"


def _size(i: int) -> str:
    return f"{(i % 997 + 1) / 1000:.8f}"


# --------------------------------------------------------------------------- binance


def _binance(name: str, kind: str, n: int) -> Workload:
    futures = name == "binance-futures"
    sym = "BTCUSDT"
    low = sym.lower()
    cls = venue_class(name)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    if kind == "trade":
        stream = f"{low}@aggTrade" if futures else f"{low}@trade"
        msgs = []
        for i in range(n):
            if futures:
                data: dict[str, Any] = {"e": "aggTrade", "E": T_MS + i, "s": sym, "a": 1000 + i, "p": _bid(i % 50),
                                        "q": _size(i), "f": 5000 + i, "l": 5000 + i, "T": T_MS + i, "m": i % 2 == 0}
            else:
                data = {"e": "trade", "E": T_MS + i, "s": sym, "t": 1000 + i, "p": _bid(i % 50), "q": _size(i),
                        "T": T_MS + i, "m": i % 2 == 0, "M": True}
            msgs.append(dumps({"stream": stream, "data": data}))
        return Workload(name, kind, lambda: cls([sym], {"trade"}), msgs)
    last = 5_000_000
    stream = f"{low}@depth@100ms"

    def depth(first: int, final: int, prev: int, bids: list[list[str]], asks: list[list[str]]) -> str:
        if futures:
            d: dict[str, Any] = {"e": "depthUpdate", "E": T_MS + final, "T": T_MS + final, "s": sym, "U": first,
                                 "u": final, "pu": prev, "b": bids, "a": asks}
        else:
            d = {"e": "depthUpdate", "E": T_MS + final, "s": sym, "U": first, "u": final, "b": bids, "a": asks}
        return dumps({"stream": stream, "data": d})

    # Spot: the first event must have U <= last+1 <= u; futures: U <= last <= u, then pu chains.
    first = depth(last if futures else last + 1, last + 1, last - 1, [[_bid(0), "1.00000000"]], [])
    msgs = [depth(last + 1 + i, last + 1 + i, last + i, [[_bid(i % LEVELS), _size(i)]],
                  [[_ask(i % LEVELS), _size(i + 7)]]) for i in range(1, n + 1)]
    snap: dict[str, Any] = {"lastUpdateId": last, "bids": [[_bid(k), "1.00000000"] for k in range(LEVELS)],
                            "asks": [[_ask(k), "1.00000000"] for k in range(LEVELS)]}
    if futures:
        snap = {"lastUpdateId": last, "E": T_MS, "T": T_MS, **{k: v for k, v in snap.items() if k != "lastUpdateId"}}
    body = dumps(snap).encode()
    path = f"{'/fapi/v1/depth' if futures else '/api/v3/depth'}?symbol={sym}&limit=1000"
    w = Workload(name, kind, lambda: cls([sym], {"l2", "quote"}), msgs, rest=(path, body), first=[first])

    def make() -> Venue:
        venue = cls([sym], {"l2", "quote"})
        out = Out(venue.name)
        venue.on_message(first, RECV0, out)
        asked = venue.actions()
        if asked != [Rest(sym, path)]:
            raise RuntimeError(f"{name}: the first depth message asked for {asked}, not the REST snapshot {path}")
        venue.on_snapshot(sym, body, RECV0 + 1, out)
        cols = out.take()
        if "feed_event" in cols or "l2" not in cols:
            raise RuntimeError(f"{name}: the synthetic snapshot did not make a valid book: {cols.get('feed_event')}")
        w.setup_rows = len(cols["l2"]["time"])
        return venue

    w.make = make
    return w


# --------------------------------------------------------------------------- coinbase

_CB_T = "2023-02-09T20:32:50.714964855Z"


def _cb(channel: str, seq: int, events: list[dict[str, Any]]) -> str:
    return json.dumps({"channel": channel, "client_id": "", "timestamp": _CB_T, "sequence_num": seq, "events": events})


def _coinbase(kind: str, n: int) -> Workload:
    cls = venue_class("coinbase")
    product = "BTC-USD"
    if kind == "trade":
        msgs = [_cb("market_trades", i, [{"type": "update", "trades": [
            {"trade_id": str(1000 + i), "product_id": product, "price": _bid(i % 50), "size": _size(i),
             "side": "SELL" if i % 2 else "BUY", "time": _CB_T}]}]) for i in range(n)]

        def make_trade() -> Venue:
            venue = cls([product], {"trade"})
            venue.subscribe()
            return venue

        return Workload("coinbase", kind, make_trade, msgs)

    def lv(side: str, price: str, qty: str, t: str = "1970-01-01T00:00:00Z") -> dict[str, str]:
        return {"side": side, "event_time": t, "price_level": price, "new_quantity": qty}

    snapshot = _cb("l2_data", 0, [{"type": "snapshot", "product_id": product, "updates": [
        *(lv("bid", _bid(k), "1.00000000") for k in range(LEVELS)),
        *(lv("offer", _ask(k), "1.00000000") for k in range(LEVELS))]}])
    msgs = [_cb("l2_data", i, [{"type": "update", "product_id": product, "updates": [
        lv("bid", _bid(i % LEVELS), _size(i), _CB_T), lv("offer", _ask(i % LEVELS), _size(i + 7), _CB_T)]}])
        for i in range(1, n + 1)]
    w = Workload("coinbase", kind, lambda: cls([product], {"l2", "quote"}), msgs)

    def make() -> Venue:
        venue = cls([product], {"l2", "quote"})
        venue.subscribe()
        out = Out(venue.name)
        venue.on_message(snapshot, RECV0, out)
        cols = out.take()
        if "feed_event" in cols or "l2" not in cols:
            raise RuntimeError(f"coinbase: the synthetic snapshot did not make a valid book: {cols.get('feed_event')}")
        w.setup_rows = len(cols["l2"]["time"])
        return venue

    w.make = make
    return w


# --------------------------------------------------------------------------- kraken

_KR_T = "2023-10-06T17:35:55.440295Z"


def _kr_levels(levels: list[tuple[str, str]]) -> str:
    return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in levels) + "]"  # bare numbers, as Kraken


def _kr_book(kind: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]], checksum: int) -> str:
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"BTC/USD","bids":{_kr_levels(bids)},'
            f'"asks":{_kr_levels(asks)},"checksum":{checksum},"timestamp":"{_KR_T}"}}]}}')


def _kraken(kind: str, n: int) -> Workload:
    cls = venue_class("kraken")
    sym = "BTC/USD"
    if kind == "trade":
        msgs = [f'{{"channel":"trade","type":"update","data":[{{"symbol":"{sym}","side":"{"sell" if i % 2 else "buy"}",'
                f'"price":{_bid(i % 50)},"qty":{_size(i)},"ord_type":"market","trade_id":{1000 + i},'
                f'"timestamp":"2024-10-03T02:46:57.05017Z"}}]}}' for i in range(n)]
        return Workload("kraken", kind, lambda: cls([sym], {"trade"}), msgs)
    shadow = Book("kraken", sym, depth=LEVELS)
    snap_bids = [(_bid(k), "1.00000000") for k in range(LEVELS)]
    snap_asks = [(_ask(k), "1.00000000") for k in range(LEVELS)]
    shadow.apply_snapshot(snap_bids, snap_asks)
    snapshot = _kr_book("snapshot", snap_bids, snap_asks, kraken_checksum(shadow))
    msgs = []
    for i in range(1, n + 1):
        bids, asks = [(_bid(i % LEVELS), _size(i))], [(_ask(i % LEVELS), _size(i + 7))]
        shadow.apply_many(bids, asks)
        msgs.append(_kr_book("update", bids, asks, kraken_checksum(shadow)))
    w = Workload("kraken", kind, lambda: cls([sym], {"l2", "quote"}), msgs)

    def make() -> Venue:
        venue = Kraken([sym], {"l2", "quote"}, depth=LEVELS)
        out = Out(venue.name)
        venue.on_message(snapshot, RECV0, out)
        cols = out.take()
        if "feed_event" in cols or "l2" not in cols:
            raise RuntimeError(f"kraken: the synthetic snapshot did not make a valid book: {cols.get('feed_event')}")
        w.setup_rows = len(cols["l2"]["time"])
        return venue

    w.make = make
    return w


# --------------------------------------------------------------------------- bybit


def _bybit(kind: str, n: int) -> Workload:
    cls = venue_class("bybit")
    sym = "BTCUSDT"
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    if kind == "trade":
        msgs = [dumps({"topic": f"publicTrade.{sym}", "type": "snapshot", "ts": T_MS + i, "data": [
            {"T": T_MS + i, "s": sym, "S": "Sell" if i % 2 else "Buy", "v": _size(i), "p": _bid(i % 50),
             "L": "PlusTick", "i": f"20f43950-d8dd-5b31-9112-{i:012d}", "BT": False, "seq": 1783284617 + i}]})
            for i in range(n)]
        return Workload("bybit", kind, lambda: cls([sym], {"trade"}), msgs)
    topic = f"orderbook.{LEVELS}.{sym}"

    def book(kind: str, u: int, bids: list[list[str]], asks: list[list[str]]) -> str:
        return dumps({"topic": topic, "type": kind, "ts": T_MS + u, "data": {"s": sym, "b": bids, "a": asks, "u": u,
                                                                             "seq": 66544703342 + u}, "cts": T_MS + u})

    snapshot = book("snapshot", 100, [[_bid(k), "1.00000000"] for k in range(LEVELS)],
                    [[_ask(k), "1.00000000"] for k in range(LEVELS)])
    msgs = [book("delta", 100 + i, [[_bid(i % LEVELS), _size(i)]], [[_ask(i % LEVELS), _size(i + 7)]])
            for i in range(1, n + 1)]
    w = Workload("bybit", kind, lambda: Bybit([sym], {"l2"}, depth=LEVELS), msgs)

    def make() -> Venue:
        venue = Bybit([sym], {"l2"}, depth=LEVELS)
        out = Out(venue.name)
        venue.on_message(snapshot, RECV0, out)
        cols = out.take()
        if "feed_event" in cols or "l2" not in cols:
            raise RuntimeError(f"bybit: the synthetic snapshot did not make a valid book: {cols.get('feed_event')}")
        w.setup_rows = len(cols["l2"]["time"])
        return venue

    w.make = make
    return w


# --------------------------------------------------------------------------- okx


def _okx(kind: str, n: int) -> Workload:
    cls = venue_class("okx")
    inst = "BTC-USDT"
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    if kind == "trade":
        msgs = [dumps({"arg": {"channel": "trades", "instId": inst}, "data": [
            {"instId": inst, "tradeId": str(130639474 + i), "px": _bid(i % 50), "sz": _size(i),
             "side": "sell" if i % 2 else "buy", "ts": str(T_MS + i), "count": "1"}]}) for i in range(n)]
        return Workload("okx", kind, lambda: cls([inst], {"trade"}), msgs)

    def book(action: str, seq: int, prev: int, bids: list[list[str]], asks: list[list[str]]) -> str:
        # checksum 0: what OKX has sent since June 2026 (the seqId chain guards the book)
        return dumps({"arg": {"channel": "books", "instId": inst}, "action": action, "data": [
            {"asks": asks, "bids": bids, "ts": str(T_MS + seq), "checksum": 0, "prevSeqId": prev, "seqId": seq}]})

    snapshot = book("snapshot", 1000, -1, [[_bid(k), "1.00000000", "0", "1"] for k in range(LEVELS)],
                    [[_ask(k), "1.00000000", "0", "1"] for k in range(LEVELS)])
    msgs = [book("update", 1000 + i, 999 + i, [[_bid(i % LEVELS), _size(i), "0", "1"]],
                 [[_ask(i % LEVELS), _size(i + 7), "0", "1"]]) for i in range(1, n + 1)]
    w = Workload("okx", kind, lambda: cls([inst], {"l2"}), msgs)

    def make() -> Venue:
        venue = cls([inst], {"l2"})
        out = Out(venue.name)
        venue.on_message(snapshot, RECV0, out)
        cols = out.take()
        if "feed_event" in cols or "l2" not in cols:
            raise RuntimeError(f"okx: the synthetic snapshot did not make a valid book: {cols.get('feed_event')}")
        w.setup_rows = len(cols["l2"]["time"])
        return venue

    w.make = make
    return w


# --------------------------------------------------------------------------- bitstamp


def _bitstamp(kind: str, n: int) -> Workload:
    cls = venue_class("bitstamp")
    pair = "btcusd"
    us0 = T_MS * 1000
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    if kind == "trade":
        msgs = [dumps({"data": {"id": 212337562 + i, "timestamp": str(T_MS // 1000), "amount": 0.5,
                                "amount_str": _size(i), "price": 1.0, "price_str": _bid(i % 50), "type": i % 2,
                                "microtimestamp": str(us0 + i), "buy_order_id": 1, "sell_order_id": 2},
                       "channel": f"live_trades_{pair}", "event": "trade"}) for i in range(n)]
        return Workload("bitstamp", kind, lambda: cls([pair], {"trade"}), msgs)

    def diff(us: int, bids: list[list[str]], asks: list[list[str]]) -> str:
        return dumps({"data": {"timestamp": str(us // 1_000_000), "microtimestamp": str(us), "bids": bids,
                               "asks": asks}, "channel": f"diff_order_book_{pair}", "event": "data"})

    first = diff(us0, [[_bid(0), "1.00000000"]], [])
    body = dumps({"timestamp": str(us0 // 1_000_000), "microtimestamp": str(us0),
                  "bids": [[_bid(k), "1.00000000"] for k in range(LEVELS)],
                  "asks": [[_ask(k), "1.00000000"] for k in range(LEVELS)]}).encode()
    msgs = [diff(us0 + i, [[_bid(i % LEVELS), _size(i)]], [[_ask(i % LEVELS), _size(i + 7)]])
            for i in range(1, n + 1)]
    path = f"/api/v2/order_book/{pair}/"
    w = Workload("bitstamp", kind, lambda: cls([pair], {"l2"}), msgs, rest=(path, body), first=[first])

    def make() -> Venue:
        venue = cls([pair], {"l2"})
        out = Out(venue.name)
        venue.on_message(first, RECV0, out)
        asked = venue.actions()
        if asked != [Rest(pair, path)]:
            raise RuntimeError(f"bitstamp: the first diff asked for {asked}, not the REST snapshot {path}")
        venue.on_snapshot(pair, body, RECV0 + 1, out)
        cols = out.take()
        if "feed_event" in cols or "l2" not in cols:
            raise RuntimeError(f"bitstamp: the synthetic snapshot did not make a valid book: {cols.get('feed_event')}")
        w.setup_rows = len(cols["l2"]["time"])
        return venue

    w.make = make
    return w


def workloads(n: int) -> list[Workload]:
    out: list[Workload] = []
    for name in VENUES:
        for kind in ("trade", "book"):
            if name.startswith("binance"):
                out.append(_binance(name, kind, n))
            elif name == "coinbase":
                out.append(_coinbase(kind, n))
            elif name == "kraken":
                out.append(_kraken(kind, n))
            elif name == "bybit":  # bybit-linear and bybit-inverse run the same parser
                out.append(_bybit(kind, n))
            elif name == "okx":
                out.append(_okx(kind, n))
            elif name == "bitstamp":
                out.append(_bitstamp(kind, n))
    return out


# --------------------------------------------------------------------------- parse only


def parse_once(w: Workload, registry: Registry) -> tuple[float, int, dict[str, int]]:
    """Seconds, rows and events by kind for one timed pass over ``w.messages`` on a fresh venue."""
    venue = w.make()
    out = Out(venue.name)
    on_message = venue.on_message
    take = out.take
    rows = 0
    events: dict[str, int] = {}
    msgs = w.messages
    gc.collect()
    t0 = time.perf_counter()
    for start in range(0, len(msgs), FLUSH_EVERY):
        recv = RECV0 + 1000 * start
        for j, raw in enumerate(msgs[start : start + FLUSH_EVERY]):
            on_message(raw, recv + j, out)
        batches = to_batches(take(), registry)
        for table, batch in batches.items():
            rows += batch.num_rows
            if table == "feed_event":
                for k in batch.column("kind").to_pylist():
                    events[k] = events.get(k, 0) + 1
    seconds = time.perf_counter() - t0
    return seconds, rows, events


def bench_parse(ws: list[Workload], runs: int, registry: Registry) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for w in ws:
        samples: list[float] = []
        rows = 0
        events: dict[str, int] = {}
        warm = Workload(w.venue, w.kind, w.make, w.messages[:FLUSH_EVERY])
        parse_once(warm, registry)  # warm-up, untimed: first-call costs (imports, caches) are not throughput
        for _ in range(runs):
            sec, rows, events = parse_once(w, registry)
            samples.append(sec)
        sec = statistics.median(samples)
        n = len(w.messages)
        res.setdefault(w.venue, {})[w.kind] = {
            "messages": n, "rows": rows, "seconds": sec, "messages_per_s": n / sec, "rows_per_s": rows / sec,
            "bytes_per_message": sum(map(len, w.messages)) / n, "feed_events": events, "samples_seconds": samples,
        }
    return res


# --------------------------------------------------------------------------- end to end


def _start_tp(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([TICK, "tp", "--port", "0", "--log-dir", str(log_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("tick tp did not start")
    if hasattr(os, "sched_setaffinity"):  # the TP gets every core, whatever this process is pinned to
        os.sched_setaffinity(proc.pid, range(os.cpu_count() or 1))
    return proc, str(json.loads(line)["listening"])


def _stop_tp(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_capture(path: Path, w: Workload, venue: Venue) -> None:
    """``w``'s messages as a live session of ``feedhandlers.shell`` would have captured them."""
    url = venue.url(venue.ws_url)
    recv = RECV0
    with CaptureWriter(path, venue.name, {"ws_url": venue.ws_url, "rest_url": venue.rest_url,
                                          "symbols": venue.symbols, "channels": sorted(venue.channels)}) as writer:
        writer.write_open(recv, 0, url)
        for text in venue.subscribe():
            writer.write(recv, 0, text, cap.SENT)
        for raw in w.first:
            recv += 1000
            writer.write(recv, 0, raw)
        if w.rest is not None:
            recv += 1000
            writer.write_rest(recv, 0, venue.rest_url + w.rest[0], 200, w.rest[1])
        for raw in w.messages:
            recv += 1000
            writer.write(recv, 0, raw)


def bench_e2e(w: Workload, work: Path) -> dict[str, Any]:
    factory = venue_class(w.venue)
    channels = {"trade"} if w.kind == "trade" else {"l2", "quote"}
    path = work / f"{w.venue}-{w.kind}.cap"
    write_capture(path, w, factory(["BTCUSDT"], channels))
    proc, addr = _start_tp(work / f"tplog-{w.kind}")
    try:
        before = int(admin.stats(addr)["rows_in"])
        t0 = time.perf_counter()
        stats = asyncio.run(replay(path, factory(["BTCUSDT"], channels), FeedConfig(tp=addr), speed=None))
        t_replay = time.perf_counter() - t0
        published = sum(stats["rows"].values())
        deadline = time.monotonic() + 60
        logged = 0
        while time.monotonic() < deadline:
            logged = int(admin.stats(addr)["rows_in"]) - before
            if logged >= published:
                break
            time.sleep(0.002)
        seconds = time.perf_counter() - t0
        if logged < published:
            raise RuntimeError(f"the TP logged {logged} of the {published} rows the replay published within 60 s")
    finally:
        _stop_tp(proc)
    n = stats["messages"]
    return {"messages": n, "rows": published, "rows_by_table": dict(stats["rows"]), "seconds": seconds,
            "replay_returned_seconds": t_replay, "messages_per_s": n / seconds, "rows_per_s": published / seconds,
            "capture_bytes": path.stat().st_size, "feed_events": dict(stats["events"]),
            "published_batches": stats["published_batches"], "overflow": stats["overflow"]}


# --------------------------------------------------------------------------- driver


def run(n: int | None = None, *, quick: bool = False, repeats: int = 1, e2e: bool = True,
        workdir: Path | None = None) -> dict[str, Any]:
    n = n or (QUICK_MESSAGES if quick else MESSAGES)
    runs = 1 if quick else max(3, repeats)
    registry = Registry.default()
    ws = workloads(n)
    pinned = None
    if hasattr(os, "sched_getaffinity"):
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})
        pinned = sorted(os.sched_getaffinity(0))
    try:
        parse = bench_parse(ws, runs, registry)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, old)
    res: dict[str, Any] = {"messages": n, "runs": runs, "pinned_cpus": pinned, "parse": parse}
    goals: dict[str, Any] = {}
    for venue, kinds in parse.items():
        for kind, fig in kinds.items():
            goals[f"{venue}_{kind}_messages_per_s"] = {"goal": GOALS[kind], "value": fig["messages_per_s"],
                                                       "met": fig["messages_per_s"] >= GOALS[kind]}
    res["goals"] = goals
    res["goal_met"] = all(g["met"] for g in goals.values())
    if e2e:
        with tempfile.TemporaryDirectory(prefix="bench_feed_", dir=workdir) as tmp:
            res["e2e"] = {"binance": {w.kind: bench_e2e(w, Path(tmp)) for w in ws if w.venue == "binance"}}
    return res


def format_table(res: dict[str, Any]) -> str:
    lines = [f"parse + normalize, one core ({res['messages']:,} messages, median of {res['runs']})",
             f"{'venue':<16}{'kind':<7}{'msgs/s':>12}{'rows/s':>12}{'goal':>10}  met"]
    for venue, kinds in res["parse"].items():
        for kind, fig in kinds.items():
            goal = res["goals"][f"{venue}_{kind}_messages_per_s"]
            lines.append(f"{venue:<16}{kind:<7}{fig['messages_per_s']:>12,.0f}{fig['rows_per_s']:>12,.0f}"
                         f"{goal['goal']:>10,.0f}  {'yes' if goal['met'] else 'NO'}")
    for venue, kinds in res.get("e2e", {}).items():
        for kind, fig in kinds.items():
            lines.append(f"e2e {venue:<12}{kind:<7}{fig['messages_per_s']:>12,.0f}{fig['rows_per_s']:>12,.0f}"
                         f"  (capture replay -> TP logged every row)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=None,
                    help=f"messages per venue and kind (default {MESSAGES:,}; --quick {QUICK_MESSAGES:,})")
    ap.add_argument("--repeats", type=int, default=1, help="runs per parse figure is max(3, N); median reported")
    ap.add_argument("--quick", action="store_true", help="small counts, one run (smoke run)")
    ap.add_argument("--no-baselines", action="store_true", help="accepted for symmetry; there is no baseline")
    ap.add_argument("--no-e2e", action="store_true", help="parse figures only (no TP, no capture replay)")
    ap.add_argument("--dir", type=Path, default=None, help="where captures and TP logs go (default: temp dir)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    loadavg_before = list(os.getloadavg())
    res = run(args.messages, quick=args.quick, repeats=args.repeats, e2e=not args.no_e2e, workdir=args.dir)
    res["nproc"] = os.cpu_count()
    res["loadavg_before"] = loadavg_before
    res["loadavg_after"] = list(os.getloadavg())
    res["versions"] = {"python": sys.version.split()[0], "pyarrow": pa.__version__}
    print(json.dumps(res, indent=2, sort_keys=True))
    if not args.json:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
