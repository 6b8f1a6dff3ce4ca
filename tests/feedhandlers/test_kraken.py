"""Kraken WS v2 adapter (``feedhandlers/kraken.py``) fed literal message sequences.

Message shapes are Kraken's documented v2 formats (docs.kraken.com, Spot WebSocket v2:
``trade``, ``ticker``, ``book`` pages and the "Book checksum (WebSocket v2)" guide), with
prices and quantities as bare JSON numbers at full precision, as the live feed sends them
(``{"price":62807.0,"qty":0.00000000}``). Checksums in the tests are computed by hand with
:func:`crc`, written from the guide's algorithm, independently of ``feedhandlers.book``.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.kraken import Kraken, _ts_ns
from feedhandlers.normalize import Out
from feedhandlers.shell import Feed, FeedConfig
from feedhandlers.venue import Send
from tests.conftest import TPProcess
from tests.feedhandlers.test_shell import Collect, until
from tests.feedhandlers.test_shell import rows as tp_rows
from tests.feedhandlers.venue_server import Drop, Sleep, Until, VenueServer

T0 = 1_700_000_000_000_000_000  # a receive time, ns

Levels = list[tuple[str, str]]


def crc(asks: Levels, bids: Levels) -> int:
    """The guide's checksum: top 10 asks low->high then top 10 bids high->low, each price and
    qty with '.' removed and leading zeros stripped, concatenated, CRC32 unsigned."""
    def f(x: str) -> str:
        return x.replace(".", "").lstrip("0")
    return zlib.crc32("".join(f(p) + f(q) for p, q in (*asks[:10], *bids[:10])).encode())


def levels_json(levels: Levels) -> str:
    # Numbers spliced in as text: exactly what Kraken puts on the wire.
    return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in levels) + "]"


def book_msg(kind: str, sym: str, bids: Levels, asks: Levels, checksum: int,
             ts: str = "2023-10-06T17:35:55.440295Z") -> str:
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{sym}","bids":{levels_json(bids)},'
            f'"asks":{levels_json(asks)},"checksum":{checksum},"timestamp":"{ts}"}}]}}')


def feed(venue: Kraken, *msgs: str | bytes) -> dict[str, dict[str, list[Any]]]:
    out = Out(venue.name)
    for i, m in enumerate(msgs):
        venue.on_message(m, T0 + i, out)
    return out.take()


def rows(cols: dict[str, dict[str, list[Any]]], table: str) -> list[dict[str, Any]]:
    t = cols.get(table)
    if not t:
        return []
    return [dict(zip(t, values, strict=True)) for values in zip(*t.values(), strict=True)]


def events(cols: dict[str, dict[str, list[Any]]]) -> list[tuple[str, str | None]]:
    return [(r["kind"], r["venue_sym"]) for r in rows(cols, "feed_event")]


def book_state(venue: Kraken, sym: str) -> tuple[Levels, Levels]:
    return venue.books[sym].top_raw(10**6)


# docs.kraken.com "Book checksum (WebSocket v2)" worked example, BTC/USD, checksum 3310070434.
DOC_BIDS = [("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
            ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
            ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
            ("45276.6", "0.15445238")]
DOC_ASKS = [("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
            ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
            ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
            ("45299.5", "0.18772827")]
DOC_CHECKSUM = 3310070434


def doc_venue(*symbols: str) -> Kraken:
    venue = Kraken(list(symbols) or ["BTC/USD"], channels={"l2"})
    return venue


# -- the checksum guide's worked example, through on_message --------------------------------


def test_doc_checksum_example_through_on_message() -> None:
    assert crc(DOC_ASKS, DOC_BIDS) == DOC_CHECKSUM  # the hand-written reference agrees with the doc
    venue = doc_venue()
    cols = feed(venue, book_msg("snapshot", "BTC/USD", DOC_BIDS, DOC_ASKS, DOC_CHECKSUM))
    assert events(cols) == []
    assert venue.books["BTC/USD"].valid and venue.actions() == []
    l2 = rows(cols, "l2")
    assert len(l2) == 20 and all(r["is_snapshot"] for r in l2)
    # Trailing zeros survive parsing: the row carries the wire's text, not a float's.
    assert (l2[0]["side"], l2[0]["price"], l2[0]["size"]) == ("bid", "45283.5", "0.10000000")
    assert (l2[10]["side"], l2[10]["price"], l2[10]["size"]) == ("ask", "45285.2", "0.00100000")
    assert {r["sym"] for r in l2} == {"BTCUSD"} and {r["exchange"] for r in l2} == {"kraken"}
    assert l2[0]["time"] == _ts_ns("2023-10-06T17:35:55.440295Z") and l2[0]["recv_time"] == T0
    [q] = rows(cols, "quote")
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) == (
        "45283.5", "0.10000000", "45285.2", "0.00100000", True)


def test_a_float_round_trip_of_the_same_book_fails_the_checksum() -> None:
    # Why parse_float=str: the same snapshot after json.loads -> json.dumps with floats
    # reads qty 0.1 instead of 0.10000000, and the checksum no longer matches.
    raw = book_msg("snapshot", "BTC/USD", DOC_BIDS, DOC_ASKS, DOC_CHECKSUM)
    mangled = json.dumps(json.loads(raw))
    assert "0.10000000" not in mangled
    venue = doc_venue()
    cols = feed(venue, mangled)
    assert events(cols) == [("checksum", "BTC/USD")]


def test_integer_prices_and_quantities_are_checksummed_as_sent() -> None:
    # A pair quoted in whole units puts integers on the wire (price 45283, qty 1): parse_int=str
    # keeps "45283" and "1", which is the text Kraken's checksum is computed from.
    bids = [("45283", "1"), ("45282", "0.50000000")]
    asks = [("45285", "2"), ("45290", "10")]
    check = crc(asks, bids)
    assert check == zlib.crc32(b"452852" + b"4529010" + b"452831" + b"4528250000000")
    venue = doc_venue()
    cols = feed(venue, book_msg("snapshot", "BTC/USD", bids, asks, check))
    assert events(cols) == []
    assert [(r["price"], r["size"]) for r in rows(cols, "l2")] == bids + asks
    # An update that sets qty 3 (an integer) and removes with a bare integer 0.
    asks2 = [("45285", "3"), ("45290", "10")]
    bids2 = [("45283", "1")]
    cols = feed(venue, book_msg("update", "BTC/USD", [("45282", "0")], [("45285", "3")], crc(asks2, bids2)))
    assert events(cols) == []
    assert book_state(venue, "BTC/USD") == (bids2, asks2)


# -- snapshot, deltas, truncation ----------------------------------------------------------------


SNAP_BIDS = [("100.0", "1.00000000"), ("99.5", "2.00000000"), ("99.0", "3.00000000")]
SNAP_ASKS = [("100.5", "1.50000000"), ("101.0", "0.25000000"), ("102.0", "7.00000000")]


def snapshot(venue: Kraken, sym: str = "BTC/USD", bids: Levels = SNAP_BIDS, asks: Levels = SNAP_ASKS) -> None:
    cols = feed(venue, book_msg("snapshot", sym, bids, asks, crc(asks, bids)))
    assert [k for k, _ in events(cols)] in ([], ["resync"])


def test_deltas_match_a_hand_computed_book_and_quote_only_on_top_change() -> None:
    venue = doc_venue()
    snapshot(venue)
    # Update 1: below the top (99.5 removed, 98.0 added): l2 rows, no new quote.
    bids1 = [("100.0", "1.00000000"), ("99.0", "3.00000000"), ("98.0", "4.00000000")]
    u1 = book_msg("update", "BTC/USD", [("99.5", "0.00000000"), ("98.0", "4.00000000")], [], crc(SNAP_ASKS, bids1))
    # Update 2: best ask size change and a price repeated in one message ends at its last size.
    asks2 = [("100.5", "0.75000000"), ("101.0", "0.25000000"), ("102.0", "7.00000000")]
    u2 = book_msg("update", "BTC/USD", [], [("100.5", "9.00000000"), ("100.5", "0.75000000")], crc(asks2, bids1))
    cols = feed(venue, u1, u2)
    assert events(cols) == []
    l2 = rows(cols, "l2")
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in l2] == [
        ("bid", "99.5", "0.00000000", False), ("bid", "98.0", "4.00000000", False),
        ("ask", "100.5", "9.00000000", False), ("ask", "100.5", "0.75000000", False),
    ]
    assert [r["seq_first"] for r in l2] == [None] * 4  # Kraken has no sequence numbers
    [q] = rows(cols, "quote")  # only update 2 moved the top
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == (
        "100.0", "1.00000000", "100.5", "0.75000000")
    assert book_state(venue, "BTC/USD") == (bids1, asks2)


def test_truncation_to_depth_publishes_a_delete_for_the_level_pushed_out() -> None:
    venue = doc_venue()
    snapshot(venue, bids=DOC_BIDS, asks=DOC_ASKS)  # 10 a side: full at depth 10
    # A new best bid pushes the 10th bid (45276.6) out of scope; Kraken sends no qty 0 for it.
    new_bids = [("45284.0", "0.20000000"), *DOC_BIDS[:9]]
    cols = feed(venue, book_msg("update", "BTC/USD", [("45284.0", "0.20000000")], [], crc(DOC_ASKS, new_bids)))
    assert events(cols) == []
    assert [(r["side"], r["price"], r["size"]) for r in rows(cols, "l2")] == [
        ("bid", "45284.0", "0.20000000"), ("bid", "45276.6", "0")]
    assert book_state(venue, "BTC/USD") == (new_bids, DOC_ASKS)
    # An insert below the worst level is truncated straight away: its own row, then its delete.
    cols = feed(venue, book_msg("update", "BTC/USD", [("45000.0", "1.00000000")], [], crc(DOC_ASKS, new_bids)))
    assert [(r["price"], r["size"]) for r in rows(cols, "l2")] == [("45000.0", "1.00000000"), ("45000.0", "0")]
    assert book_state(venue, "BTC/USD") == (new_bids, DOC_ASKS)


def test_depth_option_subscribes_and_truncates_at_that_depth() -> None:
    venue = Kraken(["BTC/USD"], channels={"l2"}, depth=25)
    [sub] = venue.subscribe()
    assert json.loads(sub) == {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"],
                                                                 "depth": 25, "snapshot": True}}
    assert venue.books["BTC/USD"].depth == 25
    with pytest.raises(ValueError, match=r"depth 20 .* one of \[10, 25, 100, 500, 1000\]"):
        Kraken(["BTC/USD"], depth=20)


# -- a dropped message and a corrupted checksum ---------------------------------------------------


def two_books() -> Kraken:
    venue = doc_venue("BTC/USD", "ETH/USD")
    snapshot(venue, "BTC/USD")
    snapshot(venue, "ETH/USD", [("2000.00", "1.0000")], [("2001.00", "2.0000")])
    return venue


def test_dropped_update_is_caught_by_the_next_checksum_and_only_that_book_resyncs() -> None:
    venue = two_books()
    bids_a = [("100.0", "1.00000000"), ("99.5", "2.00000000"), ("99.0", "3.00000000"), ("98.5", "1.00000000")]
    lost = book_msg("update", "BTC/USD", [("98.5", "1.00000000")], [], crc(SNAP_ASKS, bids_a))
    assert lost  # never delivered
    bids_b = [("100.0", "5.00000000"), *bids_a[1:]]
    nxt = book_msg("update", "BTC/USD", [("100.0", "5.00000000")], [], crc(SNAP_ASKS, bids_b))
    cols = feed(venue, nxt)
    [ev] = rows(cols, "feed_event")
    ours = crc(SNAP_ASKS, [("100.0", "5.00000000"), *SNAP_BIDS[1:]])
    assert (ev["kind"], ev["venue_sym"], ev["sym"], ev["expected"], ev["got"]) == (
        "checksum", "BTC/USD", "BTCUSD", crc(SNAP_ASKS, bids_b), ours)
    assert rows(cols, "l2") == [] and rows(cols, "quote") == []  # nothing from the bad message
    btc = venue.books["BTC/USD"]
    assert not btc.valid and btc.counts == (0, 0)
    assert venue.actions() == [
        Send('{"method":"unsubscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10}}'),
        Send('{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10,"snapshot":true}}'),
    ]
    assert venue.actions() == []  # each action once

    # Until the new snapshot: BTC/USD updates are ignored, ETH/USD carries on.
    eth_bids = [("2000.00", "1.5000")]
    cols = feed(venue,
                book_msg("update", "BTC/USD", [("99.0", "1.00000000")], [], 12345),
                book_msg("update", "ETH/USD", [("2000.00", "1.5000")], [], crc([("2001.00", "2.0000")], eth_bids)))
    assert events(cols) == []
    assert {r["venue_sym"] for r in rows(cols, "l2")} == {"ETH/USD"}
    assert venue.actions() == []  # no second resubscription while one is pending

    # The resubscription's snapshot: a resync event, the book is right and publishing again.
    new_bids = [("100.0", "5.00000000"), ("99.5", "2.00000000")]
    new_asks = [("100.5", "1.00000000")]
    cols = feed(venue,
                '{"method":"unsubscribe","result":{"channel":"book","depth":10,"symbol":"BTC/USD"},"success":true,'
                '"time_in":"2023-10-06T17:35:56.000000Z","time_out":"2023-10-06T17:35:56.000100Z"}',
                '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"BTC/USD"},'
                '"success":true,"time_in":"2023-10-06T17:35:56.000000Z","time_out":"2023-10-06T17:35:56.000100Z"}',
                book_msg("snapshot", "BTC/USD", new_bids, new_asks, crc(new_asks, new_bids)))
    assert events(cols) == [("subscribed", "BTC/USD"), ("resync", "BTC/USD")]
    assert btc.valid and book_state(venue, "BTC/USD") == (new_bids, new_asks)
    assert len(rows(cols, "l2")) == 3 and len(rows(cols, "quote")) == 1


def test_corrupted_checksum_on_an_update_invalidates_and_resubscribes() -> None:
    venue = two_books()
    good = crc(SNAP_ASKS, [("100.0", "2.00000000"), *SNAP_BIDS[1:]])
    cols = feed(venue, book_msg("update", "BTC/USD", [("100.0", "2.00000000")], [], good ^ 0x1))
    [ev] = rows(cols, "feed_event")
    assert (ev["kind"], ev["expected"], ev["got"]) == ("checksum", good ^ 0x1, good)
    assert "mismatch" in ev["detail"]
    assert not venue.books["BTC/USD"].valid and venue.books["ETH/USD"].valid
    assert len(venue.actions()) == 2


def test_a_book_that_keeps_failing_resubscribes_with_backoff() -> None:
    venue = Kraken(["BTC/USD"], {"l2"})
    delays = []
    for i in range(4):  # snapshot, then a corrupted update, four times within a few seconds
        out = Out(venue.name)
        venue.on_message(book_msg("snapshot", "BTC/USD", SNAP_BIDS, SNAP_ASKS, crc(SNAP_ASKS, SNAP_BIDS)), T0, out)
        venue.on_message(book_msg("update", "BTC/USD", [("100.0", "2.00000000")], [], 1), T0 + i * 10**9, out)
        unsub, sub = venue.actions()
        assert isinstance(unsub, Send) and isinstance(sub, Send) and unsub.after == 0
        assert json.loads(sub.text)["method"] == "subscribe"
        delays.append(sub.after)
    assert delays == [0.0, 1.0, 2.0, 4.0]


def test_corrupted_checksum_on_a_snapshot_is_caught_too() -> None:
    venue = doc_venue()
    cols = feed(venue, book_msg("snapshot", "BTC/USD", DOC_BIDS, DOC_ASKS, DOC_CHECKSUM + 1))
    assert events(cols) == [("checksum", "BTC/USD")] and rows(cols, "l2") == []
    assert not venue.books["BTC/USD"].valid and len(venue.actions()) == 2


def test_malformed_level_is_a_bad_message_and_resyncs_that_book() -> None:
    venue = two_books()
    cols = feed(venue, '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":"x","qty":1}],'
                       '"asks":[],"checksum":1,"timestamp":"2023-10-06T17:35:55.440295Z"}]}')
    assert events(cols) == [("bad_message", "BTC/USD")]
    assert not venue.books["BTC/USD"].valid and venue.books["ETH/USD"].valid
    assert len(venue.actions()) == 2
    # A missing checksum is as bad: the update cannot be verified.
    venue = two_books()
    cols = feed(venue, '{"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":[],"asks":[]}]}')
    assert events(cols) == [("bad_message", "ETH/USD")] and not venue.books["ETH/USD"].valid


def test_crossed_book_reports_once_per_crossing() -> None:
    venue = doc_venue()
    snapshot(venue, bids=[("100.0", "1")], asks=[("101.0", "1")])
    crossed_bids = [("101.5", "1"), ("100.0", "1")]
    uncrossed_bids = [("100.0", "1")]
    asks = [("101.0", "1")]
    cols = feed(venue,
                book_msg("update", "BTC/USD", [("101.5", "1")], [], crc(asks, crossed_bids)),
                book_msg("update", "BTC/USD", [("101.5", "2")], [], crc(asks, [("101.5", "2"), ("100.0", "1")])),
                book_msg("update", "BTC/USD", [("101.5", "0")], [], crc(asks, uncrossed_bids)),
                book_msg("update", "BTC/USD", [("101.0", "1")], [], crc(asks, [("101.0", "1"), ("100.0", "1")])))
    assert [k for k, _ in events(cols)] == ["crossed", "crossed"]
    assert "locked" in rows(cols, "feed_event")[1]["detail"]


# -- reconnect ------------------------------------------------------------------------------------


def test_reconnect_invalidates_books_then_snapshot_makes_them_right_again() -> None:
    venue = Kraken(["BTC/USD", "ETH/USD"])
    snapshot(venue)
    feed(venue, TRADE_DOC.replace("MATIC/USD", "BTC/USD"))
    # A checksum failure queued a resubscription just before the connection dropped.
    feed(venue, book_msg("update", "BTC/USD", [("100.0", "2")], [], 1))
    out = Out("kraken")
    venue.on_disconnect(T0, out)
    assert out.take() == {}
    assert venue.actions() == []  # old connection's resubscription is dropped: subscribe() covers it
    assert not venue.books["BTC/USD"].valid and not venue.books["ETH/USD"].valid
    subs = [json.loads(s)["params"] for s in venue.subscribe()]
    assert [p["channel"] for p in subs] == ["trade", "ticker", "book"]
    assert subs[0]["snapshot"] is True  # a reconnect asks for the trades it missed
    cols = feed(venue, book_msg("update", "BTC/USD", [("99.0", "1")], [], 1))  # stale: before the snapshot
    assert cols == {}
    new_bids, new_asks = [("100.1", "1.00000000")], [("100.2", "3.00000000")]
    cols = feed(venue, book_msg("snapshot", "BTC/USD", new_bids, new_asks, crc(new_asks, new_bids)))
    assert events(cols) == [("resync", "BTC/USD")]
    assert book_state(venue, "BTC/USD") == (new_bids, new_asks)
    assert rows(cols, "quote")[0]["bid_price"] == "100.1"
    # ETH/USD never had a snapshot: its first one is not a resync.
    cols = feed(venue, book_msg("snapshot", "ETH/USD", new_bids, new_asks, crc(new_asks, new_bids)))
    assert events(cols) == []


# -- trades, tickers, control messages ------------------------------------------------------------

# docs.kraken.com Spot WebSocket v2 "trade" snapshot example, verbatim values.
TRADE_DOC = (
    '{"channel":"trade","type":"snapshot","data":['
    '{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":6423.46326,"ord_type":"limit",'
    '"trade_id":4665846,"timestamp":"2023-09-25T07:48:36.925533Z"},'
    '{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":1136.19677815,"ord_type":"limit",'
    '"trade_id":4665847,"timestamp":"2023-09-25T07:49:36.925603Z"}]}'
)


def test_trades_doc_example() -> None:
    venue = Kraken(["MATIC/USD"], channels={"trade"})
    cols = feed(venue, TRADE_DOC)
    got = [(r["sym"], r["venue_sym"], r["price"], r["size"], r["side"], r["trade_id"], r["seq"], r["time"])
           for r in rows(cols, "trade")]
    assert got == [
        ("MATICUSD", "MATIC/USD", "0.5147", "6423.46326", "buy", "4665846", 4665846, 1695628116925533000),
        ("MATICUSD", "MATIC/USD", "0.5147", "1136.19677815", "buy", "4665847", 4665847, 1695628176925603000),
    ]
    assert rows(cols, "trade")[0]["recv_time"] == T0


def test_trade_side_is_the_taker_and_duplicates_are_dropped() -> None:
    venue = Kraken(["BTC/USD"], channels={"trade"})
    sell = ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":62807.0,'
            '"qty":0.00150000,"ord_type":"market","trade_id":%d,"timestamp":"2024-10-03T02:46:57.05017Z"}]}')
    cols = feed(venue, sell % 10, sell % 11, sell % 11, sell % 9)
    trades = rows(cols, "trade")
    assert [(t["side"], t["seq"]) for t in trades] == [("sell", 10), ("sell", 11)]
    assert trades[0]["price"] == "62807.0" and trades[0]["size"] == "0.00150000"
    assert trades[0]["time"] == 1727923617050170000


def test_a_bad_trade_rejects_its_whole_batch() -> None:
    venue = Kraken(["BTC/USD"], channels={"trade"})
    good = {"symbol": "BTC/USD", "side": "buy", "price": 1.5, "qty": 2, "ord_type": "limit", "trade_id": 1,
            "timestamp": "2024-01-01T00:00:00Z"}
    for bad in ({"side": "up"}, {"price": -1.5}, {"price": "NaN"}, {"price": "1_000"}, {"qty": 0},
                {"timestamp": "yesterday"}, {"trade_id": "x"}, {"symbol": None}):
        msg = {"channel": "trade", "type": "update", "data": [good, {**good, "trade_id": 2, **bad}]}
        cols = feed(venue, json.dumps(msg))
        assert rows(cols, "trade") == [], bad
        assert events(cols) == [("bad_message", None)], bad
    cols = feed(venue, json.dumps({"channel": "trade", "type": "update", "data": [good]}))
    [t] = rows(cols, "trade")
    assert (t["price"], t["size"], t["time"]) == ("1.5", "2", 1704067200000000000)


# docs.kraken.com Spot WebSocket v2 "ticker" snapshot example.
TICKER_DOC = (
    '{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,"bid_qty":740.0,'
    '"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,"volume":997038.98383185,"vwap":0.10148,'
    '"low":0.09979,"high":0.10285,"change":-0.00017,"change_pct":-0.17,"timestamp":"2023-09-25T09:04:31.742648Z"}]}'
)


def test_ticker_is_a_native_quote() -> None:
    venue = Kraken(["ALGO/USD"], channels={"quote"})
    [sub] = venue.subscribe()
    assert json.loads(sub)["params"] == {"channel": "ticker", "symbol": ["ALGO/USD"], "event_trigger": "bbo",
                                         "snapshot": True}
    cols = feed(venue, TICKER_DOC, TICKER_DOC.replace(',"timestamp":"2023-09-25T09:04:31.742648Z"', ""))
    q1, q2 = rows(cols, "quote")
    assert (q1["sym"], q1["bid_price"], q1["bid_size"], q1["ask_price"], q1["ask_size"], q1["derived"]) == (
        "ALGOUSD", "0.10025", "740.0", "0.10036", "1361.44813783", False)
    assert q1["time"] == 1695632671742648000
    assert q2["time"] == T0 + 1  # no timestamp (older servers): the receive time
    assert rows(cols, "l2") == [] and rows(cols, "trade") == []


def test_heartbeat_status_and_acks() -> None:
    venue = Kraken(["ALGO/USD", "MATIC/USD"])
    cols = feed(
        venue,
        '{"channel":"heartbeat"}',
        '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online","api_version":"v2",'
        '"connection_id":15113583034416118705}]}',
        '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"ALGO/USD"},'
        '"success":true,"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.219067Z"}',
        '{"error":"Subscription depth not supported","method":"subscribe","success":false,'
        '"time_in":"2026-08-16T23:54:19.629313Z","time_out":"2026-08-16T23:54:19.629343Z"}',
        '{"method":"pong","req_id":7,"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.2Z"}',
    )
    evs = rows(cols, "feed_event")
    assert [(e["kind"], e["venue_sym"], e["sym"]) for e in evs] == [
        ("subscribed", "ALGO/USD", "ALGOUSD"), ("stale", None, None)]
    assert evs[0]["detail"] == "subscribed to book ALGO/USD at depth 10"
    assert "Subscription depth not supported" in evs[1]["detail"]
    assert set(cols) == {"feed_event"}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"\x00\xff garbage", "bad_message"),
        ("{not json", "bad_message"),
        ("[1, 2]", "bad_message"),
        ('{"channel":"book","type":"delta","data":[]}', "bad_message"),
        ('{"channel":"trade","type":"update"}', "bad_message"),
        ('{"channel":"ticker","type":"update","data":[{"symbol":"A/B","bid":"x","bid_qty":1,"ask":1,"ask_qty":1}]}',
         "bad_message"),
        ('{"channel":"ohlc","type":"update","data":[]}', "unknown_message"),
        ('{"method":"add_order","success":true}', "unknown_message"),
        ('{"foo":1}', "unknown_message"),
        (book_msg("snapshot", "DOGE/USD", [], [], 0), "unknown_message"),
    ],
)
def test_bad_input_is_one_event_and_no_row(raw: str | bytes, kind: str) -> None:
    venue = Kraken(["BTC/USD"])
    cols = feed(venue, raw)
    assert set(cols) == {"feed_event"}
    [ev] = rows(cols, "feed_event")
    assert ev["kind"] == kind and ev["detail"] and len(ev["detail"]) < 400


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(
                     st.sampled_from(["channel", "type", "data", "symbol", "bids", "asks", "price", "qty",
                                      "checksum", "method", "side", "trade_id", "timestamp", "bid", "ask"]),
                     c, max_size=5),
                 max_leaves=12).map(json.dumps),
))
def test_no_input_raises(raw: str | bytes) -> None:
    venue = Kraken(["BTC/USD"])
    snapshot(venue)
    out = Out("kraken")
    venue.on_message(raw, T0, out)
    venue.on_message(book_msg("update", "BTC/USD", [], [], crc(SNAP_ASKS, SNAP_BIDS)), T0, out)


def test_timestamps_are_exact_nanoseconds() -> None:
    assert _ts_ns("1970-01-01T00:00:00Z") == 0
    assert _ts_ns("2023-09-25T07:48:36.925533Z") == 1695628116925533000
    assert _ts_ns("2023-09-25T07:48:36.1Z") == 1695628116100000000
    assert _ts_ns("2023-09-25T07:48:36.123456789Z") == 1695628116123456789
    for bad in ("2023-09-25T07:48:36.925533", "2023-09-25 07:48:36Z", "2023-09-25T07:48:36.12a4Z",
                "2023-09-25T07:48:36,5Z", "2023-09-25T07:48:36.1234567891Z", ""):
        with pytest.raises(ValueError):
            _ts_ns(bad)


def test_decimal_text_not_floats_all_the_way() -> None:
    venue = doc_venue()
    snapshot(venue, bids=[("0.30000000000000001", "1")], asks=[("0.4", "1")])
    [(price, _)], _ = book_state(venue, "BTC/USD")
    assert price == "0.30000000000000001" and Decimal(price) != Decimal("0.3")


# -- end to end: a local Kraken (WebSocket) -> Feed(Kraken) -> a real TP -> a subscriber ---------


def trade_msg(kind: str, *trades: tuple[int, str, str, str]) -> str:
    return ('{"channel":"trade","type":"' + kind + '","data":[' + ",".join(
        f'{{"symbol":"BTC/USD","side":"{side}","price":{price},"qty":{qty},"ord_type":"market","trade_id":{tid},'
        f'"timestamp":"2023-09-25T07:48:36.925533Z"}}' for tid, price, qty, side in trades) + "]}")


def ack(method: str) -> str:
    return (f'{{"method":"{method}","result":{{"channel":"book","depth":10,"symbol":"BTC/USD"}},"success":true,'
            f'"time_in":"2023-10-06T17:35:56.000000Z","time_out":"2023-10-06T17:35:56.000100Z"}}')


def test_through_a_local_server_to_a_tp_a_checksum_failure_resubscribes_and_a_drop_reconnects(
        tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    venue = Kraken(["BTC/USD"], {"trade", "l2"})
    upd_bids = [("100.0", "2.00000000"), *SNAP_BIDS[1:]]
    new_bids, new_asks = [("100.0", "5.00000000")], [("100.5", "1.00000000")]
    third_bids, third_asks = [("99.9", "1.00000000")], [("100.2", "2.00000000")]
    server = VenueServer([
        [ack("subscribe"), book_msg("snapshot", "BTC/USD", SNAP_BIDS, SNAP_ASKS, crc(SNAP_ASKS, SNAP_BIDS)),
         book_msg("update", "BTC/USD", [("100.0", "2.00000000")], [], crc(SNAP_ASKS, upd_bids)),
         trade_msg("update", (7, "100.5", "0.25", "buy")),
         # A corrupted checksum: the book is dropped and resubscribed through the shell.
         book_msg("update", "BTC/USD", [("99.5", "0.00000000")], [], 12345),
         Until(lambda: len(server.received[0]) >= 4),  # 2 subscribes, then unsubscribe + subscribe
         ack("unsubscribe"), ack("subscribe"),
         book_msg("snapshot", "BTC/USD", new_bids, new_asks, crc(new_asks, new_bids)),
         Sleep(0.2), Drop()],
        # After the reconnect: a trade snapshot overlapping what was published, a new book.
        [ack("subscribe"), trade_msg("snapshot", (6, "100.4", "1", "sell"), (7, "100.5", "0.25", "buy"),
                                     (8, "100.6", "0.5", "sell")),
         book_msg("snapshot", "BTC/USD", third_bids, third_asks, crc(third_asks, third_bids))]])

    async def main() -> None:
        async with server:
            feed = Feed(venue, FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: any(r["price"] == 99.9 for r in tp_rows(sub, "l2")), "the third snapshot", task)
            feed.stop()
            await task

    asyncio.run(main())
    sent = [[json.loads(m) for m in conn] for conn in server.received]
    assert [(m["method"], m["params"]["channel"], m["params"].get("symbol")) for m in sent[0]] == [
        ("subscribe", "trade", ["BTC/USD"]), ("subscribe", "book", ["BTC/USD"]),
        ("unsubscribe", "book", ["BTC/USD"]), ("subscribe", "book", ["BTC/USD"])]
    assert sent[1][0]["params"]["snapshot"] is True  # on a reconnect the trade snapshot fills the hole
    assert [(t["trade_id"], t["side"], t["price"]) for t in tp_rows(sub, "trade")] == [
        ("7", "buy", 100.5), ("8", "sell", 100.6)]
    l2 = [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in tp_rows(sub, "l2")]
    assert l2 == [("bid", 100.0, 1.0, True), ("bid", 99.5, 2.0, True), ("bid", 99.0, 3.0, True),
                  ("ask", 100.5, 1.5, True), ("ask", 101.0, 0.25, True), ("ask", 102.0, 7.0, True),
                  ("bid", 100.0, 2.0, False),
                  ("bid", 100.0, 5.0, True), ("ask", 100.5, 1.0, True),  # nothing of the bad update
                  ("bid", 99.9, 1.0, True), ("ask", 100.2, 2.0, True)]
    assert book_state(venue, "BTC/USD") == (third_bids, third_asks)
    events = tp_rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "checksum", "subscribed", "resync",
                                           "disconnect", "reconnect", "subscribed", "resync"]
    assert (events[2]["expected"], events[2]["venue_sym"]) == (12345, "BTC/USD")
