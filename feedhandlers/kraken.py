"""Kraken spot WebSocket v2 (``wss://ws.kraken.com/v2``): trades, native ticker quotes, L2 books with CRC32.

This module owns the Kraken :class:`~feedhandlers.venue.Venue`: what to subscribe to, how each
v2 message becomes ``trade`` / ``quote`` / ``l2`` / ``feed_event`` rows, and the per-symbol
book rules. Channels (docs.kraken.com, "Spot WebSocket v2"):

* ``trade`` -> ``trade`` rows. ``side`` is documented as "the side of the taker order", so it
  is already the aggressor; ``trade_id`` is "a sequence number, unique per book" and becomes
  both ``trade_id`` and ``seq``. Trades at or below the last id seen for a symbol are
  dropped, so the trade snapshot asked for on a *re*-connect fills the outage (up to the
  50 trades Kraken keeps) without duplicating what was already published.
* ``ticker`` (``event_trigger: bbo``, one update per best-bid-offer change) -> native
  ``quote`` rows (``derived=False``).
* ``book`` at ``depth`` 10/25/100/500/1000 -> ``l2`` rows and ``derived=True`` quote rows when
  the top of book changes. Kraken has no sequence numbers: the CRC32 over the top 10 levels,
  sent on the snapshot *and* on every update, is the only gap detector, so it is checked
  after every message (:func:`~feedhandlers.book.kraken_checksum`). Levels that fall out of
  the subscribed depth get no ``qty: 0`` from Kraken; the book truncates them and this
  adapter publishes a size ``"0"`` l2 row for each, so the l2 stream alone rebuilds the book.

On a checksum mismatch (or a malformed book message) for one symbol: a ``checksum`` (or
``bad_message``) event, that book is invalidated, and an ``unsubscribe`` + ``subscribe`` for
that symbol's book alone is queued as :class:`~feedhandlers.venue.Send` actions (Kraken
refuses a second subscribe on a live subscription with "Already subscribed", and a new
subscription starts with a snapshot). Until that snapshot arrives the symbol's updates are
ignored and no l2 or derived quote row is published for it; the snapshot brings a
``resync`` event. Other symbols carry on untouched.

Kraken v2 puts prices and quantities on the wire as bare JSON *numbers* at full precision
(``"qty":0.10000000``, ``"price":62807.0``), and the checksum is computed over that decimal
text, trailing zeros included. So messages are decoded by :mod:`feedhandlers.jsonwire`: every
float stays the exact text sent (a float round-trip would turn ``0.10000000`` into ``0.1`` and
fail every checksum), integers such as ``connection_id`` (> 2**53) stay exact ints, and a price
or qty sent as an integer (``1``) is turned back into its text, which is what the checksum uses.

Heartbeats (``{"channel":"heartbeat"}``, 1 Hz), ``status`` messages, ``unsubscribe`` acks and
pongs produce nothing; a successful ``subscribe`` ack produces a ``subscribed`` event; a
refused one (e.g. "Subscription depth not supported") a ``stale`` event, because that
channel will stay silent on an otherwise healthy connection.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal

from feedhandlers.book import Book, kraken_checksum
from feedhandlers.jsonwire import decode
from feedhandlers.normalize import Out, is_decimal, normalize_symbol
from feedhandlers.venue import CHANNELS, ResyncBackoff, Send, Venue
from tickerplant.exceptions import DataError

__all__ = ["DEPTHS", "Kraken"]

DEPTHS: Final = (10, 25, 100, 500, 1000)  # the only depths Kraken accepts; others are refused

_SIDES: Final = ("buy", "sell")
# Errors a malformed message can raise while we pick it apart (missing keys, wrong types,
# non-numeric text); each becomes one bad_message event, never an exception out of on_message.
_MALFORMED: Final = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, DataError)
_DETAIL_CHARS: Final = 120


class Kraken(Venue):
    """Kraken spot WebSocket v2 adapter for ``symbols`` in Kraken's v2 form (``BTC/USD``, ``ETH/EUR``).

    ``depth`` is the book subscription depth, one of :data:`DEPTHS` (default 10).
    ``books`` maps each venue symbol to its :class:`Book` when the ``l2`` channel is on.
    """

    name = "kraken"
    ws_url = "wss://ws.kraken.com/v2"
    rest_url = "https://api.kraken.com"

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS, depth: int = 10) -> None:
        super().__init__(symbols, channels)
        if depth not in DEPTHS:
            raise ValueError(f"kraken book depth {depth!r} is not one Kraken accepts; use one of {list(DEPTHS)}")
        self.depth = depth
        self.books: dict[str, Book] = (
            {s: Book(self.name, s, depth=depth) for s in self.symbols} if "l2" in self.channels else {}
        )
        self._norm: dict[str, str] = {}
        # Last published (bid_price, bid_size, ask_price, ask_size) per book, to publish a
        # derived quote only when the top changes; None once published empty.
        self._top: dict[str, tuple[str | None, str | None, str | None, str | None]] = {}
        self._crossed: set[str] = set()  # books crossed at their last update (one event per crossing)
        self._awaiting: dict[str, str] = {}  # symbol -> why its next snapshot is a resync
        self._last_trade: dict[str, int] = {}  # highest trade_id published per symbol
        self._backoff = ResyncBackoff()

    # -- what to send --------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        return {"depth": self.depth}

    def subscribe(self) -> list[str]:
        msgs: list[dict[str, Any]] = []
        if "trade" in self.channels:
            # A trade snapshot is Kraken's last 50 trades: history on a first connect, but on a
            # reconnect it is exactly what was missed (older ids are dropped by the dedup).
            msgs.append({"channel": "trade", "symbol": self.symbols, "snapshot": bool(self._last_trade)})
        if "quote" in self.channels:
            msgs.append({"channel": "ticker", "symbol": self.symbols, "event_trigger": "bbo", "snapshot": True})
        if "l2" in self.channels:
            msgs.append({"channel": "book", "symbol": self.symbols, "depth": self.depth, "snapshot": True})
        return [json.dumps({"method": "subscribe", "params": p}, separators=(",", ":")) for p in msgs]

    def _book_request(self, method: Literal["subscribe", "unsubscribe"], venue_sym: str, after: float = 0.0) -> Send:
        params: dict[str, Any] = {"channel": "book", "symbol": [venue_sym], "depth": self.depth}
        if method == "subscribe":
            params["snapshot"] = True
        return Send(json.dumps({"method": method, "params": params}, separators=(",", ":")), after)

    # -- messages ------------------------------------------------------------------------

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        try:
            msg = decode(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self._bad(out, recv_ns, f"not JSON ({exc}): {_clip(raw)}")
            return
        if not isinstance(msg, dict):
            self._bad(out, recv_ns, f"not a JSON object: {_clip(raw)}")
            return
        channel = msg.get("channel")
        try:
            if channel == "book":
                self._on_book(msg, recv_ns, out)
            elif channel == "trade":
                self._on_trade(msg, recv_ns, out)
            elif channel == "ticker":
                self._on_ticker(msg, recv_ns, out)
            elif channel in ("heartbeat", "status", "pong"):
                return
            elif channel is None and "method" in msg:
                self._on_method(msg, recv_ns, out)
            else:
                out.event(time=recv_ns, kind="unknown_message", detail=f"unknown Kraken message: {_clip(raw)}")
        except _MALFORMED as exc:
            self._bad(out, recv_ns, f"malformed {channel or 'method'} message ({type(exc).__name__}: {exc}): "
                                    f"{_clip(raw)}")

    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        # Every book is stale: the new connection's subscribe brings fresh snapshots, and the
        # snapshot of a book that was live (or already awaiting one) is reported as a resync.
        for sym, book in self.books.items():
            if book.valid:
                self._awaiting[sym] = "reconnect"
            book.invalidate("disconnected; waiting for the snapshot after reconnecting")
        self._top.clear()
        self._crossed.clear()
        # Resubscriptions queued for the old connection mean nothing on the new one.
        self._actions = []

    def _on_method(self, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        method = msg["method"]
        if method == "subscribe":
            result = msg.get("result") or {}
            vsym = result.get("symbol") or msg.get("symbol")
            what = " ".join(str(x) for x in (result.get("channel"), vsym) if x)
            sym = self._sym(vsym) if isinstance(vsym, str) else None
            if msg.get("success") is True:
                depth = result.get("depth")
                detail = f"subscribed to {what}" + (f" at depth {depth}" if depth is not None else "")
                out.event(time=recv_ns, kind="subscribed", detail=detail, sym=sym, venue_sym=vsym)
            else:
                out.event(time=recv_ns, kind="stale", sym=sym, venue_sym=vsym,
                          detail=f"Kraken refused subscribe {what}: {msg.get('error')!s}; that channel stays "
                                 f"silent until the symbol/options are fixed (depth must be one of {list(DEPTHS)})")
        elif method in ("unsubscribe", "pong"):
            return
        else:
            out.event(time=recv_ns, kind="unknown_message", detail=f"unknown Kraken method {method!r}")

    # -- trades and tickers --------------------------------------------------------------

    def _on_trade(self, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        # Parse and check the whole message before publishing any of it: a bad trade in a
        # batch rejects the message, never half of it.
        parsed = []
        for t in msg["data"]:
            price, qty, side = _num(t["price"]), _num(t["qty"]), t["side"]
            if not (is_decimal(price) and is_decimal(qty)):
                raise ValueError(f"price {price!r} and qty {qty!r} must be positive decimal numbers")
            if side not in _SIDES:
                raise ValueError(f"side {side!r} is not buy or sell")
            parsed.append((_symbol(t), price, qty, side, int(t["trade_id"]), _ts_ns(t["timestamp"])))
        last = self._last_trade
        for vsym, price, qty, side, tid, ts in parsed:
            prev = last.get(vsym)
            if prev is not None and tid <= prev:
                continue  # already published (a reconnect's trade snapshot overlaps what we had)
            last[vsym] = tid
            out.trade(time=ts, sym=self._sym(vsym), venue_sym=vsym, price=price, size=qty, side=side,
                      trade_id=str(tid), seq=tid, recv_time=recv_ns)

    def _on_ticker(self, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        parsed = []
        for t in msg["data"]:
            bid, bid_qty, ask, ask_qty = _num(t["bid"]), _num(t["bid_qty"]), _num(t["ask"]), _num(t["ask_qty"])
            if not (is_decimal(bid) and is_decimal(ask) and is_decimal(bid_qty, True) and is_decimal(ask_qty, True)):
                raise ValueError(f"bid {bid!r} x {bid_qty!r}, ask {ask!r} x {ask_qty!r} must be decimal numbers")
            # Older v2 servers send no ticker timestamp: the receive time is the best we have.
            ts = t.get("timestamp")
            parsed.append((_symbol(t), bid, bid_qty, ask, ask_qty, recv_ns if ts is None else _ts_ns(ts)))
        for vsym, bid, bid_qty, ask, ask_qty, ts in parsed:
            out.quote(time=ts, sym=self._sym(vsym), venue_sym=vsym, bid_price=bid, bid_size=bid_qty,
                      ask_price=ask, ask_size=ask_qty, recv_time=recv_ns, derived=False)

    # -- books -----------------------------------------------------------------------------

    def _on_book(self, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        kind = msg["type"]
        if kind not in ("snapshot", "update"):
            raise ValueError(f"book type {kind!r} is not snapshot or update")
        for entry in msg["data"]:
            self._book_entry(entry, kind == "snapshot", recv_ns, out)

    def _book_entry(self, entry: dict[str, Any], snapshot: bool, recv_ns: int, out: Out) -> None:
        vsym = entry["symbol"]
        book = self.books.get(vsym) if isinstance(vsym, str) else None
        if book is None:
            out.event(time=recv_ns, kind="unknown_message", venue_sym=str(vsym),
                      detail=f"book message for {vsym!r}, which this adapter did not subscribe to")
            return
        if not snapshot and not book.valid:
            return  # a dropped book waits for its resubscription's snapshot; its updates mean nothing
        try:
            bids = [(_num(lv["price"]), _num(lv["qty"])) for lv in entry.get("bids", ())]
            asks = [(_num(lv["price"]), _num(lv["qty"])) for lv in entry.get("asks", ())]
            expected = int(entry["checksum"])
            ts = entry.get("timestamp")
            time = recv_ns if ts is None else _ts_ns(ts)
            dropped: tuple[list[tuple[str, str]], list[tuple[str, str]]] = ([], [])
            if snapshot:
                book.apply_snapshot(bids, asks)
            else:
                dropped = self._apply_update(book, bids, asks)
        except _MALFORMED as exc:
            self._bad(out, recv_ns, f"malformed book {'snapshot' if snapshot else 'update'} for {vsym} "
                                    f"({type(exc).__name__}: {exc}); resubscribing its book", vsym)
            self._resync(vsym, book, f"malformed book message: {exc}", recv_ns)
            return
        got = kraken_checksum(book)
        if got != expected:
            out.event(time=time, kind="checksum", sym=self._sym(vsym), venue_sym=vsym, expected=expected, got=got,
                      detail=f"book checksum mismatch after {'snapshot' if snapshot else 'update'}: Kraken sent "
                             f"{expected}, local top-10 gives {got}; book dropped and resubscribed")
            self._resync(vsym, book, f"checksum mismatch: Kraken {expected}, local {got}", recv_ns)
            return
        sym = self._sym(vsym)
        l2 = out.l2
        if snapshot:
            reason = self._awaiting.pop(vsym, None)
            if reason is not None:
                out.event(time=time, kind="resync", sym=sym, venue_sym=vsym,
                          detail=f"book rebuilt from a new snapshot after {reason}; checksum {expected} verified")
            # The snapshot as held (after truncation to depth), best first.
            kept_bids, kept_asks = book.top_raw(self.depth)
            for price, size in kept_bids:
                l2(time=time, sym=sym, venue_sym=vsym, side="bid", price=price, size=size, is_snapshot=True,
                   seq_first=None, seq_last=None, recv_time=recv_ns)
            for price, size in kept_asks:
                l2(time=time, sym=sym, venue_sym=vsym, side="ask", price=price, size=size, is_snapshot=True,
                   seq_first=None, seq_last=None, recv_time=recv_ns)
        else:
            for price, size in bids:
                l2(time=time, sym=sym, venue_sym=vsym, side="bid", price=price, size=size, is_snapshot=False,
                   seq_first=None, seq_last=None, recv_time=recv_ns)
            for price, size in asks:
                l2(time=time, sym=sym, venue_sym=vsym, side="ask", price=price, size=size, is_snapshot=False,
                   seq_first=None, seq_last=None, recv_time=recv_ns)
            for price, _ in dropped[0]:
                l2(time=time, sym=sym, venue_sym=vsym, side="bid", price=price, size="0", is_snapshot=False,
                   seq_first=None, seq_last=None, recv_time=recv_ns)
            for price, _ in dropped[1]:
                l2(time=time, sym=sym, venue_sym=vsym, side="ask", price=price, size="0", is_snapshot=False,
                   seq_first=None, seq_last=None, recv_time=recv_ns)
        self._publish_top(book, vsym, sym, time, recv_ns, out)

    def _apply_update(
        self, book: Book, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Apply one update (all levels, then truncate) and return the levels truncation dropped."""
        return book.apply_many(bids, asks)

    def _publish_top(self, book: Book, vsym: str, sym: str, time: int, recv_ns: int, out: Out) -> None:
        bids, asks = book.top_raw(1)
        top = (
            bids[0][0] if bids else None, bids[0][1] if bids else None,
            asks[0][0] if asks else None, asks[0][1] if asks else None,
        )
        if self._top.get(vsym) != top:
            self._top[vsym] = top
            out.quote(time=time, sym=sym, venue_sym=vsym, bid_price=top[0], bid_size=top[1], ask_price=top[2],
                      ask_size=top[3], recv_time=recv_ns, derived=True)
        if book.crossed:
            if vsym not in self._crossed:
                self._crossed.add(vsym)
                state = "locked" if book.locked else "crossed"
                out.event(time=time, kind="crossed", sym=sym, venue_sym=vsym,
                          detail=f"book {state}: best bid {top[0]} >= best ask {top[2]} after a checksum-valid update")
        else:
            self._crossed.discard(vsym)

    def _resync(self, vsym: str, book: Book, reason: str, recv_ns: int) -> None:
        """Drop one symbol's book and resubscribe to it alone (backing off if it keeps failing);
        the other books are untouched."""
        book.invalidate(reason)
        self._top.pop(vsym, None)
        self._crossed.discard(vsym)
        self._awaiting[vsym] = reason
        self._request(self._book_request("unsubscribe", vsym))
        self._request(self._book_request("subscribe", vsym, self._backoff.delay(vsym, recv_ns)))

    # -- helpers ---------------------------------------------------------------------------

    def _sym(self, venue_sym: str) -> str:
        sym = self._norm.get(venue_sym)
        if sym is None:
            sym = self._norm[venue_sym] = normalize_symbol(venue_sym)
        return sym

    def _bad(self, out: Out, recv_ns: int, detail: str, venue_sym: str | None = None) -> None:
        out.event(time=recv_ns, kind="bad_message", detail=detail, venue_sym=venue_sym,
                  sym=self._sym(venue_sym) if venue_sym else None)


