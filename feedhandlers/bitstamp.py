"""Bitstamp WebSocket API v2 (``wss://ws.bitstamp.net``): trades, native top of book, L2 books synced by REST.

This module owns the Bitstamp :class:`~feedhandlers.venue.Venue`: what to subscribe to, how
each v2 message becomes ``trade`` / ``quote`` / ``l2`` / ``feed_event`` rows, and the
per-pair book rules. Sources: Bitstamp "Websocket API v2" (https://www.bitstamp.net/websocket/v2/)
and the HTTP API reference, "Order book" (https://www.bitstamp.net/api/, ``GET
/api/v2/order_book/{market_symbol}/``).

Symbols: Bitstamp names a market by its lower-case pair, ``btcusd``, ``ethbtc`` (and its
perpetuals ``btcusd-perp``), in channel names and REST paths alike. The constructor takes
that, or ``BTCUSD``, ``BTC/USD``, ``btc-usd`` or ``BTC/USD-PERP``, and keeps the Bitstamp form
(:func:`bitstamp_pair`): ``venue_sym`` is ``btcusd`` whatever the user typed, because that
is the name on the wire and in every REST path, and ``self.symbols`` holds those names (the
shell's stale watchdog matches rows by them). ``sym`` is ``normalize_symbol(venue_sym)``
(``BTCUSD``), exactly as the shell names the market in its own events.

Subscription: one ``{"event":"bts:subscribe","data":{"channel":"<channel>"}}`` per channel
(Bitstamp takes exactly one channel per message); each is acknowledged with
``bts:subscription_succeeded`` (a ``subscribed`` event naming the channel). ``bts:error``
(``data.message`` e.g. "Invalid channel provided.") is a ``bad_message`` event that quotes
Bitstamp and says how to fix the symbol. Channels -> tables:

* ``trade``: ``live_trades_{pair}``, event ``trade`` -> ``trade`` rows. ``price_str`` and
  ``amount_str`` are the exact text (``price``/``amount`` are JSON numbers and are ignored);
  ``microtimestamp`` (a string of microseconds) is the time; ``id`` is ``trade_id`` and
  ``seq``. ``type`` is documented only as "0 - buy; 1 - sell", without saying whose side;
  it is the *taker's*: in trades as the feed sends them the order with the higher (newer)
  id is on that side (``type`` 1 with ``sell_order_id`` 3709484799 > ``buy_order_id``
  3709484695; ``type`` 0 with the buy order newer), and the newer order of a match is the
  one that took liquidity. cryptofeed reads it the same way. So ``type`` 0 -> ``buy``,
  1 -> ``sell``, as it stands.
* ``quote``: ``order_book_{pair}``, event ``data``: a full top-100 book on every change
  -> one native ``quote`` row (``derived=False``) of ``bids[0]`` / ``asks[0]`` (best first,
  as documented) at its ``microtimestamp``. Every level of the frame is checked, so a
  malformed level anywhere rejects the frame.
* ``l2``: ``diff_order_book_{pair}``, event ``data``: the changed levels ``[price, amount]``
  (an amount of zero, spelled ``"0"`` or ``"0.00000"``, deletes) with ``microtimestamp``
  -> ``l2`` rows, and a derived ``quote`` (``derived=True``) whenever the top of our book
  changes. The book is full depth (no truncation: Bitstamp sends every change).

Book sync, per pair (Bitstamp's procedure, :class:`~feedhandlers.book.BitstampSync`): diffs
are buffered until a REST snapshot arrives; the first buffered diff makes the adapter ask the
shell for ``GET /api/v2/order_book/{pair}/`` (a :class:`~feedhandlers.venue.Rest` action), so
the snapshot is taken after the stream started; diffs not newer than the snapshot's
``microtimestamp`` are already in it and skipped, the rest applied in order. A snapshot
*older* than the first diff of the connection may miss changes made before the stream
started, so it is refused with a ``gap`` event (``expected`` = the microtimestamp it had to
reach, ``got`` = its own) and fetched again, as Binance's rules do for the same hole (this
check is ours: Bitstamp's procedure does not spell it out).

Bitstamp diffs carry no sequence number and no checksum, so a lost diff cannot be seen
directly. What can be seen is a book that is *crossed* after an update (best bid >= best
ask): a ``crossed`` event, once per crossing. Whether a crossing re-snapshots: Bitstamp's
page warns that a book may occasionally show best bid >= best ask and that this
self-corrects within the next message, so one crossed update is not evidence of anything,
and re-fetching a full-depth REST book on every one would hammer the REST API for nothing.
But a lost diff (say, the delete of a bid) leaves a stale level that no later diff will
ever remove; once the market moves through it the book stays crossed for good, and every
derived quote after that is wrong. So a crossing that survives ``crossed_limit`` consecutive diffs
(default 3: the doc's "next message" plus one more of margin) is taken as a lost diff: a
``gap`` event (``expected`` null: Bitstamp has no id to expect; ``got`` = that diff's
microtimestamp), the book is dropped and re-fetched; the snapshot must be at least as new
as that diff. A malformed diff is a ``bad_message`` and is lost too, so the book is dropped
and re-fetched the same way. While a book is invalid nothing of it is published; the
snapshot that rebuilds it brings a ``resync`` event (not the very first one). Other pairs
are untouched. ``on_disconnect`` drops every book (the new connection's diffs start
wherever Bitstamp is now), so every reconnect re-snapshots, with a ``resync`` event.

Connection: ``bts:request_reconnect`` (Bitstamp announces maintenance of the server and
gives a few seconds) asks the shell for a :class:`~feedhandlers.venue.Reconnect`; the
shell's ``disconnect`` event carries the reason. ``keepalive``: after 10 s without a frame
the shell sends ``{"event":"bts:heartbeat"}``; Bitstamp answers with a ``bts:heartbeat``
(which produces nothing), so a quiet market (they can be silent for most of a minute) never
trips the shell's idle timeout.

Numbers and times: every price and size is checked as a plain decimal string (digits and an
optional point, as Bitstamp writes them; prices positive, amounts positive except in diffs
and REST snapshots, where zero is a delete) and passed on as the text Bitstamp sent, never through a float;
times are Bitstamp's ``microtimestamp`` (microseconds, as a string) in int ns UTC. ``l2``
rows carry no ``seq_first``/``seq_last``: Bitstamp has no sequence ids, and the
microtimestamp is the row's ``time`` already.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from feedhandlers.book import SKIP, BitstampSync, Book
from feedhandlers.jsonwire import decode
from feedhandlers.normalize import BadMessage, Out, decimal_text, normalize_symbol
from feedhandlers.venue import CHANNELS, Reconnect, Rest, Venue
from tickerplant.exceptions import DataError

__all__ = ["Bitstamp", "bitstamp_pair"]

_US: Final = 1_000  # Bitstamp times are microseconds; rows are nanoseconds
_MAX_US: Final = (2**63 - 1) // _US  # so the time in ns still fits the int64 column
_MAX_ID: Final = 2**63 - 1  # trade ids go into the int64 ``seq`` column
_SIDES: Final = ("buy", "sell")  # trade ``type`` 0 / 1, the taker's side
_PERP: Final = "-perp"
# Diffs kept while waiting for a snapshot (Bitstamp sends a few a second per pair; this is
# many minutes). Beyond it the oldest go, and the snapshot must be at least as new as they were.
_MAX_BUFFER: Final = 5_000
_DETAIL: Final = 160  # characters of a bad message quoted in its feed_event
# What picking a malformed message apart may raise; each becomes one event, never an exception.
_MALFORMED: Final = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, RecursionError,
                     DataError)



def bitstamp_pair(symbol: str) -> str:
    """Bitstamp's market name for ``symbol``: ``BTC/USD``, ``BTCUSD``, ``btc-usd`` -> ``btcusd``;
    ``BTC/USD-PERP`` -> ``btcusd-perp``. ValueError for anything that cannot be one."""
    text = symbol.strip().lower() if isinstance(symbol, str) else ""
    suffix = _PERP if text.endswith(_PERP) else ""
    base = text[: len(text) - len(suffix)]
    for sep in ("/", "-", "_"):
        base = base.replace(sep, "")
    if not (base.isascii() and base.isalnum()):
        raise ValueError(f"bitstamp: {symbol!r} is not a Bitstamp market; give pairs such as btcusd, BTCUSD or "
                         f"BTC/USD (or btcusd-perp for a perpetual)")
    return base + suffix



def _micros(value: Any, what: str) -> int:
    """Bitstamp's microseconds since the epoch, sent as a string of digits (an integer is taken too)."""
    if value.__class__ is str and value.isascii() and value.isdigit():
        us = int(value)
    elif value.__class__ is int and value >= 0:  # not bool
        us = value
    else:
        raise BadMessage(f"{what} {_clip(repr(value), 40)} is not microseconds since the epoch")
    if us > _MAX_US:
        raise BadMessage(f"{what} {_clip(repr(value), 40)} is out of range")
    return us


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value.__class__ is not dict:
        raise BadMessage(f"{what} {_clip(repr(value))} is not an object")
    return value


