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

:func:`to_batches` turns the taken columns into record batches of each table's wire
schema, one vectorized Arrow conversion per column (decimal text to float64 is Arrow's
correctly rounded parser: ``"0.1"`` gives the float64 nearest to 0.1, as ``float("0.1")``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

from tickerplant.exceptions import DataError
from tickerplant.schema import TIMESTAMP, Registry, TableSchema, type_name

# The largest decimal that stays finite as a float64 column: "1e999" is a finite Decimal
# but becomes inf in the table, so parsers accept prices and sizes up to this, not "< Infinity".
FLOAT64_MAX: Final = Decimal(sys.float_info.max)

# A number as every venue writes it and Arrow's float cast reads it: ASCII digits, an optional
# point, an optional exponent. Decimal() alone also takes " 1", "1_000", "+1", non-ASCII digits,
# "NaN" and "Infinity"; one of those in a batch would fail (or poison) the whole batch's cast.
_DECIMAL: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?").fullmatch
_ZERO: Final = Decimal(0)
_SHORT: Final = 300  # fewer digits and no exponent: certainly below FLOAT64_MAX (~1.8e308)


class BadMessage(ValueError):
    """A venue message that does not have the documented shape; adapters publish it as a bad_message event."""


def is_decimal(text: object, zero_ok: bool = False) -> bool:
    """``text`` is a decimal string > 0 (>= 0 with ``zero_ok``) that stays finite as a float64."""
    if not isinstance(text, str):
        return False
    digits = text.replace(".", "", 1)
    if digits.isdigit() and digits.isascii() and len(digits) < _SHORT:  # the usual "97000.5": no regex, no Decimal
        return zero_ok or digits.strip("0") != ""
    if _DECIMAL(text) is None:
        return False
    value = Decimal(text)
    return (value >= _ZERO if zero_ok else value > _ZERO) and value <= FLOAT64_MAX


def decimal_text(text: Any, what: str, *, zero_ok: bool = False) -> str:
    """``text`` if :func:`is_decimal`, else :class:`BadMessage` naming ``what`` and the value."""
    if is_decimal(text, zero_ok):
        return text  # type: ignore[no-any-return]
    shown = repr(text)
    shown = shown if len(shown) <= 40 else shown[:40] + "..."
    if not isinstance(text, str):
        raise BadMessage(f"{what} {shown} is not a decimal string")
    raise BadMessage(f"{what} {shown} is not a {'non-negative' if zero_ok else 'positive'} finite decimal "
                     f"(plain ASCII digits, an optional point and exponent)")


# Feed event kinds (DESIGN: feed health is published next to the data).
EVENT_KINDS = frozenset({
    "connect", "disconnect", "reconnect", "subscribed", "gap", "checksum", "resync", "stale",
    "crossed", "bad_message", "unknown_message", "overflow", "rest_error",
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


# --- conversion to Arrow ------------------------------------------------------------------------

_CONVERT_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def to_batches(columns: Mapping[str, Mapping[str, Sequence[Any]]], registry: Registry) -> dict[str, pa.RecordBatch]:
    """:meth:`Out.take` columns -> one record batch of each table's wire schema, by table.

    Columns are matched by name (their order in :data:`COLUMNS` need not be the schema's);
    a nullable column the schema has and the rows lack is null. Float columns take decimal
    strings (or None), converted by one Arrow cast per column; timestamps take integer
    nanoseconds. A table with no rows is left out, so an empty take gives ``{}``.

    Raises :class:`DataError` naming the table, the column and the first bad value for an
    unknown table or column, a missing required column or a null in one, or a value that
    does not convert (a parser bug: nothing of the batch may be published).
    """
    out: dict[str, pa.RecordBatch] = {}
    for name, cols in columns.items():
        table = registry[name]  # DataError naming the declared tables
        nrows = len(cols["time"]) if "time" in cols else 0
        if nrows:
            out[name] = _to_batch(table, cols, nrows)
    return out


def _to_batch(table: TableSchema, cols: Mapping[str, Sequence[Any]], nrows: int) -> pa.RecordBatch:
    wire = table.wire
    for cname in cols:
        if wire.get_field_index(cname) < 0:
            raise DataError(
                f"table {table.name!r} (version {table.version}) has no column {cname!r}; its columns are "
                f"{', '.join(wire.names)}. Run the tickerplant with the default schema, or add the column "
                f"to its schema file as nullable and bump the table's version"
            )
    arrays: list[pa.Array] = []
    for field in wire:
        values = cols.get(field.name)
        if values is None:
            if not field.nullable:
                raise DataError(f"table {table.name!r} needs column {field.name!r}, which the rows lack")
            arrays.append(pa.nulls(nrows, field.type))
            continue
        if len(values) != nrows:
            raise DataError(f"column {table.name}.{field.name} has {len(values)} values, expected {nrows}")
        try:
            arr = _convert(field.type, values)
        except _CONVERT_ERRORS:
            raise _bad_value(table, field, values) from None
        if arr.null_count and not field.nullable:
            row = next(i for i, v in enumerate(values) if v is None)
            raise DataError(f"column {table.name}.{field.name} may not be null; row {row} is None")
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=wire)


def _convert(ftype: pa.DataType, values: Sequence[Any]) -> pa.Array:
    """One column: decimal text -> float (one cast), int nanoseconds -> timestamp, else as is."""
    if pa.types.is_floating(ftype):
        arr = pa.array(values, pa.string()).cast(ftype)
        # Arrow also parses "nan" and "inf"; no venue price or size is either. (all() skips
        # nulls, and is null when every value is: `is False` lets that through.)
        if pc.all(pc.is_finite(arr)).as_py() is False:
            raise ValueError("not a finite number")
        return arr
    if ftype == TIMESTAMP:
        return pa.array(values, pa.int64()).view(ftype)
    return pa.array(values, ftype)


def _bad_value(table: TableSchema, field: pa.Field, values: Sequence[Any]) -> DataError:
    """The error for the first value that does not convert (found one by one: the error path only)."""
    floating = pa.types.is_floating(field.type)
    want = "a finite decimal number" if floating else f"a {type_name(field.type)}"
    how = "decimal text such as '97000.10'" if floating else want
    if field.type == TIMESTAMP:
        want = how = "integer nanoseconds since the epoch"
    for row, value in enumerate(values):
        if value is None:
            continue
        try:
            _convert(field.type, [value])
        except _CONVERT_ERRORS:
            return DataError(
                f"column {table.name}.{field.name}: row {row} value {value!r} is not {want}; "
                f"the venue parser must pass {how}{' or None' if field.nullable else ''}"
            )
    return DataError(f"column {table.name}.{field.name} does not convert to {type_name(field.type)}")
