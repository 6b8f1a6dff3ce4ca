"""OKX v5 public WebSocket (``wss://ws.okx.com:8443/ws/v5/public``): trades, tick-by-tick BBO, 400-level books.

This module owns the OKX :class:`~feedhandlers.venue.Venue`: what to subscribe to, how each
v5 push becomes ``trade`` / ``quote`` / ``l2`` / ``feed_event`` rows, and the per-instrument
book rules. Symbols are OKX instIds (``BTC-USDT``, ``BTC-USDT-SWAP``); ``sym`` is
:func:`~feedhandlers.normalize.normalize_symbol` of them (``BTCUSD``, ``BTCUSD-SWAP``).
Sources: OKX API v5 docs (okx.com/docs-v5/en), sections "WebSocket / Connect",
"Notification", "WS / Trades channel", "WS / Order book channel" (with its "Sequence ID"
and "Checksum" parts), "REST / Market data / GET Order book", the error-code table, the
help-centre notice "OKX Order Book Channels Checksum Field Deprecation" (21 May 2026) and
the API changelog entry "Delist initial snapshot and checksum field in order book channels"
(docs-v5/log_en, last updated 12 February 2026).

Subscription: one ``{"op":"subscribe","args":[{"channel":...,"instId":...},...]}`` for every
channel and symbol (one request: OKX limits subscribe/unsubscribe requests to 480 an hour
per connection, and each book resync below costs two). Each arg is acknowledged with
``{"event":"subscribe","arg":{...}}``, which becomes a ``subscribed`` event; a refusal
``{"event":"error","code":"60018","msg":...}`` a ``bad_message`` event quoting OKX and
naming the instId when the message does.

Channels:

* ``trades`` -> ``trade`` rows. ``side`` is documented as "Trade side of taker", so it is the
  aggressor as it stands. OKX aggregates the fills of one taker order at one price into one
  push (``count`` of them, ``tradeId`` the last one's id), so a row is such an aggregate:
  ``trade_id`` is ``tradeId`` and ``seq`` its integer value. The channel sends no trade
  history on subscribe, so nothing needs de-duplicating after a reconnect.
* ``bbo-tbt`` (tick-by-tick best bid and offer, every 10 ms when it changes) -> native
  ``quote`` rows (``derived=False``) timed by ``ts`` ("the timestamp when the push is
  triggered").
* ``books`` (400 levels: a full snapshot on subscribe, then every 100 ms the levels that
  changed, ``action`` "snapshot"/"update", each level ``[px, sz, "0", numOrders]`` with the
  *absolute* size, ``sz`` "0" deleting it) -> ``l2`` rows for every level (``is_snapshot``
  on the snapshot's), a ``derived=True`` quote when the top of the book changes and a
  ``crossed`` event once per crossing. OKX's merge procedure (docs, "Checksum") inserts,
  replaces and deletes levels and has no truncation step, so the book is never truncated:
  it keeps every level OKX sent (whether OKX deletes a level that leaves its 400 is not
  documented; such a level could only linger far below the top 25 the checksum covers).
  OKX notes the best ask may be below the best bid "during the pre-open period": such a
  ``crossed`` event is the call auction, not a bad book.

Book sequence (docs, "Sequence ID"; seqIds are per instId and not consecutive): a
snapshot has ``prevSeqId`` -1 and anchors the chain at its ``seqId``; every update's
``prevSeqId`` must equal the ``seqId`` of the message before it. Two documented exceptions
pass that same test and are accepted: after ~60 s without changes OKX sends an update
with empty ``asks``/``bids`` and ``seqId == prevSeqId`` (a keepalive), and after
maintenance "users will receive an incremental message with seqId smaller than
prevSeqId" whose ``prevSeqId`` still names the last ``seqId``; "subsequent messages will
follow the regular sequencing rule", so the chain simply continues from the new, lower
``seqId``. Any other ``prevSeqId`` is a ``gap`` (expected = last ``seqId``, got =
``prevSeqId``). l2 rows carry ``seq_first = prevSeqId + 1`` and ``seq_last = seqId`` (the
ids the message covers, like Binance's U/u; both ``seqId`` on a snapshot or a reset).

Checksum: the signed CRC32 of the top 25 levels interleaved bid:ask
(:func:`~feedhandlers.book.okx_checksum`) is checked after every snapshot and update that
carries one. OKX has retired it in favour of seqId/prevSeqId: since 23 June 2026 the field
"will remain present in push messages but will always return 0 and must no longer be used
for data integrity validation", so a ``checksum`` of 0 (or none at all) is not checked and
the seqId chain alone guards the book. A non-zero checksum that does not match is a
``checksum`` event (expected = OKX's, got = ours).

Two modes, per instId and per subscription. OKX's API changelog ("Delist initial snapshot
and checksum field in order book channels", last updated 12 February 2026) says production
books channels stop sending the initial snapshot from early August 2026, and gives a REST
procedure instead; a third-party capture of August 2026 still saw snapshots, so the adapter
takes whichever the subscription's first ``books`` message shows:

* snapshot mode (first message ``action`` "snapshot"): the book is that snapshot, as above.
* REST mode (first message an "update"): updates are buffered (at most 5,000) and the first
  one makes the adapter ask the shell for ``GET /api/v5/market/books?instId=X&sz=400&source=0``
  (a :class:`~feedhandlers.venue.Rest` action; ``sz`` max 400 per side, the channel's depth).
  The answer ``{"code":"0","data":[{"asks":..,"bids":..,"ts":..,"seqId":..}]}`` must carry a
  ``seqId`` (the changelog's procedure needs it; the older REST docs list only asks/bids/ts; a
  digit string is taken too). A snapshot whose ``seqId`` is below the first buffered update's
  ``prevSeqId`` is too old (OKX's REST caches may lag) and is fetched again without an event;
  buffered updates with ``seqId`` <= the snapshot's are dropped, and the first one left must
  have ``prevSeqId`` <= snapshot ``seqId`` (otherwise a ``gap`` event and a new fetch from that
  update). The book is the snapshot (l2 rows ``is_snapshot``, time its ``ts``) plus the rest,
  then the usual chain rule; live updates the snapshot already holds (it may be newer than the
  buffer) are dropped the same way. A bad answer (not JSON, ``code`` not "0", no book, no
  seqId, a malformed level) is a ``bad_message`` and a new request. A snapshot action on a
  REST-mode subscription is applied as a whole book.

On a gap, a checksum mismatch or a malformed books message for one instId: the event, that
book alone is invalidated (nothing of it is published until it is rebuilt), and then:
in snapshot mode an ``unsubscribe`` then ``subscribe`` of that instId's ``books`` arg are
queued as :class:`~feedhandlers.venue.Send` actions (a fresh snapshot is consistent by
construction and costs no REST call; updates until the new subscribe ack are the old
subscription's tail and are dropped, and the new subscription's first message picks the
mode again); in REST mode the subscription is live and only the snapshot is missing, so the
adapter buffers from the update that showed the gap (or the next one) and fetches a new REST
snapshot, with no resubscription. Either way the rebuilt book brings a ``resync`` event
naming its source and the reason. Other instIds and the trade and BBO channels are
untouched. On a disconnect every book is invalidated, buffers and the pending-request flag
are cleared (a REST answer arriving after it is ignored unless a book waits for one), and
each book's mode is decided again on the new connection; a book that was live resyncs.

Connection: OKX closes a connection that has pushed nothing for 30 s and asks clients to
send the text ``ping`` when N < 30 s pass without a message; :attr:`Okx.keepalive` is 20 s
and the plain-text ``pong`` answer produces nothing. A ``{"event":"notice","code":"64008"}``
("The connection will soon be closed for a service upgrade", sent 60 s ahead) becomes a
:class:`~feedhandlers.venue.Reconnect`, so the shell moves to a new connection before the
old one is cut.

Numbers: prices and sizes stay the decimal strings OKX sent (checked finite and positive
with ``Decimal``, never through a float; the checksum hashes those strings); ``ts`` is
milliseconds as a string and becomes int ns UTC. Anything malformed is one ``bad_message``
event and no row; a message with one bad item publishes none of it.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from feedhandlers.book import Book, okx_checksum
from feedhandlers.jsonwire import decode
from feedhandlers.normalize import BadMessage, Out, decimal_text, normalize_symbol
from feedhandlers.venue import CHANNELS, Reconnect, Rest, Send, Venue
from tickerplant.exceptions import DataError

__all__ = ["OKX_CHANNELS", "Okx"]

# Our channel -> the OKX v5 public channel it subscribes.
OKX_CHANNELS: Final = {"trade": "trades", "quote": "bbo-tbt", "l2": "books"}

_MS: Final = 1_000_000  # OKX times are milliseconds; rows are nanoseconds
_SIDES: Final = ("buy", "sell")
_INT64: Final = 1 << 63
_UPGRADE_NOTICE: Final = "64008"  # "The connection will soon be closed for a service upgrade"
_INST_ID: Final = re.compile(r"instId:([A-Za-z0-9._-]+)")  # how OKX names the instId in an error message
_DETAIL: Final = 160  # characters of a bad message quoted in its feed_event
# The REST depth snapshot that anchors a book when the channel sends none: 400 levels a side,
# as deep as the books channel ("sz ... Maximum 400"); source=0 as OKX's sync procedure asks.
_REST_BOOKS: Final = "/api/v5/market/books?instId={}&sz=400&source=0"
# Updates kept while a REST snapshot is on its way (100 ms pushes: minutes of them). Beyond it
# the oldest go, and the splice reports the hole against the snapshot.
_MAX_BUFFER: Final = 5_000
# How one instId's books subscription is synced (``_Sym.mode``):
_WS: Final = "ws"  # its first message was a snapshot: OKX's snapshot world; a loss resubscribes
_REST: Final = "rest"  # its first message was an update: buffered and spliced onto a REST snapshot
_RESUB: Final = "resubscribing"  # unsubscribe + subscribe sent; updates until the subscribe ack are the old tail
# What picking apart a malformed message can raise; each becomes one bad_message event.
_MALFORMED: Final = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, DataError)




def _int(value: Any, what: str) -> int:
    if value.__class__ is not int or not -_INT64 <= value < _INT64:  # excludes bool, float and strings
        raise BadMessage(f"{what} {value!r} is not an integer")
    return int(value)


def _ms(value: Any, what: str) -> int:
    """OKX's millisecond time (documented as a string of digits) as int ns."""
    if value.__class__ is str and 0 < len(value) <= 13 and value.isascii() and value.isdigit():
        return int(value) * _MS
    if value.__class__ is int and 0 <= value < 10**13:  # tolerated: the same number unquoted
        return int(value) * _MS
    raise BadMessage(f"{what} {value!r} is not a time in milliseconds")


