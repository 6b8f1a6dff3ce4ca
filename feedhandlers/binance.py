"""Binance spot and USD-M futures market data: trades, native top of book, and L2 books kept in sync.

This module owns the two Binance :class:`~feedhandlers.venue.Venue` adapters:

* :class:`BinanceSpot` (``exchange`` "binance"): ``<sym>@trade`` -> ``trade``,
  ``<sym>@bookTicker`` -> native ``quote`` (derived=False), ``<sym>@depth@100ms`` -> ``l2``
  plus derived quotes, synced against the REST snapshot ``/api/v3/depth?symbol=X&limit=1000``
  with :class:`~feedhandlers.book.BinanceSpotSync` (``U``/``u`` rules).
* :class:`BinanceFutures` (``exchange`` "binance-futures", USD-M): ``<sym>@aggTrade`` (or
  ``@trade``), ``@bookTicker``, ``@depth@100ms`` chained by ``pu`` with
  :class:`~feedhandlers.book.BinanceFuturesSync`, snapshot ``/fapi/v1/depth``.

Subscription: both connect to ``<ws_url>/stream`` (the combined-stream endpoint, so every
message arrives as ``{"stream": "btcusdt@trade", "data": {...}}``) and send one
``{"method": "SUBSCRIBE", "params": [...], "id": 1}`` message, rather than listing the
streams in the URL: Binance acknowledges the message (``{"result": null, "id": 1}``, which
becomes a "subscribed" feed event, so a user sees the subscription took) and one message
carries any number of streams without running into URL length limits.

Book sync, per symbol, as Binance's "How to manage a local order book correctly" says:
depth events are buffered until a snapshot arrives; the first buffered event makes the
adapter ask the shell for the REST snapshot (so the snapshot is always taken after the
stream started, as the docs require); the snapshot plus the buffered events that the sync
rule accepts make the book. A gap (or a malformed level) marks that symbol's book invalid,
emits a ``feed_event`` ("gap" with expected/got, or "bad_message"), buffers again from the
event that showed the gap and asks for a new snapshot; nothing from that book (no ``l2``,
no derived ``quote``) is published until a snapshot makes it valid ("resync" event). A
snapshot older than the first buffered event is a gap too, and is fetched again. Other
symbols are untouched. The REST snapshot holds at most 1,000 levels per side, so levels
deeper than that are only as complete as the deltas make them (Binance's documented caveat).

Numbers: Binance sends prices and sizes as decimal strings and ids and times as integers;
the decoder still maps any JSON float to its source text (:mod:`feedhandlers.jsonwire`), and every
price and size is checked as a finite decimal string before a row is written, so nothing
goes through a float. Times are the venue's (trade time ``T``, depth event time ``E`` on spot
and transaction time ``T`` on futures) in int ns UTC; spot ``bookTicker`` and spot REST
snapshots carry no time, so those rows use the receive time.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from feedhandlers.book import APPLY, SKIP, BinanceFuturesSync, BinanceSpotSync, Book, SeqCheck
from feedhandlers.jsonwire import decode
from feedhandlers.normalize import BadMessage, Out, decimal_text, normalize_symbol
from feedhandlers.venue import CHANNELS, Rest, Venue
from tickerplant.exceptions import DataError

__all__ = ["BinanceFutures", "BinanceSpot"]


_MS: Final = 1_000_000  # Binance times are milliseconds; rows are nanoseconds
# Depth events kept while waiting for a snapshot (10 s of 100 ms events is 100; this is
# minutes). Beyond it the oldest go, and the sync rule reports the hole against the snapshot.
_MAX_BUFFER: Final = 5_000
_DETAIL: Final = 160  # characters of a bad message quoted in its feed_event




def _int(value: Any, what: str) -> int:
    if value.__class__ is not int:  # excludes bool, float and strings
        raise BadMessage(f"{what} {value!r} is not an integer")
    return value


def _levels(value: Any, what: str) -> list[Any]:
    if value.__class__ is not list:
        raise BadMessage(f"{what} {value!r} is not a list of [price, size] levels")
    return value


class _Delta:
    """One depth event, checked for shape, as buffered and applied."""

    __slots__ = ("asks", "bids", "final", "first", "prev", "recv_ns", "time")

    def __init__(self, time: int, first: int, final: int, prev: int, bids: list[Any], asks: list[Any],
                 recv_ns: int) -> None:
        self.time = time
        self.first = first
        self.final = final
        self.prev = prev  # futures ``pu``; -1 on spot, which has none
        self.bids = bids
        self.asks = asks
        self.recv_ns = recv_ns


class _Sym:
    """Everything kept for one venue symbol: its book, sync rule, buffer and last published top."""

    __slots__ = ("book", "buffer", "crossed", "ever_valid", "requested", "sym", "sync", "top", "venue_sym")

    def __init__(self, venue: str, venue_sym: str) -> None:
        self.venue_sym = venue_sym
        self.sym = normalize_symbol(venue_sym)
        self.book = Book(venue, venue_sym)
        # None until a snapshot is applied: then depth events are buffered, not applied.
        self.sync: BinanceSpotSync | BinanceFuturesSync | None = None
        self.buffer: deque[_Delta] = deque(maxlen=_MAX_BUFFER)
        self.requested = False  # a snapshot is asked for and not yet answered
        self.ever_valid = False  # so the first snapshot is not reported as a "resync"
        self.crossed = False  # a "crossed" event is emitted once per crossing
        self.top: tuple[tuple[str, str] | None, tuple[str, str] | None] | None = None


_Handler = Callable[[_Sym, dict[str, Any], int, Out], None]


class _Binance(Venue):
    """What Binance spot and USD-M futures share: combined streams, routing, the buffered book sync."""

    snapshot_path: str  # the REST depth endpoint
    snapshot_limit = 1000
    trade_stream = "trade"

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS) -> None:
        super().__init__(symbols, channels)
        self._syms: dict[str, _Sym] = {}
        # Stream name -> (handler, symbol state): one dict lookup routes a message.
        self._routes: dict[str, tuple[_Handler, _Sym]] = {}
        for venue_sym in self.symbols:
            venue_sym = venue_sym.upper()  # Binance's symbol ("BTCUSDT"); stream names use lower case
            st = self._syms.setdefault(venue_sym, _Sym(self.name, venue_sym))
            low = venue_sym.lower()
            if "trade" in self.channels:
                self._routes[f"{low}@{self.trade_stream}"] = (self._trade, st)
            if "quote" in self.channels:
                self._routes[f"{low}@bookTicker"] = (self._book_ticker, st)
            if "l2" in self.channels:
                self._routes[f"{low}@depth@100ms"] = (self._depth, st)

    # -- connection ------------------------------------------------------------------

    def url(self, ws_url: str) -> str:
        return ws_url.rstrip("/") + "/stream"

    def subscribe(self) -> list[str]:
        return [json.dumps({"method": "SUBSCRIBE", "params": list(self._routes), "id": 1}, separators=(",", ":"))]

    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        # Every book is stale: a new connection's events start wherever Binance is now.
        for st in self._syms.values():
            st.book.invalidate("disconnected")
            st.sync = None
            st.buffer.clear()
            st.requested = False
            st.crossed = False
            st.top = None

    def book(self, venue_sym: str) -> Book:
        """The L2 book of ``venue_sym`` (e.g. "BTCUSDT"), for inspection."""
        return self._syms[venue_sym.upper()].book

    # -- messages --------------------------------------------------------------------

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        try:
            msg = decode(raw)
            if msg.__class__ is not dict:
                raise BadMessage(f"a {type(msg).__name__}, not a JSON object")
            route = self._routes.get(msg.get("stream", ""))
            if route is None:
                self._unknown(msg, raw, recv_ns, out)
                return
            handler, st = route
            data = msg["data"]
            if data.__class__ is not dict:
                raise BadMessage(f"data of stream {msg['stream']!r} is not an object")
            handler(st, data, recv_ns, out)
        except BadMessage as exc:
            self._bad(str(exc), raw, recv_ns, out)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError) as exc:
            # ValueError covers msgspec's DecodeError (also for bytes that are not UTF-8); KeyError a missing field;
            # TypeError and AttributeError a message that is not an object (a list, a number).
            self._bad(f"{type(exc).__name__}: {exc}", raw, recv_ns, out)

    def _unknown(self, msg: Any, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if msg.__class__ is dict and "stream" not in msg and "id" in msg:
            # The answer to our SUBSCRIBE: {"result": null, "id": 1}, or an error object.
            if "result" in msg and msg["result"] is None:
                out.event(time=recv_ns, kind="subscribed", detail=f"{self.name} acknowledged subscription id "
                          f"{msg['id']} ({len(self._routes)} streams)")
                return
            self._bad(f"{self.name} refused request id {msg['id']}: {msg.get('error', msg.get('msg'))!r}; "
                      f"check the symbols and channels", raw, recv_ns, out)
            return
        stream = msg.get("stream") if msg.__class__ is dict else None
        out.event(time=recv_ns, kind="unknown_message",
                  detail=f"stream {stream!r} was not subscribed: {_quote(raw)}")

    def _bad(self, why: str, raw: str | bytes, recv_ns: int, out: Out) -> None:
        out.event(time=recv_ns, kind="bad_message", detail=f"{why[:_DETAIL]}; message: {_quote(raw)}")

    def _trade(self, st: _Sym, d: dict[str, Any], recv_ns: int, out: Out) -> None:
        # Spot ``trade`` has ``t`` (trade id); ``aggTrade`` has ``a`` (aggregate trade id).
        trade_id = _int(d["t"] if "t" in d else d["a"], "trade id")
        maker = d["m"]
        if maker.__class__ is not bool:
            raise BadMessage(f"buyer-is-maker flag m={maker!r} is not a boolean")
        out.trade(time=_int(d["T"], "trade time T") * _MS, sym=st.sym, venue_sym=st.venue_sym,
                  price=decimal_text(d["p"], "price p"), size=decimal_text(d["q"], "quantity q"),
                  # ``m`` says the buyer was the maker, so the aggressor sold.
                  side="sell" if maker else "buy", trade_id=str(trade_id), seq=trade_id, recv_time=recv_ns)

    def _quote_time(self, d: dict[str, Any], recv_ns: int) -> int:
        return recv_ns  # spot bookTicker carries no time

    def _book_ticker(self, st: _Sym, d: dict[str, Any], recv_ns: int, out: Out) -> None:
        out.quote(time=self._quote_time(d, recv_ns), sym=st.sym, venue_sym=st.venue_sym,
                  bid_price=decimal_text(d["b"], "bid price b"),
                  bid_size=decimal_text(d["B"], "bid size B", zero_ok=True),
                  ask_price=decimal_text(d["a"], "ask price a"),
                  ask_size=decimal_text(d["A"], "ask size A", zero_ok=True),
                  recv_time=recv_ns, derived=False)

    # -- books -----------------------------------------------------------------------

    def _delta(self, d: dict[str, Any], recv_ns: int) -> _Delta:
        return _Delta(_int(d["E"], "event time E") * _MS, _int(d["U"], "first update id U"),
                      _int(d["u"], "final update id u"), -1, _levels(d["b"], "bids b"), _levels(d["a"], "asks a"),
                      recv_ns)

    def _check(self, sync: Any, ev: _Delta) -> SeqCheck:
        result: SeqCheck = sync.check(ev.first, ev.final)
        return result

    def _new_sync(self, last_update_id: int) -> BinanceSpotSync | BinanceFuturesSync:
        return BinanceSpotSync(last_update_id)

    def _snapshot_time(self, body: dict[str, Any], recv_ns: int) -> int:
        return recv_ns  # the spot snapshot carries no time

    def _depth(self, st: _Sym, d: dict[str, Any], recv_ns: int, out: Out) -> None:
        ev = self._delta(d, recv_ns)
        if st.sync is None:
            self._wait(st, ev)
            return
        self._apply(st, ev, out)

    def _wait(self, st: _Sym, ev: _Delta) -> None:
        """Buffer ``ev`` until the snapshot comes, and ask for one if not asked yet."""
        st.buffer.append(ev)
        if not st.requested:
            st.requested = True
            self._request(Rest(st.venue_sym, f"{self.snapshot_path}?symbol={st.venue_sym}&limit={self.snapshot_limit}"))

    def _apply(self, st: _Sym, ev: _Delta, out: Out) -> bool:
        """Apply one event to a synced book and publish its rows; False when the book was lost."""
        sync = st.sync
        result = self._check(sync, ev)
        if result is SKIP:
            return True
        if result is not APPLY:
            out.event(time=ev.recv_ns, kind="gap", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"depth update ids jumped (U={ev.first} u={ev.final}"
                             f"{f' pu={ev.prev}' if ev.prev >= 0 else ''}); re-fetching the snapshot",
                      expected=result.expected, got=result.got)
            self._lose(st, f"gap: expected {result.expected}, got {result.got}", ev)
            return False
        try:
            st.book.apply_many(ev.bids, ev.asks, seq=ev.final)
        except DataError as exc:
            out.event(time=ev.recv_ns, kind="bad_message", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"{str(exc)[:_DETAIL]}; re-fetching the snapshot")
            self._lose(st, "malformed level", None)
            return False
        self._publish(st, ev.time, ev.bids, ev.asks, False, ev.first, ev.final, ev.recv_ns, out)
        return True

    def _lose(self, st: _Sym, reason: str, restart_from: _Delta | None) -> None:
        """The book is no good: empty it, buffer from ``restart_from`` and ask for a new snapshot."""
        st.book.invalidate(reason)
        st.sync = None
        st.top = None
        st.crossed = False
        st.buffer.clear()
        if restart_from is not None:
            st.buffer.append(restart_from)
        self._request(Rest(st.venue_sym, f"{self.snapshot_path}?symbol={st.venue_sym}&limit={self.snapshot_limit}"))
        st.requested = True

    def _publish(self, st: _Sym, time: int, bids: list[Any], asks: list[Any], snapshot: bool, first: int,
                 final: int, recv_ns: int, out: Out) -> None:
        """l2 rows for the levels just applied, then a derived quote if the top moved, then crossing."""
        l2 = out.l2
        sym = st.sym
        venue_sym = st.venue_sym
        for side, levels in (("bid", bids), ("ask", asks)):
            for level in levels:
                l2(time=time, sym=sym, venue_sym=venue_sym, side=side, price=level[0],  # type: ignore[arg-type]
                   size=level[1], is_snapshot=snapshot, seq_first=first, seq_last=final, recv_time=recv_ns)
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
            out.event(time=recv_ns, kind="crossed", sym=sym, venue_sym=venue_sym,
                      detail=f"book crossed after update {final}: best bid {top[0]} >= best ask {top[1]}")
        st.crossed = crossed

    def on_snapshot(self, venue_sym: str, body: bytes, recv_ns: int, out: Out) -> None:
        st = self._syms.get(venue_sym.upper())
        if st is None:
            raise ValueError(f"{self.name}: snapshot for {venue_sym!r}, which is not one of the symbols "
                             f"{sorted(self._syms)}; the shell must answer Rest actions with their own venue_sym")
        st.requested = False
        if st.sync is not None:
            return  # already synced by an earlier answer: a late one would rewind the book
        try:
            doc = decode(body)
            last = _int(doc["lastUpdateId"], "lastUpdateId")
            bids = _levels(doc["bids"], "bids")
            asks = _levels(doc["asks"], "asks")
            time = self._snapshot_time(doc, recv_ns)
            st.book.apply_snapshot(bids, asks, seq=last)
        except (BadMessage, DataError, ValueError, KeyError, TypeError, AttributeError) as exc:
            st.book.invalidate("bad snapshot")
            out.event(time=recv_ns, kind="bad_message", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"REST snapshot unusable ({str(exc)[:_DETAIL]}): asking again; {_quote(body)}")
            self._request(Rest(st.venue_sym,
                               f"{self.snapshot_path}?symbol={st.venue_sym}&limit={self.snapshot_limit}"))
            st.requested = True
            return
        # Check the buffered events against the snapshot before publishing anything, so a
        # snapshot that turns out too old publishes no rows at all.
        sync = self._new_sync(last)
        buffered = list(st.buffer)
        todo: list[_Delta] = []
        for i, ev in enumerate(buffered):
            result = self._check(sync, ev)
            if result is SKIP:
                continue
            if result is not APPLY:
                out.event(time=recv_ns, kind="gap", sym=st.sym, venue_sym=st.venue_sym,
                          detail=f"snapshot lastUpdateId={last} does not join the buffered depth events "
                                 f"(U={ev.first} u={ev.final}); fetching the snapshot again",
                          expected=result.expected, got=result.got)
                self._lose(st, f"snapshot {last} does not join the stream", None)
                st.buffer.extend(buffered[i:])
                return
            todo.append(ev)
        st.buffer.clear()
        # Re-run the accepted events through a fresh sync as they are applied.
        st.sync = self._new_sync(last)
        if st.ever_valid:
            out.event(time=recv_ns, kind="resync", sym=st.sym, venue_sym=st.venue_sym,
                      detail=f"book rebuilt from the REST snapshot lastUpdateId={last} and {len(todo)} buffered "
                             f"events")
        st.ever_valid = True
        st.top = None
        snap_bids, snap_asks = st.book.top_raw(len(bids) + len(asks))
        self._publish(st, time, snap_bids, snap_asks, True, last, last, recv_ns, out)
        for ev in todo:
            if not self._apply(st, ev, out):
                return


class BinanceSpot(_Binance):
    """Binance spot: ``@trade``, ``@bookTicker``, ``@depth@100ms`` with the ``U``/``u`` snapshot sync.

    ::

        venue = BinanceSpot(["BTCUSDT", "ETHUSDT"])
        venue.url(venue.ws_url)   # "wss://stream.binance.com:9443/stream"
        venue.subscribe()         # ['{"method":"SUBSCRIBE","params":["btcusdt@trade",...],"id":1}']
    """

    name = "binance"
    ws_url = "wss://stream.binance.com:9443"
    rest_url = "https://api.binance.com"
    snapshot_path = "/api/v3/depth"


class BinanceFutures(_Binance):
    """Binance USD-M futures: ``@aggTrade`` (or ``@trade``), ``@bookTicker``, ``@depth@100ms`` chained by ``pu``.

    ``trade_stream="trade"`` subscribes to raw trades instead of aggregate trades; both
    carry the taker side in ``m`` and the trade time in ``T``.
    """

    name = "binance-futures"
    ws_url = "wss://fstream.binance.com"
    rest_url = "https://fapi.binance.com"
    snapshot_path = "/fapi/v1/depth"

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS, *,
                 trade_stream: str = "aggTrade") -> None:
        if trade_stream not in ("aggTrade", "trade"):
            raise ValueError(f"trade_stream must be 'aggTrade' or 'trade', not {trade_stream!r}")
        self.trade_stream = trade_stream
        super().__init__(symbols, channels)

    def _quote_time(self, d: dict[str, Any], recv_ns: int) -> int:
        return _int(d["T"], "transaction time T") * _MS

    def _delta(self, d: dict[str, Any], recv_ns: int) -> _Delta:
        return _Delta(_int(d["T"], "transaction time T") * _MS, _int(d["U"], "first update id U"),
                      _int(d["u"], "final update id u"), _int(d["pu"], "previous final update id pu"),
                      _levels(d["b"], "bids b"), _levels(d["a"], "asks a"), recv_ns)

    def _check(self, sync: Any, ev: _Delta) -> SeqCheck:
        result: SeqCheck = sync.check(ev.first, ev.final, ev.prev)
        return result

    def _new_sync(self, last_update_id: int) -> BinanceSpotSync | BinanceFuturesSync:
        return BinanceFuturesSync(last_update_id)

    def _snapshot_time(self, body: dict[str, Any], recv_ns: int) -> int:
        return _int(body["T"], "snapshot transaction time T") * _MS


def _quote(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
    return repr(text[:_DETAIL]) + ("..." if len(text) > _DETAIL else "")
