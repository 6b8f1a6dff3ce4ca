"""Bybit v5 public WebSocket (``wss://stream.bybit.com/v5/public/spot``): trades, level-1 quotes, L2 books.

This module owns the Bybit :class:`~feedhandlers.venue.Venue`: what to subscribe to, how each v5
public message becomes ``trade`` / ``quote`` / ``l2`` / ``feed_event`` rows, and the per-symbol
book rules. Sources: Bybit API docs v5, "Connect" (bybit-exchange.github.io/docs/v5/ws/connect),
"Orderbook" (/docs/v5/websocket/public/orderbook) and "Trade" (/docs/v5/websocket/public/trade).

Categories. Spot, USDT/USDC perpetuals ("linear") and inverse contracts share one message
format and differ by endpoint: ``Bybit(symbols, category="linear")`` picks
``wss://stream.bybit.com/v5/public/linear`` and names the exchange ``bybit-linear`` (spot is
plain ``bybit``), because a spot ``BTCUSDT`` and a perpetual ``BTCUSDT`` are different
instruments with the same ``sym``. :class:`BybitLinear` and :class:`BybitInverse` are the same
adapter with the category fixed, for the ``tick feed <name>`` registry. Options are refused:
their trade topic is per base coin (``publicTrade.BTC``), they have no level-1 book and their
acks have another shape.

Channels -> topics -> tables (symbols are Bybit's, ``BTCUSDT``; ``sym`` is ``BTCUSD``):

* ``trade``: ``publicTrade.{symbol}`` -> ``trade`` rows. ``data`` is a list (up to 1024 trades,
  in matching order) of ``{T, s, S, v, p, i, BT, seq?}``: ``S`` is documented as "side of
  taker", so ``Buy`` -> side ``buy``; ``i`` (a string: digits on spot, a UUID on derivatives)
  is ``trade_id``; ``seq`` (the "cross sequence", newer servers only) goes to ``seq``. It is
  increasing per symbol but shared with the order book, so it is not contiguous across trades
  and no gap is inferred from it. Time: ``T``, the fill time in ms.
* ``quote``: ``orderbook.1.{symbol}`` -> native ``quote`` rows (``derived=False``). The docs
  say level-1 data is "snapshot message only" and is re-pushed unchanged after 3 s without a
  change, so a row is published only when the top (price or size, either side) changes;
  a level-1 ``delta`` is not documented and becomes a ``bad_message``.
* ``l2``: ``orderbook.{depth}.{symbol}`` (``depth`` 50, 200 or 1000; level 1 is the quote
  channel) -> ``l2`` rows, a derived ``quote`` (``derived=True``) when the top changes and a
  ``crossed`` event once per crossing. ``data`` is ``{s, b, a, u, seq}``, levels ``[price, size]``
  as decimal strings, size ``"0"`` deletes. One :class:`~feedhandlers.book.Book` per symbol at
  the subscribed depth; a level pushed out of scope by truncation is published as a size
  ``"0"`` row, so the l2 stream alone rebuilds the book. ``seq_first``/``seq_last`` are ``u``.

Book sync (:class:`~feedhandlers.book.BybitSync`): the subscription starts with a snapshot;
a snapshot always replaces the book (Bybit re-sends one "if there is a problem on Bybit's end";
that is documented behaviour, so it is silent but publishes ``is_snapshot`` l2 rows); ``u == 1``
is a full book after a service restart and is applied as one; otherwise each delta's ``u``
must be the previous ``u + 1`` (a stale ``u`` is dropped). A jump, or a delta before any
snapshot (``expected`` None), is a ``gap`` event; a malformed book message is a
``bad_message``. Either way that symbol's book alone is invalidated, nothing of it is
published, its deltas are ignored, and ``unsubscribe`` + ``subscribe`` of its orderbook topic
are queued as :class:`~feedhandlers.venue.Send` actions (a topic cannot be subscribed twice;
a new subscription starts with a snapshot). That snapshot brings a ``resync`` event.

Times are int ns UTC from Bybit's ms fields: ``T`` for trades, and for books ``cts`` (the
matching engine's time, which the docs say "can be correlated with T from public trade
channel") or ``ts`` (when the service generated the message) where ``cts`` is absent.

Control messages: every subscribe request carries a ``req_id`` (``sub-0``, ``sub-1``...; at
most 10 topics each, the spot limit per request); the ack ``{"success":true,"ret_msg":
"subscribe","op":"subscribe","req_id":...}`` becomes a ``subscribed`` event naming the topics,
a refusal (``success`` false) a ``bad_message`` with Bybit's ``ret_msg``. The request ids are
fixed by the constructor's arguments, so a capture replays to the same events. Unsubscribe
acks produce nothing. The keepalive ``{"op":"ping"}`` goes out after 20 s of quiet (Bybit drops
a connection after 10 min without one and recommends every 20 s); its pong
(``{"success":true,"ret_msg":"pong","op":"ping"}``, or ``{"op":"pong"}``) produces nothing.

Numbers stay the decimal strings Bybit sent: every price and size is checked as a finite
decimal (prices > 0) before any row is written, and the JSON decoder keeps any float as its
source text (:mod:`feedhandlers.jsonwire`), so nothing goes through a float. Anything
malformed is one ``bad_message`` event and no row; an unknown topic or op is ``unknown_message``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from decimal import Decimal
from typing import Any, Final, Literal

from feedhandlers.book import APPLY, RESET, SKIP, Book, BybitSync
from feedhandlers.jsonwire import decode
from feedhandlers.normalize import BadMessage, Out, decimal_text, normalize_symbol
from feedhandlers.venue import CHANNELS, Send, Venue
from tickerplant.exceptions import DataError

__all__ = ["CATEGORIES", "DEPTHS", "Bybit", "BybitInverse", "BybitLinear"]

# Public endpoints by category (docs "Connect"); the shell's --ws-url overrides them.
CATEGORIES: Final = {
    "spot": "wss://stream.bybit.com/v5/public/spot",
    "linear": "wss://stream.bybit.com/v5/public/linear",
    "inverse": "wss://stream.bybit.com/v5/public/inverse",
}
# Book depths the docs list for spot, linear and inverse, less level 1 (the quote channel).
DEPTHS: Final = (50, 200, 1000)
_ARGS_PER_REQUEST: Final = 10  # "Spot can input up to 10 args for each subscription request"
_MS: Final = 1_000_000
_ZERO: Final = Decimal(0)
# Above this a decimal is finite but its float64 column value is not: refuse it here, not in to_batches.
_SIDES: Final = {"Buy": "buy", "Sell": "sell"}  # S is the taker's side
_DETAIL: Final = 160  # characters of a bad message quoted in its feed_event

Top = tuple[str | None, str | None, str | None, str | None]  # bid price, bid size, ask price, ask size



# What picking a malformed message apart can raise; each becomes one bad_message event.
_MALFORMED: Final = (BadMessage, KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError)


class _Sym:
    """Everything kept for one Bybit symbol: its book and sync rule, and what was last published."""

    __slots__ = ("awaiting", "book", "book_topic", "crossed", "quote", "sym", "sync", "top", "venue_sym")

    def __init__(self, venue: str, venue_sym: str, depth: int) -> None:
        self.venue_sym = venue_sym
        self.sym = normalize_symbol(venue_sym)
        self.book_topic = f"orderbook.{depth}.{venue_sym}"
        self.book = Book(venue, venue_sym, depth=depth)
        self.sync = BybitSync()
        # Why the next snapshot is a rebuild (a gap, a bad message, a reconnect); None while the
        # book is healthy or has never had a snapshot. While set, deltas are ignored.
        self.awaiting: str | None = None
        self.top: Top | None = None  # last derived quote published
        self.quote: Top | None = None  # last native (level-1) quote published
        self.crossed = False  # a "crossed" event is emitted once per crossing


_Handler = Callable[[_Sym, dict[str, Any], int, Out], None]


class Bybit(Venue):
    """Bybit v5 public adapter for ``symbols`` in Bybit's form (``BTCUSDT``).

    ``category`` is ``"spot"`` (default), ``"linear"`` or ``"inverse"``: it picks the endpoint
    and the ``exchange`` name (``bybit``, ``bybit-linear``, ``bybit-inverse``). ``depth`` is the
    L2 book depth, one of :data:`DEPTHS` (default 50). ::

        venue = Bybit(["BTCUSDT", "ETHUSDT"])
        venue.subscribe()  # ['{"op":"subscribe","args":["publicTrade.BTCUSDT",...],"req_id":"sub-0"}']
    """

    name = "bybit"
    ws_url = CATEGORIES["spot"]
    rest_url = "https://api.bybit.com"  # unused: books start with a snapshot on the WebSocket
    keepalive = 20.0  # seconds of quiet before a ping: Bybit's recommended heartbeat interval
    category = "spot"

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS, *,
                 category: str | None = None, depth: int = 50) -> None:
        category = category or self.category
        if category not in CATEGORIES:
            why = (" (options subscribe trades by base coin and have no level-1 book; not supported)"
                   if category == "option" else "")
            raise ValueError(f"bybit category {category!r} is not one of {sorted(CATEGORIES)}{why}")
        if depth not in DEPTHS:
            raise ValueError(f"bybit book depth {depth!r} is not one Bybit offers; use one of {list(DEPTHS)} "
                             f"(level 1 is the quote channel)")
        self.category = category
        self.name = "bybit" if category == "spot" else f"bybit-{category}"
        self.ws_url = CATEGORIES[category]
        for s in symbols:
            if not isinstance(s, str) or not s.strip():
                raise ValueError(f"bybit symbol {s!r} is not a Bybit symbol such as BTCUSDT")
        super().__init__(list(dict.fromkeys(s.strip().upper() for s in symbols)), channels)
        self.depth = depth
        self._syms = {s: _Sym(self.name, s, depth) for s in self.symbols}
        # Topic -> (handler, symbol state): one dict lookup routes a message.
        self._routes: dict[str, tuple[_Handler, _Sym]] = {}
        for st in self._syms.values():
            if "trade" in self.channels:
                self._routes[f"publicTrade.{st.venue_sym}"] = (self._trade, st)
            if "quote" in self.channels:
                self._routes[f"orderbook.1.{st.venue_sym}"] = (self._level1, st)
            if "l2" in self.channels:
                self._routes[st.book_topic] = (self._book, st)
        topics = list(self._routes)
        # req_id -> topics of every request this adapter can send: fixed by the arguments, so an
        # ack in a replayed capture names the same topics as it did live.
        self._requests: dict[str, list[str]] = {
            f"sub-{i // _ARGS_PER_REQUEST}": topics[i:i + _ARGS_PER_REQUEST]
            for i in range(0, len(topics), _ARGS_PER_REQUEST)
        }
        if "l2" in self.channels:
            for st in self._syms.values():
                self._requests[f"resub-{st.venue_sym}"] = [st.book_topic]

    # -- what to send ------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        return {"depth": self.depth}

    def subscribe(self) -> list[str]:
        return [_op("subscribe", topics, req_id) for req_id, topics in self._requests.items()
                if req_id.startswith("sub-")]

    def ping(self) -> str:
        return '{"op":"ping"}'

    def book(self, venue_sym: str) -> Book:
        """The L2 book of ``venue_sym`` (e.g. "BTCUSDT"), for inspection."""
        return self._syms[venue_sym.upper()].book

    # -- messages ----------------------------------------------------------------------------

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        try:
            msg = decode(raw)
        except (ValueError, RecursionError) as exc:  # msgspec's DecodeError, also for bytes that are not UTF-8
            self._bad(out, recv_ns, f"not JSON ({exc})", raw)
            return
        if msg.__class__ is not dict:
            self._bad(out, recv_ns, f"a JSON {type(msg).__name__}, not an object", raw)
            return
        topic = msg.get("topic")
        if topic is not None:
            route = self._routes.get(topic) if topic.__class__ is str else None
            if route is None:
                out.event(time=recv_ns, kind="unknown_message",
                          detail=f"topic {topic!r} was not subscribed: {_clip(raw)}")
                return
            handler, st = route
            try:
                handler(st, msg, recv_ns, out)
            except _MALFORMED as exc:
                then = f"; {st.venue_sym} book dropped and resubscribed" if topic == st.book_topic else ""
                self._bad(out, recv_ns, f"malformed {topic} message ({_why(exc)}){then}", raw, st)
            return
        op = msg.get("op")
        if op == "ping" or op == "pong":
            return  # the answer to our keepalive ("ret_msg":"pong"), or a server heartbeat
        if op == "subscribe" or op == "unsubscribe":
            self._ack(op, msg, raw, recv_ns, out)
            return
        out.event(time=recv_ns, kind="unknown_message", detail=f"unknown Bybit message: {_clip(raw)}")

    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        # Every book is stale: the new connection's subscriptions bring fresh snapshots, and the
        # snapshot of a book that was live (or already being rebuilt) is reported as a resync.
        for st in self._syms.values():
            if st.book.valid or st.awaiting is not None:
                st.awaiting = "reconnect"
            st.book.invalidate("disconnected; waiting for the snapshot after reconnecting")
            st.sync = BybitSync()
            st.top = st.quote = None
            st.crossed = False
        # Resubscriptions queued for the old connection mean nothing on the new one.
        self._actions = []

    def _ack(self, op: str, msg: dict[str, Any], raw: str | bytes, recv_ns: int, out: Out) -> None:
        if op == "unsubscribe":
            # Only a resync unsubscribes, and its subscribe follows whatever this says (a topic
            # Bybit already dropped cannot be unsubscribed, which is harmless).
            return
        req_id = msg.get("req_id")
        topics = self._requests.get(req_id) if req_id.__class__ is str else None
        what = ", ".join(topics) if topics else f"request {req_id!r}"
        vsyms = {t.rpartition(".")[2] for t in topics} if topics else set()
        vsym = vsyms.pop() if len(vsyms) == 1 else None
        sym = normalize_symbol(vsym) if vsym else None
        success = msg.get("success")
        if success is True:
            out.event(time=recv_ns, kind="subscribed", sym=sym, venue_sym=vsym, detail=f"subscribed to {what}")
        elif success is False:
            out.event(time=recv_ns, kind="bad_message", sym=sym, venue_sym=vsym,
                      detail=f"Bybit refused subscribe {what}: {str(msg.get('ret_msg'))[:_DETAIL]!r}; check that "
                             f"each symbol is a Bybit {self.category} symbol such as BTCUSDT (those topics stay "
                             f"silent until it is fixed)")
        else:
            self._bad(out, recv_ns, "subscribe answer without a true/false success flag", raw)

    # -- trades and level-1 quotes -----------------------------------------------------------

    def _trade(self, st: _Sym, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        data = msg["data"]
        if data.__class__ is not list:
            raise BadMessage("data is not a list of trades")
        # Check the whole message before publishing any of it: one bad trade rejects the batch.
        parsed = []
        for t in data:
            if t["s"] != st.venue_sym:
                raise BadMessage(f"trade for s={t['s']!r} on topic publicTrade.{st.venue_sym}")
            side = _SIDES.get(t["S"]) if t["S"].__class__ is str else None
            if side is None:
                raise BadMessage(f"taker side S={t['S']!r} is not Buy or Sell")
            trade_id = t["i"]
            if trade_id.__class__ is not str or not trade_id:
                raise BadMessage(f"trade id i={trade_id!r} is not a non-empty string")
            seq = t.get("seq")
            parsed.append((_ms(t["T"], "trade time T"), decimal_text(t["p"], "price p"),
                           decimal_text(t["v"], "size v"), side, trade_id,
                           None if seq is None else _id(seq, "cross sequence seq")))
        trade = out.trade
        for time, price, size, side, trade_id, seq in parsed:
            trade(time=time, sym=st.sym, venue_sym=st.venue_sym, price=price, size=size, side=side,
                  trade_id=trade_id, seq=seq, recv_time=recv_ns)

    def _level1(self, st: _Sym, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        if msg["type"] != "snapshot":
            raise BadMessage(f"type {msg['type']!r}: Bybit documents level-1 books as snapshots only")
        d = _data(msg, st)
        _id(d["u"], "update id u")
        bid_price, bid_size = _best(d["b"], "bids b")
        ask_price, ask_size = _best(d["a"], "asks a")
        time = _time(msg)
        top = (bid_price, bid_size, ask_price, ask_size)
        if top != st.quote:  # the same top is re-pushed every 3 s without a change
            st.quote = top
            out.quote(time=time, sym=st.sym, venue_sym=st.venue_sym, bid_price=bid_price, bid_size=bid_size,
                      ask_price=ask_price, ask_size=ask_size, recv_time=recv_ns, derived=False)

    # -- books -------------------------------------------------------------------------------

    def _book(self, st: _Sym, msg: dict[str, Any], recv_ns: int, out: Out) -> None:
        try:
            kind = msg["type"]
            if kind != "snapshot" and kind != "delta":
                raise BadMessage(f"type {kind!r} is not snapshot or delta")
            d = _data(msg, st)
            u = _id(d["u"], "update id u")
            bids = _levels(d["b"], "bids b")
            asks = _levels(d["a"], "asks a")
            time = _time(msg)
        except _MALFORMED:
            # Whatever it was, an update may be lost: the book cannot be trusted (on_message reports it).
            self._resync(st, "a malformed book message")
            raise
        snapshot = kind == "snapshot"
        if st.awaiting is not None and not snapshot and u != 1:
            return  # a dropped book waits for its resubscription's snapshot; deltas mean nothing until then
        result = st.sync.check(u, snapshot)
        if result is SKIP:
            return  # already applied
        book = st.book
        dropped: tuple[list[tuple[str, str]], list[tuple[str, str]]] = ([], [])
        if result is not RESET and result is not APPLY:
            out.event(time=recv_ns, kind="gap", sym=st.sym, venue_sym=st.venue_sym,
                      expected=result.expected, got=result.got,
                      detail=(f"delta u={u} before any snapshot" if result.expected is None else
                              f"update id jumped: expected u={result.expected}, got u={u}")
                      + f"; {st.venue_sym} book dropped and {st.book_topic} resubscribed")
            self._resync(st, f"gap: expected u={result.expected}, got u={u}")
            return
        try:
            if result is RESET:
                book.apply_snapshot(bids, asks, seq=u)
            else:
                dropped = book.apply_many(bids, asks, seq=u)
        except DataError as exc:
            self._bad(out, recv_ns, f"{str(exc)[:_DETAIL]}; resubscribing {st.book_topic}", None, st)
            self._resync(st, f"malformed {kind}")
            return
        sym, vsym, l2 = st.sym, st.venue_sym, out.l2
        if result is RESET:
            reason, st.awaiting = st.awaiting, None
            if reason is not None:
                out.event(time=recv_ns, kind="resync", sym=sym, venue_sym=vsym,
                          detail=f"book rebuilt from a new snapshot (u={u}) after {reason}")
            # The book as now held (after truncation to depth), best first: a snapshot replaces it all.
            snap_bids, snap_asks = book.top_raw(self.depth)
            for price, size in snap_bids:
                l2(time=time, sym=sym, venue_sym=vsym, side="bid", price=price, size=size, is_snapshot=True,
                   seq_first=u, seq_last=u, recv_time=recv_ns)
            for price, size in snap_asks:
                l2(time=time, sym=sym, venue_sym=vsym, side="ask", price=price, size=size, is_snapshot=True,
                   seq_first=u, seq_last=u, recv_time=recv_ns)
        else:
            for side, levels, gone in (("bid", bids, dropped[0]), ("ask", asks, dropped[1])):
                for level in levels:
                    l2(time=time, sym=sym, venue_sym=vsym, side=side, price=level[0], size=level[1],  # type: ignore[arg-type]
                       is_snapshot=False, seq_first=u, seq_last=u, recv_time=recv_ns)
                for price, _ in gone:  # pushed out of the subscribed depth: Bybit sends no delete for it
                    l2(time=time, sym=sym, venue_sym=vsym, side=side, price=price, size="0",  # type: ignore[arg-type]
                       is_snapshot=False, seq_first=u, seq_last=u, recv_time=recv_ns)
        self._publish_top(st, time, recv_ns, out)

    def _publish_top(self, st: _Sym, time: int, recv_ns: int, out: Out) -> None:
        """A derived quote if the top moved, then a crossed event if the book just crossed."""
        bids, asks = st.book.top_raw(1)
        top = (bids[0][0] if bids else None, bids[0][1] if bids else None,
               asks[0][0] if asks else None, asks[0][1] if asks else None)
        if top != st.top:
            st.top = top
            out.quote(time=time, sym=st.sym, venue_sym=st.venue_sym, bid_price=top[0], bid_size=top[1],
                      ask_price=top[2], ask_size=top[3], recv_time=recv_ns, derived=True)
        crossed = st.book.crossed
        if crossed and not st.crossed:
            state = "locked" if st.book.locked else "crossed"
            out.event(time=recv_ns, kind="crossed", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"book {state} at u={st.book.seq}: best bid {top[0]} >= best ask {top[2]}")
        st.crossed = crossed

    def _resync(self, st: _Sym, reason: str) -> None:
        """Drop one symbol's book and resubscribe to its orderbook topic alone; other books are untouched."""
        st.book.invalidate(reason)
        st.sync = BybitSync()
        st.top = None
        st.crossed = False
        st.awaiting = reason
        self._request(Send(_op("unsubscribe", [st.book_topic], f"unsub-{st.venue_sym}")))
        self._request(Send(_op("subscribe", [st.book_topic], f"resub-{st.venue_sym}")))

    # -- helpers -----------------------------------------------------------------------------

    def _bad(self, out: Out, recv_ns: int, why: str, raw: str | bytes | None, st: _Sym | None = None) -> None:
        detail = why if raw is None else f"{why[:_DETAIL]}; message: {_clip(raw)}"
        out.event(time=recv_ns, kind="bad_message", detail=detail,
                  sym=st.sym if st else None, venue_sym=st.venue_sym if st else None)


