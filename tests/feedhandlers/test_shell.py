"""The feed I/O shell end to end: a local venue (WebSocket + REST) -> Feed(BinanceSpot) -> a real TP -> a subscriber.

The frames are Binance's documented messages (the literal ones of test_binance.py) played by
:mod:`tests.feedhandlers.venue_server`; nothing is mocked. Each test checks the rows that
arrive at the TP: values, the book against hand-computed levels, and the feed_event rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feedhandlers.binance import BinanceSpot
from feedhandlers.capture import CaptureReader
from feedhandlers.normalize import Out
from feedhandlers.shell import Feed, FeedConfig, replay
from feedhandlers.venue import Reconnect, Send
from tests.conftest import Collector, TPFactory, TPProcess, free_port
from tests.feedhandlers.test_binance import snapshot, spot_depth, wrap
from tests.feedhandlers.venue_server import Drop, RestServer, Sleep, Step, Until, VenueServer

Collect = Callable[..., Collector]
MS = 1_000_000
DEPTH = "/api/v3/depth?symbol=BTCUSDT&limit=1000"
ACK = '{"result": null, "id": 1}'
TRADE = {"e": "trade", "E": 1672515782136, "s": "BTCUSDT", "t": 12345, "p": "0.001", "q": "100",
         "T": 1672515782136, "m": True, "M": True}
TICKER = {"u": 400900217, "s": "BTCUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
          "A": "40.66000000"}
SNAP_158 = snapshot(158, [["0.0024", "10"], ["0.0023", "5"]], [["0.0026", "100"], ["0.0027", "3"]])


def depth(first: int, final: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    return spot_depth(first, final, bids, asks, "BTCUSDT")


def rows(c: Collector, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` the subscriber got, without the TP's own time."""
    out: list[dict[str, Any]] = []
    for m in c.messages:
        if m.table == table:
            out += m.data.drop_columns(["tp_time"]).to_pylist()
    return out


def kinds(c: Collector) -> list[str]:
    return [r["kind"] for r in rows(c, "feed_event")]