def _levels(value: Any, what: str) -> list[Any]:
    # Each level must be a list: the book would otherwise read a string like "12" as
    # price "1" size "2". Price and size themselves are checked by the Book.
    if value.__class__ is not list or any(level.__class__ is not list for level in value):
        raise BadMessage(f"{what} {str(value)[:40]} is not a list of [price, size, ...] levels")
    return value


def _top_level(levels: list[Any], what: str) -> tuple[str | None, str | None]:
    if not levels:
        return None, None
    level = levels[0]
    if len(level) < 2:
        raise BadMessage(f"{what} {level!r} is not [price, size, ...]")
    return decimal_text(level[0], f"{what} price"), decimal_text(level[1], f"{what} size", zero_ok=True)


def _op(op: str, args: list[dict[str, str]]) -> str:
    return json.dumps({"op": op, "args": args}, separators=(",", ":"))


def _quote(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else bytes(raw[: _DETAIL * 4]).decode("utf-8", "replace")
    return repr(text[:_DETAIL]) + ("..." if len(text) > _DETAIL else "")


# One books push, checked for shape: (time ns, seqId, prevSeqId, checksum or None, bids, asks).
_Entry = tuple[int, int, int, int | None, list[Any], list[Any]]


class _Sym:
    """Everything kept for one instId: its book, the last seqId applied and the last published top."""

    __slots__ = ("awaiting", "book", "buffer", "crossed", "joining", "mode", "requested", "seq", "sym", "top",
                 "venue_sym")

    def __init__(self, venue: str, venue_sym: str) -> None:
        self.venue_sym = venue_sym
        self.sym = normalize_symbol(venue_sym)
        # No depth: OKX's merge procedure has no truncation step; the book keeps every level sent.
        self.book = Book(venue, venue_sym)
        self.seq: int | None = None  # seqId of the last books message applied; None until a snapshot
        self.awaiting: str | None = None  # why the next snapshot is a resync (None: the first, or none due)
        self.crossed = False  # a "crossed" event is emitted once per crossing
        self.top: tuple[str | None, str | None, str | None, str | None] | None = None
        # None: the subscription's first books message decides (_WS, _REST); see _RESUB.
        self.mode: str | None = None
        # _REST mode, book invalid: the updates since the stream was (re)joined, with raw and recv_ns.
        self.buffer: deque[tuple[_Entry, str | bytes, int]] = deque(maxlen=_MAX_BUFFER)
        self.requested = False  # a REST snapshot is asked for and not yet answered
        # A REST snapshot is applied and no update newer than it yet: updates it holds (seqId <=
        # its seqId) are dropped, and the first newer one joins it if prevSeqId <= its seqId.
        self.joining = False


_Handler = Callable[[_Sym, dict[str, Any], list[Any], str | bytes, int, Out], None]


class Okx(Venue):
    """OKX v5 public adapter for ``symbols`` as OKX instIds (``BTC-USDT``, ``ETH-USDT-SWAP``).

    ::

        venue = Okx(["BTC-USDT", "BTC-USDT-SWAP"])
        venue.subscribe()   # ['{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},...]}']
        venue.ping()        # "ping", sent by the shell after `keepalive` seconds of quiet
    """

    name = "okx"
    ws_url = "wss://ws.okx.com:8443/ws/v5/public"
    rest_url = "https://www.okx.com"  # books snapshots when the channel sends none (REST mode)
    keepalive = 20.0  # OKX drops a connection after 30 s without traffic; "N less than 30"

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS) -> None:
        super().__init__(symbols, channels)
        for s in self.symbols:
            if not isinstance(s, str) or not s:
                raise ValueError(f"okx: symbol {s!r} is not an OKX instId such as BTC-USDT or BTC-USDT-SWAP")
        self._syms: dict[str, _Sym] = {s: _Sym(self.name, s) for s in self.symbols}
        handlers: dict[str, _Handler] = {"trade": self._trades, "quote": self._bbo, "l2": self._books}
        # OKX channel -> handler, for the channels asked for only (one dict lookup routes a push).
        self._handlers = {OKX_CHANNELS[c]: h for c, h in handlers.items() if c in self.channels}

    # -- what to send --------------------------------------------------------------------

    def ping(self) -> str:
        return "ping"  # the text, not JSON: OKX answers it with the text "pong"

    def subscribe(self) -> list[str]:
        args = [{"channel": OKX_CHANNELS[c], "instId": s}
                for c in ("trade", "quote", "l2") if c in self.channels for s in self._syms]
        return [_op("subscribe", args)]

    def book(self, venue_sym: str) -> Book:
        """The L2 book of ``venue_sym`` (e.g. "BTC-USDT"), for inspection."""
        return self._syms[venue_sym].book

    # -- messages ------------------------------------------------------------------------

    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        if raw == "pong" or raw == b"pong":
            return  # the answer to our keepalive ping
        try:
            msg = decode(raw)
            if msg.__class__ is not dict:
                raise BadMessage(f"a {type(msg).__name__}, not a JSON object")
            event = msg.get("event")
            if event is not None:
                self._event(event, msg, raw, recv_ns, out)
                return
            arg: Any = msg.get("arg")
            channel: Any = arg.get("channel") if arg.__class__ is dict else None
            handler = self._handlers.get(channel) if channel.__class__ is str else None
            if handler is None or "data" not in msg:
                out.event(time=recv_ns, kind="unknown_message",
                          detail=f"not a push of a subscribed channel (channel {channel!r}): {_quote(raw)}")
                return
            vsym = arg.get("instId")
            st = self._syms.get(vsym) if vsym.__class__ is str else None
            if st is None:
                out.event(time=recv_ns, kind="unknown_message", venue_sym=vsym if vsym.__class__ is str else None,
                          detail=f"{channel} push for instId {vsym!r}, which this adapter did not subscribe "
                                 f"to: {_quote(raw)}")
                return
            data = msg["data"]
            if data.__class__ is not list or not data:
                raise BadMessage(f"{channel} data {str(data)[:40]} is not a non-empty list")
            handler(st, msg, data, raw, recv_ns, out)
        except BadMessage as exc:
            self._bad(str(exc), raw, recv_ns, out)
        except _MALFORMED as exc:
            # ValueError covers msgspec's DecodeError (bytes that are not JSON or not UTF-8);
            # KeyError a missing field; TypeError/AttributeError a value of the wrong type.
            self._bad(f"{type(exc).__name__}: {exc}", raw, recv_ns, out)

    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        # Every book is stale: the new connection's subscribe brings fresh snapshots, and the
        # snapshot of a book that was live (or already awaiting one) is reported as a resync.
        for st in self._syms.values():
            if st.book.valid:
                st.awaiting = "reconnect"
            st.book.invalidate("disconnected; waiting for the snapshot after reconnecting")
            st.seq = None
            st.top = None
            st.crossed = False
            st.mode = None  # the new connection's first books message decides again
            st.joining = False
            st.buffer.clear()
            st.requested = False  # an answer still on its way is ignored unless a book waits for one
        # Resubscriptions (and a maintenance reconnect) queued for the old connection mean
        # nothing on the new one: its subscribe covers every book.
        self._actions = []

    def _event(self, event: Any, msg: dict[str, Any], raw: str | bytes, recv_ns: int, out: Out) -> None:
        if event == "subscribe":
            arg = msg.get("arg")
            channel = arg.get("channel") if arg.__class__ is dict else None
            vsym = arg.get("instId") if arg.__class__ is dict else None
            if vsym.__class__ is not str or not vsym:
                raise BadMessage(f"subscribe acknowledgement without an instId: arg {arg!r}")
            st = self._syms.get(vsym)
            if channel == "books" and st is not None and st.mode == _RESUB:
                st.mode = None  # the new subscription starts here: its first message decides the mode
            out.event(time=recv_ns, kind="subscribed", sym=normalize_symbol(vsym), venue_sym=vsym,
                      detail=f"subscribed to {channel} {vsym}")
        elif event == "unsubscribe":
            return  # the first half of a book resync; its subscribe ack says the rest
        elif event == "error":
            code, text = msg.get("code"), msg.get("msg")
            found = _INST_ID.search(text) if isinstance(text, str) else None
            vsym = found.group(1) if found else None
            self._bad(f"OKX refused a request: error {code}: {str(text)[:_DETAIL]}; check that every symbol is a "
                      f"listed OKX instId such as BTC-USDT or BTC-USDT-SWAP (upper case, dash-separated) - that "
                      f"channel stays silent until it is fixed", raw, recv_ns, out, vsym)
        elif event == "notice" and msg.get("code") == _UPGRADE_NOTICE:
            # Sent 60 s before OKX closes the connection for a service upgrade: move now,
            # on our terms, instead of losing whatever is in flight when it is cut.
            self._request(Reconnect(f"OKX notice {_UPGRADE_NOTICE}: {msg.get('msg')}"))
        else:
            out.event(time=recv_ns, kind="unknown_message", detail=f"unknown OKX event {event!r}: {_quote(raw)}")

    def _bad(self, why: str, raw: str | bytes, recv_ns: int, out: Out, venue_sym: str | None = None) -> None:
        out.event(time=recv_ns, kind="bad_message", venue_sym=venue_sym,
                  sym=normalize_symbol(venue_sym) if venue_sym else None,
                  detail=f"{why[: _DETAIL * 2]}; message: {_quote(raw)}")

    # -- trades and BBO --------------------------------------------------------------------

    def _trades(self, st: _Sym, msg: dict[str, Any], data: list[Any], raw: str | bytes, recv_ns: int,
                out: Out) -> None:
        # Check every trade before publishing any: a bad one rejects the whole push.
        parsed = []
        for t in data:
            if t.__class__ is not dict:
                raise BadMessage(f"trade {t!r} is not an object")
            inst = t.get("instId", st.venue_sym)
            if inst != st.venue_sym:
                raise BadMessage(f"trade instId {inst!r} is not the channel's {st.venue_sym!r}")
            tid = t["tradeId"]
            if tid.__class__ is not str or not tid:
                raise BadMessage(f"tradeId {tid!r} is not a non-empty string")
            side = t["side"]
            if side.__class__ is not str or side not in _SIDES:
                raise BadMessage(f"side {side!r} is not buy or sell")
            # tradeId is numeric in practice ("130639474"); an id that is not stays a trade_id only.
            seq = int(tid) if len(tid) <= 18 and tid.isascii() and tid.isdigit() else None
            parsed.append((_ms(t["ts"], "trade time ts"), decimal_text(t["px"], "price px"),
                           decimal_text(t["sz"], "size sz"), side, tid, seq))
        for time, price, size, side, tid, seq in parsed:
            out.trade(time=time, sym=st.sym, venue_sym=st.venue_sym, price=price, size=size, side=side,
                      trade_id=tid, seq=seq, recv_time=recv_ns)

    def _bbo(self, st: _Sym, msg: dict[str, Any], data: list[Any], raw: str | bytes, recv_ns: int,
             out: Out) -> None:
        parsed = []
        for d in data:
            if d.__class__ is not dict:
                raise BadMessage(f"bbo-tbt item {str(d)[:40]} is not an object")
            best_bid = _top_level(_levels(d["bids"], "bids"), "best bid")
            best_ask = _top_level(_levels(d["asks"], "asks"), "best ask")
            parsed.append((_ms(d["ts"], "bbo time ts"), best_bid, best_ask))
        for time, (bid, bid_size), (ask, ask_size) in parsed:
            out.quote(time=time, sym=st.sym, venue_sym=st.venue_sym, bid_price=bid, bid_size=bid_size,
                      ask_price=ask, ask_size=ask_size, recv_time=recv_ns, derived=False)

    # -- books -----------------------------------------------------------------------------

    def _books(self, st: _Sym, msg: dict[str, Any], data: list[Any], raw: str | bytes, recv_ns: int,
               out: Out) -> None:
        action = msg.get("action")
        snapshot = action == "snapshot"
        try:
            if not snapshot and action != "update":
                raise BadMessage(f"books action {action!r} is not snapshot or update")
            entries = [_entry(e) for e in data]
        except (BadMessage, *_MALFORMED) as exc:
            why = str(exc) if isinstance(exc, BadMessage) else f"{type(exc).__name__}: {exc}"
            # A live book missed a message; a snapshot we waited for is unusable. An update for
            # a book already waiting for its snapshot changes nothing: that resync is under way.
            # (A book waiting for its REST snapshot keeps buffering: the hole shows in the splice.)
            self._lost(st, snapshot or st.book.valid, f"malformed books message ({why})", raw, recv_ns, out)
            return
        if snapshot:
            st.buffer.clear()  # a whole book: whatever waited for a REST snapshot is moot
            if st.mode != _REST:
                st.mode = _WS  # a snapshot is always a whole book; in _REST mode gaps still re-fetch
        elif st.mode == _RESUB:
            return  # the old subscription's tail, before the new one's ack
        elif st.mode is None:
            st.mode = _REST  # no snapshot on this subscription: buffer and fetch one over REST
        for entry in entries:
            if not snapshot and st.mode == _REST and not st.book.valid:
                self._wait(st, entry, raw, recv_ns)
                continue
            if not self._apply(st, snapshot, entry, raw, recv_ns, out):
                return

    def _lost(self, st: _Sym, resync: bool, why: str, raw: str | bytes, recv_ns: int, out: Out) -> None:
        """A books message that cannot be used: one bad_message, and with ``resync`` the book rebuilt."""
        self._bad(f"{why}{'; ' + self._recovery(st) if resync else ''}", raw, recv_ns, out, st.venue_sym)
        if resync:
            self._resync(st, why)

    @staticmethod
    def _recovery(st: _Sym) -> str:
        return "re-fetching its REST snapshot" if st.mode == _REST else "resubscribing its book"

    def _apply(self, st: _Sym, snapshot: bool, entry: _Entry, raw: str | bytes, recv_ns: int, out: Out) -> bool:
        """Apply one books push to ``st``'s book and publish its rows; False when the book was lost."""
        time, seq, prev, checksum, bids, asks = entry
        book = st.book
        if snapshot:
            st.joining = False
            try:
                book.apply_snapshot(bids, asks, seq=seq)
            except DataError as exc:
                self._lost(st, True, str(exc), raw, recv_ns, out)
                return False
        else:
            if not book.valid:
                return True  # waiting for a (re)subscription's snapshot: updates before it mean nothing
            last = st.seq
            joined = False
            if st.joining and last is not None:
                # After a REST snapshot (OKX's procedure): what it holds goes, the first update
                # past it must straddle it (prevSeqId <= snapshot seqId < seqId).
                if seq <= last:
                    return True
                st.joining = False
                joined = prev <= last
            # The documented chain: prevSeqId names the last seqId. A keepalive (seqId == prevSeqId)
            # and a maintenance reset (seqId < prevSeqId) pass the same test.
            if prev != last and not joined:
                out.event(time=recv_ns, kind="gap", sym=st.sym, venue_sym=st.venue_sym, expected=last, got=prev,
                          detail=f"books prevSeqId {prev} does not follow the last seqId {last}: a message was lost; "
                                 f"book dropped, {self._recovery(st)}")
                # In _REST mode this update is the first of the stream the new snapshot must join.
                self._resync(st, f"gap: prevSeqId {prev} after seqId {last}", (entry, raw, recv_ns))
                return False
            try:
                book.apply_many(bids, asks, seq=seq)
            except DataError as exc:  # the book invalidated itself halfway through the message
                self._lost(st, True, str(exc), raw, recv_ns, out)
                return False
        st.seq = seq
        # 0 is what OKX sends since it retired the checksum; None, what it will send without the field.
        if checksum:
            ours = okx_checksum(book)
            if ours != checksum:
                out.event(time=recv_ns, kind="checksum", sym=st.sym, venue_sym=st.venue_sym, expected=checksum,
                          got=ours, detail=f"books checksum mismatch after {'snapshot' if snapshot else 'update'} "
                                           f"seqId {seq}: OKX sent {checksum}, the local top 25 give {ours}; book "
                                           f"dropped, {self._recovery(st)}")
                self._resync(st, f"checksum mismatch: OKX {checksum}, local {ours}")
                return False
        self._publish(st, snapshot, time, seq, prev, bids, asks, recv_ns, out)
        return True

    def _publish(self, st: _Sym, snapshot: bool, time: int, seq: int, prev: int, bids: list[Any], asks: list[Any],
                 recv_ns: int, out: Out, source: str = "a new snapshot") -> None:
        """l2 rows for the levels just applied, then a derived quote if the top moved, then crossing."""
        sym, vsym, book, l2 = st.sym, st.venue_sym, st.book, out.l2
        if snapshot:
            reason, st.awaiting = st.awaiting, None
            if reason is not None:
                out.event(time=time, kind="resync", sym=sym, venue_sym=vsym,
                          detail=f"book rebuilt from {source} (seqId {seq}) after {reason}")
            # The snapshot as held (zero sizes and repeated prices resolved), best first.
            held_bids, held_asks = book.top_raw(max(book.counts))
            for price, size in held_bids:
                l2(time=time, sym=sym, venue_sym=vsym, side="bid", price=price, size=size, is_snapshot=True,
                   seq_first=seq, seq_last=seq, recv_time=recv_ns)
            for price, size in held_asks:
                l2(time=time, sym=sym, venue_sym=vsym, side="ask", price=price, size=size, is_snapshot=True,
                   seq_first=seq, seq_last=seq, recv_time=recv_ns)
        else:
            first = prev + 1 if prev < seq else seq
            for level in bids:
                l2(time=time, sym=sym, venue_sym=vsym, side="bid", price=level[0], size=level[1], is_snapshot=False,
                   seq_first=first, seq_last=seq, recv_time=recv_ns)
            for level in asks:
                l2(time=time, sym=sym, venue_sym=vsym, side="ask", price=level[0], size=level[1], is_snapshot=False,
                   seq_first=first, seq_last=seq, recv_time=recv_ns)
        top_bids, top_asks = book.top_raw(1)
        top = (top_bids[0][0] if top_bids else None, top_bids[0][1] if top_bids else None,
               top_asks[0][0] if top_asks else None, top_asks[0][1] if top_asks else None)
        if top != st.top:
            st.top = top
            out.quote(time=time, sym=sym, venue_sym=vsym, bid_price=top[0], bid_size=top[1], ask_price=top[2],
                      ask_size=top[3], recv_time=recv_ns, derived=True)
        crossed = book.crossed
        if crossed and not st.crossed:
            state = "locked" if book.locked else "crossed"
            out.event(time=time, kind="crossed", sym=sym, venue_sym=vsym,
                      detail=f"book {state} after seqId {seq}: best bid {top[0]} >= best ask {top[2]} (OKX allows "
                             f"this in the pre-open call auction)")
        st.crossed = crossed

    def _resync(self, st: _Sym, reason: str, restart: tuple[_Entry, str | bytes, int] | None = None) -> None:
        """Drop one instId's book and rebuild it; other instIds are untouched.

        Snapshot world (mode _WS, or not yet known): unsubscribe and subscribe its books channel
        alone, whose new snapshot rebuilds it. _REST mode: the subscription is live, so buffer
        from ``restart`` (the update that showed the gap) or from the next update, and fetch a
        new REST snapshot on the first buffered one."""
        st.book.invalidate(reason)
        st.seq = None
        st.top = None
        st.crossed = False
        st.awaiting = reason
        st.joining = False
        st.buffer.clear()
        if st.mode == _REST:
            if restart is not None:
                self._wait(st, *restart)
            return
        st.mode = _RESUB
        arg = [{"channel": "books", "instId": st.venue_sym}]
        self._request(Send(_op("unsubscribe", arg)))
        self._request(Send(_op("subscribe", arg)))

    # -- books without a snapshot: the REST splice ------------------------------------------

    def _wait(self, st: _Sym, entry: _Entry, raw: str | bytes, recv_ns: int) -> None:
        """Buffer an update until the REST snapshot comes; the first buffered one asks for it."""
        st.buffer.append((entry, raw, recv_ns))
        if not st.requested:
            self._fetch(st)

    def _fetch(self, st: _Sym) -> None:
        st.requested = True
        self._request(Rest(st.venue_sym, _REST_BOOKS.format(st.venue_sym)))

    def on_snapshot(self, venue_sym: str, body: bytes, recv_ns: int, out: Out) -> None:
        """Splice the REST snapshot onto the buffered updates (OKX's procedure, module docstring)."""
        st = self._syms.get(venue_sym)
        if st is None:
            raise ValueError(f"okx: snapshot for {venue_sym!r}, which is not one of the instIds {sorted(self._syms)}; "
                             f"the shell must answer Rest actions with their own venue_sym")
        st.requested = False
        if st.mode != _REST or st.book.valid or not st.buffer:
            return  # moot: a WS snapshot or a disconnect came first (the next buffered update asks again)
        try:
            time, seq, bids, asks = _rest_book(body)
        except (BadMessage, *_MALFORMED) as exc:
            why = str(exc) if isinstance(exc, BadMessage) else f"{type(exc).__name__}: {exc}"
            self._bad(f"REST books snapshot unusable ({why}); asking again", body, recv_ns, out, venue_sym)
            self._fetch(st)
            return
        buffered = list(st.buffer)
        first_prev = buffered[0][0][2]
        if seq < first_prev:
            # Older than the stream we hold (OKX's REST caches can lag: "the data obtained in the
            # second request is earlier than the first"): not a loss, just ask again.
            self._fetch(st)
            return
        todo = [b for b in buffered if b[0][1] > seq]  # updates the snapshot already holds go
        if todo and todo[0][0][2] > seq:
            # The buffer itself has a hole just after the snapshot: start the stream again there.
            prev = todo[0][0][2]
            out.event(time=recv_ns, kind="gap", sym=st.sym, venue_sym=venue_sym, expected=seq, got=prev,
                      detail=f"REST snapshot seqId {seq} does not join the buffered updates (next prevSeqId {prev}): "
                             f"an update was lost while buffering; re-fetching the REST snapshot")
            st.buffer = deque(todo, maxlen=_MAX_BUFFER)
            self._fetch(st)
            return
        try:
            st.book.apply_snapshot(bids, asks, seq=seq)
        except DataError as exc:
            st.book.invalidate("bad REST snapshot")
            self._bad(f"REST books snapshot unusable ({exc}); asking again", body, recv_ns, out, venue_sym)
            self._fetch(st)
            return
        st.buffer.clear()
        st.seq = seq
        st.top = None
        st.joining = True  # also for live updates the snapshot already holds (it can be newer than the buffer)
        self._publish(st, True, time, seq, -1, bids, asks, recv_ns, out, source="the REST snapshot")
        for entry, raw, recv in todo:
            if not self._apply(st, False, entry, raw, recv, out):
                return


