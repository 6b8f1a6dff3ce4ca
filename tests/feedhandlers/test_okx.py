"""OKX v5 adapter (``feedhandlers/okx.py``): literal messages, then end to end through the shell to a real TP.

Message shapes are OKX's documented v5 formats (okx.com/docs-v5/en: "WS / Trades channel",
"WS / Order book channel" with its "Sequence ID" rules, "Notification", the error codes);
the trade and bbo-tbt messages are the docs' own examples. Book checksums are computed by
:func:`crc`, written here from the docs' algorithm independently of ``feedhandlers.book``
and anchored on OKX's worked example (-1881014294).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.normalize import Out
from feedhandlers.okx import Okx
from feedhandlers.shell import Feed, FeedConfig
from feedhandlers.venue import Reconnect, Rest, Send
from tests.conftest import Collector, TPProcess
from tests.feedhandlers.venue_server import Drop, RestServer, Step, Until, VenueServer

T0 = 1_700_000_000_000_000_000  # a receive time, ns
TS = "1597026383085"
TS_NS = 1597026383085 * 1_000_000

Levels = list[tuple[str, str]]
Cols = dict[str, dict[str, list[Any]]]


def crc(bids: Levels, asks: Levels) -> int:
    """The docs' checksum: the best 25 bids (high to low) and asks (low to high) interleaved
    bid, ask, bid, ask... as "price:size" joined by ':', the missing side left out; signed CRC32."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    value = zlib.crc32(":".join(parts).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def levels(lv: Levels) -> list[list[str]]:
    return [[p, s, "0", "1"] for p, s in lv]  # [price, size, deprecated "0", number of orders]


def books(action: str, inst: str, bids: Levels, asks: Levels, seq: int, prev: int, checksum: int | None = 0,
          ts: str = TS) -> str:
    """A ``books`` push; ``checksum`` 0 is what OKX sends since it retired the field, None leaves it out."""
    entry: dict[str, Any] = {"asks": levels(asks), "bids": levels(bids), "ts": ts}
    if checksum is not None:
        entry["checksum"] = checksum
    entry |= {"prevSeqId": prev, "seqId": seq}
    return json.dumps({"arg": {"channel": "books", "instId": inst}, "action": action, "data": [entry]})


def snap(inst: str, bids: Levels, asks: Levels, seq: int, checksum: int | None = 0) -> str:
    return books("snapshot", inst, bids, asks, seq, -1, checksum)


def ack(channel: str, inst: str, event: str = "subscribe") -> str:
    return json.dumps({"event": event, "arg": {"channel": channel, "instId": inst}, "connId": "a4d3ae55"})


def trade(inst: str, trade_id: str, px: str, sz: str, side: str, ts: str = "1630048897897") -> str:
    return json.dumps({"arg": {"channel": "trades", "instId": inst}, "data": [
        {"instId": inst, "tradeId": trade_id, "px": px, "sz": sz, "side": side, "ts": ts, "count": "1",
         "source": "0", "seqId": 1234}]})


def feed(venue: Okx, *msgs: str | bytes) -> Cols:
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


def state(venue: Okx, inst: str = "BTC-USDT") -> tuple[Levels, Levels]:
    return venue.book(inst).top_raw(10**6)


def unsub_sub(inst: str) -> list[Send]:
    arg = f'[{{"channel":"books","instId":"{inst}"}}]'
    return [Send(f'{{"op":"unsubscribe","args":{arg}}}'), Send(f'{{"op":"subscribe","args":{arg}}}')]


# -- subscription, keepalive --------------------------------------------------------------------


def test_subscribe_ping_and_endpoints() -> None:
    venue = Okx(["BTC-USDT", "BTC-USDT-SWAP"])
    assert (venue.name, venue.ws_url, venue.rest_url) == ("okx", "wss://ws.okx.com:8443/ws/v5/public",
                                                          "https://www.okx.com")
    [sub] = venue.subscribe()
    assert json.loads(sub) == {"op": "subscribe", "args": [
        {"channel": c, "instId": s} for c in ("trades", "bbo-tbt", "books") for s in ("BTC-USDT", "BTC-USDT-SWAP")]}
    # OKX closes a connection after 30 s without traffic; the shell pings after `keepalive` of quiet.
    assert venue.ping() == "ping" and venue.keepalive is not None and venue.keepalive < 30
    assert json.loads(Okx(["ETH-USDT"], channels={"l2"}).subscribe()[0])["args"] == [
        {"channel": "books", "instId": "ETH-USDT"}]
    with pytest.raises(ValueError, match="unknown channel"):
        Okx(["BTC-USDT"], channels={"candles"})
    with pytest.raises(ValueError, match="at least one symbol"):
        Okx([])


# -- trades and bbo-tbt -------------------------------------------------------------------------

# okx.com/docs-v5/en "WS / Trades channel" push data example, verbatim.
TRADE_DOC = ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474",'
             '"px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3","source":"0",'
             '"seqId":1234}]}')


def test_trades_doc_example_and_the_taker_side() -> None:
    venue = Okx(["BTC-USDT", "BTC-USDT-SWAP"], channels={"trade"})
    sell = trade("BTC-USDT-SWAP", "130639475", "42219.8", "12", "sell", "1630048897900")
    cols = feed(venue, TRADE_DOC, sell)
    assert set(cols) == {"trade"}
    got = [(r["sym"], r["venue_sym"], r["exchange"], r["price"], r["size"], r["side"], r["trade_id"], r["seq"],
            r["time"], r["recv_time"]) for r in rows(cols, "trade")]
    assert got == [
        ("BTCUSD", "BTC-USDT", "okx", "42219.9", "0.12060306", "buy", "130639474", 130639474,
         1630048897897_000_000, T0),
        # "side: Trade side of taker": a sell is the aggressor selling, as it stands.
        ("BTCUSD-SWAP", "BTC-USDT-SWAP", "okx", "42219.8", "12", "sell", "130639475", 130639475,
         1630048897900_000_000, T0 + 1),
    ]


