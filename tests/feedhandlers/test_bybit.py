"""Bybit v5 public adapter (``feedhandlers/bybit.py``): literal messages, then end to end through a real TP.

Message shapes are Bybit's documented v5 formats (bybit-exchange.github.io/docs/v5: "Connect"
for subscribe/ack/ping/pong, "Orderbook" and "Trade" under websocket/public). The docs'
examples are used as written where they fit: the trade ``20f43950-...`` at "16578.50" x
"0.001", the ``orderbook.50.BTCUSDT`` snapshot u=18521288 (16493.50 / 16611.00...) and the
delta u=177400507 (30247.20 / 30248.70...). Sequences of ``u`` are made up around them, as
the docs' examples are not consecutive. Books are compared with levels written out by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.bybit import Bybit, BybitInverse, BybitLinear
from feedhandlers.normalize import Out
from feedhandlers.shell import Feed, FeedConfig
from feedhandlers.venue import CHANNELS, Send
from tests.conftest import Collector, TPProcess
from tests.feedhandlers.venue_server import Drop, Step, Until, VenueServer

T0 = 1_700_000_000_000_000_000  # a receive time, ns
MS = 1_000_000
Levels = list[tuple[str, str]]
Cols = dict[str, dict[str, list[Any]]]


def book_msg(kind: str, sym: str, bids: Levels, asks: Levels, u: int, *, depth: int = 50,
             ts: int = 1672304484978, cts: int | None = 1672304484976) -> str:
    msg: dict[str, Any] = {"topic": f"orderbook.{depth}.{sym}", "type": kind, "ts": ts,
                           "data": {"s": sym, "b": [list(lv) for lv in bids], "a": [list(lv) for lv in asks],
                                    "u": u, "seq": 7961638724 + u}}
    if cts is not None:
        msg["cts"] = cts
    return json.dumps(msg)


def trade(sym: str = "BTCUSDT", side: str = "Buy", price: str = "16578.50", size: str = "0.001",
          tid: str = "20f43950-d8dd-5b31-9112-a178eb6023af", t: int = 1672304486865, **extra: Any) -> dict[str, Any]:
    return {"T": t, "s": sym, "S": side, "v": size, "p": price, "L": "PlusTick", "i": tid, "BT": False, **extra}


def trade_msg(*trades: dict[str, Any], sym: str = "BTCUSDT") -> str:
    return json.dumps({"topic": f"publicTrade.{sym}", "type": "snapshot", "ts": 1672304486868, "data": list(trades)})


def ack(req_id: str, op: str = "subscribe", success: bool = True, ret_msg: str = "subscribe") -> str:
    # Spot's documented ack shape ("ret_msg": "subscribe"); linear/inverse send "ret_msg": "".
    return json.dumps({"success": success, "ret_msg": ret_msg, "conn_id": "2324d924-aa4d-45b0-a858-7b8be29ab52b",
                       "req_id": req_id, "op": op})


def feed(venue: Bybit, *msgs: str | bytes) -> Cols:
    out = Out(venue.name)
    for i, m in enumerate(msgs):
        venue.on_message(m, T0 + i, out)
    return out.take()


def rows(cols: Cols, table: str) -> list[dict[str, Any]]:
    t = cols.get(table)
    if not t:
        return []
    return [dict(zip(t, values, strict=True)) for values in zip(*t.values(), strict=True)]


def events(cols: Cols) -> list[tuple[str, str | None]]:
    return [(r["kind"], r["venue_sym"]) for r in rows(cols, "feed_event")]


def levels_of(cols: Cols) -> list[tuple[str, str, str, bool, int]]:
    return [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_last"]) for r in rows(cols, "l2")]


def state(venue: Bybit, sym: str = "BTCUSDT") -> tuple[Levels, Levels]:
    return venue.book(sym).top_raw(10**6)


def quotes(cols: Cols) -> list[tuple[str | None, str | None, str | None, str | None, bool]]:
    return [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) for q in rows(cols, "quote")]


# -- connection: subscribe, acks, keepalive ----------------------------------------------------------


def test_subscribe_splits_at_ten_topics_and_names_each_request() -> None:
    venue = Bybit(["BTCUSDT", "ethusdt", "SOLUSDT", "XRPUSDT", "BTCUSDT"])  # duplicates dropped, upper-cased
    assert venue.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    msgs = [json.loads(m) for m in venue.subscribe()]
    assert msgs[0] == {"op": "subscribe", "req_id": "sub-0", "args": [
        "publicTrade.BTCUSDT", "orderbook.1.BTCUSDT", "orderbook.50.BTCUSDT",
        "publicTrade.ETHUSDT", "orderbook.1.ETHUSDT", "orderbook.50.ETHUSDT",
        "publicTrade.SOLUSDT", "orderbook.1.SOLUSDT", "orderbook.50.SOLUSDT", "publicTrade.XRPUSDT"]}
    assert msgs[1] == {"op": "subscribe", "req_id": "sub-1", "args": ["orderbook.1.XRPUSDT", "orderbook.50.XRPUSDT"]}
    assert venue.subscribe() == venue.subscribe()  # the same on every connection
    assert json.loads(Bybit(["BTCUSDT"], channels={"l2"}, depth=200).subscribe()[0])["args"] == [
        "orderbook.200.BTCUSDT"]
    assert (venue.name, venue.ws_url, venue.keepalive, venue.ping()) == (
        "bybit", "wss://stream.bybit.com/v5/public/spot", 20.0, '{"op":"ping"}')


def test_category_picks_endpoint_and_exchange_name() -> None:
    linear = Bybit(["BTCUSDT"], category="linear")
    assert (linear.name, linear.ws_url) == ("bybit-linear", "wss://stream.bybit.com/v5/public/linear")
    assert (BybitLinear(["BTCUSDT"]).name, BybitLinear(["BTCUSDT"]).ws_url) == (linear.name, linear.ws_url)
    inverse = BybitInverse(["BTCUSD"], {"trade"})
    assert (inverse.name, inverse.ws_url) == ("bybit-inverse", "wss://stream.bybit.com/v5/public/inverse")
    cols = feed(inverse, trade_msg(trade(sym="BTCUSD"), sym="BTCUSD"))
    assert rows(cols, "trade")[0]["exchange"] == "bybit-inverse"
    with pytest.raises(ValueError, match="options subscribe trades by base coin"):
        Bybit(["BTC-6JAN23-18000-C"], category="option")
    with pytest.raises(ValueError, match=r"depth 25 .* one of \[50, 200, 1000\]"):
        Bybit(["BTCUSDT"], depth=25)
    with pytest.raises(ValueError, match="unknown channel"):
        Bybit(["BTCUSDT"], {"ticker"})
    with pytest.raises(ValueError, match="at least one symbol"):
        Bybit([])


def test_acks_refusals_and_pongs() -> None:
    venue = Bybit(["BTCUSDT", "ETHUSDT"])
    cols = feed(
        venue,
        ack("sub-0"),
        # linear/inverse ack shape: empty ret_msg
        json.dumps({"success": True, "ret_msg": "", "conn_id": "3cd84cb1", "req_id": "resub-ETHUSDT",
                    "op": "subscribe"}),
        ack("sub-0", success=False, ret_msg="Invalid symbol :[orderbook.50.BTCUSDX]"),
        ack("unsub-BTCUSDT", op="unsubscribe", ret_msg="unsubscribe"),
        # pongs: spot, linear/inverse, option/spread shapes (docs "Connect")
        '{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}',
        '{"success":true,"ret_msg":"pong","conn_id":"465772b1-7630-4fdc-a492-e003e6f0f260","req_id":"","op":"ping"}',
        '{"args":["1672916271846"],"op":"pong"}',
        ack("someone-else"),
    )
    evs = rows(cols, "feed_event")
    assert [(e["kind"], e["venue_sym"], e["sym"]) for e in evs] == [
        ("subscribed", None, None), ("subscribed", "ETHUSDT", "ETHUSD"), ("bad_message", None, None),
        ("subscribed", None, None)]
    assert evs[0]["detail"] == ("subscribed to publicTrade.BTCUSDT, orderbook.1.BTCUSDT, orderbook.50.BTCUSDT, "
                                "publicTrade.ETHUSDT, orderbook.1.ETHUSDT, orderbook.50.ETHUSDT")
    assert evs[1]["detail"] == "subscribed to orderbook.50.ETHUSDT"
    assert "Invalid symbol :[orderbook.50.BTCUSDX]" in evs[2]["detail"]
    assert "Bybit spot symbol such as BTCUSDT" in evs[2]["detail"]
    assert evs[3]["detail"] == "subscribed to request 'someone-else'"
    assert set(cols) == {"feed_event"} and venue.actions() == []


# -- trades and level-1 quotes -----------------------------------------------------------------------


def test_trades_both_sides_times_ids_and_cross_sequence() -> None:
    venue = Bybit(["BTCUSDT"], channels={"trade"})
    cols = feed(venue, trade_msg(trade()),  # the docs' example, verbatim values
                trade_msg(trade(side="Sell", price="16578.00", size="0.250", tid="2290000000061666327",
                                t=1672304486870, seq=1783284617, RPI=False),
                          trade(side="Buy", price="16578.50", size="1", tid="2290000000061666328",
                                t=1672304486870, seq=1783284618)))
    got = [(r["time"], r["sym"], r["venue_sym"], r["exchange"], r["price"], r["size"], r["side"], r["trade_id"],
            r["seq"], r["recv_time"]) for r in rows(cols, "trade")]
    assert got == [
        (1672304486865 * MS, "BTCUSD", "BTCUSDT", "bybit", "16578.50", "0.001", "buy",
         "20f43950-d8dd-5b31-9112-a178eb6023af", None, T0),
        (1672304486870 * MS, "BTCUSD", "BTCUSDT", "bybit", "16578.00", "0.250", "sell", "2290000000061666327",
         1783284617, T0 + 1),
        (1672304486870 * MS, "BTCUSD", "BTCUSDT", "bybit", "16578.50", "1", "buy", "2290000000061666328",
         1783284618, T0 + 1),
    ]
    assert set(cols) == {"trade"}


@pytest.mark.parametrize("bad", [
    {"S": "buy"}, {"S": None}, {"p": "abc"}, {"p": "NaN"}, {"p": "-1"}, {"p": "Infinity"}, {"p": "0"},
    {"p": " 1"}, {"p": "1_000"}, {"p": None}, {"p": 16578}, {"v": "0"}, {"v": "1e999999"}, {"i": ""}, {"i": 5},
    {"T": "1672304486865"}, {"T": True},
    {"seq": "7"}, {"s": "ETHUSDT"},
])
def test_one_bad_trade_rejects_its_whole_batch(bad: dict[str, Any]) -> None:
    venue = Bybit(["BTCUSDT"], channels={"trade"})
    cols = feed(venue, trade_msg(trade(), {**trade(tid="2"), **bad}))
    assert rows(cols, "trade") == []
    assert events(cols) == [("bad_message", "BTCUSDT")]


def level1(bid: tuple[str, str] | None, ask: tuple[str, str] | None, u: int, cts: int = 1672304484976) -> str:
    return json.dumps({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": cts + 2,
                       "data": {"s": "BTCUSDT", "b": [list(bid)] if bid else [], "a": [list(ask)] if ask else [],
                                "u": u, "seq": 7961638724}, "cts": cts})


def test_level1_snapshots_are_native_quotes_published_when_the_top_changes() -> None:
    venue = Bybit(["BTCUSDT"], channels={"quote"})
    cols = feed(venue,
                level1(("16493.50", "0.006"), ("16611.00", "0.029"), 100),
                level1(("16493.50", "0.006"), ("16611.00", "0.029"), 100, cts=1672304487976),  # 3 s re-push
                level1(("16493.50", "0.010"), ("16611.00", "0.029"), 101),
                level1(None, ("16611.00", "0.029"), 102))
    assert quotes(cols) == [("16493.50", "0.006", "16611.00", "0.029", False),
                            ("16493.50", "0.010", "16611.00", "0.029", False),
                            (None, None, "16611.00", "0.029", False)]
    first = rows(cols, "quote")[0]
    assert (first["time"], first["recv_time"], first["sym"]) == (1672304484976 * MS, T0, "BTCUSD")
    assert set(cols) == {"quote"}
    # The level-1 stream is documented as snapshots only: a delta is not trusted.
    cols = feed(venue, json.dumps({**json.loads(level1(("1", "1"), None, 103)), "type": "delta"}))
    assert events(cols) == [("bad_message", "BTCUSDT")] and rows(cols, "quote") == []


# -- books -------------------------------------------------------------------------------------------

DOC_SNAP_BIDS = [("16493.50", "0.006"), ("16493.00", "0.100")]
DOC_SNAP_ASKS = [("16611.00", "0.029"), ("16612.00", "0.213")]


def test_doc_snapshot_gives_snapshot_rows_and_a_derived_quote() -> None:
    venue = Bybit(["BTCUSDT"], channels={"l2"})
    cols = feed(venue, book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 18521288))
    assert events(cols) == []  # the first snapshot is not a resync
    u = 18521288
    assert levels_of(cols) == [("bid", "16493.50", "0.006", True, u), ("bid", "16493.00", "0.100", True, u),
                               ("ask", "16611.00", "0.029", True, u), ("ask", "16612.00", "0.213", True, u)]
    first = rows(cols, "l2")[0]
    assert (first["time"], first["recv_time"], first["seq_first"], first["sym"], first["exchange"]) == (
        1672304484976 * MS, T0, 18521288, "BTCUSD", "bybit")
    assert quotes(cols) == [("16493.50", "0.006", "16611.00", "0.029", True)]
    assert state(venue) == (DOC_SNAP_BIDS, DOC_SNAP_ASKS)
    # Without cts (older servers) the time is the service's ts.
    cols = feed(venue, book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 18521300, cts=None))
    assert rows(cols, "l2")[0]["time"] == 1672304484978 * MS


def test_doc_delta_applied_to_a_hand_built_book() -> None:
    venue = Bybit(["BTCUSDT"], channels={"l2"})
    feed(venue, book_msg("snapshot", "BTCUSDT",
                         [("30247.20", "29.000"), ("30245.40", "0.100"), ("30240.00", "0.500"), ("30239.00", "1.000")],
                         [("30248.70", "0.200"), ("30249.30", "0.100"), ("30249.60", "0.300"), ("30253.00", "1.000")],
                         177400506))
    # The docs' delta example, verbatim.
    doc_delta = ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1687940967466,"data":{"s":"BTCUSDT",'
                 '"b":[["30247.20","30.028"],["30245.40","0.224"],["30242.10","1.593"],["30240.30","1.305"],'
                 '["30240.00","0"]],"a":[["30248.70","0"],["30249.30","0.892"],["30249.50","1.778"],'
                 '["30249.60","0"],["30251.90","2.947"],["30252.20","0.659"],["30252.50","4.591"]],'
                 '"u":177400507,"seq":66544703342},"cts":1687940967464}')
    cols = feed(venue, doc_delta)
    assert events(cols) == []
    assert [(s, p, z, snap) for s, p, z, snap, _ in levels_of(cols)] == [
        ("bid", "30247.20", "30.028", False), ("bid", "30245.40", "0.224", False), ("bid", "30242.10", "1.593", False),
        ("bid", "30240.30", "1.305", False), ("bid", "30240.00", "0", False),
        ("ask", "30248.70", "0", False), ("ask", "30249.30", "0.892", False), ("ask", "30249.50", "1.778", False),
        ("ask", "30249.60", "0", False), ("ask", "30251.90", "2.947", False), ("ask", "30252.20", "0.659", False),
        ("ask", "30252.50", "4.591", False)]
    assert {(r["seq_first"], r["seq_last"], r["time"]) for r in rows(cols, "l2")} == {
        (177400507, 177400507, 1687940967464 * MS)}
    assert state(venue) == (
        [("30247.20", "30.028"), ("30245.40", "0.224"), ("30242.10", "1.593"), ("30240.30", "1.305"),
         ("30239.00", "1.000")],
        [("30249.30", "0.892"), ("30249.50", "1.778"), ("30251.90", "2.947"), ("30252.20", "0.659"),
         ("30252.50", "4.591"), ("30253.00", "1.000")])
    assert quotes(cols) == [("30247.20", "30.028", "30249.30", "0.892", True)]


def two_books(channels: frozenset[str] = frozenset({"l2"})) -> Bybit:
    venue = Bybit(["BTCUSDT", "ETHUSDT"], channels=channels)
    feed(venue, book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 100),
         book_msg("snapshot", "ETHUSDT", [("1200.10", "1.5")], [("1200.20", "2")], 7))
    return venue


def test_deltas_delete_levels_skip_stale_ids_and_quote_only_on_top_change() -> None:
    venue = two_books()
    cols = feed(venue,
                book_msg("delta", "BTCUSDT", [("16493.00", "0")], [], 101),  # delete below the top: no quote
                book_msg("delta", "BTCUSDT", [("16490.00", "3")], [], 101),  # stale (u already applied): dropped
                book_msg("delta", "BTCUSDT", [], [("16611.00", "0")], 102))  # delete the best ask: new top
    assert events(cols) == []
    assert levels_of(cols) == [("bid", "16493.00", "0", False, 101), ("ask", "16611.00", "0", False, 102)]
    assert quotes(cols) == [("16493.50", "0.006", "16612.00", "0.213", True)]
    assert state(venue) == ([("16493.50", "0.006")], [("16612.00", "0.213")])


def test_a_gap_drops_that_book_alone_resubscribes_it_and_the_new_snapshot_is_a_resync() -> None:
    venue = two_books()
    # u=101 is lost: 102 is a gap.
    cols = feed(venue, book_msg("delta", "BTCUSDT", [("16494.00", "1")], [], 102))
    [gap] = rows(cols, "feed_event")
    assert (gap["kind"], gap["venue_sym"], gap["sym"], gap["expected"], gap["got"]) == (
        "gap", "BTCUSDT", "BTCUSD", 101, 102)
    assert "orderbook.50.BTCUSDT resubscribed" in gap["detail"]
    assert rows(cols, "l2") == [] and rows(cols, "quote") == []
    btc = venue.book("BTCUSDT")
    assert not btc.valid and btc.counts == (0, 0)
    assert venue.actions() == [
        Send('{"op":"unsubscribe","args":["orderbook.50.BTCUSDT"],"req_id":"unsub-BTCUSDT"}'),
        Send('{"op":"subscribe","args":["orderbook.50.BTCUSDT"],"req_id":"resub-BTCUSDT"}'),
    ]
    assert venue.actions() == []  # each action once

    # Until the new snapshot, BTCUSDT deltas are ignored (no second gap); ETHUSDT carries on.
    cols = feed(venue, book_msg("delta", "BTCUSDT", [("16495.00", "1")], [], 104),
                book_msg("delta", "ETHUSDT", [], [("1200.20", "3")], 8))
    assert events(cols) == [] and venue.actions() == []
    assert levels_of(cols) == [("ask", "1200.20", "3", False, 8)]

    new_bids, new_asks = [("16494.00", "1"), ("16493.00", "0.100")], [("16610.50", "0.500")]
    cols = feed(venue, ack("unsub-BTCUSDT", op="unsubscribe", ret_msg="unsubscribe"), ack("resub-BTCUSDT"),
                book_msg("snapshot", "BTCUSDT", new_bids, new_asks, 300),
                book_msg("delta", "BTCUSDT", [("16494.00", "2")], [], 301))
    assert events(cols) == [("subscribed", "BTCUSDT"), ("resync", "BTCUSDT")]
    assert "after gap: expected u=101, got u=102" in rows(cols, "feed_event")[1]["detail"]
    assert levels_of(cols) == [("bid", "16494.00", "1", True, 300), ("bid", "16493.00", "0.100", True, 300),
                               ("ask", "16610.50", "0.500", True, 300), ("bid", "16494.00", "2", False, 301)]
    assert state(venue) == ([("16494.00", "2"), ("16493.00", "0.100")], new_asks)
    assert state(venue, "ETHUSDT") == ([("1200.10", "1.5")], [("1200.20", "3")])


def test_a_delta_before_any_snapshot_is_a_gap_with_no_expected_id() -> None:
    venue = Bybit(["BTCUSDT"], channels={"l2"})
    cols = feed(venue, book_msg("delta", "BTCUSDT", [("1", "1")], [], 55))
    [gap] = rows(cols, "feed_event")
    assert (gap["kind"], gap["expected"], gap["got"]) == ("gap", None, 55)
    assert "before any snapshot" in gap["detail"] and len(venue.actions()) == 2


def test_resent_snapshot_replaces_a_healthy_book_silently_and_u1_is_a_restart() -> None:
    venue = two_books()
    # Bybit re-sends a snapshot after a problem on its side: the book is replaced, no event.
    cols = feed(venue, book_msg("snapshot", "BTCUSDT", [("16490.00", "1")], [("16600.00", "2")], 150))
    assert events(cols) == []
    assert levels_of(cols) == [("bid", "16490.00", "1", True, 150), ("ask", "16600.00", "2", True, 150)]
    assert state(venue) == ([("16490.00", "1")], [("16600.00", "2")])
    # ...and the deltas continue from its u.
    feed(venue, book_msg("delta", "BTCUSDT", [("16491.00", "1")], [], 151))
    assert state(venue)[0] == [("16491.00", "1"), ("16490.00", "1")]
    # u=1: the service restarted, and the message is a full book to overwrite with, whatever its type.
    cols = feed(venue, book_msg("delta", "BTCUSDT", [("16480.00", "4")], [("16500.00", "5")], 1),
                book_msg("delta", "BTCUSDT", [("16481.00", "1")], [], 2))
    assert events(cols) == []
    assert [lv[3] for lv in levels_of(cols)] == [True, True, False]
    assert state(venue) == ([("16481.00", "1"), ("16480.00", "4")], [("16500.00", "5")])


def test_truncation_to_the_subscribed_depth_publishes_the_level_pushed_out() -> None:
    venue = Bybit(["BTCUSDT"], channels={"l2"})
    bids = [(f"{100 - i}.0", "1") for i in range(50)]  # 100.0 .. 51.0: full at depth 50
    feed(venue, book_msg("snapshot", "BTCUSDT", bids, [("101.0", "1")], 10))
    cols = feed(venue, book_msg("delta", "BTCUSDT", [("100.5", "2")], [], 11))
    assert levels_of(cols) == [("bid", "100.5", "2", False, 11), ("bid", "51.0", "0", False, 11)]
    assert venue.book("BTCUSDT").counts == (50, 1)


def test_crossed_book_is_reported_once_per_crossing() -> None:
    venue = Bybit(["BTCUSDT"], channels={"l2"})
    feed(venue, book_msg("snapshot", "BTCUSDT", [("100", "1")], [("101", "1")], 1000))
    cols = feed(venue,
                book_msg("delta", "BTCUSDT", [("101.5", "1")], [], 1001),
                book_msg("delta", "BTCUSDT", [("101.5", "2")], [], 1002),
                book_msg("delta", "BTCUSDT", [("101.5", "0")], [], 1003),
                book_msg("delta", "BTCUSDT", [("101", "1")], [], 1004))
    assert [k for k, _ in events(cols)] == ["crossed", "crossed"]
    assert "locked" in rows(cols, "feed_event")[1]["detail"]
    assert venue.book("BTCUSDT").valid  # crossing is reported, not treated as a bad book


@pytest.mark.parametrize("level", [["abc", "1"], ["NaN", "1"], ["-1", "1"], ["Infinity", "1"], ["1", "-2"],
                                   [1, "1"], ["1"], "12", ["1", "1", "1"]])
def test_malformed_level_is_one_bad_message_and_resyncs_that_book(level: Any) -> None:
    venue = two_books()
    raw = json.loads(book_msg("delta", "BTCUSDT", [], [], 101))
    raw["data"]["b"] = [["16493.50", "1"], level]
    cols = feed(venue, json.dumps(raw))
    assert events(cols) == [("bad_message", "BTCUSDT")]
    assert rows(cols, "l2") == [] and rows(cols, "quote") == []
    assert not venue.book("BTCUSDT").valid and venue.book("ETHUSDT").valid
    assert [json.loads(a.text)["op"] for a in venue.actions() if isinstance(a, Send)] == ["unsubscribe", "subscribe"]


def test_disconnect_invalidates_every_book_drops_queued_sends_and_reconnect_snapshot_resyncs() -> None:
    venue = Bybit(["BTCUSDT", "ETHUSDT"])
    feed(venue, book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 100),
         level1(("16493.50", "0.006"), ("16611.00", "0.029"), 100))
    feed(venue, book_msg("delta", "BTCUSDT", [], [], 105))  # a gap queues a resubscription...
    out = Out("bybit")
    venue.on_disconnect(T0, out)
    assert out.take() == {}
    assert venue.actions() == []  # ...that the old connection took with it: subscribe() covers it
    assert not venue.book("BTCUSDT").valid and not venue.book("ETHUSDT").valid
    assert feed(venue, book_msg("delta", "BTCUSDT", [("1", "1")], [], 106)) == {}  # stale, before the snapshot
    cols = feed(venue, book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 500),
                book_msg("snapshot", "ETHUSDT", [("1200.10", "1.5")], [("1200.20", "2")], 9),
                level1(("16493.50", "0.006"), ("16611.00", "0.029"), 500))
    # BTCUSDT was live before the drop: a resync. ETHUSDT never had a book: its first snapshot is not.
    assert events(cols) == [("resync", "BTCUSDT")]
    assert "after reconnect" in rows(cols, "feed_event")[0]["detail"]
    assert state(venue) == (DOC_SNAP_BIDS, DOC_SNAP_ASKS)
    assert [d for *_, d in quotes(cols)] == [True, True, False]  # the native quote is published again too


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "kind"), [
    (b"\x00\xff garbage", "bad_message"),
    ("{not json", "bad_message"),
    ("[1, 2]", "bad_message"),
    ('"pong"', "bad_message"),
    ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1}', "bad_message"),  # no data
    ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":{"T":1}}', "bad_message"),  # not a list
    ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1}]}', "bad_message"),  # fields missing
    ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[7]}', "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"update","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":1}}',
     "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[]}}', "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":"101"}}',
     "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":-3}}',
     "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":{},"a":[],"u":101}}',
     "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"s":"BTCUSDT","b":[],"a":[],"u":101}}',
     "bad_message"),  # no time
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1.5,"data":{"s":"BTCUSDT","b":[],"a":[],"u":101}}',
     "bad_message"),
    ('{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"ETHUSDT","b":[],"a":[],"u":101}}',
     "bad_message"),
    ('{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["abc","1"]],"a":[],'
     '"u":5}}', "bad_message"),
    ('{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[["1","-1"]],'
     '"u":5}}', "bad_message"),
    ('{"success":"yes","op":"subscribe"}', "bad_message"),
    ('{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":{}}', "unknown_message"),
    ('{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1,"data":{}}', "unknown_message"),
    ('{"topic":["publicTrade.BTCUSDT"]}', "unknown_message"),
    ('{"op":"auth","success":true}', "unknown_message"),
    ('{"foo":1}', "unknown_message"),
])
def test_bad_input_is_one_event_and_no_row(raw: str | bytes, kind: str) -> None:
    venue = two_books(CHANNELS)
    venue.actions()
    cols = feed(venue, raw)
    assert set(cols) == {"feed_event"}
    [ev] = rows(cols, "feed_event")
    assert ev["kind"] == kind and ev["detail"] and len(ev["detail"]) < 500
    assert ev["exchange"] == "bybit"


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(
                     st.sampled_from(["topic", "type", "data", "s", "b", "a", "u", "ts", "cts", "op", "success",
                                      "req_id", "T", "S", "p", "v", "i", "seq"]), c, max_size=5),
                 max_leaves=12).map(json.dumps),
    st.sampled_from(["orderbook.50.BTCUSDT", "orderbook.1.BTCUSDT", "publicTrade.BTCUSDT"]).flatmap(
        lambda topic: st.dictionaries(st.sampled_from(["type", "data", "ts", "cts"]),
                                      st.none() | st.integers() | st.text(max_size=4) | st.lists(st.integers()),
                                      max_size=4).map(lambda d: json.dumps({"topic": topic, **d}))),
))
def test_no_input_raises(raw: str | bytes) -> None:
    venue = two_books(CHANNELS)
    out = Out("bybit")
    venue.on_message(raw, T0, out)
    venue.on_message(book_msg("delta", "BTCUSDT", [], [], 101), T0, out)
    out.take()


# -- end to end: a local Bybit -> Feed(Bybit) -> a real TP -> a subscriber ---------------------------

Collect = Callable[..., Collector]
SUB = '{"op":"subscribe","args":["publicTrade.BTCUSDT","orderbook.1.BTCUSDT","orderbook.50.BTCUSDT",' \
      '"publicTrade.ETHUSDT","orderbook.1.ETHUSDT","orderbook.50.ETHUSDT"],"req_id":"sub-0"}'
UNSUB_BTC = '{"op":"unsubscribe","args":["orderbook.50.BTCUSDT"],"req_id":"unsub-BTCUSDT"}'
RESUB_BTC = '{"op":"subscribe","args":["orderbook.50.BTCUSDT"],"req_id":"resub-BTCUSDT"}'


def tp_rows(c: Collector, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` the subscriber got, without the TP's own time."""
    out: list[dict[str, Any]] = []
    for m in c.messages:
        if m.table == table:
            out += m.data.drop_columns(["tp_time"]).to_pylist()
    return out


