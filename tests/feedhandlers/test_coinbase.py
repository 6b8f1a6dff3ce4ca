"""Coinbase Advanced Trade parser: literal message sequences in Coinbase's documented formats.

The messages follow Coinbase's "Advanced Trade WebSocket Channels" page: the heartbeats
example (``"heartbeat_counter": "3049"``), the ``l2_data`` snapshot example (BTC-USD,
bids 21921.73 x 0.06317902 and 21921.3 x 0.02, ``event_time`` 1970-01-01 placeholder), the
``market_trades`` example (ETH-USD 1260.01 x 0.3 BUY) and the current ticker format
with ``best_bid``/``best_bid_quantity``/``best_ask``/``best_ask_quantity``. Only
``sequence_num`` and the extra levels/trades are ours, so sequences can be followed.
Books are checked against hand-computed levels.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.book import BID
from feedhandlers.coinbase import Coinbase, parse_time
from feedhandlers.normalize import Out
from feedhandlers.shell import Feed, FeedConfig
from feedhandlers.venue import Send
from tests.conftest import TPProcess
from tests.feedhandlers.test_shell import Collect, until
from tests.feedhandlers.test_shell import rows as tp_rows
from tests.feedhandlers.venue_server import Drop, Sleep, Step, Until, VenueServer

RECV = 1_700_000_000_000_000_000
T0 = "2023-02-09T20:32:50.714964855Z"
T0_NS = 1675974770_714964855  # `date -u -d 2023-02-09T20:32:50Z +%s` is 1675974770


def msg(channel: str, seq: int, events: list[dict[str, Any]], timestamp: str = T0) -> str:
    return json.dumps({"channel": channel, "client_id": "", "timestamp": timestamp, "sequence_num": seq,
                       "events": events})


def level(side: str, price: str, qty: str, event_time: str = "1970-01-01T00:00:00Z") -> dict[str, str]:
    return {"side": side, "event_time": event_time, "price_level": price, "new_quantity": qty}


def snapshot(seq: int, product: str = "BTC-USD", levels: list[dict[str, str]] | None = None) -> str:
    if levels is None:  # Coinbase's example bids, plus two offers of ours
        levels = [level("bid", "21921.73", "0.06317902"), level("bid", "21921.3", "0.02"),
                  level("offer", "21922.5", "1.5"), level("offer", "21923", "0.4")]
    return msg("l2_data", seq, [{"type": "snapshot", "product_id": product, "updates": levels}])


def update(seq: int, *levels: dict[str, str], product: str = "BTC-USD") -> str:
    return msg("l2_data", seq, [{"type": "update", "product_id": product, "updates": list(levels)}])


def heartbeat(seq: int) -> str:
    return json.dumps({"channel": "heartbeats", "client_id": "", "timestamp": "2023-06-23T20:31:26.122969572Z",
                       "sequence_num": seq, "events": [{
                           "current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105",
                           "heartbeat_counter": "3049"}]})


def trades(seq: int, *items: tuple[str, str, str, str, str], kind: str = "update", product: str = "ETH-USD") -> str:
    return msg("market_trades", seq, [{"type": kind, "trades": [
        {"trade_id": tid, "product_id": product, "price": price, "size": size, "side": side, "time": time}
        for tid, price, size, side, time in items]}], timestamp="2023-02-09T20:19:35.39625135Z")


def feed(venue: Coinbase, *messages: str | bytes) -> dict[str, dict[str, list[Any]]]:
    out = Out("coinbase")
    for i, raw in enumerate(messages):
        venue.on_message(raw, RECV + i, out)
    return out.take()


def rows(cols: dict[str, dict[str, list[Any]]], table: str) -> list[dict[str, Any]]:
    if table not in cols:
        return []
    names = list(cols[table])
    return [dict(zip(names, vals, strict=True)) for vals in zip(*cols[table].values(), strict=True)]


def levels_of(venue: Coinbase, product: str = "BTC-USD") -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return venue._books[product].top_raw(1000)


def events(cols: dict[str, dict[str, list[Any]]], kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in rows(cols, "feed_event") if kind is None or e["kind"] == kind]


# -- subscribing ---------------------------------------------------------------------


def test_subscribe_sends_one_message_per_channel_heartbeats_always() -> None:
    subs = [json.loads(m) for m in Coinbase(["BTC-USD", "ETH-USD"]).subscribe()]
    assert [s["channel"] for s in subs] == ["heartbeats", "market_trades", "level2", "ticker"]
    assert all(s["type"] == "subscribe" and s["product_ids"] == ["BTC-USD", "ETH-USD"] for s in subs)
    only_trades = [json.loads(m)["channel"] for m in Coinbase(["BTC-USD"], channels={"trade"}).subscribe()]
    assert only_trades == ["heartbeats", "market_trades"]


def test_subscriptions_ack_is_a_subscribed_event_and_heartbeats_give_nothing() -> None:
    ack = json.dumps({"channel": "subscriptions", "client_id": "", "timestamp": T0, "sequence_num": 1, "events": [
        {"subscriptions": {"level2": ["BTC-USD"], "heartbeats": ["heartbeats"]}}]})
    cols = feed(Coinbase(["BTC-USD"]), heartbeat(0), ack, heartbeat(2))
    assert list(cols) == ["feed_event"]
    [ev] = events(cols)
    assert ev["kind"] == "subscribed" and ev["detail"] == "heartbeats: heartbeats; level2: BTC-USD"


# -- trades --------------------------------------------------------------------------


def test_trade_side_is_inverted_from_the_maker_side_coinbase_reports() -> None:
    venue = Coinbase(["ETH-USD"])
    cols = feed(venue,
                trades(0, ("000000001", "1260.01", "0.3", "BUY", "2019-08-14T20:42:27.265Z")),
                trades(1, ("000000002", "1260.00", "0.10000000", "SELL", "2019-08-14T20:42:28Z")))
    got = rows(cols, "trade")
    assert [(t["side"], t["price"], t["size"]) for t in got] == [
        ("sell", "1260.01", "0.3"),  # maker BUY: a resting bid was hit, the taker sold
        ("buy", "1260.00", "0.10000000"),  # maker SELL: the taker lifted the offer
    ]
    first = got[0]
    assert first["time"] == 1565815347_265_000_000
    assert first["sym"] == "ETHUSD" and first["venue_sym"] == "ETH-USD" and first["exchange"] == "coinbase"
    assert first["trade_id"] == "000000001" and first["seq"] == 1 and first["recv_time"] == RECV


def test_trade_snapshot_skipped_on_first_connect_then_fills_the_hole_after_reconnect() -> None:
    venue = Coinbase(["ETH-USD"])
    t = "2019-08-14T20:42:27.265Z"
    cols = feed(venue,
                trades(0, ("100", "1260", "1", "BUY", t), ("99", "1259", "1", "BUY", t), kind="snapshot"),
                trades(1, ("101", "1261", "1", "SELL", t)))
    assert [r["trade_id"] for r in rows(cols, "trade")] == ["101"]
    out = Out("coinbase")
    venue.on_disconnect(RECV, out)
    # The new connection's snapshot, newest first: 103 and 102 were missed, 101 and 100 were not.
    cols = feed(venue,
                trades(0, ("103", "1263", "1", "BUY", t), ("102", "1262", "1", "BUY", t),
                       ("101", "1261", "1", "SELL", t), ("100", "1260", "1", "BUY", t), kind="snapshot"),
                trades(1, ("103", "1263", "1", "BUY", t), ("104", "1264", "1", "BUY", t)))
    assert [r["trade_id"] for r in rows(cols, "trade")] == ["103", "102", "104"]


def test_malformed_trade_is_one_bad_message_and_its_neighbours_still_publish() -> None:
    t = "2019-08-14T20:42:27.265Z"
    cols = feed(Coinbase(["ETH-USD"]),
                trades(0, ("1", "1260", "1", "BUY", t), ("2", "12x60", "1", "BUY", t),
                       ("3", "1260", "NaN", "BUY", t), ("4", "1260", "1", "HOLD", t),
                       ("5", "1260", "1", "BUY", "yesterday"), ("6", "1261", "2", "SELL", t),
                       ("7", " 1260", "1", "BUY", t), ("8", "1260", "1_0", "BUY", t)))
    assert [r["trade_id"] for r in rows(cols, "trade")] == ["1", "6"]
    assert len(events(cols, "bad_message")) == 6


# -- level2 --------------------------------------------------------------------------


def test_snapshot_then_updates_keep_the_book_and_emit_l2_and_derived_quotes() -> None:
    venue = Coinbase(["BTC-USD"])
    t1 = "2023-02-09T20:32:51.000000001Z"
    cols = feed(venue,
                snapshot(0),
                update(1, level("bid", "21921.73", "0.5", t1)),  # size change at the best bid
                update(2, level("offer", "21923", "0", t1), level("bid", "21900", "3", t1)),  # below the top
                update(3, level("offer", "21922.5", "0", t1)))  # best offer removed
    bids, asks = levels_of(venue)
    assert bids == [("21921.73", "0.5"), ("21921.3", "0.02"), ("21900", "3")]
    assert asks == []
    l2 = rows(cols, "l2")
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"]) for r in l2] == [
        ("bid", "21921.73", "0.06317902", True, 0), ("bid", "21921.3", "0.02", True, 0),
        ("ask", "21922.5", "1.5", True, 0), ("ask", "21923", "0.4", True, 0),
        ("bid", "21921.73", "0.5", False, 1),
        ("ask", "21923", "0", False, 2), ("bid", "21900", "3", False, 2),
        ("ask", "21922.5", "0", False, 3),
    ]
    assert l2[0]["time"] == T0_NS and l2[4]["time"] == 1675974771_000000001
    quotes = rows(cols, "quote")
    # Three top-of-book changes (snapshot, bid size, offer gone); message 2 left the top alone.
    assert [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) for q in quotes] == [
        ("21921.73", "0.06317902", "21922.5", "1.5"),
        ("21921.73", "0.5", "21922.5", "1.5"),
        ("21921.73", "0.5", None, None),
    ]
    assert all(q["derived"] for q in quotes)
    assert "feed_event" not in cols


def test_no_derived_quotes_without_the_quote_channel() -> None:
    cols = feed(Coinbase(["BTC-USD"], channels={"l2"}), snapshot(0), update(1, level("bid", "21921.74", "1", T0)))
    assert "quote" not in cols and len(rows(cols, "l2")) == 5


def test_sequence_gap_invalidates_every_book_and_resubscribes_level2() -> None:
    venue = Coinbase(["BTC-USD", "ETH-USD"])
    eth = [level("bid", "1500", "2"), level("offer", "1501", "3")]
    feed(venue, snapshot(0), snapshot(1, "ETH-USD", eth), heartbeat(2))
    assert venue.actions() == []
    # Message 3 is lost; 4 is an ETH update: the lost one could have been a BTC update.
    cols = feed(venue, update(4, level("bid", "1500.5", "1", T0), product="ETH-USD"),
                update(5, level("bid", "21921.9", "1", T0)))
    gaps = events(cols, "gap")
    assert [(g["venue_sym"], g["expected"], g["got"]) for g in gaps] == [("BTC-USD", 3, 4), ("ETH-USD", 3, 4)]
    assert "l2" not in cols and "quote" not in cols  # nothing from invalid books
    assert not venue._books["BTC-USD"].valid and not venue._books["ETH-USD"].valid
    sent = [json.loads(a.text) for a in venue.actions() if isinstance(a, Send)]
    assert [(s["type"], s["channel"], s["product_ids"]) for s in sent] == [
        ("unsubscribe", "level2", ["BTC-USD", "ETH-USD"]), ("subscribe", "level2", ["BTC-USD", "ETH-USD"])]
    # Counting goes on from 4; Coinbase's answers to the resubscription make the books right again.
    cols = feed(venue, heartbeat(6), snapshot(7, levels=[level("bid", "21000", "1"), level("offer", "21001", "2")]),
                snapshot(8, "ETH-USD", eth), update(9, level("offer", "21001", "2.5", T0)))
    assert [(e["kind"], e["venue_sym"]) for e in events(cols)] == [("resync", "BTC-USD"), ("resync", "ETH-USD")]
    assert levels_of(venue) == ([("21000", "1")], [("21001", "2.5")])
    assert levels_of(venue, "ETH-USD") == ([("1500", "2")], [("1501", "3")])
    assert venue.actions() == []


def test_gap_with_no_books_is_one_connection_event() -> None:
    venue = Coinbase(["ETH-USD"], channels={"trade"})
    t = "2019-08-14T20:42:27.265Z"
    cols = feed(venue, heartbeat(0), trades(2, ("7", "1260", "1", "BUY", t)))
    [gap] = events(cols, "gap")
    assert (gap["sym"], gap["expected"], gap["got"]) == (None, 1, 2)
    assert [r["trade_id"] for r in rows(cols, "trade")] == ["7"]  # the trades in the message are real
    assert venue.actions() == []


def test_duplicate_sequence_num_is_dropped() -> None:
    venue = Coinbase(["BTC-USD"])
    cols = feed(venue, snapshot(0), update(1, level("bid", "21921.73", "9", T0)), update(1, level("bid", "1", "9", T0)))
    assert "feed_event" not in cols
    assert levels_of(venue)[BID][-1] == ("21921.3", "0.02")


def test_malformed_level_invalidates_that_book_only() -> None:
    venue = Coinbase(["BTC-USD", "ETH-USD"])
    eth = [level("bid", "1500", "2"), level("offer", "1501", "3")]
    cols = feed(venue, snapshot(0), snapshot(1, "ETH-USD", eth),
                update(2, level("bid", "21921.74", "1", T0), level("bid", "abc", "1", T0)),
                update(3, level("middle", "21921.74", "1", T0), product="ETH-USD"))
    bad = events(cols, "bad_message")
    assert [b["venue_sym"] for b in bad] == ["BTC-USD", "ETH-USD"]
    assert not any(r["seq_first"] in (2, 3) for r in rows(cols, "l2"))
    sent = [json.loads(a.text)["product_ids"] for a in venue.actions() if isinstance(a, Send)]
    assert sent == [["BTC-USD"], ["BTC-USD"], ["ETH-USD"], ["ETH-USD"]]
    cols = feed(venue, snapshot(4), update(5, level("bid", "1", "1", T0), product="ETH-USD"))
    assert [e["kind"] for e in events(cols)] == ["resync"]
    assert venue._books["BTC-USD"].valid and not venue._books["ETH-USD"].valid


def test_malformed_level_leaves_other_book_untouched() -> None:
    venue = Coinbase(["BTC-USD", "ETH-USD"])
    eth = [level("bid", "1500", "2"), level("offer", "1501", "3")]
    feed(venue, snapshot(0), snapshot(1, "ETH-USD", eth))
    cols = feed(venue, update(2, level("offer", "-5", "1", T0), product="ETH-USD"),
                update(3, level("bid", "21921.74", "1", T0)))
    assert [r["price"] for r in rows(cols, "l2")] == ["21921.74"]
    assert levels_of(venue)[BID][0] == ("21921.74", "1")


def test_crossed_book_is_reported_once_per_crossing() -> None:
    venue = Coinbase(["BTC-USD"])
    cols = feed(venue, snapshot(0),
                update(1, level("bid", "21922.5", "1", T0)),  # locked with the best offer
                update(2, level("bid", "21922.6", "1", T0)),  # still crossed: no second event
                update(3, level("bid", "21922.6", "0", T0), level("bid", "21922.5", "0", T0)),  # uncrossed
                update(4, level("offer", "21921.73", "1", T0)))  # crossed again
    crossed = events(cols, "crossed")
    assert [c["detail"] for c in crossed] == ["best bid 21922.5 >= best ask 21922.5",
                                              "best bid 21921.73 >= best ask 21921.73"]


def test_reconnect_resnapshot_leaves_the_book_right() -> None:
    venue = Coinbase(["BTC-USD"])
    feed(venue, snapshot(0), update(1, level("bid", "21921.73", "0", T0)))
    out = Out("coinbase")
    venue.on_disconnect(RECV, out)
    assert not venue._books["BTC-USD"].valid and venue.actions() == []
    assert [json.loads(m)["channel"] for m in venue.subscribe()] == ["heartbeats", "market_trades", "level2", "ticker"]
    cols = feed(venue, update(0, level("bid", "5", "5", T0)),  # a stray delta before the snapshot: dropped
                snapshot(1, levels=[level("bid", "21950", "0.1"), level("offer", "21951", "0.2")]),
                update(2, level("bid", "21949.5", "1", T0)))
    assert [e["kind"] for e in events(cols)] == ["resync"]
    assert levels_of(venue) == ([("21950", "0.1"), ("21949.5", "1")], [("21951", "0.2")])
    assert [q["bid_price"] for q in rows(cols, "quote")] == ["21950"]
    assert venue.actions() == []  # the snapshot asked for by subscribe() came; nothing else needed


def test_book_state_matches_hand_computed_after_updates() -> None:
    venue = Coinbase(["BTC-USD"])
    changes = [("bid", "21921.30", "0.5"), ("offer", "21924", "1"), ("bid", "21920", "0.01"),
               ("offer", "21923", "0"), ("bid", "21921.73", "0.00000000")]
    feed(venue, snapshot(0), *(update(seq, level(side, price, qty, T0))
                               for seq, (side, price, qty) in enumerate(changes, start=1)))
    # By hand from the snapshot (bids 21921.73 x 0.06317902, 21921.3 x 0.02; offers 21922.5 x 1.5,
    # 21923 x 0.4): "21921.30" is the level "21921.3" (its string now the latest sent), 21920 is
    # new, "0.00000000" deletes 21921.73; offer 21924 is new and 21923 goes.
    book = venue._books["BTC-USD"]
    assert book.top_raw(10) == ([("21921.30", "0.5"), ("21920", "0.01")], [("21922.5", "1.5"), ("21924", "1")])
    assert book.top(1) == ([(Decimal("21921.3"), Decimal("0.5"))], [(Decimal("21922.5"), Decimal("1.5"))])


# -- ticker --------------------------------------------------------------------------


def test_ticker_with_best_bid_and_ask_is_a_native_quote() -> None:
    ticker = msg("ticker", 0, [{"type": "snapshot", "tickers": [{
        "type": "ticker", "product_id": "BTC-USD", "price": "21932.98", "volume_24_h": "16038.28770938",
        "low_24_h": "21835.29", "high_24_h": "23011.18", "low_52_w": "15460", "high_52_w": "48240",
        "price_percent_chg_24_h": "-4.15775596190603", "best_bid": "21931.98", "best_bid_quantity": "8000.21",
        "best_ask": "21933.98", "best_ask_quantity": "8038.07770938"}]}], timestamp="2023-02-09T20:30:37.167359596Z")
    beta = msg("ticker", 1, [{"type": "update", "tickers": [{"type": "ticker", "product_id": "BTC-USD",
                                                              "price": "40552.26"}]}])
    cols = feed(Coinbase(["BTC-USD"]), ticker, beta)
    [q] = rows(cols, "quote")
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) == (
        "21931.98", "8000.21", "21933.98", "8038.07770938", False)
    assert q["time"] == 1675974637_167359596 and q["sym"] == "BTCUSD"
    assert "feed_event" not in cols


# -- bad input -----------------------------------------------------------------------


def test_garbage_unknown_and_venue_errors_become_events_never_rows() -> None:
    venue = Coinbase(["BTC-USD"])
    cols = feed(venue, b"\xff\xfe", "not json", "[1, 2]", '{"type": "error", "message": "failure to subscribe"}',
                '{"channel": "l2_data", "sequence_num": "0", "events": []}',
                msg("candles", 0, []), msg("l2_data", 1, [{"product_id": "BTC-USD"}]),
                msg("l2_data", 2, [{"type": "delta", "product_id": "BTC-USD", "updates": []}]),
                heartbeat(3))
    kinds = [e["kind"] for e in events(cols)]
    assert kinds == ["bad_message", "bad_message", "bad_message", "bad_message", "bad_message",
                     "unknown_message", "bad_message", "unknown_message"]
    assert list(cols) == ["feed_event"]
    assert "failure to subscribe" in events(cols)[3]["detail"]


def test_non_string_ids_are_rejected_and_a_later_gap_still_works() -> None:
    venue = Coinbase(["BTC-USD"])
    t = "2019-08-14T20:42:27.265Z"
    bad_trade = msg("market_trades", 1, [{"type": "update", "trades": [
        {"trade_id": 5, "product_id": "ETH-USD", "price": "1", "size": "1", "side": "BUY", "time": t}]}])
    cols = feed(venue, snapshot(0), bad_trade, update(2, level("bid", "1", "1", T0), product=7),  # type: ignore[arg-type]
                heartbeat(4))
    assert "trade" not in cols
    assert [e["kind"] for e in events(cols)] == ["bad_message", "bad_message", "gap"]
    assert list(venue._books) == ["BTC-USD"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                                  st.sampled_from(["channel", "sequence_num", "events", "type", "product_id",
                                                   "updates", "trades", "tickers", "timestamp", "side"]),
                                  kids, max_size=4), max_leaves=12).map(json.dumps)))
def test_fuzzed_input_never_raises(raw: str | bytes) -> None:
    venue = Coinbase(["BTC-USD"])
    out = Out("coinbase")
    venue.on_message(snapshot(0), RECV, out)
    venue.on_message(raw, RECV, out)


_junk = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.sampled_from(["BTC-USD", "bid", "offer", "BUY", "1.5", "0", T0, "x"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(
        ["type", "product_id", "updates", "trades", "tickers", "side", "price_level", "new_quantity", "event_time",
         "price", "size", "time", "trade_id", "best_bid", "best_bid_quantity", "best_ask", "best_ask_quantity",
         "subscriptions"]), kids, max_size=6), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["l2_data", "market_trades", "ticker", "subscriptions", "heartbeats"]),
       st.sampled_from([1, 2]), st.lists(_junk, max_size=3))
def test_fuzzed_events_in_valid_envelopes_never_raise(channel: str, seq: int, junk: list[Any]) -> None:
    venue = Coinbase(["BTC-USD"])
    out = Out("coinbase")
    venue.on_message(snapshot(0), RECV, out)
    venue.on_message(json.dumps({"channel": channel, "timestamp": T0, "sequence_num": seq, "events": junk}), RECV, out)
    # Whatever came in, every row that went out is well formed.
    cols = out.take()
    for table in ("trade", "l2", "quote"):
        for price in cols.get(table, {}).get("price", []) + cols.get(table, {}).get("bid_price", []):
            assert price is None or Decimal(price) > 0


# -- time parsing --------------------------------------------------------------------


def test_parse_time_forms_and_rejects() -> None:
    assert parse_time(T0) == T0_NS
    assert parse_time("2019-08-14T20:42:27.265Z") == 1565815347_265_000_000
    assert parse_time("1970-01-01T00:00:00Z") == 0
    assert parse_time("2023-02-09T20:32:50.7+00:00") == 1675974770_700_000_000
    for bad in ("2023-02-09 20:32:50Z", "2023-02-09T20:32:50.Z", "2023-02-09T20:32:50.1234567891Z",
                "2023-02-09T20:32:50+01:00", "2023-13-09T20:32:50Z", "2023-02-09T20:32:50.-1Z", ""):
        with pytest.raises(ValueError):
            parse_time(bad)


# -- end to end: a local Coinbase (WebSocket) -> Feed(Coinbase) -> a real TP -> a subscriber ---------


def ack(seq: int) -> str:
    return json.dumps({"channel": "subscriptions", "client_id": "", "timestamp": T0, "sequence_num": seq,
                       "events": [{"subscriptions": {"level2": ["BTC-USD"], "market_trades": ["BTC-USD"]}}]})


def test_through_a_local_server_to_a_tp_a_gap_resubscribes_and_a_drop_reconnects(tp: TPProcess,
                                                                                  collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    venue = Coinbase(["BTC-USD"], {"trade", "l2"})
    first: list[Step] = [
        ack(0), snapshot(1), update(2, level("bid", "21921.73", "0", T0)),
        trades(3, ("100", "21922.5", "0.5", "SELL", "2023-02-09T20:19:35.396251Z"), product="BTC-USD"),
        update(5, level("bid", "21921.9", "9", T0)),  # sequence_num 4 is lost: a gap
        Until(lambda: len(server.received[0]) >= 5),  # 3 subscribes, then unsubscribe + subscribe
        snapshot(6, levels=[level("bid", "21900", "1"), level("offer", "21901", "2")]),
        update(7, level("offer", "21901.5", "3", T0)), Sleep(0.2), Drop()]
    second: list[Step] = [
        ack(0), snapshot(1, levels=[level("bid", "21950", "0.1"), level("offer", "21951", "0.2")]),
        trades(2, ("99", "21900", "1", "BUY", "2023-02-09T20:19:30Z"), ("100", "21922.5", "0.5", "SELL",
               "2023-02-09T20:19:35.396251Z"), ("101", "21951", "0.3", "SELL", "2023-02-09T20:19:40Z"),
               kind="snapshot", product="BTC-USD"),
        update(3, level("bid", "21949.5", "1", T0))]
    server = VenueServer([first, second])

    async def main() -> None:
        async with server:
            feed = Feed(venue, FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: sum(r["price"] == 21949.5 for r in tp_rows(sub, "l2")) == 1, "the last update", task)
            feed.stop()
            await task

    asyncio.run(main())
    sent = [[json.loads(m) for m in conn] for conn in server.received]
    assert [(m["type"], m["channel"]) for m in sent[0]] == [
        ("subscribe", "heartbeats"), ("subscribe", "market_trades"), ("subscribe", "level2"),
        ("unsubscribe", "level2"), ("subscribe", "level2")]
    assert sent[1] == sent[0][:3]  # the new connection subscribes afresh
    # Trade 100 once (SELL is the maker side: the aggressor bought); after the reconnect the
    # trade snapshot's newer trade 101 fills the hole, 99 and 100 are not repeated.
    assert [(t["trade_id"], t["side"], t["price"]) for t in tp_rows(sub, "trade")] == [
        ("100", "buy", 21922.5), ("101", "buy", 21951.0)]
    l2 = [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in tp_rows(sub, "l2")]
    assert l2 == [
        ("bid", 21921.73, 0.06317902, True), ("bid", 21921.3, 0.02, True), ("ask", 21922.5, 1.5, True),
        ("ask", 21923.0, 0.4, True), ("bid", 21921.73, 0.0, False),
        # the update after the gap is not published; the resubscription's snapshot is
        ("bid", 21900.0, 1.0, True), ("ask", 21901.0, 2.0, True), ("ask", 21901.5, 3.0, False),
        ("bid", 21950.0, 0.1, True), ("ask", 21951.0, 0.2, True), ("bid", 21949.5, 1.0, False)]
    assert levels_of(venue) == ([("21950", "0.1"), ("21949.5", "1")], [("21951", "0.2")])
    events = tp_rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "gap", "resync", "disconnect", "reconnect",
                                           "subscribed", "resync"]
    assert (events[2]["expected"], events[2]["got"], events[2]["venue_sym"]) == (4, 5, "BTC-USD")