def test_a_bad_trade_rejects_its_whole_push() -> None:
    venue = Okx(["BTC-USDT"], channels={"trade"})
    good = json.loads(TRADE_DOC)["data"][0]
    for bad in ({"side": "up"}, {"px": "-1"}, {"sz": "0"}, {"ts": "yesterday"}, {"tradeId": 7},
                {"instId": "ETH-USDT"}):
        msg = {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [good, {**good, **bad}]}
        cols = feed(venue, json.dumps(msg))
        assert rows(cols, "trade") == [], bad
        assert events(cols) == [("bad_message", None)], bad


# okx.com/docs-v5/en "WS / Order book channel", bbo-tbt push example.
BBO_DOC = ('{"arg":{"channel":"bbo-tbt","instId":"BCH-USDT-SWAP"},"data":[{"asks":[["111.06","55154","0","2"]],'
           '"bids":[["111.05","57745","0","2"]],"ts":"1670324386802","seqId":363996337}]}')


def test_bbo_tbt_doc_example_is_a_native_quote() -> None:
    venue = Okx(["BCH-USDT-SWAP"], channels={"quote"})
    [sub] = venue.subscribe()
    assert json.loads(sub)["args"] == [{"channel": "bbo-tbt", "instId": "BCH-USDT-SWAP"}]
    cols = feed(venue, BBO_DOC)
    [q] = rows(cols, "quote")
    assert (q["sym"], q["venue_sym"], q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"],
            q["time"], q["recv_time"]) == ("BCHUSD-SWAP", "BCH-USDT-SWAP", "111.05", "57745", "111.06", "55154",
                                           False, 1670324386802_000_000, T0)
    assert set(cols) == {"quote"}


# -- books: snapshot, deltas, checksum, sequence ------------------------------------------------

