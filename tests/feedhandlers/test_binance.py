"""Binance spot and USD-M futures adapters fed literal messages in the venues' documented formats.

Message shapes follow Binance's WebSocket stream docs (spot "Trade Streams", "Individual
Symbol Book Ticker Streams", "Diff. Depth Stream"; USD-M "Aggregate Trade Streams",
"Individual Symbol Book Ticker Streams", "Diff. Book Depth Streams") and the two "How to
manage a local order book correctly" pages; the doc examples' values (BNBBTC trade 12345 at
"0.001" x "100", bookTicker 400900217 "25.35190000"/"31.21000000"...) are used as written.
Books are checked against hand-computed levels written out in each test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedhandlers.binance import BinanceFutures, BinanceSpot
from feedhandlers.normalize import Out
from feedhandlers.venue import Rest

RECV = 1_700_000_000_000_000_000  # an arbitrary receive time in ns
MS = 1_000_000


def wrap(stream: str, data: dict[str, Any]) -> str:
    """A combined-stream message, as /stream sends it."""
    return json.dumps({"stream": stream, "data": data})


def spot_depth(first: int, final: int, bids: list[list[str]], asks: list[list[str]], sym: str = "BNBBTC") -> str:
    return wrap(f"{sym.lower()}@depth@100ms", {"e": "depthUpdate", "E": 1672515782136 + final, "s": sym,
                                               "U": first, "u": final, "b": bids, "a": asks})


def snapshot(last: int, bids: list[list[str]], asks: list[list[str]], **extra: int) -> bytes:
    return json.dumps({"lastUpdateId": last, **extra, "bids": bids, "asks": asks}).encode()


def feed(venue: BinanceSpot | BinanceFutures, out: Out, *messages: str | bytes) -> None:
    for i, raw in enumerate(messages):
        venue.on_message(raw, RECV + i, out)


def table(out: Out, name: str) -> list[dict[str, Any]]:
    """The rows of one table as dicts (and leave the other tables in ``out``)."""
    cols = out.columns[name]
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    for col in cols.values():
        col.clear()
    return rows


Levels = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def levels(venue: BinanceSpot | BinanceFutures, sym: str = "BNBBTC") -> Levels:
    return venue.book(sym).top_raw(1000)


# -- connection -------------------------------------------------------------------------


def test_combined_stream_url_and_one_subscribe_message_acknowledged() -> None:
    venue = BinanceSpot(["BTCUSDT", "ethusdt"])
    assert venue.url("ws://127.0.0.1:9000/") == "ws://127.0.0.1:9000/stream"
    assert venue.url(venue.ws_url) == "wss://stream.binance.com:9443/stream"
    (text,) = venue.subscribe()
    assert json.loads(text) == {"method": "SUBSCRIBE", "id": 1, "params": [
        "btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms",
        "ethusdt@trade", "ethusdt@bookTicker", "ethusdt@depth@100ms"]}
    assert json.loads(BinanceSpot(["BTCUSDT"], channels={"trade"}).subscribe()[0])["params"] == ["btcusdt@trade"]
    out = Out("binance")
    feed(venue, out, '{"result": null, "id": 1}', '{"error": {"code": 2, "msg": "Invalid request"}, "id": 1}')
    events = table(out, "feed_event")
    assert [e["kind"] for e in events] == ["subscribed", "bad_message"]
    assert "refused request id 1" in events[1]["detail"] and "Invalid request" in events[1]["detail"]
    assert venue.actions() == []


# -- trades and native quotes --------------------------------------------------------------


def test_trade_side_is_the_aggressor_and_times_are_ns() -> None:
    venue = BinanceSpot(["BNBBTC"])
    out = Out("binance")
    doc = {"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
           "T": 1672515782136, "m": True, "M": True}
    feed(venue, out, wrap("bnbbtc@trade", doc),
         wrap("bnbbtc@trade", {**doc, "t": 12346, "p": "0.00100000", "q": "0.5", "T": 1672515782140, "m": False}))
    rows = table(out, "trade")
    assert rows == [
        {"time": 1672515782136 * MS, "sym": "BNBBTC", "venue_sym": "BNBBTC", "exchange": "binance",
         "price": "0.001", "size": "100", "side": "sell", "trade_id": "12345", "seq": 12345, "recv_time": RECV},
        {"time": 1672515782140 * MS, "sym": "BNBBTC", "venue_sym": "BNBBTC", "exchange": "binance",
         "price": "0.00100000", "size": "0.5", "side": "buy", "trade_id": "12346", "seq": 12346,
         "recv_time": RECV + 1},
    ]
    assert out.take() == {}


def test_book_ticker_is_a_native_quote_stamped_with_receive_time() -> None:
    venue = BinanceSpot(["BNBUSDT"])
    out = Out("binance")
    feed(venue, out, wrap("bnbusdt@bookTicker", {"u": 400900217, "s": "BNBUSDT", "b": "25.35190000",
                                                 "B": "31.21000000", "a": "25.36520000", "A": "40.66000000"}))
    assert table(out, "quote") == [
        {"time": RECV, "sym": "BNBUSD", "venue_sym": "BNBUSDT", "exchange": "binance", "bid_price": "25.35190000",
         "bid_size": "31.21000000", "ask_price": "25.36520000", "ask_size": "40.66000000", "recv_time": RECV,
         "derived": False}]


# -- depth sync ----------------------------------------------------------------------------


def test_depth_buffers_until_snapshot_then_follows_u_rules_and_resyncs_after_a_gap() -> None:
    venue = BinanceSpot(["BNBBTC"], channels={"l2"})
    out = Out("binance")
    feed(venue, out,
         spot_depth(150, 155, [["0.0024", "1"]], []),  # before the snapshot: skipped (u <= 158)
         spot_depth(156, 160, [["0.0024", "8"]], [["0.0025", "2"]]),  # straddles 159: applied
         spot_depth(161, 163, [["0.0023", "0"], ["0.0022", "7"]], [["0.0026", "0"]]))
    # Nothing is published before the snapshot; it is asked for once, on the first event.
    assert out.take() == {}
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]
    assert venue.actions() == []

    venue.on_snapshot("BNBBTC", snapshot(158, [["0.0024", "10"], ["0.0023", "5"]],
                                         [["0.0026", "100"], ["0.0027", "3"]]), RECV + 10, out)
    l2 = table(out, "l2")
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"]) for r in l2] == [
        ("bid", "0.0024", "10", True, 158, 158), ("bid", "0.0023", "5", True, 158, 158),
        ("ask", "0.0026", "100", True, 158, 158), ("ask", "0.0027", "3", True, 158, 158),
        ("bid", "0.0024", "8", False, 156, 160), ("ask", "0.0025", "2", False, 156, 160),
        ("bid", "0.0023", "0", False, 161, 163), ("bid", "0.0022", "7", False, 161, 163),
        ("ask", "0.0026", "0", False, 161, 163),
    ]
    # Snapshot rows: the receive time of the snapshot; deltas: event time E and their own receive time.
    assert l2[0]["time"] == l2[0]["recv_time"] == RECV + 10
    assert (l2[4]["time"], l2[4]["recv_time"]) == ((1672515782136 + 160) * MS, RECV + 1)
    # Derived quotes when the top changed: after the snapshot and after 156-160, not after 161-163.
    quotes = table(out, "quote")
    assert [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) for q in quotes] == [
        ("0.0024", "10", "0.0026", "100", True), ("0.0024", "8", "0.0025", "2", True)]
    assert table(out, "feed_event") == []  # the first snapshot is not a resync
    assert levels(venue) == ([("0.0024", "8"), ("0.0022", "7")], [("0.0025", "2"), ("0.0027", "3")])

    # Live: a repeated price with another spelling is the same level; the top's size moved.
    feed(venue, out, spot_depth(164, 165, [["0.00240", "9"]], []))
    assert [(q["bid_price"], q["bid_size"]) for q in table(out, "quote")] == [("0.00240", "9")]
    assert len(table(out, "l2")) == 1
    # A duplicate (already applied) is dropped silently.
    feed(venue, out, spot_depth(164, 165, [["0.0021", "1"]], []))
    assert out.take() == {}

    # 166-167 is lost: 168-170 is a gap; the book goes invalid and nothing is published.
    feed(venue, out, spot_depth(168, 170, [["0.0024", "1"]], []), spot_depth(171, 172, [], [["0.0025", "4"]]))
    (gap,) = table(out, "feed_event")
    assert (gap["kind"], gap["sym"], gap["venue_sym"], gap["expected"], gap["got"]) == ("gap", "BNBBTC", "BNBBTC",
                                                                                         166, 168)
    assert out.take() == {}
    assert not venue.book("BNBBTC").valid
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]

    # The new snapshot (at 170) joins the buffered 171-172: valid again, "resync" said once.
    venue.on_snapshot("BNBBTC", snapshot(170, [["0.0024", "1"]], [["0.0025", "1"], ["0.0028", "6"]]), RECV + 20, out)
    assert [e["kind"] for e in table(out, "feed_event")] == ["resync"]
    assert [(r["price"], r["size"], r["is_snapshot"]) for r in table(out, "l2")] == [
        ("0.0024", "1", True), ("0.0025", "1", True), ("0.0028", "6", True), ("0.0025", "4", False)]
    assert levels(venue) == ([("0.0024", "1")], [("0.0025", "4"), ("0.0028", "6")])
    assert venue.book("BNBBTC").valid and venue.book("BNBBTC").seq == 172


def test_snapshot_older_than_the_buffered_events_is_fetched_again_without_publishing() -> None:
    venue = BinanceSpot(["BNBBTC"], channels={"l2"})
    out = Out("binance")
    feed(venue, out, spot_depth(200, 205, [["1.5", "1"]], []), spot_depth(206, 206, [], [["1.6", "2"]]))
    venue.actions()
    venue.on_snapshot("BNBBTC", snapshot(190, [["1.4", "1"]], [["1.7", "1"]]), RECV + 5, out)
    (gap,) = table(out, "feed_event")
    assert (gap["kind"], gap["expected"], gap["got"]) == ("gap", 191, 200)
    assert out.take() == {}
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]
    # The buffered events are kept: a newer snapshot joins them.
    venue.on_snapshot("BNBBTC", snapshot(203, [["1.4", "1"]], [["1.7", "1"]]), RECV + 6, out)
    assert levels(venue) == ([("1.5", "1"), ("1.4", "1")], [("1.6", "2"), ("1.7", "1")])
    assert [e["kind"] for e in table(out, "feed_event")] == []  # never valid before: not a resync
    out.take()
    # A late, unrequested snapshot does not rewind a synced book.
    venue.on_snapshot("BNBBTC", snapshot(150, [], []), RECV + 7, out)
    assert out.take() == {} and levels(venue)[0] == [("1.5", "1"), ("1.4", "1")]
    with pytest.raises(ValueError, match="not one of the symbols"):
        venue.on_snapshot("XRPBTC", snapshot(1, [], []), RECV, out)


def test_a_gap_on_one_symbol_leaves_the_others_publishing() -> None:
    venue = BinanceSpot(["BNBBTC", "ETHBTC"], channels={"l2"})
    out = Out("binance")
    feed(venue, out, spot_depth(11, 11, [], [], "BNBBTC"), spot_depth(11, 11, [], [], "ETHBTC"))
    assert [a.venue_sym for a in venue.actions() if isinstance(a, Rest)] == ["BNBBTC", "ETHBTC"]
    for sym in ("BNBBTC", "ETHBTC"):
        venue.on_snapshot(sym, snapshot(10, [["5", "1"]], [["6", "1"]]), RECV, out)
    out.take()
    feed(venue, out, spot_depth(13, 13, [["5", "2"]], [], "BNBBTC"), spot_depth(12, 12, [["5", "3"]], [], "ETHBTC"))
    assert [e["venue_sym"] for e in table(out, "feed_event")] == ["BNBBTC"]
    assert [r["venue_sym"] for r in table(out, "l2")] == ["ETHBTC"]
    assert [q["venue_sym"] for q in table(out, "quote")] == ["ETHBTC"]
    assert not venue.book("BNBBTC").valid and venue.book("ETHBTC").valid
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]


def test_crossed_book_is_reported_once_per_crossing() -> None:
    venue = BinanceSpot(["BNBBTC"], channels={"l2"})
    out = Out("binance")
    feed(venue, out, spot_depth(2, 2, [], []))
    venue.on_snapshot("BNBBTC", snapshot(1, [["10", "1"]], [["11", "1"]]), RECV, out)
    out.take()
    feed(venue, out, spot_depth(3, 3, [["11.5", "1"]], []), spot_depth(4, 4, [["11.2", "1"]], []),
         spot_depth(5, 5, [["11.5", "0"], ["11.2", "0"]], []), spot_depth(6, 6, [], [["9", "1"]]))
    events = table(out, "feed_event")
    assert [(e["kind"], e["time"]) for e in events] == [("crossed", RECV), ("crossed", RECV + 3)]
    assert "11.5" in events[0]["detail"] and "'11'" in events[0]["detail"]


def test_reconnect_then_new_snapshot_rebuilds_the_book() -> None:
    venue = BinanceSpot(["BNBBTC"])
    out = Out("binance")
    feed(venue, out, spot_depth(101, 101, [["2", "1"]], []))
    venue.actions()
    venue.on_snapshot("BNBBTC", snapshot(100, [["1", "1"]], [["3", "1"]]), RECV, out)
    assert levels(venue) == ([("2", "1"), ("1", "1")], [("3", "1")])
    out.take()
    venue.on_disconnect(RECV + 1, out)
    assert not venue.book("BNBBTC").valid and levels(venue) == ([], [])
    # The new connection's first events are buffered until the new snapshot, whatever their ids.
    feed(venue, out, spot_depth(500, 502, [["2", "0"]], [["3", "2"]]), spot_depth(503, 503, [], [["4", "1"]]))
    assert out.take() == {}
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]
    venue.on_snapshot("BNBBTC", snapshot(501, [["2", "1"], ["1", "1"]], [["3", "5"]]), RECV + 9, out)
    assert levels(venue) == ([("1", "1")], [("3", "2"), ("4", "1")])
    assert [e["kind"] for e in table(out, "feed_event")] == ["resync"]
    (quote,) = table(out, "quote")[-1:]
    assert (quote["bid_price"], quote["ask_price"], quote["ask_size"]) == ("1", "3", "2")


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "why"), [
    (b"\x00\xffgarbage", "JSON is malformed"),
    (b"{\"stream\": \"\xff\"}", "DecodeError"),
    ("{not json", "DecodeError"),
    ("[1, 2, 3]", "a list, not a JSON object"),
    ('{"stream": "bnbbtc@trade"}', "KeyError"),
    ('{"stream": "bnbbtc@trade", "data": [1]}', "not an object"),
    (wrap("bnbbtc@trade", {"t": 1, "p": "abc", "q": "1", "T": 1, "m": True}), "price p 'abc'"),
    (wrap("bnbbtc@trade", {"t": 1, "p": "NaN", "q": "1", "T": 1, "m": True}), "price p 'NaN'"),
    (wrap("bnbbtc@trade", {"t": 1, "p": "-1", "q": "1", "T": 1, "m": True}), "positive"),
    (wrap("bnbbtc@trade", {"t": 1, "p": "1", "q": "1e999", "T": 1, "m": True}), "quantity q '1e999'"),
    # Decimal() takes these, Arrow's float cast does not: they must not reach a batch.
    *[(wrap("bnbbtc@trade", {"t": 1, "p": p, "q": "1", "T": 1, "m": True}), f"price p {p!r}")
      for p in (" 1", "1_000", "+1", "\u0661", "0x10")],
    (wrap("bnbbtc@trade", {"t": 1, "p": "1", "q": "1", "T": True, "m": True}), "trade time T"),
    (wrap("bnbbtc@trade", {"t": 1, "p": "1", "q": "1", "T": 1, "m": "yes"}), "boolean"),
    (wrap("bnbbtc@trade", {"t": 1, "p": 1, "q": "1", "T": 1, "m": True}), "not a decimal string"),
    (wrap("bnbbtc@bookTicker", {"u": 1, "b": "1", "B": "1", "a": "Infinity", "A": "1"}), "ask price a"),
    (wrap("bnbbtc@depth@100ms", {"E": 1, "U": "1", "u": 1, "b": [], "a": []}), "first update id U"),
    (wrap("bnbbtc@depth@100ms", {"E": 1, "U": 1, "u": 1, "b": {}, "a": []}), "bids b"),
])
def test_bad_messages_become_one_event_and_no_row(raw: str | bytes, why: str) -> None:
    venue = BinanceSpot(["BNBBTC"])
    out = Out("binance")
    venue.on_message(raw, RECV, out)
    (event,) = table(out, "feed_event")
    assert event["kind"] == "bad_message" and why in event["detail"], event["detail"]
    assert out.take() == {}


def test_unknown_stream_and_json_float_prices() -> None:
    venue = BinanceSpot(["BNBBTC"])
    out = Out("binance")
    feed(venue, out, wrap("xrpbtc@trade", {"t": 1}))
    (event,) = table(out, "feed_event")
    assert event["kind"] == "unknown_message" and "xrpbtc@trade" in event["detail"]
    # A JSON number is taken as its source text, never through a float.
    feed(venue, out, '{"stream":"bnbbtc@trade","data":{"t":7,"p":0.30000000000000001,"q":"1","T":5,"m":false}}')
    assert table(out, "trade")[0]["price"] == "0.30000000000000001"


def test_malformed_level_in_a_synced_book_invalidates_and_resyncs() -> None:
    venue = BinanceSpot(["BNBBTC"], channels={"l2"})
    out = Out("binance")
    feed(venue, out, spot_depth(2, 2, [], []))
    venue.actions()
    venue.on_snapshot("BNBBTC", snapshot(1, [["10", "1"]], [["11", "1"]]), RECV, out)
    out.take()
    feed(venue, out, spot_depth(3, 3, [["10.5", "1"], ["10.6", "x"]], []))
    (event,) = table(out, "feed_event")
    assert event["kind"] == "bad_message" and "10.6" in event["detail"]
    assert out.take() == {} and not venue.book("BNBBTC").valid
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]
    # A broken snapshot body is reported and asked for again.
    venue.on_snapshot("BNBBTC", b'{"lastUpdateId": 5}', RECV, out)
    assert [e["kind"] for e in table(out, "feed_event")] == ["bad_message"]
    assert venue.actions() == [Rest("BNBBTC", "/api/v3/depth?symbol=BNBBTC&limit=1000")]
    feed(venue, out, spot_depth(4, 6, [["10.6", "2"]], []))
    venue.on_snapshot("BNBBTC", snapshot(5, [["10", "1"]], [["11", "1"]]), RECV, out)
    assert levels(venue) == ([("10.6", "2"), ("10", "1")], [("11", "1")])
    assert [e["kind"] for e in table(out, "feed_event")] == ["resync"]


# -- USD-M futures -----------------------------------------------------------------------------


def fut_depth(first: int, final: int, prev: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    return wrap("btcusdt@depth@100ms", {"e": "depthUpdate", "E": 1571889248277, "T": 1571889248276 + final,
                                        "s": "BTCUSDT", "U": first, "u": final, "pu": prev, "b": bids, "a": asks})


def test_futures_agg_trade_and_book_ticker() -> None:
    venue = BinanceFutures(["BTCUSDT"])
    assert venue.url(venue.ws_url) == "wss://fstream.binance.com/stream"
    assert json.loads(venue.subscribe()[0])["params"] == ["btcusdt@aggTrade", "btcusdt@bookTicker",
                                                          "btcusdt@depth@100ms"]
    assert "btcusdt@trade" in json.loads(BinanceFutures(["BTCUSDT"], trade_stream="trade").subscribe()[0])["params"]
    with pytest.raises(ValueError, match="trade_stream"):
        BinanceFutures(["BTCUSDT"], trade_stream="kline")
    out = Out("binance-futures")
    feed(venue, out,
         wrap("btcusdt@aggTrade", {"e": "aggTrade", "E": 123456789, "s": "BTCUSDT", "a": 5933014, "p": "0.001",
                                   "q": "100", "f": 100, "l": 105, "T": 123456785, "m": True}),
         wrap("btcusdt@bookTicker", {"e": "bookTicker", "u": 400900217, "E": 1568014460893, "T": 1568014460891,
                                     "s": "BTCUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
                                     "A": "40.66000000"}))
    (trade,) = table(out, "trade")
    assert (trade["time"], trade["price"], trade["size"], trade["side"], trade["trade_id"], trade["seq"],
            trade["exchange"], trade["sym"]) == (123456785 * MS, "0.001", "100", "sell", "5933014", 5933014,
                                                 "binance-futures", "BTCUSD")
    (quote,) = table(out, "quote")
    assert (quote["time"], quote["bid_price"], quote["derived"]) == (1568014460891 * MS, "25.35190000", False)


def test_futures_depth_pu_chaining_gap_and_resync() -> None:
    venue = BinanceFutures(["BTCUSDT"], channels={"l2"})
    out = Out("binance-futures")
    feed(venue, out,
         fut_depth(90, 95, 89, [["100.0", "1"]], []),  # u < lastUpdateId 100: dropped
         fut_depth(96, 104, 95, [["100.0", "2"]], [["101.0", "3"]]),  # U <= 100 <= u: the first applied
         fut_depth(105, 110, 104, [["99.5", "4"]], []))
    assert venue.actions() == [Rest("BTCUSDT", "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")]
    venue.on_snapshot("BTCUSDT", snapshot(100, [["100.0", "5"]], [["101.0", "1"], ["102.0", "1"]],
                                          E=1571889248277, T=1571889248276), RECV, out)
    l2 = table(out, "l2")
    assert l2[0]["time"] == 1571889248276 * MS  # snapshot rows at the snapshot's transaction time
    assert [(r["price"], r["size"], r["seq_last"]) for r in l2] == [
        ("100.0", "5", 100), ("101.0", "1", 100), ("102.0", "1", 100), ("100.0", "2", 104), ("101.0", "3", 104),
        ("99.5", "4", 110)]
    assert levels(venue, "BTCUSDT") == ([("100.0", "2"), ("99.5", "4")], [("101.0", "3"), ("102.0", "1")])
    out.take()
    # pu must be the previous u (110); 111-115 is lost, so 116-120 with pu=115 is a gap.
    feed(venue, out, fut_depth(116, 120, 115, [["100.0", "0"]], []), fut_depth(121, 125, 120, [], [["101.0", "0"]]))
    (gap,) = table(out, "feed_event")
    assert (gap["kind"], gap["expected"], gap["got"]) == ("gap", 110, 115)
    assert out.take() == {} and not venue.book("BTCUSDT").valid
    assert venue.actions() == [Rest("BTCUSDT", "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")]
    venue.on_snapshot("BTCUSDT", snapshot(118, [["100.0", "7"], ["99.0", "1"]], [["101.0", "9"]], E=1, T=2), RECV,
                      out)
    # 116-120 straddles 118 and is applied (deleting 100.0), then 121-125 chains by pu=120.
    assert levels(venue, "BTCUSDT") == ([("99.0", "1")], [])
    assert [e["kind"] for e in table(out, "feed_event")] == ["resync"]
    assert venue.book("BTCUSDT").seq == 125