async def until(pred: Callable[[], Any], what: str, feed: asyncio.Task[Any], timeout: float = 10.0) -> None:
    """Wait for ``pred()``; fail at once if the feed task ended (with its exception)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if feed.done():
            feed.result()
            raise AssertionError(f"the feed stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def book(feed: Feed) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    venue = feed.venue
    assert isinstance(venue, BinanceSpot)
    return venue.book("BTCUSDT").top_raw(10)


def test_rows_values_bad_frames_and_capture_replay(tp: TPProcess, collect: Collect, tmp_path: Path) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    cap = tmp_path / "binance.cap"
    script: list[Step] = [ACK, wrap("btcusdt@trade", TRADE), wrap("btcusdt@bookTicker", TICKER),
              depth(150, 155, [["0.0024", "1"]], []),  # before the snapshot at 158: skipped
              "this is not json", b"\xff\x00garbage", wrap("btcusdt@trade", {**TRADE, "t": 12346, "p": "abc"}),
              depth(156, 160, [["0.0024", "8"]], [["0.0025", "2"]]),
              depth(161, 163, [["0.0023", "0"], ["0.0022", "7"]], [["0.0026", "0"]])]

    async def main() -> tuple[Feed, VenueServer]:
        with RestServer({DEPTH: [(200, SNAP_158)]}) as rest:
            async with VenueServer([script]) as server:
                feed = Feed(BinanceSpot(["BTCUSDT"]), FeedConfig(tp.address, ws_url=server.url, rest_url=rest.url,
                                                                 capture=cap))
                task = asyncio.create_task(feed.run())
                await until(lambda: len(rows(sub, "l2")) == 9, "9 l2 rows", task)
                feed.stop()
                stats = await task
        assert stats["messages"] == len(script) and stats["rows"]["l2"] == 9 and stats["overflow"] == 0
        assert rest.requests == [DEPTH]
        return feed, server

    feed, server = asyncio.run(main())
    assert server.received == [[BinanceSpot(["BTCUSDT"]).subscribe()[0]]]
    (trade,) = rows(sub, "trade")  # the trade with price "abc" is not a row
    assert trade["time"].timestamp() * 1000 == 1672515782136
    assert {k: trade[k] for k in ("sym", "venue_sym", "exchange", "price", "size", "side", "trade_id", "seq")} == {
        "sym": "BTCUSD", "venue_sym": "BTCUSDT", "exchange": "binance", "price": 0.001, "size": 100.0,
        "side": "sell", "trade_id": "12345", "seq": 12345}
    quotes = rows(sub, "quote")
    assert [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) for q in quotes] == [
        (25.3519, 31.21, 25.3652, 40.66, False),  # bookTicker: native
        (0.0024, 10.0, 0.0026, 100.0, True), (0.0024, 8.0, 0.0025, 2.0, True)]  # from the book
    l2 = rows(sub, "l2")
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"]) for r in l2] == [
        ("bid", 0.0024, 10.0, True, 158, 158), ("bid", 0.0023, 5.0, True, 158, 158),
        ("ask", 0.0026, 100.0, True, 158, 158), ("ask", 0.0027, 3.0, True, 158, 158),
        ("bid", 0.0024, 8.0, False, 156, 160), ("ask", 0.0025, 2.0, False, 156, 160),
        ("bid", 0.0023, 0.0, False, 161, 163), ("bid", 0.0022, 7.0, False, 161, 163),
        ("ask", 0.0026, 0.0, False, 161, 163)]
    assert book(feed) == ([("0.0024", "8"), ("0.0022", "7")], [("0.0025", "2"), ("0.0027", "3")])
    events = rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "bad_message", "bad_message", "bad_message"]
    assert server.url in events[0]["detail"] and all(e["exchange"] == "binance" for e in events)
    assert "'abc' is not a positive finite decimal" in events[4]["detail"]

    with CaptureReader(cap) as reader:  # what a replay needs to build the same venue
        assert reader.venue == "binance" and reader.meta["options"] == {}
        assert (reader.meta["symbols"], reader.meta["channels"]) == (["BTCUSDT"], ["l2", "quote", "trade"])
    # The capture replays, through a new venue, to the very same rows.
    live = {t: rows(sub, t) for t in ("trade", "quote", "l2", "feed_event")}
    before = sub.rows
    stats = asyncio.run(replay(cap, BinanceSpot(["BTCUSDT"]), FeedConfig(tp.address)))
    assert stats["messages"] == len(script) and stats["rest_requests"] == 0
    sub.wait_rows(2 * before, timeout=10)
    for table, got in live.items():
        assert rows(sub, table) == got + got, table


def test_a_restarted_feed_appends_to_its_capture_and_the_replay_equals_both_runs(tp: TPProcess, collect: Collect,
                                                                                 tmp_path: Path) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    cap = tmp_path / "binance.cap"
    snap_301 = snapshot(301, [["0.0029", "4"]], [["0.0031", "2"]])
    runs: list[tuple[list[Step], bytes]] = [
        ([ACK, wrap("btcusdt@trade", TRADE), depth(156, 160, [["0.0024", "8"]], [["0.0025", "2"]])], SNAP_158),
        ([ACK, depth(300, 302, [["0.0030", "1"]], []), wrap("btcusdt@trade", {**TRADE, "t": 12346})], snap_301)]

    async def run(script: list[Step], snap: bytes, l2_rows: int) -> None:
        with RestServer({DEPTH: [(200, snap)]}) as rest:
            async with VenueServer([script]) as server:
                feed = Feed(BinanceSpot(["BTCUSDT"]), FeedConfig(tp.address, ws_url=server.url, rest_url=rest.url,
                                                                 capture=cap))
                task = asyncio.create_task(feed.run())
                await until(lambda: len(rows(sub, "l2")) == l2_rows, f"{l2_rows} l2 rows", task)
                feed.stop()  # stopped with the connection open: the capture has no CLOSE for it
                await task

    asyncio.run(run(*runs[0], l2_rows=6))
    asyncio.run(run(*runs[1], l2_rows=9))
    live = {t: rows(sub, t) for t in ("trade", "quote", "l2", "feed_event")}
    assert [(r["price"], r["is_snapshot"]) for r in live["l2"][6:]] == [(0.0029, True), (0.0031, True),
                                                                       (0.0030, False)]
    before = sub.rows
    asyncio.run(replay(cap, BinanceSpot(["BTCUSDT"]), FeedConfig(tp.address)))
    sub.wait_rows(2 * before, timeout=10)
    replayed = {t: rows(sub, t)[len(got):] for t, got in live.items()}
    # The second run's OPEN follows the first run's connection with no CLOSE: the replay
    # starts a fresh venue there, as the restarted process did, so every row is the same.
    assert [e["kind"] for e in live["feed_event"]] == ["connect", "subscribed", "connect", "subscribed"]
    for table in ("trade", "quote", "l2", "feed_event"):
        assert replayed[table] == live[table], table


def test_dropped_connection_reconnects_resubscribes_and_resyncs(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    snap_301 = snapshot(301, [["0.0029", "4"]], [["0.0031", "2"]])
    rest = RestServer({DEPTH: [(200, SNAP_158), (500, b'{"msg": "busy"}'), (200, snap_301)]})

    async def main() -> tuple[Feed, VenueServer]:
        with rest:
            first: list[Step] = [ACK, depth(156, 160, [["0.0024", "8"]], [["0.0025", "2"]]),
                     Until(lambda: rest.served() >= 1), Sleep(0.2), Drop()]
            second: list[Step] = [ACK, depth(300, 302, [["0.0030", "1"]], []),
                      Until(lambda: rest.served() >= 3), Sleep(0.05),
                      depth(303, 305, [], [["0.0031", "0"], ["0.0032", "5"]])]
            async with VenueServer([first, second]) as server:
                feed = Feed(BinanceSpot(["BTCUSDT"], channels={"l2"}),
                            FeedConfig(tp.address, ws_url=server.url, rest_url=rest.url))
                task = asyncio.create_task(feed.run())
                await until(lambda: any(r["seq_last"] == 305 for r in rows(sub, "l2")), "the last delta", task)
                feed.stop()
                await task
        return feed, server

    feed, server = asyncio.run(main())
    # Subscribed again on the new connection; a new snapshot after the 500 was retried.
    assert len(server.received) == 2 and server.received[0] == server.received[1]
    assert rest.requests == [DEPTH, DEPTH, DEPTH]
    assert book(feed) == ([("0.0030", "1"), ("0.0029", "4")], [("0.0032", "5")])
    events = rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "disconnect", "reconnect", "subscribed",
                                           "rest_error", "resync"]
    assert "closed" in events[2]["detail"] and server.url in events[2]["detail"]
    assert "HTTP 500" in events[5]["detail"] and "retrying" in events[5]["detail"]
    assert (events[5]["sym"], events[5]["venue_sym"]) == ("BTCUSD", "BTCUSDT")
    l2 = rows(sub, "l2")
    after = [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in l2 if r["seq_last"] >= 301]
    assert after == [("bid", 0.0029, 4.0, True), ("ask", 0.0031, 2.0, True), ("bid", 0.0030, 1.0, False),
                     ("ask", 0.0031, 0.0, False), ("ask", 0.0032, 5.0, False)]
    assert feed.stats["reconnects"] == 1 and feed.stats["rest_errors"] == 1


def test_a_snapshot_asked_for_again_at_once_is_fetched_with_backoff(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    too_old = snapshot(100, [["0.0024", "10"]], [["0.0026", "100"]])  # the stream starts at 156
    rest = RestServer({DEPTH: [(200, too_old)] * 3 + [(200, SNAP_158)]})

    async def main() -> float:
        with rest:
            async with VenueServer([[ACK, depth(156, 160, [["0.0024", "8"]], [["0.0025", "2"]])]]) as server:
                feed = Feed(BinanceSpot(["BTCUSDT"], channels={"l2"}),
                            FeedConfig(tp.address, ws_url=server.url, rest_url=rest.url))
                task = asyncio.create_task(feed.run())
                await until(lambda: rest.served() == 1, "the first snapshot request", task)
                start = time.monotonic()
                await until(lambda: len(rows(sub, "l2")) == 6, "the book from the fourth snapshot", task)
                took = time.monotonic() - start
                feed.stop()
                await task
        return took

    took = asyncio.run(main())
    assert rest.served() == 4 and kinds(sub).count("gap") == 3
    assert took >= 0.1 + 0.2 + 0.4  # asked again at once each time: waited 0.1, 0.2, 0.4 s


def test_silent_server_is_idle_reconnected_and_a_quiet_symbol_is_stale(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()

    async def main() -> Feed:
        # The first connection says one thing and then nothing; the second one trades again.
        async with VenueServer([[ACK, wrap("btcusdt@trade", TRADE)],
                                [ACK, wrap("btcusdt@trade", {**TRADE, "t": 12346})]]) as server:
            feed = Feed(BinanceSpot(["BTCUSDT", "ETHUSDT"], channels={"trade"}),
                        FeedConfig(tp.address, ws_url=server.url, idle_timeout=0.6, stale_after=0.2))
            task = asyncio.create_task(feed.run())
            await until(lambda: len(rows(sub, "trade")) == 2, "the trade on the second connection", task)
            feed.stop()
            await task
        return feed

    feed = asyncio.run(main())
    events = rows(sub, "feed_event")
    got = [(e["kind"], e["venue_sym"]) for e in events]
    # Stale first (ETHUSDT never traded, BTCUSDT traded once), then the idle connection is replaced.
    assert got[:2] == [("connect", None), ("subscribed", None)]
    assert sorted(got[2:4]) == [("stale", "BTCUSDT"), ("stale", "ETHUSDT")]
    assert got[4:7] == [("disconnect", None), ("reconnect", None), ("subscribed", None)]
    assert "idle" in events[4]["detail"] and "0.6 s" in events[4]["detail"]
    assert [r["trade_id"] for r in rows(sub, "trade")] == ["12345", "12346"]
    assert feed.stats["reconnects"] == 1 and feed.stats["events"]["stale"] >= 2


class PingingBinance(BinanceSpot):
    keepalive = 0.5

    def ping(self) -> str:
        return '{"method":"ping"}'


def test_keepalive_pings_a_quiet_connection_and_no_ping_while_frames_flow() -> None:
    async def main() -> VenueServer:
        script: list[Step] = [ACK]
        for i in range(1, 9):  # trades 20 ms apart: no quiet spell of 0.5 s
            script += [wrap("btcusdt@trade", {**TRADE, "t": i}), Sleep(0.02)]
        async with VenueServer([script]) as server:
            feed = Feed(PingingBinance(["BTCUSDT"], channels={"trade"}), FeedConfig(None, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: feed.stats["messages"] == 9, "the trades", task)
            assert server.received[0].count('{"method":"ping"}') == 0
            await until(lambda: server.received[0].count('{"method":"ping"}') >= 2, "two pings", task)
            feed.stop()
            await task
        return server

    server = asyncio.run(main())
    assert server.connections == 1 and str(server.received[0][0]).startswith('{"method":"SUBSCRIBE"')


class MaintenanceBinance(BinanceSpot):
    """Binance has no such message; Bitstamp's bts:request_reconnect and OKX's notices do this."""

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if raw == "please reconnect":
            self._request(Reconnect("maintenance announced"))
            return
        super().on_message(raw, recv_ns, out)


def test_a_venue_asking_for_a_reconnect_gets_a_clean_close_and_a_new_connection(tp: TPProcess,
                                                                                 collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()

    async def main() -> VenueServer:
        async with VenueServer([[ACK, "please reconnect"], [ACK, wrap("btcusdt@trade", TRADE)]]) as server:
            feed = Feed(MaintenanceBinance(["BTCUSDT"], channels={"trade"}), FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: len(rows(sub, "trade")) == 1, "the trade on the second connection", task)
            feed.stop()
            await task
        return server

    server = asyncio.run(main())
    assert server.connections == 2
    events = rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "disconnect", "reconnect", "subscribed"]
    assert events[2]["detail"] == "binance asked for a reconnect: maintenance announced"


class LaterBinance(BinanceSpot):
    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if raw == "later":
            self._request(Send("hello later", after=0.3))
            return
        super().on_message(raw, recv_ns, out)


def test_a_delayed_send_goes_on_its_connection_and_dies_with_it() -> None:
    server = VenueServer([[ACK, "later", Until(lambda: "hello later" in server.received[0]), Drop()],
                          [ACK, "later", Drop()], [ACK]])

    async def main() -> float:
        async with server:
            feed = Feed(LaterBinance(["BTCUSDT"], channels={"trade"}), FeedConfig(None, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            start = time.monotonic()
            await until(lambda: server.connections == 2, "the first reconnect", task)
            took = time.monotonic() - start
            await until(lambda: server.connections == 3, "the second reconnect", task)
            await asyncio.sleep(0.5)  # longer than the delay: the dropped connection's send must not come
            feed.stop()
            await task
        return took

    took = asyncio.run(main())
    assert took >= 0.3 and server.received[0][-1] == "hello later"
    assert "hello later" not in server.received[1] + server.received[2]  # the second connection's died with it


def test_overflow_drops_batches_counts_them_and_says_so(tp_process: TPFactory, collect: Collect) -> None:
    # No TP yet: the publisher cannot connect, its queue (2 batches) fills, later batches are dropped.
    port = free_port()
    script: list[Step] = [ACK]
    for i in range(1, 11):  # one trade per batch: 30 ms apart, flushed every 5 ms
        script += [wrap("btcusdt@trade", {**TRADE, "t": i}), Sleep(0.03)]

    async def main() -> tuple[Feed, Collector]:
        async with VenueServer([script]) as server:
            feed = Feed(BinanceSpot(["BTCUSDT"], channels={"trade"}),
                        FeedConfig(f"127.0.0.1:{port}", ws_url=server.url, queue_batches=2, flush_ms=5))
            task = asyncio.create_task(feed.run())
            await until(lambda: feed.stats["messages"] == 11 and feed.stats["overflow"] >= 5, "overflow", task)
            tp = await asyncio.to_thread(tp_process, port=port)
            sub = collect(tp.address, from_seq=0)
            await until(lambda: "overflow" in kinds(sub), "the overflow event", task)
            feed.stop()
            await task
        return feed, sub

    feed, sub = asyncio.run(main())
    stats = feed.stats
    (event,) = [e for e in rows(sub, "feed_event") if e["kind"] == "overflow"]
    assert event["detail"].startswith(f"{stats['overflow']} rows dropped: the publish queue (2 batches) was full")
    # Every parsed row was either published or counted as lost.
    published = len(rows(sub, "trade")) + len(rows(sub, "feed_event"))
    assert published == sum(stats["rows"].values())
    assert stats["rows"]["trade"] + stats["overflow"] >= 10 and stats["overflow_batches"] >= 5
    assert [int(r["trade_id"]) for r in rows(sub, "trade")] == sorted(int(r["trade_id"]) for r in rows(sub, "trade"))


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="queue_batches must be > 0"):
        FeedConfig(None, queue_batches=0)