# OKX's checksum worked examples (docs-v5 "Checksum"): an even book, then one with more asks.
EVEN_BIDS, EVEN_ASKS = [("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]
ODD_BIDS, ODD_ASKS = [("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]


def test_docs_checksum_examples_through_on_message() -> None:
    assert crc(EVEN_BIDS, EVEN_ASKS) == -1881014294  # the hand-written reference agrees with the docs
    assert crc(ODD_BIDS, ODD_ASKS) == 831078360
    venue = Okx(["BTC-USDT"], channels={"l2"})
    cols = feed(venue, snap("BTC-USDT", EVEN_BIDS, EVEN_ASKS, 10, -1881014294),
                books("update", "BTC-USDT", [("3366", "0")], [("3372", "8")], 15, 10, 831078360))
    assert events(cols) == []
    assert state(venue) == (ODD_BIDS, ODD_ASKS)
    assert venue.book("BTC-USDT").valid and venue.actions() == []


SNAP_BIDS = [("100.0", "1.5"), ("99.5", "2"), ("99.0", "3")]
SNAP_ASKS = [("100.5", "1"), ("101.0", "0.25"), ("102.0", "7")]


def snapshot(venue: Okx, inst: str = "BTC-USDT", bids: Levels = SNAP_BIDS, asks: Levels = SNAP_ASKS,
             seq: int = 10) -> Cols:
    cols = feed(venue, snap(inst, bids, asks, seq, crc(bids, asks)))
    assert [k for k, _ in events(cols)] in ([], ["resync"])
    return cols


def test_snapshot_then_deltas_match_a_hand_computed_book() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    cols = snapshot(venue)
    l2 = rows(cols, "l2")
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"]) for r in l2] == [
        *[("bid", p, s, True, 10, 10) for p, s in SNAP_BIDS], *[("ask", p, s, True, 10, 10) for p, s in SNAP_ASKS]]
    assert {(r["sym"], r["venue_sym"], r["time"], r["recv_time"]) for r in l2} == {("BTCUSD", "BTC-USDT", TS_NS, T0)}
    [q] = rows(cols, "quote")
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"]) == (
        "100.0", "1.5", "100.5", "1", True)

    # The docs' sequence example: snapshot 10; update 15 (prev 10); a no-change update 15 (prev 15);
    # a maintenance reset to 3 (prev 15); a normal update 5 (prev 3). Every one is applied.
    bids1 = [("100.0", "1.5"), ("99.0", "3"), ("98.0", "4")]  # 99.5 deleted, 98.0 added
    asks1 = [("100.5", "1"), ("101.0", "0.25"), ("102.0", "7"), ("103.0", "1")]
    u1 = books("update", "BTC-USDT", [("99.5", "0"), ("98.0", "4")], [("103.0", "1")], 15, 10, crc(bids1, asks1))
    keepalive = books("update", "BTC-USDT", [], [], 15, 15, crc(bids1, asks1))
    asks2 = [("100.5", "0.5"), *asks1[1:]]  # best ask size change: a new derived quote
    reset = books("update", "BTC-USDT", [], [("100.5", "0.5")], 3, 15, crc(bids1, asks2))
    bids3 = [("100.0", "1.5"), ("99.0", "3")]  # 98.0 deleted again; a delete of an absent level is a no-op
    u3 = books("update", "BTC-USDT", [("98.0", "0"), ("97.0", "0")], [], 5, 3, crc(bids3, asks2))
    cols = feed(venue, u1, keepalive, reset, u3)
    assert events(cols) == [] and venue.actions() == []
    assert [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"])
            for r in rows(cols, "l2")] == [
        ("bid", "99.5", "0", False, 11, 15), ("bid", "98.0", "4", False, 11, 15), ("ask", "103.0", "1", False, 11, 15),
        ("ask", "100.5", "0.5", False, 3, 3),  # the reset: seqId below prevSeqId
        ("bid", "98.0", "0", False, 4, 5), ("bid", "97.0", "0", False, 4, 5)]
    [q] = rows(cols, "quote")  # only the reset moved the top
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == ("100.0", "1.5", "100.5", "0.5")
    assert state(venue) == (bids3, asks2)
    assert venue.book("BTC-USDT").seq == 5


def test_deleting_the_best_level_moves_the_derived_quote() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    snapshot(venue)
    bids = SNAP_BIDS[1:]
    cols = feed(venue, books("update", "BTC-USDT", [("100.0", "0")], [], 11, 10, crc(bids, SNAP_ASKS)))
    assert [(r["side"], r["price"], r["size"]) for r in rows(cols, "l2")] == [("bid", "100.0", "0")]
    [q] = rows(cols, "quote")
    assert (q["bid_price"], q["bid_size"]) == ("99.5", "2")
    assert state(venue) == (bids, SNAP_ASKS)


def test_books_keep_all_400_levels_and_the_checksum_covers_the_top_25() -> None:
    bids = [(str(10_000 - i), "1.5") for i in range(400)]
    asks = [(str(10_001 + i), "2.25") for i in range(400)]
    venue = Okx(["BTC-USDT"], channels={"l2"})
    cols = feed(venue, snap("BTC-USDT", bids, asks, 1, crc(bids, asks)))
    assert events(cols) == [] and len(rows(cols, "l2")) == 800
    assert venue.book("BTC-USDT").counts == (400, 400)
    # A new best bid makes 401: OKX sends no delete for the 400th, and nothing is truncated.
    bids2 = [("10000.5", "3"), *bids]
    cols = feed(venue, books("update", "BTC-USDT", [("10000.5", "3")], [], 2, 1, crc(bids2, asks)))
    assert events(cols) == [] and venue.book("BTC-USDT").counts == (401, 400)
    assert state(venue) == (bids2, asks)
    # A change below the top 25 leaves the checksum as it was.
    cols = feed(venue, books("update", "BTC-USDT", [("9700", "9")], [], 3, 2, crc(bids2, asks)))
    assert events(cols) == [] and ("9700", "9") in state(venue)[0]


def two_books() -> Okx:
    venue = Okx(["BTC-USDT", "ETH-USDT"], channels={"l2"})
    snapshot(venue, "BTC-USDT")
    snapshot(venue, "ETH-USDT", [("2000.00", "1.0")], [("2001.00", "2.0")], seq=500)
    return venue


def test_dropped_update_is_a_gap_and_only_that_book_resyncs() -> None:
    venue = two_books()
    lost = books("update", "BTC-USDT", [("99.5", "5")], [], 12, 10)
    assert lost  # never delivered
    cols = feed(venue, books("update", "BTC-USDT", [("100.0", "9")], [], 14, 12))
    [ev] = rows(cols, "feed_event")
    assert (ev["kind"], ev["venue_sym"], ev["sym"], ev["expected"], ev["got"]) == ("gap", "BTC-USDT", "BTCUSD", 10, 12)
    assert "prevSeqId 12" in ev["detail"] and "seqId 10" in ev["detail"]
    assert rows(cols, "l2") == [] and rows(cols, "quote") == []  # nothing from the message after the hole
    btc = venue.book("BTC-USDT")
    assert not btc.valid and btc.counts == (0, 0)
    assert venue.actions() == unsub_sub("BTC-USDT")
    assert venue.actions() == []  # each action once

    # Until the new snapshot: BTC-USDT updates are dropped silently, ETH-USDT carries on.
    cols = feed(venue, books("update", "BTC-USDT", [("99.0", "1")], [], 16, 14),
                books("update", "ETH-USDT", [("2000.00", "1.5")], [], 501, 500))
    assert events(cols) == [] and venue.actions() == []
    assert {r["venue_sym"] for r in rows(cols, "l2")} == {"ETH-USDT"}

    # The resubscription: acks, then a snapshot that makes the book right again (a resync event).
    new_bids, new_asks = [("100.0", "9"), ("99.5", "5")], [("100.5", "1")]
    cols = feed(venue, ack("books", "BTC-USDT", "unsubscribe"), ack("books", "BTC-USDT"),
                snap("BTC-USDT", new_bids, new_asks, 20, crc(new_bids, new_asks)),
                books("update", "BTC-USDT", [], [("100.5", "2")], 21, 20))
    assert events(cols) == [("subscribed", "BTC-USDT"), ("resync", "BTC-USDT")]
    assert "gap: prevSeqId 12 after seqId 10" in rows(cols, "feed_event")[1]["detail"]
    assert btc.valid and state(venue) == (new_bids, [("100.5", "2")])
    assert len(rows(cols, "l2")) == 4 and len(rows(cols, "quote")) == 2


def test_corrupted_checksum_on_an_update_or_a_snapshot_resubscribes_that_book() -> None:
    venue = two_books()
    good = crc([("100.0", "2"), *SNAP_BIDS[1:]], SNAP_ASKS)
    cols = feed(venue, books("update", "BTC-USDT", [("100.0", "2")], [], 11, 10, good ^ 0x10))
    [ev] = rows(cols, "feed_event")
    assert (ev["kind"], ev["venue_sym"], ev["expected"], ev["got"]) == ("checksum", "BTC-USDT", good ^ 0x10, good)
    assert "mismatch" in ev["detail"] and rows(cols, "l2") == [] and rows(cols, "quote") == []
    assert not venue.book("BTC-USDT").valid and venue.book("ETH-USDT").valid
    assert venue.actions() == unsub_sub("BTC-USDT")
    # The new snapshot is corrupted too: checked, dropped and resubscribed again; then a good one.
    cols = feed(venue, snap("BTC-USDT", SNAP_BIDS, SNAP_ASKS, 30, crc(SNAP_BIDS, SNAP_ASKS) + 1))
    assert events(cols) == [("checksum", "BTC-USDT")] and rows(cols, "l2") == []
    assert venue.actions() == unsub_sub("BTC-USDT")
    cols = feed(venue, snap("BTC-USDT", SNAP_BIDS, SNAP_ASKS, 31, crc(SNAP_BIDS, SNAP_ASKS)))
    assert events(cols) == [("resync", "BTC-USDT")] and len(rows(cols, "l2")) == 6


def test_a_zero_or_missing_checksum_is_not_checked_and_seq_ids_guard_the_book() -> None:
    # OKX retired the checksum: the field stays, always 0; the changelog also foresees its removal.
    venue = Okx(["BTC-USDT"], channels={"l2"})
    cols = feed(venue, snap("BTC-USDT", SNAP_BIDS, SNAP_ASKS, 10, 0),
                books("update", "BTC-USDT", [("99.0", "4")], [], 11, 10, None),
                books("update", "BTC-USDT", [("99.0", "5")], [], 12, 11, 0))
    assert events(cols) == [] and state(venue) == ([("100.0", "1.5"), ("99.5", "2"), ("99.0", "5")], SNAP_ASKS)
    cols = feed(venue, books("update", "BTC-USDT", [("99.0", "6")], [], 14, 13, None))
    assert events(cols) == [("gap", "BTC-USDT")]


def test_malformed_level_is_a_bad_message_and_resyncs_that_book() -> None:
    venue = two_books()
    cols = feed(venue, books("update", "BTC-USDT", [("99.0", "1"), ("abc", "1")], [], 11, 10))
    [ev] = rows(cols, "feed_event")
    assert (ev["kind"], ev["venue_sym"], ev["sym"]) == ("bad_message", "BTC-USDT", "BTCUSD")
    assert "'abc'" in ev["detail"] and "resubscribing" in ev["detail"]
    assert rows(cols, "l2") == [] and not venue.book("BTC-USDT").valid and venue.book("ETH-USDT").valid
    assert venue.actions() == unsub_sub("BTC-USDT")
    # A malformed update while that book waits for its snapshot: one event, no second resubscription.
    cols = feed(venue, books("update", "BTC-USDT", [], [], "13", 12))  # type: ignore[arg-type]
    assert events(cols) == [("bad_message", "BTC-USDT")] and venue.actions() == []
    # A live book that gets a message it cannot read has lost it: resubscribed too.
    cols = feed(venue, '{"arg":{"channel":"books","instId":"ETH-USDT"},"action":"update","data":[{"ts":"1"}]}')
    assert events(cols) == [("bad_message", "ETH-USDT")] and venue.actions() == unsub_sub("ETH-USDT")


def test_crossed_book_reports_once_per_crossing() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    snapshot(venue, bids=[("100", "1")], asks=[("101", "1")])
    cols = feed(venue,
                books("update", "BTC-USDT", [("101.5", "1")], [], 11, 10),  # crossed
                books("update", "BTC-USDT", [("101.5", "2")], [], 12, 11),  # still crossed: no new event
                books("update", "BTC-USDT", [("101.5", "0")], [], 13, 12),  # uncrossed
                books("update", "BTC-USDT", [("101", "1")], [], 14, 13))  # locked: a new crossing
    evs = rows(cols, "feed_event")
    assert [e["kind"] for e in evs] == ["crossed", "crossed"]
    assert "crossed" in evs[0]["detail"] and "locked" in evs[1]["detail"]
    assert len(rows(cols, "l2")) == 4  # a crossed book is still published (OKX's call auction crosses)


# -- control messages --------------------------------------------------------------------------


def test_acks_errors_notices_and_pong() -> None:
    venue = Okx(["BTC-USDT", "BTC-USDT-SWAP"])
    cols = feed(
        venue,
        ack("trades", "BTC-USDT"), ack("books", "BTC-USDT-SWAP"), ack("books", "BTC-USDT", "unsubscribe"),
        "pong", b"pong",
        # docs' failure example, and a refused instId as OKX words it
        '{"event":"error","code":"60012","msg":"Invalid request: {\\"op\\": \\"subscribe\\", \\"argss\\":[{ '
        '\\"channel\\" : \\"books\\", \\"instId\\" : \\"BTC-USD-191227\\"}]}","connId":"a4d3ae55"}',
        '{"event":"error","msg":"Wrong URL or channel:books,instId:BTC-USDTT-SWAP doesn\'t exist. Please use the '
        'correct URL, channel and parameters referring to API document.","code":"60018","connId":"a4d3ae55"}',
    )
    evs = rows(cols, "feed_event")
    assert [(e["kind"], e["venue_sym"], e["sym"]) for e in evs] == [
        ("subscribed", "BTC-USDT", "BTCUSD"), ("subscribed", "BTC-USDT-SWAP", "BTCUSD-SWAP"),
        ("bad_message", None, None), ("bad_message", "BTC-USDTT-SWAP", "BTCUSDTT-SWAP")]
    assert evs[0]["detail"] == "subscribed to trades BTC-USDT"
    assert "60012" in evs[2]["detail"] and "instId such as BTC-USDT" in evs[2]["detail"]
    assert "60018" in evs[3]["detail"] and "doesn't exist" in evs[3]["detail"]
    assert set(cols) == {"feed_event"} and venue.actions() == []

    # docs-v5 "Notification": a service upgrade is announced 60 s ahead -> reconnect now.
    notice = ('{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade. '
              'Please reconnect.","connId":"a4d3ae55"}')
    assert feed(venue, notice) == {}
    assert venue.actions() == [Reconnect("OKX notice 64008: The connection will soon be closed for a service "
                                         "upgrade. Please reconnect.")]
    assert events(feed(venue, '{"event":"notice","code":"64099","msg":"something new"}')) == [
        ("unknown_message", None)]


def test_disconnect_invalidates_every_book_and_drops_queued_resubscriptions() -> None:
    venue = Okx(["BTC-USDT", "ETH-USDT"], channels={"l2"})
    snapshot(venue, "BTC-USDT")
    feed(venue, books("update", "BTC-USDT", [], [], 99, 98))  # a gap queues a resubscription...
    out = Out("okx")
    venue.on_disconnect(T0, out)  # ...that the new connection's subscribe makes pointless
    assert out.take() == {} and venue.actions() == []
    assert not venue.book("BTC-USDT").valid and not venue.book("ETH-USDT").valid
    assert feed(venue, books("update", "BTC-USDT", [("99.0", "1")], [], 11, 10)) == {}  # no book to apply it to
    new_bids, new_asks = [("100.1", "1")], [("100.2", "3")]
    cols = feed(venue, snap("BTC-USDT", new_bids, new_asks, 50), snap("ETH-USDT", new_bids, new_asks, 60))
    # BTC-USDT was waiting for a resync; ETH-USDT never had a snapshot, so its first is no resync.
    assert events(cols) == [("resync", "BTC-USDT")]
    assert state(venue) == (new_bids, new_asks)


# -- bad input ---------------------------------------------------------------------------------


def _trade_with(**fields: Any) -> str:
    item = {**json.loads(TRADE_DOC)["data"][0], **fields}
    return json.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [item]})