def _levels(value: Any, what: str, *, zero_ok: bool) -> list[Any]:
    """A list of ``[price, amount]`` levels, every one checked (a bad one rejects the message)."""
    if value.__class__ is not list:
        raise BadMessage(f"{what} {_clip(repr(value))} is not a list of [price, amount] levels")
    for level in value:
        if level.__class__ is not list or len(level) < 2:
            raise BadMessage(f"{what} level {_clip(repr(level))} is not [price, amount]")
        decimal_text(level[0], f"{what} price", zero_ok=False)
        decimal_text(level[1], f"{what} amount", zero_ok=zero_ok)
    return value


class _Diff:
    """One ``diff_order_book`` message, checked for shape, as buffered and applied."""

    __slots__ = ("asks", "bids", "micros", "recv_ns")

    def __init__(self, micros: int, bids: list[Any], asks: list[Any], recv_ns: int) -> None:
        self.micros = micros
        self.bids = bids
        self.asks = asks
        self.recv_ns = recv_ns


class _Pair:
    """Everything kept for one Bitstamp market: its book, sync rule, buffer and last published top."""

    __slots__ = ("book", "buffer", "crossed", "crossed_diffs", "ever_valid", "floor", "last_seen", "requested",
                 "sym", "sync", "top", "venue_sym")

    def __init__(self, venue: str, venue_sym: str) -> None:
        self.venue_sym = venue_sym
        # As the shell names this market in its own events (rest_error, stale), so they join.
        self.sym = normalize_symbol(venue_sym)
        self.book = Book(venue, venue_sym)  # full depth: Bitstamp's diffs cover the whole book
        self.sync: BitstampSync | None = None  # None until a snapshot is applied: diffs are buffered
        self.buffer: deque[_Diff] = deque(maxlen=_MAX_BUFFER)
        self.requested = False  # a snapshot is asked for and not yet answered
        self.ever_valid = False  # so the first snapshot is not reported as a "resync"
        self.crossed = False  # a "crossed" event is emitted once per crossing
        self.crossed_diffs = 0  # consecutive diffs after which the book was crossed
        # The snapshot that rebuilds the book must be at least this new (microseconds): the
        # first diff of a connection (older snapshots may miss what happened before the stream
        # started), a diff known to be lost, or the last one pushed out of a full buffer.
        self.floor = 0
        self.last_seen = 0  # microtimestamp of the last well-formed diff of this connection; 0: none yet
        self.top: tuple[tuple[str, str] | None, tuple[str, str] | None] | None = None

    def reset(self, reason: str) -> None:
        """Drop the book and all sync state (a new connection starts from nothing)."""
        self.book.invalidate(reason)
        self.sync = None
        self.buffer.clear()
        self.requested = False
        self.crossed = False
        self.crossed_diffs = 0
        self.floor = 0
        self.last_seen = 0
        self.top = None