def _symbol(item: dict[str, Any]) -> str:
    vsym = item["symbol"]
    if vsym.__class__ is not str or not vsym:
        raise ValueError(f"symbol {vsym!r} is not a pair name like 'BTC/USD'")
    return str(vsym)


def _num(value: Any) -> str:
    """A Kraken number as its exact wire text: floats already are (jsonwire), integers become text."""
    if value.__class__ is str or value.__class__ is int:  # not bool, not a nested object
        return str(value)
    raise ValueError(f"{value!r} is not a number")



@lru_cache(maxsize=4096)
def _epoch_seconds(head: str) -> int:
    """Seconds since the epoch for "YYYY-MM-DDTHH:MM:SS" (UTC); cached because a busy feed
    repeats the same second thousands of times."""
    if len(head) != 19 or head[10] != "T":
        raise ValueError(f"timestamp {head!r} is not RFC 3339 YYYY-MM-DDTHH:MM:SS")
    return int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())


def _ts_ns(text: str) -> int:
    """Kraken's RFC 3339 UTC timestamp ("2023-09-25T07:48:36.925533Z") as int ns, exactly."""
    if text[-1:] != "Z":
        raise ValueError(f"timestamp {text!r} is not RFC 3339 UTC ending in Z")
    seconds = _epoch_seconds(text[:19])
    frac = text[20:-1]
    if len(text) == 20:
        return seconds * 1_000_000_000
    if text[19] != "." or not frac.isdigit() or len(frac) > 9 or not frac.isascii():
        raise ValueError(f"timestamp {text!r} has a malformed fraction of a second")
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0"))


def _clip(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else raw[: _DETAIL_CHARS * 4].decode("utf-8", "replace")
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "..."