def _bbo_with(bids: Any) -> str:
    return json.dumps({"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"},
                       "data": [{"asks": [["1.1", "1", "0", "1"]], "bids": bids, "ts": TS, "seqId": 1}]})


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"\x00\xff garbage", "bad_message"),
        ("{not json", "bad_message"),
        ("[1, 2]", "bad_message"),
        ('"ping"', "bad_message"),
        *[(_trade_with(px=px), "bad_message") for px in (
            "abc", "NaN", "-1", "Infinity", "0", "", 42219, " 1", "1_000")],
        (_trade_with(sz="1e999999999"), "bad_message"),
        (_trade_with(side="BUY"), "bad_message"),
        (_trade_with(side=["buy"]), "bad_message"),
        (_trade_with(ts="1630048897.897"), "bad_message"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1","sz":"1","side":"buy","ts":"1"}]}',
         "bad_message"),  # no tradeId
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":{}}', "bad_message"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}', "bad_message"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[1]}', "bad_message"),
        (_bbo_with([["NaN", "1", "0", "1"]]), "bad_message"),
        (_bbo_with([["Infinity", "1", "0", "1"]]), "bad_message"),
        (_bbo_with([["1", "1e999", "0", "1"]]), "bad_message"),  # finite, but inf as a float64
        (_bbo_with("x"), "bad_message"),
        (_bbo_with([["1.0"]]), "bad_message"),
        (books("partial", "BTC-USDT", [], [], 1, -1), "bad_message"),
        (books("snapshot", "BTC-USDT", [("NaN", "1")], [], 1, -1), "bad_message"),
        (books("snapshot", "BTC-USDT", [("1", "-1")], [], 1, -1), "bad_message"),
        (books("snapshot", "BTC-USDT", [], [], "1", -1), "bad_message"),  # type: ignore[arg-type]
        (books("snapshot", "BTC-USDT", [], [], 1, -1, "123"), "bad_message"),  # type: ignore[arg-type]
        ('{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"bids":["12"],"asks":[],'
         '"ts":"1","seqId":1,"prevSeqId":-1}]}', "bad_message"),
        ('{"event":"subscribe","connId":"x"}', "bad_message"),
        ('{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{}]}', "unknown_message"),
        (books("snapshot", "DOGE-USDT", [], [], 1, -1), "unknown_message"),
        ('{"arg":{"channel":"books"},"data":[]}', "unknown_message"),
        ('{"event":"login","code":"0","msg":""}', "unknown_message"),
        ('{"foo":1}', "unknown_message"),
    ],
)
def test_bad_input_is_one_event_and_no_row(raw: str | bytes, kind: str) -> None:
    venue = Okx(["BTC-USDT"])
    cols = feed(venue, raw)
    assert set(cols) == {"feed_event"}
    [ev] = rows(cols, "feed_event")
    assert ev["kind"] == kind and ev["detail"] and len(ev["detail"]) < 600


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(
                     st.sampled_from(["arg", "channel", "instId", "data", "action", "event", "code", "msg", "bids",
                                      "asks", "ts", "seqId", "prevSeqId", "checksum", "px", "sz", "side",
                                      "tradeId"]),
                     c, max_size=6),
                 max_leaves=14).map(json.dumps),
))
def test_no_input_raises(raw: str | bytes) -> None:
    venue = Okx(["BTC-USDT"])
    snapshot(venue)
    out = Out("okx")
    venue.on_message(raw, T0, out)
    venue.on_message(books("update", "BTC-USDT", [], [], 10, 10), T0, out)