async def until(pred: Callable[[], Any], what: str, feed_task: asyncio.Task[Any], timeout: float = 10.0) -> None:
    """Wait for ``pred()``; fail at once if the feed task ended (with its exception)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if feed_task.done():
            feed_task.result()
            raise AssertionError(f"the feed stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def test_end_to_end_rows_bad_frames_and_a_gap_resynced_through_the_shell(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    server: VenueServer | None = None

    def sent(text: str) -> bool:
        return server is not None and bool(server.received) and text in server.received[0]

    script: list[Step] = [
        ack("sub-0"),
        trade_msg(trade()),
        trade_msg(trade(sym="ETHUSDT", side="Sell", price="1200.15", size="0.5", tid="2290000000000000001",
                        seq=44), sym="ETHUSDT"),
        trade_msg(trade(price="NaN")),  # bad: no row
        level1(("16493.50", "0.006"), ("16611.00", "0.029"), 100),
        level1(("16493.50", "0.006"), ("16611.00", "0.029"), 100),  # unchanged re-push: no row
        book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 100),
        book_msg("snapshot", "ETHUSDT", [("1200.10", "1.5")], [("1200.20", "2")], 7),
        book_msg("delta", "BTCUSDT", [("16493.00", "0")], [("16610.50", "0.500")], 101),
        "this is not json",
        book_msg("delta", "BTCUSDT", [("16494.00", "1")], [], 103),  # 102 lost: gap
        book_msg("delta", "ETHUSDT", [], [("1200.20", "3")], 8),  # the other book is untouched
        Until(lambda: sent(RESUB_BTC)),
        ack("unsub-BTCUSDT", op="unsubscribe", ret_msg="unsubscribe"),
        book_msg("delta", "BTCUSDT", [("16495.00", "1")], [], 104),  # old subscription, in flight: ignored
        ack("resub-BTCUSDT"),
        book_msg("snapshot", "BTCUSDT", [("16494.00", "1"), ("16493.00", "0.100")], [("16610.50", "0.500")], 300),
        book_msg("delta", "BTCUSDT", [("16494.00", "2")], [], 301),
    ]

    async def main() -> Feed:
        nonlocal server
        async with VenueServer([script]) as server:
            feed = Feed(Bybit(["BTCUSDT", "ETHUSDT"]), FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: any(r["seq_last"] == 301 for r in tp_rows(sub, "l2")), "the last delta", task)
            feed.stop()
            stats = await task
        assert stats["messages"] == len([s for s in script if isinstance(s, str)])
        return feed

    feed = asyncio.run(main())
    assert server is not None and server.received == [[SUB, UNSUB_BTC, RESUB_BTC]]
    trades = tp_rows(sub, "trade")
    assert [(t["sym"], t["venue_sym"], t["exchange"], t["price"], t["size"], t["side"], t["trade_id"], t["seq"])
            for t in trades] == [
        ("BTCUSD", "BTCUSDT", "bybit", 16578.5, 0.001, "buy", "20f43950-d8dd-5b31-9112-a178eb6023af", None),
        ("ETHUSD", "ETHUSDT", "bybit", 1200.15, 0.5, "sell", "2290000000000000001", 44)]
    assert trades[0]["time"].timestamp() * 1000 == 1672304486865
    assert [(q["venue_sym"], q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"])
            for q in tp_rows(sub, "quote")] == [
        ("BTCUSDT", 16493.5, 0.006, 16611.0, 0.029, False),  # level 1: native
        ("BTCUSDT", 16493.5, 0.006, 16611.0, 0.029, True),  # from the books
        ("ETHUSDT", 1200.1, 1.5, 1200.2, 2.0, True),
        ("BTCUSDT", 16493.5, 0.006, 16610.5, 0.5, True),
        ("ETHUSDT", 1200.1, 1.5, 1200.2, 3.0, True),
        ("BTCUSDT", 16494.0, 1.0, 16610.5, 0.5, True),
        ("BTCUSDT", 16494.0, 2.0, 16610.5, 0.5, True)]
    l2 = [(r["venue_sym"], r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"])
          for r in tp_rows(sub, "l2")]
    assert l2 == [
        ("BTCUSDT", "bid", 16493.5, 0.006, True, 100, 100), ("BTCUSDT", "bid", 16493.0, 0.1, True, 100, 100),
        ("BTCUSDT", "ask", 16611.0, 0.029, True, 100, 100), ("BTCUSDT", "ask", 16612.0, 0.213, True, 100, 100),
        ("ETHUSDT", "bid", 1200.1, 1.5, True, 7, 7), ("ETHUSDT", "ask", 1200.2, 2.0, True, 7, 7),
        ("BTCUSDT", "bid", 16493.0, 0.0, False, 101, 101), ("BTCUSDT", "ask", 16610.5, 0.5, False, 101, 101),
        ("ETHUSDT", "ask", 1200.2, 3.0, False, 8, 8),
        ("BTCUSDT", "bid", 16494.0, 1.0, True, 300, 300), ("BTCUSDT", "bid", 16493.0, 0.1, True, 300, 300),
        ("BTCUSDT", "ask", 16610.5, 0.5, True, 300, 300),
        ("BTCUSDT", "bid", 16494.0, 2.0, False, 301, 301)]
    evs = tp_rows(sub, "feed_event")
    assert [(e["kind"], e["venue_sym"]) for e in evs] == [
        ("connect", None), ("subscribed", None), ("bad_message", "BTCUSDT"), ("bad_message", None),
        ("gap", "BTCUSDT"), ("subscribed", "BTCUSDT"), ("resync", "BTCUSDT")]
    assert "'NaN' is not a positive finite decimal" in evs[2]["detail"]
    assert (evs[4]["expected"], evs[4]["got"]) == (102, 103)
    assert all(e["exchange"] == "bybit" for e in evs)
    venue = feed.venue
    assert isinstance(venue, Bybit)
    assert state(venue) == ([("16494.00", "2"), ("16493.00", "0.100")], [("16610.50", "0.500")])
    assert state(venue, "ETHUSDT") == ([("1200.10", "1.5")], [("1200.20", "3")])


def test_end_to_end_dropped_connection_reconnects_resubscribes_and_resyncs(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    first: list[Step] = [ack("sub-0"), book_msg("snapshot", "BTCUSDT", DOC_SNAP_BIDS, DOC_SNAP_ASKS, 100),
                         book_msg("delta", "BTCUSDT", [("16493.00", "0.300")], [], 101), Drop()]
    second: list[Step] = [ack("sub-0"),
                          book_msg("snapshot", "BTCUSDT", [("16500.00", "1")], [("16501.00", "2")], 900),
                          book_msg("delta", "BTCUSDT", [("16499.00", "3")], [("16501.00", "0")], 901)]

    async def main() -> tuple[Feed, VenueServer]:
        async with VenueServer([first, second]) as server:
            feed = Feed(Bybit(["BTCUSDT"], channels={"l2"}), FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: any(r["seq_last"] == 901 for r in tp_rows(sub, "l2")), "the last delta", task)
            feed.stop()
            await task
        return feed, server

    feed, server = asyncio.run(main())
    sub_l2 = '{"op":"subscribe","args":["orderbook.50.BTCUSDT"],"req_id":"sub-0"}'
    assert server.received == [[sub_l2], [sub_l2]]  # subscribed again on the new connection
    assert [e["kind"] for e in tp_rows(sub, "feed_event")] == [
        "connect", "subscribed", "disconnect", "reconnect", "subscribed", "resync"]
    after = [(r["side"], r["price"], r["size"], r["is_snapshot"]) for r in tp_rows(sub, "l2") if r["seq_last"] >= 900]
    assert after == [("bid", 16500.0, 1.0, True), ("ask", 16501.0, 2.0, True), ("bid", 16499.0, 3.0, False),
                     ("ask", 16501.0, 0.0, False)]
    venue = feed.venue
    assert isinstance(venue, Bybit)
    assert state(venue) == ([("16500.00", "1"), ("16499.00", "3")], [])
    assert feed.stats["reconnects"] == 1


class QuickPingBybit(Bybit):
    keepalive = 0.2


def test_end_to_end_keepalive_ping_and_its_pong_make_no_rows() -> None:
    pong = '{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}'
    server: VenueServer | None = None

    def pinged() -> bool:
        return server is not None and '{"op":"ping"}' in server.received[0]

    async def main() -> Feed:
        nonlocal server
        async with VenueServer([[ack("sub-0"), Until(pinged), pong]]) as server:
            feed = Feed(QuickPingBybit(["BTCUSDT"], channels={"trade"}), FeedConfig(None, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: feed.stats["messages"] == 2, "the pong", task)
            feed.stop()
            await task
        return feed

    feed = asyncio.run(main())
    assert feed.stats["events"] == {"connect": 1, "subscribed": 1}
    assert sum(feed.stats["rows"].values()) == 2  # the two events; the pong gave nothing
