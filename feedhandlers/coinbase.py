"""Coinbase Advanced Trade public market data (``wss://advanced-trade-ws.coinbase.com``), sans I/O.

This module owns the Coinbase message formats and rules: what to subscribe to, how
``market_trades``, ``l2_data``, ``ticker``, ``heartbeats`` and ``subscriptions`` messages
become ``trade`` / ``l2`` / ``quote`` / ``feed_event`` rows, and how the one
``sequence_num`` counter of a connection guards the books.

Channels (Coinbase docs, "Advanced Trade WebSocket Channels"; one channel per subscribe
message, so :meth:`Coinbase.subscribe` returns one message per channel):

* ``heartbeats``, always: "most channels close within 60-90 seconds if no updates are
  sent. Subscribe to heartbeats to keep all subscriptions open", so a quiet symbol never
  costs the connection. Heartbeats produce no rows.
* ``market_trades`` (our ``trade``): ``events[].trades[]`` with ``trade_id``,
  ``product_id``, ``price``, ``size``, ``side`` (BUY/SELL) and ``time``. Coinbase's page
  does not say whose side that is; Coinbase's older Exchange feed documents it for
  ``match`` messages as "the maker order side", and NautilusTrader's Advanced Trade
  adapter (``coinbase_side_to_aggressor``: "Coinbase reports the maker side on public
  market trades, so the aggressor is the opposite side") and bbgo (PR 2509, "correct
  market trade side to taker side") both invert it. So we invert: ``SELL`` -> ``buy``.
  On subscribe Coinbase first sends a ``snapshot`` event of recent trades: on the first
  connection those trades predate the feed and are skipped; after a reconnect the ones
  newer than the last trade we published (by numeric ``trade_id``, per product) are
  exactly the trades lost while disconnected, so they are published. Any trade id not
  newer than the last one published is a duplicate and dropped.
* ``level2`` (our ``l2``): messages arrive on channel ``l2_data`` with ``events[]`` of
  type ``snapshot`` (the whole book) or ``update``, each with ``product_id`` and
  ``updates[]`` of ``side`` ("bid"/"offer"), ``event_time``, ``price_level`` and
  ``new_quantity`` (the new absolute size; "0" removes the level). One :class:`Book` per
  product; ``l2`` rows for every level, and a derived ``quote`` row whenever the top of
  the book changes (only when the ``quote`` channel is also wanted).
* ``ticker`` (our ``quote``): ``events[].tickers[]`` carry ``best_bid``,
  ``best_bid_quantity``, ``best_ask`` and ``best_ask_quantity`` (the current format; the
  early beta ticker had only the last price, and such tickers give no row). Native quote
  rows, ``derived=False``, timed by the message ``timestamp``.

Sequence: every message on a connection carries ``sequence_num``, one counter across all
channels starting at 0 (:class:`~feedhandlers.book.CoinbaseSync`). A jump means some
message was lost and it could have been an ``l2_data`` update of any product, so every
book on the connection is invalidated ("gap" event per book, with expected/got), and
level2 is unsubscribed and subscribed again for those products: Coinbase answers a
subscribe with a fresh snapshot, which makes the book valid ("resync" event). A
malformed level invalidates that product's book alone. Invalid books publish nothing.

Numbers stay the decimal strings Coinbase sent; each is checked with ``Decimal`` before
it becomes a row, so a malformed number is a ``bad_message`` event, never a bad row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from feedhandlers.book import APPLY, SKIP, Book, CoinbaseSync, SeqCheck
from feedhandlers.jsonwire import decode
from feedhandlers.normalize import Out, decimal_text, normalize_symbol
from feedhandlers.venue import CHANNELS, ResyncBackoff, Send, Venue
from tickerplant.exceptions import DataError

__all__ = ["Coinbase", "parse_time"]

_TAKER_SIDE: Final = {"SELL": "buy", "BUY": "sell"}  # maker side -> aggressor side
BookSide = Literal["bid", "ask"]
_BOOK_SIDE: Final[dict[str, BookSide]] = {"bid": "bid", "offer": "ask"}
Row = tuple[BookSide, str, str, int]  # side, price, size, time
# What a handler may raise on malformed input; anything else is a bug and should surface.
_BAD_INPUT = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, DataError)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND: Final = timedelta(seconds=1)
_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds; most messages share a second


def parse_time(text: str) -> int:
    """An RFC 3339 UTC time as Coinbase writes it -> integer ns since the epoch.

    ``2023-02-09T20:32:50.714964855Z`` (0 to 9 fraction digits; ``Z`` or ``+00:00``).
    Raises ValueError on anything else. The date part is converted once per distinct
    second and cached, so the per-message cost is a slice, a dict lookup and an ``int``.
    """
    head = text[:19]
    seconds = _SECONDS.get(head)
    if seconds is None:
        if len(head) != 19 or head[10] != "T":
            raise ValueError(f"time {text!r} is not RFC 3339 like 2023-02-09T20:32:50.714964855Z")
        moment = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        seconds = (moment - _EPOCH) // _ONE_SECOND
        if len(_SECONDS) >= 4096:  # bounded: a long-running feed sees a new second every second
            _SECONDS.clear()
        _SECONDS[head] = seconds
    rest = text[19:]
    if rest[-1:] == "Z":
        frac = rest[:-1]
    elif rest[-6:] == "+00:00":
        frac = rest[:-6]
    else:
        raise ValueError(f"time {text!r} is not UTC (ends neither in 'Z' nor '+00:00')")
    if not frac:
        return seconds * 1_000_000_000
    digits = frac[1:]
    if frac[0] != "." or not 1 <= len(digits) <= 9 or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"time {text!r} has a malformed fraction of a second {frac!r}")
    return seconds * 1_000_000_000 + int(digits.ljust(9, "0"))



def _text(value: object, field: str) -> str:
    """A non-empty string field (product_id, trade_id): anything else would become a bad row or book key."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} {value!r} is not a non-empty string")
    return value