class BybitLinear(Bybit):
    """Bybit USDT/USDC perpetuals and futures (``category="linear"``), exchange ``bybit-linear``."""

    name = "bybit-linear"
    ws_url = CATEGORIES["linear"]
    category = "linear"


class BybitInverse(Bybit):
    """Bybit inverse contracts (``category="inverse"``), exchange ``bybit-inverse``."""

    name = "bybit-inverse"
    ws_url = CATEGORIES["inverse"]
    category = "inverse"


def _op(op: Literal["subscribe", "unsubscribe"], topics: list[str], req_id: str) -> str:
    return json.dumps({"op": op, "args": topics, "req_id": req_id}, separators=(",", ":"))


def _data(msg: dict[str, Any], st: _Sym) -> dict[str, Any]:
    d = msg["data"]
    if d.__class__ is not dict:
        raise BadMessage("data is not an object")
    if d["s"] != st.venue_sym:
        raise BadMessage(f"data for s={d['s']!r} on a {st.venue_sym} topic")
    return d



def _id(value: Any, what: str) -> int:
    if value.__class__ is not int or value < 1:  # excludes bool, floats and strings
        raise BadMessage(f"{what} {value!r} is not a positive integer")
    return int(value)


def _ms(value: Any, what: str) -> int:
    return _id(value, what) * _MS