_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**64) | st.sampled_from(
    ["1", "0", "-1", "NaN", "abc", "100.0", "buy", TS, ""]), lambda c: st.lists(c, max_size=4), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(channel=st.sampled_from(["trades", "bbo-tbt", "books"]), action=st.sampled_from(["snapshot", "update", 1]),
       item=st.dictionaries(st.sampled_from(["instId", "tradeId", "px", "sz", "side", "ts", "bids", "asks", "seqId",
                                             "prevSeqId", "checksum"]), _VALUES, max_size=11))
def test_routed_pushes_with_random_fields_never_raise_and_give_rows_or_one_event(channel: str, action: Any,
                                                                                 item: dict[str, Any]) -> None:
    venue = Okx(["BTC-USDT"])
    snapshot(venue)
    msg = {"arg": {"channel": channel, "instId": "BTC-USDT"}, "action": action, "data": [item]}
    cols = feed(venue, json.dumps(msg))
    evs = rows(cols, "feed_event")
    assert len(evs) <= 1
    if evs and evs[0]["kind"] == "bad_message":
        assert not rows(cols, "trade") and not rows(cols, "quote") and not rows(cols, "l2")


# -- end to end: a local OKX -> Feed(Okx) -> a real TP -> a subscriber ----------------------------

Collect = Callable[..., Collector]