class Coinbase(Venue):
    """Coinbase Advanced Trade: market_trades, level2 (l2_data), ticker and heartbeats on one connection.

    ``channels``: ``trade`` subscribes ``market_trades``; ``l2`` subscribes ``level2``;
    ``quote`` subscribes ``ticker`` (native quotes) and, with ``l2``, also publishes
    quotes derived from the books. Symbols are Coinbase product ids (``BTC-USD``).
    """

    name = "coinbase"
    ws_url = "wss://advanced-trade-ws.coinbase.com"
    rest_url = "https://api.coinbase.com"  # unused: Coinbase snapshots come over the WebSocket

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS) -> None:
        super().__init__(symbols, channels)
        self._sync = CoinbaseSync(0)
        self._books: dict[str, Book] = {}
        self._syms: dict[str, str] = {}
        self._derive = "quote" in self.channels
        # Last (best bid, best ask) published per product, as the venue's (price, size)
        # strings; None: nothing published since the book became valid.
        self._tops: dict[str, tuple[tuple[str, str] | None, tuple[str, str] | None] | None] = {}
        self._crossed: set[str] = set()  # products whose book is crossed now (one event per crossing)
        self._resyncing: set[str] = set()  # books that were lost; their next snapshot is a "resync"
        self._backoff = ResyncBackoff()
        self._pending: set[str] = set()  # products whose level2 snapshot has been asked for
        self._last_trade: dict[str, int] = {}  # highest numeric trade_id published per product
        self._handlers: dict[str, Callable[[dict[str, Any], int, int, Out], None]] = {
            "market_trades": self._on_trades,
            "l2_data": self._on_l2,
            "ticker": self._on_ticker,
            "heartbeats": _ignore,
            "subscriptions": self._on_subscriptions,
        }

    # -- what to send ----------------------------------------------------------------

    def subscribe(self) -> list[str]:
        products = self.symbols
        messages = [_subscription("subscribe", "heartbeats", products)]
        if "trade" in self.channels:
            messages.append(_subscription("subscribe", "market_trades", products))
        if "l2" in self.channels:
            messages.append(_subscription("subscribe", "level2", products))
            self._pending.update(products)
        if "quote" in self.channels:
            messages.append(_subscription("subscribe", "ticker", products))
        return messages

    def _resubscribe(self, products: list[str], recv_ns: int) -> None:
        # Unsubscribe first so the subscribe is a new one, which Coinbase answers with a
        # snapshot; the updates missed in between do not matter, the snapshot replaces them.
        # The subscribe backs off when these books keep getting lost (ResyncBackoff).
        products = sorted(products)
        after = max(self._backoff.delay(p, recv_ns) for p in products)
        self._request(Send(_subscription("unsubscribe", "level2", products)))
        self._request(Send(_subscription("subscribe", "level2", products), after))
        self._pending.update(products)

    # -- messages --------------------------------------------------------------------

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        try:
            msg = decode(raw)  # any bare JSON number stays exact text
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            out.event(time=recv_ns, kind="bad_message", detail=f"not JSON ({exc}): {_clip(raw)}")
            return
        if msg.__class__ is not dict:
            out.event(time=recv_ns, kind="bad_message", detail=f"not a JSON object: {_clip(raw)}")
            return
        channel = msg.get("channel")
        if channel is None:
            if msg.get("type") == "error":
                out.event(time=recv_ns, kind="bad_message", detail=f"coinbase error: {_clip(msg.get('message'))}")
            else:
                out.event(time=recv_ns, kind="unknown_message", detail=f"no channel: {_clip(raw)}")
            return
        if channel.__class__ is not str:
            out.event(time=recv_ns, kind="bad_message", detail=f"channel {_clip(channel)} is not a string")
            return
        seq = msg.get("sequence_num")
        if seq.__class__ is not int:
            out.event(time=recv_ns, kind="bad_message", detail=f"{channel}: sequence_num {seq!r} is not an integer")
            return
        check = self._sync.check(seq)
        if check is not APPLY:
            if check is SKIP:  # already seen on this connection: a duplicate
                return
            self._on_gap(check, recv_ns, out)
        handler = self._handlers.get(channel)
        if handler is None:
            out.event(time=recv_ns, kind="unknown_message", detail=f"channel {channel!r}: {_clip(raw)}")
            return
        try:
            handler(msg, seq, recv_ns, out)
        except _BAD_INPUT as exc:
            out.event(time=recv_ns, kind="bad_message", detail=f"{channel}: {type(exc).__name__} {exc}: {_clip(raw)}")

    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        # A new connection counts sequence_num from 0 again and resends every snapshot.
        self._sync.reset()
        for product in self._books:
            self._invalidate(product, "disconnected; waiting for the snapshot after reconnecting")
        self._pending.clear()
        self._actions.clear()  # resubscriptions for the old connection; subscribe() covers the new one

    def _on_gap(self, check: SeqCheck, recv_ns: int, out: Out) -> None:
        assert check.got is not None
        # Carry on counting from the message that showed the gap.
        self._sync.expected = check.got + 1
        detail = (f"sequence_num jumped from {check.expected} to {check.got}: messages were lost on this "
                  f"connection, so every book on it is invalid until level2 is resubscribed")
        if not self._books:
            out.event(time=recv_ns, kind="gap", detail=detail, expected=check.expected, got=check.got)
            return
        for product in self._books:
            out.event(time=recv_ns, kind="gap", detail=detail, sym=self._sym(product), venue_sym=product,
                      expected=check.expected, got=check.got)
            self._invalidate(product, f"sequence gap: expected {check.expected}, got {check.got}")
        self._resubscribe(list(self._books), recv_ns)

    # -- market_trades -----------------------------------------------------------------

    def _on_trades(self, msg: dict[str, Any], seq: int, recv_ns: int, out: Out) -> None:
        last_trade = self._last_trade
        for event in msg["events"]:
            snapshot = event.get("type") == "snapshot"
            # Dedupe against what was published before this event: Coinbase may list an
            # event's trades newest first, so the high-water mark moves only after the event.
            seen: dict[str, int] = {}
            for trade in event["trades"]:
                try:
                    product = _text(trade["product_id"], "product_id")
                    trade_id = _text(trade["trade_id"], "trade_id")
                    side = _TAKER_SIDE[trade["side"]]
                    price = decimal_text(trade["price"], "price")
                    size = decimal_text(trade["size"], "size")
                    time = parse_time(trade["time"])
                    number = int(trade_id) if trade_id.isdigit() else None
                except _BAD_INPUT as exc:
                    out.event(time=recv_ns, kind="bad_message",
                              detail=f"market_trades: bad trade {_clip(trade)}: {type(exc).__name__} {exc}")
                    continue
                high = last_trade.get(product)
                if number is not None:
                    if high is not None and number <= high:
                        continue
                    if number > seen.get(product, -1):
                        seen[product] = number
                if snapshot and high is None:
                    continue  # recent history from before this feed started
                out.trade(time=time, sym=self._sym(product), venue_sym=product, price=price, size=size, side=side,
                          trade_id=trade_id, seq=number, recv_time=recv_ns)
            for product, number in seen.items():
                if number > last_trade.get(product, -1):
                    last_trade[product] = number

    # -- level2 ------------------------------------------------------------------------

    def _on_l2(self, msg: dict[str, Any], seq: int, recv_ns: int, out: Out) -> None:
        msg_time: int | None = None
        for event in msg["events"]:
            product = _text(event["product_id"], "product_id")
            kind = event["type"]
            book = self._books.get(product)
            if book is None:
                book = self._books[product] = Book(self.name, product)
                self._tops[product] = None
            if kind == "update":
                if book.valid:
                    self._update(product, book, event["updates"], seq, recv_ns, out)
                elif product not in self._pending:  # deltas with no snapshot coming: ask for one
                    self._resubscribe([product], recv_ns)
            elif kind == "snapshot":
                if msg_time is None:
                    msg_time = parse_time(msg["timestamp"])
                self._snapshot(product, book, event["updates"], seq, msg_time, recv_ns, out)
            else:
                out.event(time=recv_ns, kind="unknown_message", sym=self._sym(product), venue_sym=product,
                          detail=f"l2_data event type {kind!r} is neither 'snapshot' nor 'update'")

    def _levels(self, updates: list[dict[str, Any]], timed: bool) -> tuple[
            list[tuple[str, str]], list[tuple[str, str]], list[Row]]:
        """Split updates into bid and ask (price, size) pairs, and rows of (side, price, size, time)."""
        bids: list[tuple[str, str]] = []
        asks: list[tuple[str, str]] = []
        rows: list[Row] = []
        last_text = ""
        last_time = 0
        for update in updates:
            side = _BOOK_SIDE[update["side"]]
            level = (update["price_level"], update["new_quantity"])
            (bids if side == "bid" else asks).append(level)
            if timed:
                text = update["event_time"]
                if text != last_text:  # levels of one message nearly always share it
                    last_time = parse_time(text)
                    last_text = text
            rows.append((side, level[0], level[1], last_time))
        return bids, asks, rows

    def _update(self, product: str, book: Book, updates: list[dict[str, Any]], seq: int, recv_ns: int,
                out: Out) -> None:
        try:
            bids, asks, rows = self._levels(updates, timed=True)
            # Book checks every price and size (decimal strings, positive price, size >= 0).
            book.apply_many(bids, asks, seq)
        except _BAD_INPUT as exc:
            self._bad_book(product, f"update {type(exc).__name__} {exc}", recv_ns, out)
            return
        sym = self._sym(product)
        l2 = out.l2
        for side, price, size, time in rows:
            l2(time=time, sym=sym, venue_sym=product, side=side, price=price,
               size=size, is_snapshot=False, seq_first=seq, seq_last=seq, recv_time=recv_ns)
        self._after_change(product, sym, book, rows[-1][3] if rows else recv_ns, recv_ns, out)

    def _snapshot(self, product: str, book: Book, updates: list[dict[str, Any]], seq: int, msg_time: int,
                  recv_ns: int, out: Out) -> None:
        try:
            # Snapshot levels carry a placeholder event_time (1970-01-01 in Coinbase's
            # example), so their rows take the message's timestamp.
            bids, asks, rows = self._levels(updates, timed=False)
            book.apply_snapshot(bids, asks, seq)
        except _BAD_INPUT as exc:
            self._bad_book(product, f"snapshot {type(exc).__name__} {exc}", recv_ns, out)
            return
        self._pending.discard(product)
        sym = self._sym(product)
        if product in self._resyncing:
            self._resyncing.discard(product)
            out.event(time=recv_ns, kind="resync", sym=sym, venue_sym=product,
                      detail=f"level2 snapshot at sequence_num {seq}: book valid again")
        l2 = out.l2
        for side, price, size, _ in rows:
            if Decimal(size):  # the book ignores zero sizes in a snapshot; so do the rows
                l2(time=msg_time, sym=sym, venue_sym=product, side=side, price=price,
                   size=size, is_snapshot=True, seq_first=seq, seq_last=seq, recv_time=recv_ns)
        self._after_change(product, sym, book, msg_time, recv_ns, out)

    def _after_change(self, product: str, sym: str, book: Book, time: int, recv_ns: int, out: Out) -> None:
        if book.crossed:
            if product not in self._crossed:
                self._crossed.add(product)
                best_bid, best_ask = book.best_bid(), book.best_ask()
                assert best_bid is not None and best_ask is not None
                out.event(time=recv_ns, kind="crossed", sym=sym, venue_sym=product,
                          detail=f"best bid {best_bid[0]} >= best ask {best_ask[0]}")
        elif self._crossed:
            self._crossed.discard(product)
        if not self._derive:
            return
        bids, asks = book.top_raw(1)
        top = (bids[0] if bids else None, asks[0] if asks else None)
        if top == self._tops.get(product):
            return
        self._tops[product] = top
        bid, ask = top
        out.quote(time=time, sym=sym, venue_sym=product,
                  bid_price=bid[0] if bid else None, bid_size=bid[1] if bid else None,
                  ask_price=ask[0] if ask else None, ask_size=ask[1] if ask else None,
                  recv_time=recv_ns, derived=True)

    def _bad_book(self, product: str, what: str, recv_ns: int, out: Out) -> None:
        out.event(time=recv_ns, kind="bad_message", sym=self._sym(product), venue_sym=product,
                  detail=f"l2_data {product}: malformed {what}; book invalid, resubscribing level2")
        self._invalidate(product, f"malformed l2_data: {what}")
        self._resubscribe([product], recv_ns)

    def _invalidate(self, product: str, reason: str) -> None:
        self._books[product].invalidate(reason)
        self._tops[product] = None
        self._crossed.discard(product)
        self._resyncing.add(product)

    # -- ticker, subscriptions ---------------------------------------------------------

    def _on_ticker(self, msg: dict[str, Any], seq: int, recv_ns: int, out: Out) -> None:
        time = parse_time(msg["timestamp"])  # tickers carry no time of their own
        for event in msg["events"]:
            for ticker in event["tickers"]:
                if "best_bid" not in ticker:
                    continue  # the early beta format: last price only, no top of book
                try:
                    product = _text(ticker["product_id"], "product_id")
                    bid_price = decimal_text(ticker["best_bid"], "best_bid")
                    bid_size = decimal_text(ticker["best_bid_quantity"], "best_bid_quantity", zero_ok=True)
                    ask_price = decimal_text(ticker["best_ask"], "best_ask")
                    ask_size = decimal_text(ticker["best_ask_quantity"], "best_ask_quantity", zero_ok=True)
                except _BAD_INPUT as exc:
                    out.event(time=recv_ns, kind="bad_message",
                              detail=f"ticker: bad ticker {_clip(ticker)}: {type(exc).__name__} {exc}")
                    continue
                out.quote(time=time, sym=self._sym(product), venue_sym=product, bid_price=bid_price,
                          bid_size=bid_size, ask_price=ask_price, ask_size=ask_size, recv_time=recv_ns,
                          derived=False)

    def _on_subscriptions(self, msg: dict[str, Any], seq: int, recv_ns: int, out: Out) -> None:
        parts = []
        for event in msg["events"]:
            for channel, products in sorted(event["subscriptions"].items()):
                parts.append(f"{channel}: {','.join(products) if products else '-'}")
        out.event(time=recv_ns, kind="subscribed", detail="; ".join(parts) or "no subscriptions")

    def _sym(self, product: str) -> str:
        sym = self._syms.get(product)
        if sym is None:
            sym = self._syms[product] = normalize_symbol(product)
        return sym


def _ignore(msg: dict[str, Any], seq: int, recv_ns: int, out: Out) -> None:
    """Heartbeats: their only job (keeping the subscriptions open) is done by arriving."""


def _subscription(kind: str, channel: str, products: Sequence[str]) -> str:
    return json.dumps({"type": kind, "product_ids": list(products), "channel": channel})


def _clip(value: object, limit: int = 200) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."