def _time(msg: dict[str, Any]) -> int:
    """A book message's time: the matching engine's ``cts`` if sent, else the service's ``ts``."""
    cts = msg.get("cts")
    return _ms(msg["ts"], "timestamp ts") if cts is None else _ms(cts, "matching engine time cts")


def _levels(value: Any, what: str) -> list[Any]:
    """A list of [price, size] pairs; the numbers themselves are checked by the Book."""
    if value.__class__ is not list:
        raise BadMessage(f"{what} {value!r} is not a list of [price, size] levels")
    for level in value:
        if level.__class__ is not list or len(level) != 2:
            raise BadMessage(f"{what} level {level!r} is not a [price, size] pair")
    return value


def _best(value: Any, what: str) -> tuple[str | None, str | None]:
    """The best level of a level-1 side: (price, size), or (None, None) for an empty side."""
    levels = _levels(value, what)
    if not levels:
        return None, None
    price, size = decimal_text(levels[0][0], f"{what} price"), decimal_text(levels[0][1], f"{what} size", zero_ok=True)
    if Decimal(size) == _ZERO:  # not expected in a snapshot, but it would mean "no level"
        return None, None
    return price, size


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BadMessage) else f"{type(exc).__name__}: {exc}"


def _clip(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else bytes(raw[: _DETAIL * 4]).decode("utf-8", "replace")
    return repr(text[:_DETAIL]) + ("..." if len(text) > _DETAIL else "")
