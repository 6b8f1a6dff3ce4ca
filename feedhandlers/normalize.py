"""What venue parsers produce: normalized rows, column by column, and feed events.

A venue adapter's parser turns one raw message into rows of the standard tables
(``trade``, ``quote``, ``l2``) and ``feed_event`` rows (gaps, checksum failures, resyncs,
bad messages), appended to an :class:`Out`. Values stay as the venue sent them until the
rows are taken: prices and sizes as decimal strings (converted once per batch, exactly,
never through a per-row float), times as integer nanoseconds since the epoch (UTC).

Every row keeps the venue's own symbol (``venue_sym``) next to the normalized one
(``sym``, e.g. ``BTCUSD`` for Binance ``BTCUSDT``, Coinbase ``BTC-USD`` and Kraken
``BTC/USD``; :func:`normalize_symbol`). Trade ``side`` is always the aggressor's:
``buy`` when the taker bought.
"""

from __future__ import annotations

from typing import Any, Literal

# Feed event kinds (DESIGN: feed health is published next to the data).
EVENT_KINDS = frozenset({
    "connect", "disconnect", "reconnect", "subscribed", "gap", "checksum", "resync", "stale",
    "crossed", "bad_message", "unknown_message", "overflow",
})

# Quote currencies that mean "US dollar" for the normalized symbol: a stablecoin pair and
# a dollar pair of the same base are the same instrument to a cross-venue check.
_USD = ("USDT", "USDC", "USD", "ZUSD")
_ALIASES = {"XBT": "BTC", "XXBT": "BTC", "XETH": "ETH", "XDG": "DOGE"}


def normalize_symbol(venue_sym: str) -> str:
    """One form for every venue: base + quote, upper case, no separator, USD for USD/USDT/USDC.

    ``BTCUSDT`` -> ``BTCUSD``; ``BTC-USD`` -> ``BTCUSD``; ``XBT/USD`` -> ``BTCUSD``;
    ``ETH-USDT-SWAP`` -> ``ETHUSD-SWAP``; ``ethbtc`` -> ``ETHBTC``.
    """
    text = venue_sym.upper()
    suffix = ""
    for sep in ("/", "-", "_"):
        if sep in text:
            parts = text.split(sep)
            base, quote, rest = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
            suffix = "-" + "-".join(rest) if rest else ""
            break
    else:
        base, quote = text, ""
        for usd in _USD:
            if text.endswith(usd) and len(text) > len(usd):
                base, quote = text[: -len(usd)], usd
                break
    base = _ALIASES.get(base, base)
    if quote in _USD:
        quote = "USD"
    return f"{base}{quote}{suffix}"


COLUMNS: dict[str, tuple[str, ...]] = {
    "trade": ("time", "sym", "venue_sym", "exchange", "price", "size", "side", "trade_id", "seq", "recv_time"),
    "quote": ("time", "sym", "venue_sym", "exchange", "bid_price", "bid_size", "ask_price", "ask_size",
              "recv_time", "derived"),
    "l2": ("time", "sym", "venue_sym", "exchange", "side", "price", "size", "is_snapshot", "seq_first", "seq_last",
           "recv_time"),
    "feed_event": ("time", "sym", "venue_sym", "exchange", "kind", "detail", "expected", "got"),
}


class Out:
    """Rows of one venue's messages, per table, as columns of Python values until taken.

    Parsers call :meth:`trade`, :meth:`quote`, :meth:`l2` and :meth:`event`; the adapter
    takes the columns (:meth:`take`) once per batch of messages and converts them to Arrow.
    """

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.columns = _empty()

    def _add(self, table: str, row: dict[str, Any]) -> None:
        for name, col in self.columns[table].items():
            col.append(row[name])

    def rows(self, table: str) -> int:
        return len(self.columns[table]["time"])

    def trade(self, *, time: int, sym: str, venue_sym: str, price: str, size: str, side: str | None,
              trade_id: str | None = None, seq: int | None = None, recv_time: int) -> None:
        self._add("trade", {"time": time, "sym": sym, "venue_sym": venue_sym, "exchange": self.venue,
                            "price": price, "size": size, "side": side, "trade_id": trade_id, "seq": seq,
                            "recv_time": recv_time})

    def quote(self, *, time: int, sym: str, venue_sym: str, bid_price: str | None, bid_size: str | None,
              ask_price: str | None, ask_size: str | None, recv_time: int, derived: bool) -> None:
        """A top-of-book row: native (the venue's own ticker) or ``derived`` from the L2 book."""
        self._add("quote", {"time": time, "sym": sym, "venue_sym": venue_sym, "exchange": self.venue,
                            "bid_price": bid_price, "bid_size": bid_size, "ask_price": ask_price,
                            "ask_size": ask_size, "recv_time": recv_time, "derived": derived})

    def l2(self, *, time: int, sym: str, venue_sym: str, side: Literal["bid", "ask"], price: str, size: str,
           is_snapshot: bool, seq_first: int | None, seq_last: int | None, recv_time: int) -> None:
        """One price level: ``size`` is the absolute size at ``price``; "0" deletes the level."""
        self._add("l2", {"time": time, "sym": sym, "venue_sym": venue_sym, "exchange": self.venue, "side": side,
                         "price": price, "size": size, "is_snapshot": is_snapshot, "seq_first": seq_first,
                         "seq_last": seq_last, "recv_time": recv_time})

    def event(self, *, time: int, kind: str, detail: str, sym: str | None = None, venue_sym: str | None = None,
              expected: int | None = None, got: int | None = None) -> None:
        """A feed-health row; ``detail`` says what happened in words a user can act on."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"feed event kind {kind!r} is not one of {sorted(EVENT_KINDS)}")
        self._add("feed_event", {"time": time, "sym": sym, "venue_sym": venue_sym, "exchange": self.venue,
                                 "kind": kind, "detail": detail, "expected": expected, "got": got})

    def take(self) -> dict[str, dict[str, list[Any]]]:
        """The columns of every table with rows, and start again empty."""
        out = {t: cols for t, cols in self.columns.items() if cols["time"]}
        self.columns = _empty()
        return out


def _empty() -> dict[str, dict[str, list[Any]]]:
    return {table: {name: [] for name in names} for table, names in COLUMNS.items()}