_Handler = Callable[[_Pair, str, Any, str | bytes, int, Out], None]


class Bitstamp(Venue):
    """Bitstamp WebSocket API v2 for ``symbols`` given as Bitstamp pairs (``btcusd``, ``BTC/USD``...).

    ``crossed_limit``: after how many consecutive diffs a still-crossed book is taken as a
    lost diff and re-snapshotted (see the module docstring). ::

        venue = Bitstamp(["btcusd", "ETH/USD"])
        venue.symbols       # ['btcusd', 'ethusd']
        venue.subscribe()   # ['{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd"}}', ...]
    """

    name = "bitstamp"
    ws_url = "wss://ws.bitstamp.net"
    rest_url = "https://www.bitstamp.net"
    # Bitstamp answers {"event":"bts:heartbeat"}; a quiet market must not look like a dead
    # connection to the shell's idle timeout (30 s by default), so ping well inside it.
    keepalive = 10.0

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS, *,
                 crossed_limit: int = 3) -> None:
        super().__init__(symbols, channels)
        if crossed_limit < 1:
            raise ValueError(f"crossed_limit must be a positive number of diffs, not {crossed_limit!r}")
        self.crossed_limit = crossed_limit
        self.symbols = list(dict.fromkeys(bitstamp_pair(s) for s in symbols))
        self._pairs: dict[str, _Pair] = {}
        # Channel name -> (handler, pair state): one dict lookup routes a message.
        self._routes: dict[str, tuple[_Handler, _Pair]] = {}
        for pair in self.symbols:
            st = self._pairs[pair] = _Pair(self.name, pair)
            if "trade" in self.channels:
                self._routes[f"live_trades_{pair}"] = (self._trade, st)
            if "quote" in self.channels:
                self._routes[f"order_book_{pair}"] = (self._order_book, st)
            if "l2" in self.channels:
                self._routes[f"diff_order_book_{pair}"] = (self._diff_book, st)

    # -- connection ------------------------------------------------------------------

    def subscribe(self) -> list[str]:
        return [json.dumps({"event": "bts:subscribe", "data": {"channel": channel}}, separators=(",", ":"))
                for channel in self._routes]

    def ping(self) -> str:
        return '{"event":"bts:heartbeat"}'

    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        # Every book is stale: a new connection's diffs start wherever Bitstamp is now.
        for st in self._pairs.values():
            st.reset("disconnected; waiting for a new snapshot after reconnecting")
        # Actions queued for the old connection (a Reconnect, a snapshot) mean nothing on the new one.
        self._actions = []

    def book(self, venue_sym: str) -> Book:
        """The L2 book of ``venue_sym`` (``btcusd``, or any spelling :func:`bitstamp_pair` takes)."""
        return self._pairs[bitstamp_pair(venue_sym)].book

    def _snapshot_request(self, st: _Pair) -> Rest:
        return Rest(st.venue_sym, f"/api/v2/order_book/{st.venue_sym}/")

    # -- messages --------------------------------------------------------------------

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        try:
            msg = decode(raw)
            if msg.__class__ is not dict:
                raise BadMessage(f"a {type(msg).__name__}, not a JSON object")
            event = msg["event"]
            if event.__class__ is not str:
                raise BadMessage(f"event {event!r} is not a string")
            channel = msg.get("channel")
            route = self._routes.get(channel) if channel.__class__ is str else None
        except (BadMessage, *_MALFORMED) as exc:
            # ValueError covers msgspec's DecodeError (also for bytes that are not UTF-8); KeyError a missing field.
            self._bad(_why(exc), raw, recv_ns, out)
            return
        if route is None or event.startswith("bts:"):
            self._control(event, channel, msg, route, raw, recv_ns, out)
            return
        handler, st = route
        try:
            handler(st, event, msg.get("data"), raw, recv_ns, out)
        except (BadMessage, *_MALFORMED) as exc:
            self._bad(_why(exc), raw, recv_ns, out, st)

    def _control(self, event: str, channel: Any, msg: dict[str, Any], route: tuple[_Handler, _Pair] | None,
                 raw: str | bytes, recv_ns: int, out: Out) -> None:
        """``bts:*`` events, and anything on a channel we did not subscribe to."""
        st = route[1] if route is not None else None
        sym, venue_sym = (st.sym, st.venue_sym) if st is not None else (None, None)
        if event == "bts:subscription_succeeded":
            out.event(time=recv_ns, kind="subscribed", sym=sym, venue_sym=venue_sym,
                      detail=f"subscribed to {channel}")
        elif event in ("bts:heartbeat", "bts:unsubscription_succeeded"):
            return  # the answer to our keepalive; we never unsubscribe
        elif event == "bts:request_reconnect":
            self._request(Reconnect("bts:request_reconnect: Bitstamp is taking this server down for maintenance "
                                    "and asks clients to reconnect within a few seconds"))
        elif event == "bts:error":
            data = msg.get("data")
            what, code = (data.get("message"), data.get("code")) if data.__class__ is dict else (data, None)
            self._bad(f"Bitstamp refused a request: {what!r} (code {code}); check that every symbol is a Bitstamp "
                      f"market such as btcusd or BTC/USD and that it trades on Bitstamp", raw, recv_ns, out)
        elif event.startswith("bts:"):
            out.event(time=recv_ns, kind="unknown_message", detail=f"unknown Bitstamp event {event!r}: {_quote(raw)}")
        else:
            out.event(time=recv_ns, kind="unknown_message",
                      detail=f"event {event!r} on channel {channel!r}, which was not subscribed: {_quote(raw)}")

    def _bad(self, why: str, raw: str | bytes, recv_ns: int, out: Out, st: _Pair | None = None) -> None:
        out.event(time=recv_ns, kind="bad_message", sym=st.sym if st else None, venue_sym=st.venue_sym if st else None,
                  detail=f"{why[:_DETAIL]}; message: {_quote(raw)}")

    def _unexpected(self, st: _Pair, event: str, raw: str | bytes, recv_ns: int, out: Out) -> None:
        out.event(time=recv_ns, kind="unknown_message", sym=st.sym, venue_sym=st.venue_sym,
                  detail=f"unexpected event {event!r} on a subscribed channel: {_quote(raw)}")

    # -- trades and native quotes ----------------------------------------------------

    def _trade(self, st: _Pair, event: str, data: Any, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if event != "trade":
            self._unexpected(st, event, raw, recv_ns, out)
            return
        d = _obj(data, "trade data")
        trade_id = d["id"]
        if trade_id.__class__ is not int or not 0 <= trade_id <= _MAX_ID:
            raise BadMessage(f"trade id {trade_id!r} is not a non-negative 64-bit integer")
        kind = d["type"]
        if kind.__class__ is not int or kind not in (0, 1):  # not bool: True == 1
            raise BadMessage(f"trade type {kind!r} is not 0 (buy) or 1 (sell)")
        # Every argument is checked before out.trade runs: a bad field adds no row.
        out.trade(time=_micros(d["microtimestamp"], "microtimestamp") * _US, sym=st.sym, venue_sym=st.venue_sym,
                  price=decimal_text(d["price_str"], "price_str"), size=decimal_text(d["amount_str"], "amount_str"),
                  side=_SIDES[kind], trade_id=str(trade_id), seq=trade_id, recv_time=recv_ns)

    def _order_book(self, st: _Pair, event: str, data: Any, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if event != "data":
            self._unexpected(st, event, raw, recv_ns, out)
            return
        d = _obj(data, "order_book data")
        time = _micros(d["microtimestamp"], "microtimestamp") * _US
        bids = _levels(d["bids"], "bid", zero_ok=False)
        asks = _levels(d["asks"], "ask", zero_ok=False)
        # Best first, as Bitstamp documents (bids high to low, asks low to high).
        bid = bids[0] if bids else None
        ask = asks[0] if asks else None
        out.quote(time=time, sym=st.sym, venue_sym=st.venue_sym, bid_price=bid[0] if bid else None,
                  bid_size=bid[1] if bid else None, ask_price=ask[0] if ask else None,
                  ask_size=ask[1] if ask else None, recv_time=recv_ns, derived=False)

    # -- books -----------------------------------------------------------------------

    def _diff_book(self, st: _Pair, event: str, data: Any, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if event != "data":
            self._unexpected(st, event, raw, recv_ns, out)
            return
        try:
            d = _obj(data, "diff_order_book data")
            ev = _Diff(_micros(d["microtimestamp"], "microtimestamp"), _levels(d["bids"], "bid", zero_ok=True),
                       _levels(d["asks"], "ask", zero_ok=True), recv_ns)
        except (BadMessage, *_MALFORMED) as exc:
            self._lost_diff(st, data, exc, raw, recv_ns, out)
            return
        if st.last_seen == 0:
            st.floor = max(st.floor, ev.micros)  # the stream starts here: a snapshot must reach it
        if ev.micros > st.last_seen:
            st.last_seen = ev.micros
        if st.sync is None:
            self._wait(st, ev)
        else:
            self._apply(st, ev, out)

    def _lost_diff(self, st: _Pair, data: Any, exc: Exception, raw: str | bytes, recv_ns: int, out: Out) -> None:
        """A malformed diff: one bad_message event; its change is lost, so the book is rebuilt from a
        snapshot at least as new as it (or, if even its time is unreadable, newer than the last good diff)."""
        why = _why(exc)
        try:
            floor = _micros(data["microtimestamp"], "microtimestamp")
        except (BadMessage, *_MALFORMED):
            floor = st.last_seen + 1
        self._bad(f"{why}; the {st.venue_sym} book is dropped and re-fetched", raw, recv_ns, out, st)
        self._lose(st, f"malformed diff: {why}", floor)

    def _wait(self, st: _Pair, ev: _Diff) -> None:
        """Buffer ``ev`` until the snapshot comes, and ask for one if not asked yet."""
        if len(st.buffer) == st.buffer.maxlen:  # the oldest goes: the snapshot must cover it
            st.floor = max(st.floor, st.buffer[0].micros)
        st.buffer.append(ev)
        if not st.requested:
            st.requested = True
            self._request(self._snapshot_request(st))

    def _lose(self, st: _Pair, reason: str, floor: int) -> None:
        """The book is no good: empty it, keep buffering, and ask for a snapshot at least ``floor`` new."""
        st.book.invalidate(reason)
        st.sync = None
        st.top = None
        st.crossed = False
        st.crossed_diffs = 0
        st.floor = max(st.floor, floor)
        if not st.requested:  # one already on its way is checked against the floor when it comes
            st.requested = True
            self._request(self._snapshot_request(st))

    def _apply(self, st: _Pair, ev: _Diff, out: Out) -> bool:
        """Apply one diff to a synced book and publish its rows; False when the book was lost."""
        assert st.sync is not None
        if st.sync.check(ev.micros) is SKIP:
            return True  # already in the snapshot, or not newer than the last diff applied
        st.book.apply_many(ev.bids, ev.asks)  # levels were checked when the diff was parsed
        self._publish(st, ev.micros * _US, ev.bids, ev.asks, False, ev.recv_ns, out)
        if not st.crossed:
            st.crossed_diffs = 0
            return True
        st.crossed_diffs += 1
        if st.crossed_diffs < self.crossed_limit:
            return True
        best_bid, best_ask = st.book.best_bid(), st.book.best_ask()
        out.event(time=ev.recv_ns, kind="gap", sym=st.sym, venue_sym=st.venue_sym, expected=None, got=ev.micros,
                  detail=f"book still crossed after {st.crossed_diffs} consecutive diffs (best bid "
                         f"{best_bid[0] if best_bid else None} >= best ask {best_ask[0] if best_ask else None}): "
                         f"Bitstamp diffs carry no sequence number, so a crossing that does not self-correct is "
                         f"taken as a lost diff; re-fetching the snapshot")
        self._lose(st, f"crossed for {st.crossed_diffs} diffs: a diff was lost", ev.micros)
        return False

    def _publish(self, st: _Pair, time: int, bids: list[Any], asks: list[Any], snapshot: bool, recv_ns: int,
                 out: Out) -> None:
        """l2 rows for the levels just applied, then a derived quote if the top moved, then crossing."""
        l2 = out.l2
        sym = st.sym
        venue_sym = st.venue_sym
        for level in bids:
            l2(time=time, sym=sym, venue_sym=venue_sym, side="bid", price=level[0], size=level[1],
               is_snapshot=snapshot, seq_first=None, seq_last=None, recv_time=recv_ns)
        for level in asks:
            l2(time=time, sym=sym, venue_sym=venue_sym, side="ask", price=level[0], size=level[1],
               is_snapshot=snapshot, seq_first=None, seq_last=None, recv_time=recv_ns)
        book = st.book
        top_bids, top_asks = book.top_raw(1)
        top = (top_bids[0] if top_bids else None, top_asks[0] if top_asks else None)
        if top != st.top:
            st.top = top
            bid, ask = top
            out.quote(time=time, sym=sym, venue_sym=venue_sym, bid_price=bid[0] if bid else None,
                      bid_size=bid[1] if bid else None, ask_price=ask[0] if ask else None,
                      ask_size=ask[1] if ask else None, recv_time=recv_ns, derived=True)
        crossed = book.crossed
        if crossed and not st.crossed:
            state = "locked" if book.locked else "crossed"
            out.event(time=recv_ns, kind="crossed", sym=sym, venue_sym=venue_sym,
                      detail=f"book {state} at microtimestamp {time // _US}: best bid {top[0]} >= best ask {top[1]}")
        st.crossed = crossed

    def on_snapshot(self, venue_sym: str, body: bytes, recv_ns: int, out: Out) -> None:
        st = self._pairs.get(venue_sym)
        if st is None:
            raise ValueError(f"{self.name}: snapshot for {venue_sym!r}, which is not one of the markets "
                             f"{sorted(self._pairs)}; the shell must answer Rest actions with their own venue_sym")
        st.requested = False
        if st.sync is not None:
            return  # already synced by an earlier answer: a late one would rewind the book
        try:
            doc = _obj(decode(body), "snapshot")
            micros = _micros(doc["microtimestamp"], "microtimestamp")
            bids = _levels(doc["bids"], "bid", zero_ok=True)
            asks = _levels(doc["asks"], "ask", zero_ok=True)
        except (BadMessage, *_MALFORMED) as exc:
            st.book.invalidate("bad snapshot")
            out.event(time=recv_ns, kind="bad_message", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"REST snapshot unusable ({str(exc)[:_DETAIL]}): asking again; {_quote(body)}")
            st.requested = True
            self._request(self._snapshot_request(st))
            return
        # The snapshot must reach the first diff of the connection (else changes from before the
        # stream started may be missing) and any diff we know was lost. Diffs received since are
        # all held, so a snapshot older than some of them is fine: those are applied on top.
        need = st.floor
        if micros < need:
            out.event(time=recv_ns, kind="gap", sym=st.sym, venue_sym=st.venue_sym, expected=need, got=micros,
                      detail=f"REST snapshot at microtimestamp {micros} is older than {need} (the stream's first diff "
                             f"or a lost one), so it may miss changes; fetching the snapshot again")
            st.requested = True
            self._request(self._snapshot_request(st))
            return
        st.book.apply_snapshot(bids, asks)  # levels checked above: cannot raise
        buffered = list(st.buffer)
        st.buffer.clear()
        st.sync = BitstampSync(micros)
        newer = sum(1 for ev in buffered if ev.micros > micros)
        if st.ever_valid:
            out.event(time=recv_ns, kind="resync", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"book rebuilt from the REST snapshot at microtimestamp {micros} and {newer} buffered "
                             f"diffs newer than it ({len(buffered) - newer} older ones skipped)")
        st.ever_valid = True
        st.floor = 0
        st.top = None
        st.crossed = False
        st.crossed_diffs = 0
        snap_bids, snap_asks = st.book.top_raw(len(bids) + len(asks))
        self._publish(st, micros * _US, snap_bids, snap_asks, True, recv_ns, out)
        for i, ev in enumerate(buffered):
            if not self._apply(st, ev, out):
                # The book was lost at ``ev``; the diffs after it are good and go back in the
                # buffer for the next snapshot (nothing else would ever bring their changes back).
                st.buffer.extend(buffered[i + 1:])
                return


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BadMessage) else f"{type(exc).__name__}: {exc}"


def _clip(text: str, limit: int = _DETAIL) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _quote(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else bytes(raw[: _DETAIL * 4]).decode("utf-8", "replace")
    return repr(text[:_DETAIL]) + ("..." if len(text) > _DETAIL else "")
