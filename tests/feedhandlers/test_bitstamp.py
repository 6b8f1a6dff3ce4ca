"""Bitstamp WebSocket API v2 adapter (``feedhandlers/bitstamp.py``) fed literal messages in Bitstamp's formats.

Message shapes follow Bitstamp's "Websocket API v2" page (``{"event", "channel", "data"}``;
``live_trades_{pair}`` ``trade`` events with ``id``, ``amount_str``, ``price_str``, ``type``,
``microtimestamp``, ``buy_order_id``, ``sell_order_id``; ``order_book_{pair}`` and
``diff_order_book_{pair}`` ``data`` events with ``bids``/``asks`` of ``[price, amount]``,
``timestamp`` and ``microtimestamp``; ``bts:subscription_succeeded``, ``bts:heartbeat``,
``bts:request_reconnect``, ``bts:error``) and the HTTP API's ``GET /api/v2/order_book/{pair}/``
(``timestamp``, ``microtimestamp``, ``bids``, ``asks``). The trade values are those of
Bitstamp trades as the feed sends them (id 212337562 at "38416" x "0.00280000", type 0; id
93215787 at "12700.00" x "0.01414016", type 1). Books are checked against hand-computed
levels written out in each test. The end-to-end tests run the adapter in the real shell
against a local WebSocket + REST venue and check the rows that reach a real TP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.bitstamp import Bitstamp, bitstamp_pair
from feedhandlers.normalize import Out, normalize_symbol
from feedhandlers.shell import Feed, FeedConfig
from feedhandlers.venue import Reconnect, Rest
from tests.conftest import TPProcess
from tests.feedhandlers.test_shell import Collect, until
from tests.feedhandlers.test_shell import rows as tp_rows
from tests.feedhandlers.venue_server import Drop, RestServer, Step, Until, VenueServer

RECV = 1_700_000_000_000_000_000  # an arbitrary receive time in ns
T0 = 1_643_643_584_000_000  # a Bitstamp microtimestamp (2022-01-31T15:39:44Z)
US = 1_000  # microseconds -> ns
REST = Rest("btcusd", "/api/v2/order_book/btcusd/")
PATH = "/api/v2/order_book/btcusd/"

Levels = list[list[str]]


def frame(channel: str, event: str, data: Any) -> str:
    return json.dumps({"data": data, "channel": channel, "event": event})


def trade(tid: int, price: str, amount: str, kind: int, micros: int, pair: str = "btcusd", **extra: Any) -> str:
    # Bitstamp sends price and amount twice: as JSON numbers and as exact strings (*_str). The
    # taker's order (the side ``type`` names) is the newer one, so it has the higher id.
    maker, taker = 1_000_000 + tid, 2_000_000 + tid
    return frame(f"live_trades_{pair}", "trade", {
        "id": tid, "timestamp": str(micros // 1_000_000), "amount": float(amount), "amount_str": amount,
        "price": float(price), "price_str": price, "type": kind, "microtimestamp": str(micros),
        "buy_order_id": taker if kind == 0 else maker, "sell_order_id": maker if kind == 0 else taker, **extra})


def diff(micros: int, bids: Levels, asks: Levels, pair: str = "btcusd") -> str:
    return frame(f"diff_order_book_{pair}", "data", {"timestamp": str(micros // 1_000_000),
                                                     "microtimestamp": str(micros), "bids": bids, "asks": asks})


def top100(micros: int, bids: Levels, asks: Levels, pair: str = "btcusd") -> str:
    return frame(f"order_book_{pair}", "data", {"timestamp": str(micros // 1_000_000),
                                                "microtimestamp": str(micros), "bids": bids, "asks": asks})


def snapshot(micros: int, bids: Levels, asks: Levels) -> bytes:
    return json.dumps({"timestamp": str(micros // 1_000_000), "microtimestamp": str(micros), "bids": bids,
                       "asks": asks}).encode()


def ack(channel: str) -> str:
    return json.dumps({"event": "bts:subscription_succeeded", "channel": channel, "data": {}})


HEARTBEAT_REPLY = '{"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}'
REQUEST_RECONNECT = '{"event": "bts:request_reconnect", "channel": "", "data": ""}'


def feed(venue: Bitstamp, out: Out, *messages: str | bytes) -> None:
    for i, raw in enumerate(messages):
        venue.on_message(raw, RECV + i, out)


def table(out: Out, name: str) -> list[dict[str, Any]]:
    """The rows of one table as dicts (and leave the other tables in ``out``)."""
    cols = out.columns[name]
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    for col in cols.values():
        col.clear()
    return rows


def levels(venue: Bitstamp, pair: str = "btcusd") -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return venue.book(pair).top_raw(1000)


def synced(pair_bids: Levels, pair_asks: Levels, **kw: Any) -> tuple[Bitstamp, Out]:
    """An l2-only venue whose btcusd book was built from a snapshot at T0 + 10."""
    venue = Bitstamp(["btcusd"], channels={"l2"}, **kw)
    out = Out("bitstamp")
    feed(venue, out, diff(T0 + 5, [], []))
    assert venue.actions() == [REST]
    venue.on_snapshot("btcusd", snapshot(T0 + 10, pair_bids, pair_asks), RECV, out)
    out.take()
    return venue, out


# -- symbols and connection ---------------------------------------------------------------


def test_symbols_become_bitstamp_pairs_one_subscribe_per_channel_and_a_heartbeat_keepalive() -> None:
    venue = Bitstamp(["BTC/USD", "ethusd", "BTCUSD", "btc-eur"])
    assert venue.symbols == ["btcusd", "ethusd", "btceur"]  # Bitstamp's own names, duplicates merged
    assert [json.loads(m) for m in venue.subscribe()[:3]] == [
        {"event": "bts:subscribe", "data": {"channel": "live_trades_btcusd"}},
        {"event": "bts:subscribe", "data": {"channel": "order_book_btcusd"}},
        {"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusd"}}]
    assert len(venue.subscribe()) == 9 and all(len(m) < 512 for m in venue.subscribe())  # Bitstamp's frame limit
    assert Bitstamp(["btcusd"], channels={"trade"}).subscribe() == [
        '{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd"}}']
    assert (venue.name, venue.ws_url, venue.rest_url) == ("bitstamp", "wss://ws.bitstamp.net", "https://www.bitstamp.net")
    assert venue.url(venue.ws_url) == "wss://ws.bitstamp.net"
    assert venue.keepalive is not None and venue.keepalive < 30  # inside the shell's default idle timeout
    assert json.loads(venue.ping()) == {"event": "bts:heartbeat"}
    assert bitstamp_pair("BTC/USD-PERP") == "btcusd-perp" and bitstamp_pair(" XRP_USD ") == "xrpusd"
    assert venue.book("BTC/USD") is venue.book("btcusd")
    for bad in ("", "btc usd", "BTC/€", "-perp"):
        with pytest.raises(ValueError, match="not a Bitstamp market"):
            Bitstamp([bad])
    with pytest.raises(ValueError, match="crossed_limit"):
        Bitstamp(["btcusd"], crossed_limit=0)
    with pytest.raises(ValueError, match="unknown channel"):
        Bitstamp(["btcusd"], channels={"ticker"})


def test_acks_heartbeats_errors_and_request_reconnect() -> None:
    venue = Bitstamp(["btcusd"])
    out = Out("bitstamp")
    feed(venue, out, ack("live_trades_btcusd"), ack("diff_order_book_btcusd"), HEARTBEAT_REPLY,
         '{"event": "bts:unsubscription_succeeded", "channel": "order_book_btcusd", "data": {}}',
         '{"event": "bts:error", "channel": "", "data": {"code": null, "message": "Invalid channel provided."}}')
    events = table(out, "feed_event")
    assert [(e["kind"], e["sym"], e["venue_sym"]) for e in events] == [
        ("subscribed", "BTCUSD", "btcusd"), ("subscribed", "BTCUSD", "btcusd"), ("bad_message", None, None)]
    assert events[1]["detail"] == "subscribed to diff_order_book_btcusd"
    assert "'Invalid channel provided.'" in events[2]["detail"] and "btcusd" in events[2]["detail"]
    assert venue.actions() == []
    # Maintenance: the venue asks the shell to reconnect; no row, no event (the shell reports the close).
    feed(venue, out, REQUEST_RECONNECT)
    (action,) = venue.actions()
    assert isinstance(action, Reconnect) and "bts:request_reconnect" in action.reason
    assert out.take() == {}


# -- trades and native quotes ------------------------------------------------------------------


def test_trades_both_sides_exact_text_and_microsecond_times() -> None:
    venue = Bitstamp(["btcusd"])
    out = Out("bitstamp")
    feed(venue, out, trade(212337562, "38416", "0.00280000", 0, 1643643584587000),
         trade(93215787, "12700.00", "0.01414016", 1, 1562650233964229))
    assert table(out, "trade") == [
        {"time": 1643643584587000 * US, "sym": "BTCUSD", "venue_sym": "btcusd", "exchange": "bitstamp",
         "price": "38416", "size": "0.00280000", "side": "buy", "trade_id": "212337562", "seq": 212337562,
         "recv_time": RECV},
        {"time": 1562650233964229 * US, "sym": "BTCUSD", "venue_sym": "btcusd", "exchange": "bitstamp",
         "price": "12700.00", "size": "0.01414016", "side": "sell", "trade_id": "93215787", "seq": 93215787,
         "recv_time": RECV + 1}]
    assert out.take() == {}
    # A perpetual: its own market name; the JSON-number price/amount are never read.
    perp = Bitstamp(["BTC/USD-PERP"], channels={"trade"})
    raw = trade(2001939623936278528, "77204", "0.00921", 0, 1789456400586000, pair="btcusd-perp")
    feed(perp, out, raw.replace('"price": 77204.0,', '"price": 77204.00000000001,'))
    (row,) = table(out, "trade")
    assert (row["sym"], row["venue_sym"], row["price"], row["seq"]) == (normalize_symbol("btcusd-perp"),
                                                                        "btcusd-perp", "77204", 2001939623936278528)


def test_order_book_channel_is_a_native_quote_of_its_best_levels() -> None:
    venue = Bitstamp(["btcusd"], channels={"quote"})
    out = Out("bitstamp")
    feed(venue, out,
         top100(T0 + 906487, [["38416.13", "0.41122000"], ["38410.00", "0.32386000"]],
                [["38417.50", "0.41124000"], ["38419.00", "1.10113000"]]),
         top100(T0 + 999999, [], [["38417.50", "0.1"]]))
    assert table(out, "quote") == [
        {"time": (T0 + 906487) * US, "sym": "BTCUSD", "venue_sym": "btcusd", "exchange": "bitstamp",
         "bid_price": "38416.13", "bid_size": "0.41122000", "ask_price": "38417.50", "ask_size": "0.41124000",
         "recv_time": RECV, "derived": False},
        {"time": (T0 + 999999) * US, "sym": "BTCUSD", "venue_sym": "btcusd", "exchange": "bitstamp",
         "bid_price": None, "bid_size": None, "ask_price": "38417.50", "ask_size": "0.1", "recv_time": RECV + 1,
         "derived": False}]
    assert out.take() == {} and venue.actions() == []


# -- the diff book against the REST snapshot -----------------------------------------------------------


def test_diffs_buffer_until_the_snapshot_older_ones_skipped_newer_ones_applied() -> None:
    venue = Bitstamp(["btcusd"], channels={"l2"})
    out = Out("bitstamp")
    feed(venue, out,
         diff(T0 + 100, [["38400.00", "1.00000000"]], []),  # older than the snapshot: skipped
         diff(T0 + 200, [["38399.00", "0"]], [["38420.00", "2.00000000"]]),  # the snapshot's own time: skipped
         diff(T0 + 300, [["38405.00", "0.50000000"]], [["38410.00", "0.00000000"]]),  # applied; deletes 38410
         diff(T0 + 400, [], [["38415.00", "1.25000000"]]))  # applied
    # Nothing is published before the snapshot; it is asked for once, on the first diff.
    assert out.take() == {}
    assert venue.actions() == [REST]
    assert venue.actions() == []
    venue.on_snapshot("btcusd", snapshot(T0 + 200, [["38400.00", "0.75000000"], ["38399.00", "3.00000000"]],
                                         [["38410.00", "0.40000000"], ["38420.00", "1.00000000"]]), RECV + 10, out)
    l2 = table(out, "l2")
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"]) for r in l2] == [
        ("bid", "38400.00", "0.75000000", True, None, None), ("bid", "38399.00", "3.00000000", True, None, None),
        ("ask", "38410.00", "0.40000000", True, None, None), ("ask", "38420.00", "1.00000000", True, None, None),
        ("bid", "38405.00", "0.50000000", False, None, None), ("ask", "38410.00", "0.00000000", False, None, None),
        ("ask", "38415.00", "1.25000000", False, None, None)]
    # Snapshot rows at the snapshot's microtimestamp; diff rows at theirs, with their own receive time.
    assert (l2[0]["time"], l2[0]["recv_time"]) == ((T0 + 200) * US, RECV + 10)
    assert (l2[4]["time"], l2[4]["recv_time"]) == ((T0 + 300) * US, RECV + 2)
    assert all((r["sym"], r["venue_sym"], r["exchange"]) == ("BTCUSD", "btcusd", "bitstamp") for r in l2)
    quotes = table(out, "quote")
    assert [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) for q in quotes] == [
        ("38400.00", "0.75000000", "38410.00", "0.40000000", True),
        ("38405.00", "0.50000000", "38420.00", "1.00000000", True),
        ("38405.00", "0.50000000", "38415.00", "1.25000000", True)]
    assert table(out, "feed_event") == []  # the first snapshot is not a resync
    assert levels(venue) == ([("38405.00", "0.50000000"), ("38400.00", "0.75000000"), ("38399.00", "3.00000000")],
                             [("38415.00", "1.25000000"), ("38420.00", "1.00000000")])

    # Live: deleting the best bid moves the top; a diff not newer than the last one is dropped silently.
    feed(venue, out, diff(T0 + 500, [["38405.00", "0.00000000"]], []), diff(T0 + 450, [["1", "1"]], []),
         diff(T0 + 500, [["2", "1"]], []))
    assert [(r["price"], r["size"]) for r in table(out, "l2")] == [("38405.00", "0.00000000")]
    assert [(q["bid_price"], q["ask_price"]) for q in table(out, "quote")] == [("38400.00", "38415.00")]
    assert out.take() == {} and venue.actions() == []
    assert levels(venue)[0] == [("38400.00", "0.75000000"), ("38399.00", "3.00000000")]


def test_a_snapshot_older_than_the_first_diff_is_fetched_again_without_publishing() -> None:
    venue = Bitstamp(["btcusd"], channels={"l2"})
    out = Out("bitstamp")
    feed(venue, out, diff(T0 + 100, [["10", "1"]], []), diff(T0 + 200, [], [["12", "2"]]))
    assert venue.actions() == [REST]
    venue.on_snapshot("btcusd", snapshot(T0 + 50, [["9", "1"]], [["11", "1"]]), RECV + 5, out)
    (gap,) = table(out, "feed_event")
    assert (gap["kind"], gap["venue_sym"], gap["expected"], gap["got"]) == ("gap", "btcusd", T0 + 100, T0 + 50)
    assert out.take() == {} and not venue.book("btcusd").valid
    assert venue.actions() == [REST]
    # The buffered diffs are kept: a newer snapshot joins them (the one at T0 + 100 is in it).
    venue.on_snapshot("btcusd", snapshot(T0 + 150, [["10", "3"], ["9", "1"]], [["11", "1"]]), RECV + 6, out)
    assert levels(venue) == ([("10", "3"), ("9", "1")], [("11", "1"), ("12", "2")])
    assert table(out, "feed_event") == []  # never valid before: not a resync
    out.take()
    # A late, unrequested answer does not rewind a synced book; a pair we do not have is a bug.
    venue.on_snapshot("btcusd", snapshot(T0 + 1, [], []), RECV + 7, out)
    assert out.take() == {} and levels(venue)[0] == [("10", "3"), ("9", "1")]
    with pytest.raises(ValueError, match="not one of the markets"):
        venue.on_snapshot("ethusd", snapshot(T0, [], []), RECV, out)


def test_crossed_book_is_reported_once_per_crossing_and_a_lasting_one_resnapshots() -> None:
    venue, out = synced([["100", "1"]], [["101", "1"]])
    # A crossing the next diff corrects: one "crossed" event, nothing else.
    feed(venue, out, diff(T0 + 20, [["101.5", "1"]], []), diff(T0 + 30, [], [["101", "0"], ["102", "1"]]))
    (crossed,) = table(out, "feed_event")
    assert (crossed["kind"], crossed["venue_sym"], crossed["time"]) == ("crossed", "btcusd", RECV)
    assert "101.5" in crossed["detail"] and "'101'" in crossed["detail"]
    assert venue.book("btcusd").valid and venue.actions() == []
    out.take()
    # A crossing that lasts crossed_limit (3) diffs is a lost diff: gap, book dropped, snapshot asked for.
    feed(venue, out, diff(T0 + 40, [], [["101.2", "1"]]), diff(T0 + 50, [["99", "1"]], []),
         diff(T0 + 60, [["98", "1"]], []))
    events = table(out, "feed_event")
    assert [(e["kind"], e["expected"], e["got"]) for e in events] == [("crossed", None, None),
                                                                      ("gap", None, T0 + 60)]
    assert "crossed after 3 consecutive diffs" in events[1]["detail"] and "101.5" in events[1]["detail"]
    assert len(table(out, "l2")) == 3  # the diffs before the decision were published
    out.take()
    assert not venue.book("btcusd").valid and venue.actions() == [REST]
    # Until a snapshot rebuilds it nothing of the book is published; one older than the loss is refused.
    feed(venue, out, diff(T0 + 70, [["97", "1"]], []))
    assert out.take() == {}
    venue.on_snapshot("btcusd", snapshot(T0 + 55, [["100", "2"]], [["101", "3"]]), RECV + 20, out)
    assert [(e["kind"], e["expected"], e["got"]) for e in table(out, "feed_event")] == [("gap", T0 + 60, T0 + 55)]
    assert out.take() == {} and venue.actions() == [REST]
    venue.on_snapshot("btcusd", snapshot(T0 + 65, [["100", "2"]], [["101", "3"]]), RECV + 21, out)
    (resync,) = table(out, "feed_event")
    assert resync["kind"] == "resync" and "1 buffered diffs" in resync["detail"]
    assert [(r["price"], r["size"], r["is_snapshot"]) for r in table(out, "l2")] == [
        ("100", "2", True), ("101", "3", True), ("97", "1", False)]
    assert levels(venue) == ([("100", "2"), ("97", "1")], [("101", "3")])


def test_a_crossing_found_in_buffered_diffs_keeps_the_later_diffs_for_the_next_snapshot() -> None:
    venue = Bitstamp(["btcusd"], channels={"l2"}, crossed_limit=1)
    out = Out("bitstamp")
    feed(venue, out, diff(T0 + 10, [], []), diff(T0 + 20, [["105", "1"]], []), diff(T0 + 30, [["90", "1"]], []))
    venue.actions()
    venue.on_snapshot("btcusd", snapshot(T0 + 15, [["100", "1"]], [["101", "1"]]), RECV, out)
    assert [e["kind"] for e in table(out, "feed_event")] == ["crossed", "gap"]
    assert venue.actions() == [REST]
    out.take()
    # The snapshot at T0 + 25 covers the loss (T0 + 20); the diff at T0 + 30 was kept and applies.
    venue.on_snapshot("btcusd", snapshot(T0 + 25, [["100", "1"]], [["101", "1"]]), RECV, out)
    assert levels(venue) == ([("100", "1"), ("90", "1")], [("101", "1")])
    assert [e["kind"] for e in table(out, "feed_event")] == ["resync"]


def test_a_malformed_diff_is_one_event_drops_the_book_and_refetches() -> None:
    venue, out = synced([["10", "1"]], [["11", "1"]])
    feed(venue, out, diff(T0 + 20, [["10.5", "1"], ["10.6", "x"]], []))
    (event,) = table(out, "feed_event")
    assert (event["kind"], event["venue_sym"]) == ("bad_message", "btcusd")
    assert "'x'" in event["detail"] and "re-fetched" in event["detail"]
    assert out.take() == {} and not venue.book("btcusd").valid
    assert venue.actions() == [REST]
    # The lost diff was at T0 + 20: an older snapshot would miss it.
    venue.on_snapshot("btcusd", snapshot(T0 + 19, [["10", "1"]], [["11", "1"]]), RECV, out)
    assert [(e["kind"], e["expected"], e["got"]) for e in table(out, "feed_event")] == [("gap", T0 + 20, T0 + 19)]
    venue.actions()
    feed(venue, out, diff(T0 + 30, [["10.6", "2"]], []))
    venue.on_snapshot("btcusd", snapshot(T0 + 25, [["10.5", "1"], ["10", "1"]], [["11", "1"]]), RECV, out)
    assert levels(venue) == ([("10.6", "2"), ("10.5", "1"), ("10", "1")], [("11", "1")])
    assert [e["kind"] for e in table(out, "feed_event")] == ["resync"]
    # A diff whose time is unreadable: the snapshot must then be newer than the last good diff (T0 + 30).
    out.take()
    feed(venue, out, diff(T0 + 40, [], []).replace(f'"{T0 + 40}"', '"soon"'))
    assert [e["kind"] for e in table(out, "feed_event")] == ["bad_message"]
    assert venue.actions() == [REST]
    venue.on_snapshot("btcusd", snapshot(T0 + 30, [], []), RECV, out)
    assert [(e["kind"], e["expected"]) for e in table(out, "feed_event")] == [("gap", T0 + 31)]


def test_bad_snapshot_bodies_are_reported_and_asked_for_again() -> None:
    venue = Bitstamp(["btcusd"], channels={"l2"})
    out = Out("bitstamp")
    feed(venue, out, diff(T0 + 1, [], []))
    venue.actions()
    for body in (b"<html>busy</html>", b'{"timestamp": "1"}', snapshot(T0 + 2, [["abc", "1"]], []),
                 snapshot(T0 + 2, [], [["1", "-1"]]), b"[]"):
        venue.on_snapshot("btcusd", body, RECV, out)
        (event,) = table(out, "feed_event")
        assert event["kind"] == "bad_message" and "REST snapshot unusable" in event["detail"], body
        assert out.take() == {} and venue.actions() == [REST]
    venue.on_snapshot("btcusd", snapshot(T0 + 2, [["1", "1"]], []), RECV, out)
    assert venue.book("btcusd").valid and levels(venue) == ([("1", "1")], [])


def test_a_problem_on_one_pair_leaves_the_others_publishing() -> None:
    venue = Bitstamp(["btcusd", "ethusd"], channels={"l2"}, crossed_limit=1)
    out = Out("bitstamp")
    feed(venue, out, diff(T0 + 1, [], [], "btcusd"), diff(T0 + 1, [], [], "ethusd"))
    assert venue.actions() == [REST, Rest("ethusd", "/api/v2/order_book/ethusd/")]
    for pair in ("btcusd", "ethusd"):
        venue.on_snapshot(pair, snapshot(T0 + 2, [["5", "1"]], [["6", "1"]]), RECV, out)
    out.take()
    feed(venue, out, diff(T0 + 3, [["7", "1"]], [], "btcusd"), diff(T0 + 3, [["5.5", "1"]], [], "ethusd"))
    assert [(e["kind"], e["venue_sym"]) for e in table(out, "feed_event")] == [("crossed", "btcusd"),
                                                                                ("gap", "btcusd")]
    assert [r["venue_sym"] for r in table(out, "l2")] == ["btcusd", "ethusd"]
    assert [(q["venue_sym"], q["sym"]) for q in table(out, "quote")] == [("btcusd", "BTCUSD"), ("ethusd", "ETHUSD")]
    assert not venue.book("btcusd").valid and venue.book("ethusd").valid
    assert venue.actions() == [REST]


def test_reconnect_drops_every_book_and_queued_action_then_a_new_snapshot_resyncs() -> None:
    venue, out = synced([["1", "1"]], [["3", "1"]])
    feed(venue, out, diff(T0 + 20, [["2", "1"]], []), REQUEST_RECONNECT)
    assert levels(venue) == ([("2", "1"), ("1", "1")], [("3", "1")])
    out.take()
    venue.on_disconnect(RECV + 1, out)
    assert venue.actions() == []  # the Reconnect was for the old connection
    assert not venue.book("btcusd").valid and levels(venue) == ([], [])
    assert out.take() == {}
    # The new connection's diffs are buffered until a new snapshot, taken after they started.
    feed(venue, out, diff(T0 + 500, [["2", "0"]], [["3", "2"]]), diff(T0 + 600, [], [["4", "1"]]))
    assert out.take() == {} and venue.actions() == [REST]
    venue.on_snapshot("btcusd", snapshot(T0 + 550, [["2", "1"], ["1", "1"]], [["3", "5"]]), RECV + 9, out)
    assert levels(venue) == ([("2", "1"), ("1", "1")], [("3", "5"), ("4", "1")])
    (resync,) = table(out, "feed_event")
    assert resync["kind"] == "resync" and "1 older ones skipped" in resync["detail"]
    (quote,) = table(out, "quote")[-1:]
    assert (quote["bid_price"], quote["ask_price"], quote["ask_size"], quote["derived"]) == ("2", "3", "5", True)


# -- bad input ------------------------------------------------------------------------------------------


GOOD_TRADE = {"id": 1, "amount_str": "1", "price_str": "1", "type": 0, "microtimestamp": "1"}


@pytest.mark.parametrize(("raw", "kind", "why"), [
    (b"\x00\xffgarbage", "bad_message", "JSON is malformed"),
    (b'{"event": "\xff"}', "bad_message", "DecodeError"),
    ("{not json", "bad_message", "DecodeError"),
    ("[1, 2, 3]", "bad_message", "a list, not a JSON object"),
    ('{"channel": "live_trades_btcusd", "data": {}}', "bad_message", "KeyError: 'event'"),
    ('{"event": 5, "channel": "live_trades_btcusd"}', "bad_message", "event 5 is not a string"),
    (frame("live_trades_btcusd", "trade", [1]), "bad_message", "is not an object"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "abc"}), "bad_message", "price_str 'abc'"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "NaN"}), "bad_message", "price_str 'NaN'"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "-1"}), "bad_message", "positive"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "amount_str": "Infinity"}), "bad_message", "amount_str"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "amount_str": "0"}), "bad_message", "positive"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": 38416}), "bad_message", "decimal string"),
    # Decimal takes these, Arrow's float cast (at publish time, for a whole batch) does not.
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": " 1"}), "bad_message", "finite decimal"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "1_000"}), "bad_message", "finite decimal"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "\u0661"}), "bad_message", "finite decimal"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "1e999"}), "bad_message", "finite decimal"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "price_str": "9" * 310}), "bad_message", "finite decimal"),
    (frame("live_trades_btcusd", "trade", {k: v for k, v in GOOD_TRADE.items() if k != "amount_str"}),
     "bad_message", "KeyError: 'amount_str'"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "type": 2}), "bad_message", "trade type 2"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "type": True}), "bad_message", "trade type True"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "id": "1"}), "bad_message", "trade id '1'"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "id": 2**64}), "bad_message", "64-bit"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "microtimestamp": "12:00"}), "bad_message",
     "microtimestamp '12:00'"),
    (frame("live_trades_btcusd", "trade", {**GOOD_TRADE, "microtimestamp": "9" * 19}), "bad_message", "range"),
    (top100(T0, [["1", "1"]], [["2", "1"], ["3", "x"]]), "bad_message", "ask amount 'x'"),
    (top100(T0, {"1": "1"}, []), "bad_message", "bid {'1': '1'} is not a list"),  # type: ignore[arg-type]
    (top100(T0, [["1"]], []), "bad_message", "is not [price, amount]"),
    (diff(T0, [["0", "1"]], []), "bad_message", "bid price '0'"),
    (diff(T0, [], [[15, "1"]]), "bad_message", "ask price 15 is not a decimal string"),  # type: ignore[list-item]
    (frame("diff_order_book_btcusd", "data", None), "bad_message", "None is not an object"),
    (frame("live_trades_btcusd", "order_created", {}), "unknown_message", "unexpected event 'order_created'"),
    (frame("live_trades_xrpusd", "trade", GOOD_TRADE), "unknown_message", "not subscribed"),
    ('{"event": "bts:ping", "channel": "", "data": {}}', "unknown_message", "unknown Bitstamp event 'bts:ping'"),
])
def test_bad_messages_become_one_event_and_no_row(raw: str | bytes, kind: str, why: str) -> None:
    venue = Bitstamp(["btcusd"])
    out = Out("bitstamp")
    venue.on_message(raw, RECV, out)
    (event,) = table(out, "feed_event")
    assert event["kind"] == kind and why in event["detail"], event["detail"]
    assert len(event["detail"]) < 500
    assert out.take() == {}
    # A bad message on a channel of ours names its market.
    if kind == "bad_message" and isinstance(raw, str) and raw.startswith('{"data": {'):
        assert (event["sym"], event["venue_sym"]) == ("BTCUSD", "btcusd")


def test_a_json_number_where_text_is_documented_is_taken_as_its_exact_source_text() -> None:
    venue = Bitstamp(["btcusd"], channels={"trade"})
    out = Out("bitstamp")
    feed(venue, out, '{"event":"trade","channel":"live_trades_btcusd","data":{"id":7,"price_str":0.30000000000000001,'
                     '"amount_str":"1","type":1,"microtimestamp":1643643584587000}}')
    (row,) = table(out, "trade")
    assert (row["price"], row["time"]) == ("0.30000000000000001", 1643643584587000 * US)


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
        | st.sampled_from(["trade", "data", "bts:error", "bts:subscription_succeeded", "bts:request_reconnect",
                           "live_trades_btcusd", "order_book_btcusd", "diff_order_book_btcusd", "1", "0", "NaN"]),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(
            st.sampled_from(["event", "channel", "data", "id", "type", "price_str", "amount_str", "microtimestamp",
                             "bids", "asks", "message", "code"]), c, max_size=6),
        max_leaves=14).map(json.dumps),
))
def test_no_input_raises(raw: str | bytes) -> None:
    venue, out = synced([["10", "1"]], [["11", "1"]])
    venue.on_message(raw, RECV, out)
    out.take()
    venue.actions()
    # Whatever happened, a well-formed diff is still taken (applied, or buffered for a snapshot).
    venue.on_message(diff(T0 + 10**9, [["10", "2"]], []), RECV + 1, out)


# -- end to end: a local Bitstamp (WebSocket + REST) -> Feed(Bitstamp) -> a real TP -> a subscriber ---------


def test_through_the_shell_a_failed_snapshot_is_retried_and_the_book_and_rows_reach_the_tp(
        tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    snap = snapshot(T0 + 200, [["38400.00", "0.75000000"], ["38399.00", "3.00000000"]],
                    [["38410.00", "0.40000000"], ["38420.00", "1.00000000"]])
    rest = RestServer({PATH: [(500, b'{"status": "error", "reason": "busy"}'), (200, snap)]})
    script: list[Step] = [
        ack("live_trades_btcusd"), ack("order_book_btcusd"), ack("diff_order_book_btcusd"),
        trade(212337562, "38416", "0.00280000", 0, T0 + 50), trade(212337563, "38415.5", "0.1", 1, T0 + 60),
        top100(T0 + 70, [["38416.13", "0.41122000"]], [["38417.50", "0.41124000"]]),
        "this is not json",
        diff(T0 + 100, [["38400.00", "1.00000000"]], []),  # older than the snapshot: skipped
        diff(T0 + 200, [["38399.00", "0"]], []),  # the snapshot's own time: skipped
        diff(T0 + 300, [["38405.00", "0.50000000"]], [["38410.00", "0.00000000"]]),
        Until(lambda: rest.served() >= 2),  # HTTP 500, then the retry's 200
        diff(T0 + 400, [], [["38415.00", "1.25000000"]])]

    async def main() -> Feed:
        with rest:
            async with VenueServer([script]) as server:
                feed = Feed(Bitstamp(["BTC/USD"]), FeedConfig(tp.address, ws_url=server.url, rest_url=rest.url))
                task = asyncio.create_task(feed.run())
                await until(lambda: len(tp_rows(sub, "l2")) == 7, "7 l2 rows", task)
                feed.stop()
                await task
            assert server.received == [Bitstamp(["btcusd"]).subscribe()]
        return feed

    feed = asyncio.run(main())
    assert rest.requests == [PATH, PATH]
    assert [(t["sym"], t["venue_sym"], t["exchange"], t["price"], t["size"], t["side"], t["trade_id"], t["seq"])
            for t in tp_rows(sub, "trade")] == [
        ("BTCUSD", "btcusd", "bitstamp", 38416.0, 0.0028, "buy", "212337562", 212337562),
        ("BTCUSD", "btcusd", "bitstamp", 38415.5, 0.1, "sell", "212337563", 212337563)]
    assert tp_rows(sub, "trade")[0]["time"].timestamp() * 1_000_000 == pytest.approx(T0 + 50, abs=1)
    assert [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"])
            for q in tp_rows(sub, "quote")] == [
        (38416.13, 0.41122, 38417.5, 0.41124, False),  # order_book_: native
        (38400.0, 0.75, 38410.0, 0.4, True), (38405.0, 0.5, 38420.0, 1.0, True),
        (38405.0, 0.5, 38415.0, 1.25, True)]  # from the diff book
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in tp_rows(sub, "l2")] == [
        ("bid", 38400.0, 0.75, True), ("bid", 38399.0, 3.0, True), ("ask", 38410.0, 0.4, True),
        ("ask", 38420.0, 1.0, True), ("bid", 38405.0, 0.5, False), ("ask", 38410.0, 0.0, False),
        ("ask", 38415.0, 1.25, False)]
    assert isinstance(feed.venue, Bitstamp)
    assert levels(feed.venue) == ([("38405.00", "0.50000000"), ("38400.00", "0.75000000"), ("38399.00", "3.00000000")],
                                  [("38415.00", "1.25000000"), ("38420.00", "1.00000000")])
    events = tp_rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "subscribed", "subscribed", "bad_message",
                                           "rest_error"]
    assert "HTTP 500" in events[5]["detail"] and "retrying" in events[5]["detail"]
    assert (events[5]["sym"], events[5]["venue_sym"]) == ("BTCUSD", "btcusd")
    assert feed.stats["rest_errors"] == 1


def test_through_the_shell_a_lasting_crossing_resnapshots_and_a_dropped_connection_resyncs(
        tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    venue = Bitstamp(["btcusd"], channels={"l2"})
    rest = RestServer({PATH: [(200, snapshot(T0 + 10, [["100", "1"]], [["101", "1"]])),
                              (200, snapshot(T0 + 45, [["100", "2"]], [["101", "3"]])),
                              (200, snapshot(T0 + 1100, [["100", "5"]], [["100.5", "1"]]))]})
    first: list[Step] = [
        ack("diff_order_book_btcusd"), diff(T0 + 5, [], []),
        Until(lambda: rest.served() >= 1),
        # Crossed, and still crossed two diffs later: taken as a lost diff; the shell fetches a snapshot.
        diff(T0 + 20, [["101.5", "1"]], []), diff(T0 + 30, [["99", "1"]], []), diff(T0 + 40, [["98", "1"]], []),
        Until(lambda: rest.served() >= 2),
        diff(T0 + 50, [["97", "1"]], []),
        Until(lambda: venue.book("btcusd").valid and venue.book("btcusd").counts == (2, 1)),
        Drop()]
    second: list[Step] = [
        ack("diff_order_book_btcusd"), diff(T0 + 1000, [["96", "1"]], []),  # older than the new snapshot
        Until(lambda: rest.served() >= 3),
        diff(T0 + 1200, [], [["100.5", "0"], ["100.7", "2"]])]

    async def main() -> VenueServer:
        with rest:
            async with VenueServer([first, second]) as server:
                feed = Feed(venue, FeedConfig(tp.address, ws_url=server.url, rest_url=rest.url))
                task = asyncio.create_task(feed.run())
                await until(lambda: any(r["price"] == 100.7 for r in tp_rows(sub, "l2")), "the last diff", task)
                feed.stop()
                await task
        return server

    server = asyncio.run(main())
    assert server.connections == 2 and server.received[0] == server.received[1] == venue.subscribe()
    assert rest.requests == [PATH, PATH, PATH]
    assert levels(venue) == ([("100", "5")], [("100.7", "2")])
    events = tp_rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "crossed", "gap", "resync", "disconnect",
                                           "reconnect", "subscribed", "resync"]
    assert (events[3]["expected"], events[3]["got"], events[3]["venue_sym"]) == (None, T0 + 40, "btcusd")
    l2 = [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in tp_rows(sub, "l2")]
    assert l2 == [("bid", 100.0, 1.0, True), ("ask", 101.0, 1.0, True),
                  ("bid", 101.5, 1.0, False), ("bid", 99.0, 1.0, False), ("bid", 98.0, 1.0, False),
                  ("bid", 100.0, 2.0, True), ("ask", 101.0, 3.0, True), ("bid", 97.0, 1.0, False),
                  # after the reconnect: the new snapshot, the diff older than it skipped, the next one applied
                  ("bid", 100.0, 5.0, True), ("ask", 100.5, 1.0, True), ("ask", 100.5, 0.0, False),
                  ("ask", 100.7, 2.0, False)]


class QuickHeartbeat(Bitstamp):
    keepalive = 0.2


def test_request_reconnect_gets_a_new_connection_and_a_quiet_one_is_kept_alive_by_heartbeats(
        tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    heartbeat = '{"event":"bts:heartbeat"}'

    async def main() -> VenueServer:
        async with VenueServer([[ack("live_trades_btcusd"), trade(1, "100", "1", 0, T0), REQUEST_RECONNECT],
                                [ack("live_trades_btcusd"), trade(2, "101", "1", 1, T0 + 1)]]) as server:
            feed = Feed(QuickHeartbeat(["btcusd"], channels={"trade"}), FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: len(tp_rows(sub, "trade")) == 2, "the trade on the second connection", task)
            await until(lambda: heartbeat in server.received[1], "a heartbeat on the quiet connection", task)
            feed.stop()
            await task
        return server

    server = asyncio.run(main())
    assert server.connections == 2
    assert [(t["trade_id"], t["side"]) for t in tp_rows(sub, "trade")] == [("1", "buy"), ("2", "sell")]
    events = tp_rows(sub, "feed_event")
    assert [e["kind"] for e in events] == ["connect", "subscribed", "disconnect", "reconnect", "subscribed"]
    assert events[2]["detail"].startswith("bitstamp asked for a reconnect: bts:request_reconnect")