def _rest_book(body: bytes) -> tuple[int, int, list[Any], list[Any]]:
    """GET /api/v5/market/books: (time ns, seqId, bids, asks); BadMessage unless code "0" and one book."""
    doc = decode(body)
    if doc.__class__ is not dict:
        raise BadMessage(f"a {type(doc).__name__}, not a JSON object")
    code = doc.get("code")
    if code != "0":
        raise BadMessage(f"OKX answered code {code!r}: {str(doc.get('msg'))[:_DETAIL]}")
    data = doc.get("data")
    if data.__class__ is not list or not data or data[0].__class__ is not dict:
        raise BadMessage(f"data {str(data)[:40]} is not a list holding one order book")
    d = data[0]
    seq = d.get("seqId")
    if seq.__class__ is str and 0 < len(seq) <= 18 and seq.isascii() and seq.isdigit():
        seq = int(seq)  # REST numbers are usually strings at OKX; the WS seqId is a number
    if seq is None:
        raise BadMessage("no seqId: the snapshot cannot be joined to the books stream")
    levels = (_levels(d["bids"], "bids"), _levels(d["asks"], "asks"))
    for side in levels:
        for level in side:
            if len(level) < 2:
                raise BadMessage(f"level {level!r} is not [price, size, ...]")
    return _ms(d["ts"], "snapshot time ts"), _int(seq, "seqId"), levels[0], levels[1]


def _entry(e: Any) -> _Entry:
    """One ``books`` data item, checked for shape (levels are checked as the book applies them)."""
    if e.__class__ is not dict:
        raise BadMessage(f"books data item {str(e)[:40]} is not an object")
    checksum = e.get("checksum")
    return (_ms(e["ts"], "book time ts"), _int(e["seqId"], "seqId"), _int(e["prevSeqId"], "prevSeqId"),
            None if checksum is None else _int(checksum, "checksum"), _levels(e["bids"], "bids"),
            _levels(e["asks"], "asks"))