def tp_rows(c: Collector, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` the subscriber got, without the TP's own time."""
    out: list[dict[str, Any]] = []
    for m in c.messages:
        if m.table == table:
            out += m.data.drop_columns(["tp_time"]).to_pylist()
    return out


async def until(pred: Callable[[], Any], what: str, task: asyncio.Task[Any], timeout: float = 10.0) -> None:
    """Wait for ``pred()``; fail at once if the feed task ended (with its exception)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if task.done():
            task.result()
            raise AssertionError(f"the feed stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def test_end_to_end_rows_and_a_gap_resynced_through_the_shell(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    inst = "BTC-USDT"
    bids1 = [("100.0", "1.5"), ("99.0", "3"), ("98.0", "4")]
    asks1 = [("100.5", "1"), ("101.0", "0.25"), ("102.0", "7"), ("103.0", "1")]
    resub_bids, resub_asks = [("100.2", "2"), ("99.0", "3")], [("100.6", "1")]

    def resubscribed() -> bool:
        return len(server.received[0]) >= 3

    script: list[Step] = [
        ack("trades", inst), ack("bbo-tbt", inst), ack("books", inst),
        TRADE_DOC, trade(inst, "130639475", "42219.8", "0.5", "sell"),
        BBO_DOC.replace("BCH-USDT-SWAP", inst),
        snap(inst, SNAP_BIDS, SNAP_ASKS, 10, crc(SNAP_BIDS, SNAP_ASKS)),
        books("update", inst, [("99.5", "0"), ("98.0", "4")], [("103.0", "1")], 15, 10, crc(bids1, asks1)),
        "not json",
        books("update", inst, [("100.0", "9")], [], 25, 20),  # the update with prevSeqId 15 never came
        Until(resubscribed),  # the adapter sent unsubscribe + subscribe for this book
        ack("books", inst, "unsubscribe"), ack("books", inst),
        snap(inst, resub_bids, resub_asks, 30, crc(resub_bids, resub_asks)),
        books("update", inst, [], [("100.6", "0"), ("100.7", "2")], 31, 30),
    ]
    server = VenueServer([script])

    async def main() -> Feed:
        async with server:
            feed = Feed(Okx([inst]), FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: any(r["seq_last"] == 31 for r in tp_rows(sub, "l2")), "the last update", task)
            feed.stop()
            await task
        return feed

    feed = asyncio.run(main())
    venue = feed.venue
    assert isinstance(venue, Okx)
    arg = f'[{{"channel":"books","instId":"{inst}"}}]'
    assert [m for m in server.received[0] if m != "ping"] == [
        venue.subscribe()[0], f'{{"op":"unsubscribe","args":{arg}}}', f'{{"op":"subscribe","args":{arg}}}']

    trades = tp_rows(sub, "trade")
    assert [(t["sym"], t["venue_sym"], t["exchange"], t["price"], t["size"], t["side"], t["trade_id"], t["seq"])
            for t in trades] == [
        ("BTCUSD", inst, "okx", 42219.9, 0.12060306, "buy", "130639474", 130639474),
        ("BTCUSD", inst, "okx", 42219.8, 0.5, "sell", "130639475", 130639475)]
    assert trades[0]["time"].timestamp() * 1000 == 1630048897897
    quotes = [(q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"], q["derived"])
              for q in tp_rows(sub, "quote")]
    assert quotes == [(111.05, 57745.0, 111.06, 55154.0, False),  # bbo-tbt: native
                      (100.0, 1.5, 100.5, 1.0, True),  # the first snapshot's top
                      (100.2, 2.0, 100.6, 1.0, True), (100.2, 2.0, 100.7, 2.0, True)]  # after the resync
    l2 = [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"])
          for r in tp_rows(sub, "l2")]
    assert l2 == [
        ("bid", 100.0, 1.5, True, 10, 10), ("bid", 99.5, 2.0, True, 10, 10), ("bid", 99.0, 3.0, True, 10, 10),
        ("ask", 100.5, 1.0, True, 10, 10), ("ask", 101.0, 0.25, True, 10, 10), ("ask", 102.0, 7.0, True, 10, 10),
        ("bid", 99.5, 0.0, False, 11, 15), ("bid", 98.0, 4.0, False, 11, 15), ("ask", 103.0, 1.0, False, 11, 15),
        # nothing from the message after the hole; then the resubscription's snapshot and an update
        ("bid", 100.2, 2.0, True, 30, 30), ("bid", 99.0, 3.0, True, 30, 30), ("ask", 100.6, 1.0, True, 30, 30),
        ("ask", 100.6, 0.0, False, 31, 31), ("ask", 100.7, 2.0, False, 31, 31)]
    events = tp_rows(sub, "feed_event")
    assert [(e["kind"], e["venue_sym"]) for e in events] == [
        ("connect", None), ("subscribed", inst), ("subscribed", inst), ("subscribed", inst), ("bad_message", None),
        ("gap", inst), ("subscribed", inst), ("resync", inst)]
    gap = events[5]
    assert (gap["sym"], gap["expected"], gap["got"]) == ("BTCUSD", 15, 20)
    assert venue.book(inst).top_raw(10) == (resub_bids, [("100.7", "2")])


class QuickPingOkx(Okx):
    keepalive = 0.3  # OKX's 20 s, shortened so the test sees a ping without waiting


def test_drop_and_maintenance_notice_reconnect_resubscribe_and_resync(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    inst = "BTC-USDT-SWAP"
    notice = ('{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade. '
              'Please reconnect.","connId":"a4d3ae55"}')
    bids2, asks2 = [("101", "2")], [("102", "3")]
    bids3, asks3 = [("103", "1"), ("102.5", "1")], [("104", "5")]
    first: list[Step] = [ack("books", inst), snap(inst, SNAP_BIDS, SNAP_ASKS, 10),
                         books("update", inst, [("99.0", "0")], [], 11, 10), Drop()]
    second: list[Step] = [ack("books", inst), snap(inst, bids2, asks2, 100, crc(bids2, asks2)),
                          books("update", inst, [("101", "2.5")], [], 101, 100), notice]
    # The third connection stays quiet until the shell's keepalive ping, and answers it.
    third: list[Step] = [ack("books", inst), snap(inst, bids3[:1], asks3, 200, crc(bids3[:1], asks3)),
                         Until(lambda: "ping" in server.received[2]), "pong",
                         books("update", inst, [("102.5", "1")], [], 201, 200, crc(bids3, asks3))]
    server = VenueServer([first, second, third])

    async def main() -> Feed:
        async with server:
            feed = Feed(QuickPingOkx([inst], channels={"l2"}), FeedConfig(tp.address, ws_url=server.url))
            task = asyncio.create_task(feed.run())
            await until(lambda: any(r["seq_last"] == 201 for r in tp_rows(sub, "l2")), "the third connection", task)
            feed.stop()
            await task
        return feed

    feed = asyncio.run(main())
    venue = feed.venue
    assert isinstance(venue, Okx)
    assert server.connections == 3
    subscribe = venue.subscribe()[0]
    assert [[m for m in got if m != "ping"] for got in server.received] == [[subscribe]] * 3
    events = tp_rows(sub, "feed_event")
    assert [e["kind"] for e in events] == [
        "connect", "subscribed", "disconnect", "reconnect", "subscribed", "resync",
        "disconnect", "reconnect", "subscribed", "resync"]
    assert {e["venue_sym"] for e in events if e["kind"] in ("subscribed", "resync")} == {inst}
    assert {e["sym"] for e in events if e["kind"] == "resync"} == {"BTCUSD-SWAP"}
    assert "closed" in events[2]["detail"]
    assert events[6]["detail"] == ("okx asked for a reconnect: OKX notice 64008: The connection will soon be closed "
                                   "for a service upgrade. Please reconnect.")
    assert venue.book(inst).top_raw(10) == (bids3, asks3)
    snapshots = sorted({r["seq_last"] for r in tp_rows(sub, "l2") if r["is_snapshot"]})
    assert snapshots == [10, 100, 200]
    assert feed.stats["reconnects"] == 2


# -- books without the WebSocket snapshot: the REST splice (OKX changelog, February 2026) ----------

REST_PATH = "/api/v5/market/books?instId={}&sz=400&source=0"


def rest_book(bids: Levels, asks: Levels, seq: int, ts: str = "1597026383090") -> bytes:
    """The REST answer as the changelog shows it: one book with its seqId."""
    return json.dumps({"code": "0", "msg": "", "data": [
        {"asks": levels(asks), "bids": levels(bids), "ts": ts, "seqId": seq}]}).encode()


def answer(venue: Okx, inst: str, body: bytes, recv_ns: int = T0 + 100) -> Cols:
    out = Out(venue.name)
    venue.on_snapshot(inst, body, recv_ns, out)
    return out.take()


def test_no_snapshot_buffers_fetches_over_rest_and_splices_by_seq_id() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    u = [books("update", "BTC-USDT", [("99.5", "2.5")], [], 12, 10, None),  # older than the snapshot: dropped
         books("update", "BTC-USDT", [], [("101.0", "0")], 15, 12, None),  # held by the snapshot too
         books("update", "BTC-USDT", [("100.0", "0"), ("98.0", "1")], [], 18, 15, None),  # straddles 16
         books("update", "BTC-USDT", [], [("100.5", "3")], 20, 18, None)]
    cols = feed(venue, ack("books", "BTC-USDT"), u[0])
    assert events(cols) == [("subscribed", "BTC-USDT")] and rows(cols, "l2") == []
    assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))]
    assert feed(venue, *u[1:3]) == {} and venue.actions() == []  # buffered, asked once
    # A snapshot older than the first buffered update's prevSeqId (10) is fetched again, silently.
    assert answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 9)) == {}
    assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))]
    assert not venue.book("BTC-USDT").valid
    assert feed(venue, u[3]) == {}
    # seqId 16: updates 12 and 15 are in it; 18 (prev 15 <= 16 < 18) joins it, then 20.
    snap_bids = [("100.0", "1.5"), ("99.5", "2.5"), ("99.0", "3")]
    snap_asks = [("100.5", "1"), ("102.0", "7")]
    cols = answer(venue, "BTC-USDT", rest_book(snap_bids, snap_asks, 16))
    assert events(cols) == [] and venue.actions() == []
    l2 = [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"]) for r in rows(cols, "l2")]
    assert l2 == [*[("bid", p, s, True, 16, 16) for p, s in snap_bids],
                  *[("ask", p, s, True, 16, 16) for p, s in snap_asks],
                  ("bid", "100.0", "0", False, 16, 18), ("bid", "98.0", "1", False, 16, 18),
                  ("ask", "100.5", "3", False, 19, 20)]
    assert rows(cols, "l2")[0]["time"] == 1597026383090 * 1_000_000  # the REST book's ts
    # Hand-computed: snapshot 16, minus bid 100.0, plus bid 98.0, ask 100.5 -> 3.
    assert state(venue) == ([("99.5", "2.5"), ("99.0", "3"), ("98.0", "1")], [("100.5", "3"), ("102.0", "7")])
    assert venue.book("BTC-USDT").seq == 20
    cols = feed(venue, books("update", "BTC-USDT", [("99.0", "0")], [], 21, 20, None))
    assert events(cols) == [] and state(venue)[0] == [("99.5", "2.5"), ("98.0", "1")]


def test_no_snapshot_gap_refetches_rest_without_resubscribing_and_resyncs() -> None:
    venue = Okx(["BTC-USDT", "ETH-USDT"], channels={"l2"})
    feed(venue, books("update", "BTC-USDT", [], [], 11, 10, None))
    snapshot(venue, "ETH-USDT", [("2000.00", "1.0")], [("2001.00", "2.0")], seq=500)  # ETH: snapshot world
    venue.actions()
    answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 10))
    assert venue.book("BTC-USDT").valid and venue.book("BTC-USDT").seq == 11
    cols = feed(venue, books("update", "BTC-USDT", [("99.0", "9")], [], 30, 25, None))  # 11 -> 25 lost
    [ev] = rows(cols, "feed_event")
    assert (ev["kind"], ev["venue_sym"], ev["expected"], ev["got"]) == ("gap", "BTC-USDT", 11, 25)
    assert "re-fetching its REST snapshot" in ev["detail"] and rows(cols, "l2") == []
    assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))]  # no unsubscribe/subscribe
    assert not venue.book("BTC-USDT").valid and venue.book("ETH-USDT").valid
    feed(venue, books("update", "BTC-USDT", [("98.0", "1")], [], 31, 30, None))
    # A bad answer: one bad_message and a new request, each kind.
    for bad in (b"<html>busy</html>", b'{"code":"50011","msg":"Too Many Requests","data":[]}',
                b'{"code":"0","msg":"","data":[]}', rest_book([("abc", "1")], [], 40),
                b'{"code":"0","msg":"","data":[{"asks":[],"bids":[["1"]],"ts":"1","seqId":40}]}',
                b'{"code":"0","msg":"","data":[{"asks":[],"bids":[],"ts":"1"}]}'):
        cols = answer(venue, "BTC-USDT", bad)
        assert events(cols) == [("bad_message", "BTC-USDT")], bad
        assert "REST books snapshot unusable" in rows(cols, "feed_event")[0]["detail"]
        assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))], bad
        assert not venue.book("BTC-USDT").valid
    cols = answer(venue, "BTC-USDT", rest_book([("99.0", "2")], [("100.5", "1")], 29))
    [ev] = rows(cols, "feed_event")
    assert ev["kind"] == "resync" and "REST snapshot (seqId 29)" in ev["detail"] and "gap" in ev["detail"]
    assert state(venue) == ([("99.0", "9"), ("98.0", "1")], [("100.5", "1")])
    assert venue.actions() == [] and venue.book("BTC-USDT").seq == 31


def test_rest_snapshot_that_misses_a_buffered_update_is_a_gap_and_refetched() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    feed(venue, books("update", "BTC-USDT", [], [], 11, 10, None),
         books("update", "BTC-USDT", [], [], 20, 15, None))  # 11 -> 15 lost while buffering
    venue.actions()
    cols = answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 12))
    [ev] = rows(cols, "feed_event")
    assert (ev["kind"], ev["expected"], ev["got"]) == ("gap", 12, 15) and rows(cols, "l2") == []
    assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))]
    cols = answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 17))
    assert events(cols) == [] and venue.book("BTC-USDT").seq == 20 and state(venue) == (SNAP_BIDS, SNAP_ASKS)


def test_no_snapshot_mode_resets_on_disconnect_and_a_late_answer_is_ignored() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    feed(venue, books("update", "BTC-USDT", [], [], 11, 10, None))
    assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))]
    venue.on_disconnect(T0, Out("okx"))
    assert answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 12)) == {}  # nothing waits for it
    assert not venue.book("BTC-USDT").valid and venue.actions() == []
    # The new connection sends snapshots again: snapshot mode, and its gaps resubscribe.
    snapshot(venue, seq=50)
    feed(venue, books("update", "BTC-USDT", [], [], 53, 52))
    assert venue.actions() == unsub_sub("BTC-USDT")
    # The old subscription's tail before the new subscribe ack is not taken for a snapshot-less one.
    assert feed(venue, books("update", "BTC-USDT", [], [], 54, 53)) == {} and venue.actions() == []
    cols = feed(venue, ack("books", "BTC-USDT"), books("update", "BTC-USDT", [], [], 60, 58, None))
    assert events(cols) == [("subscribed", "BTC-USDT")]
    assert venue.actions() == [Rest("BTC-USDT", REST_PATH.format("BTC-USDT"))]  # this one sent no snapshot
    cols = answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 59))
    assert events(cols) == [("resync", "BTC-USDT")] and venue.book("BTC-USDT").seq == 60


def test_end_to_end_without_snapshots_rest_splice_gap_and_resync(tp: TPProcess, collect: Collect) -> None:
    sub = collect(tp.address)
    sub.wait_subscribed()
    inst = "BTC-USDT-SWAP"
    path = REST_PATH.format(inst)
    bids16, asks16 = [("100.0", "1"), ("99.0", "2")], [("101.0", "1")]
    bids40, asks40 = [("100.5", "4")], [("101.0", "2"), ("102.0", "1")]
    rest = RestServer({path: [(200, rest_book(bids16, asks16, 9)),  # too old: fetched again
                              (200, rest_book(bids16, asks16, 16)), (200, rest_book(bids40, asks40, 40))]})
    script: list[Step] = [
        ack("books", inst),
        books("update", inst, [("99.0", "5")], [], 14, 12, None),  # held by snapshot 16: discarded
        books("update", inst, [("98.0", "1")], [], 18, 14, None),  # joins snapshot 16
        Until(lambda: rest.served() >= 2),
        books("update", inst, [], [("101.0", "0"), ("101.5", "3")], 20, 18, None),
        books("update", inst, [("97.0", "1")], [], 35, 30, None),  # 20 -> 30 lost: a gap
        books("update", inst, [("100.5", "0")], [], 38, 35, None),  # held by snapshot 40
        Until(lambda: rest.served() >= 3),
        books("update", inst, [], [("102.0", "0")], 41, 38, None),  # joins snapshot 40
    ]

    async def main() -> Feed:
        with rest:
            async with VenueServer([script]) as server:
                feed = Feed(Okx([inst], channels={"l2"}), FeedConfig(tp.address, ws_url=server.url,
                                                                     rest_url=rest.url))
                task = asyncio.create_task(feed.run())
                await until(lambda: any(r["seq_last"] == 41 for r in tp_rows(sub, "l2")), "update 41", task)
                feed.stop()
                await task
            assert [m for m in server.received[0] if m != "ping"] == feed.venue.subscribe()  # no resubscribe
        return feed

    feed = asyncio.run(main())
    assert rest.requests == [path] * 3
    l2 = [(r["side"], r["price"], r["size"], r["is_snapshot"], r["seq_first"], r["seq_last"])
          for r in tp_rows(sub, "l2")]
    assert l2 == [
        ("bid", 100.0, 1.0, True, 16, 16), ("bid", 99.0, 2.0, True, 16, 16), ("ask", 101.0, 1.0, True, 16, 16),
        ("bid", 98.0, 1.0, False, 15, 18),
        ("ask", 101.0, 0.0, False, 19, 20), ("ask", 101.5, 3.0, False, 19, 20),
        # the gap: nothing from 35 or 38 (both buffered, 38 held by the snapshot), then snapshot 40 and 41
        ("bid", 100.5, 4.0, True, 40, 40), ("ask", 101.0, 2.0, True, 40, 40), ("ask", 102.0, 1.0, True, 40, 40),
        ("ask", 102.0, 0.0, False, 39, 41)]
    events = tp_rows(sub, "feed_event")
    assert [(e["kind"], e["venue_sym"]) for e in events] == [
        ("connect", None), ("subscribed", inst), ("gap", inst), ("resync", inst)]
    assert (events[2]["expected"], events[2]["got"]) == (20, 30)
    venue = feed.venue
    assert isinstance(venue, Okx)
    assert venue.book(inst).top_raw(10) == (bids40, [("101.0", "2")])  # hand-computed: snapshot 40 minus 102.0


def test_rest_snapshot_newer_than_the_buffer_drops_the_live_updates_it_holds() -> None:
    venue = Okx(["BTC-USDT"], channels={"l2"})
    feed(venue, books("update", "BTC-USDT", [], [], 11, 10, None))
    venue.actions()
    cols = answer(venue, "BTC-USDT", rest_book(SNAP_BIDS, SNAP_ASKS, 14))  # holds 11, and 13 still to come
    assert events(cols) == [] and venue.book("BTC-USDT").seq == 14
    cols = feed(venue, books("update", "BTC-USDT", [("99.0", "0")], [], 13, 11, None),  # in the snapshot
                books("update", "BTC-USDT", [("99.0", "8")], [], 16, 13, None),  # straddles 14: joins
                books("update", "BTC-USDT", [("99.5", "0")], [], 17, 16, None))
    assert events(cols) == [] and venue.actions() == []
    assert state(venue) == ([("100.0", "1.5"), ("99.0", "8")], SNAP_ASKS)
    assert feed(venue, books("update", "BTC-USDT", [], [], 20, 19, None)) != {}  # the chain rule again: a gap
