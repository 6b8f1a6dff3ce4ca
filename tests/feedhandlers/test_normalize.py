"""feedhandlers.normalize: one symbol form for every venue; rows collected per table; to Arrow batches."""

from __future__ import annotations

import re
import struct
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.normalize import COLUMNS, BadMessage, Out, decimal_text, is_decimal, normalize_symbol, to_batches
from tickerplant.exceptions import DataError
from tickerplant.schema import Registry, TableSchema


@pytest.mark.parametrize(("venue_sym", "sym"), [
    ("BTCUSDT", "BTCUSD"), ("btcusdt", "BTCUSD"), ("BTC-USD", "BTCUSD"), ("BTC/USD", "BTCUSD"),
    ("XBT/USD", "BTCUSD"), ("ETH-USDT-SWAP", "ETHUSD-SWAP"), ("ETHBTC", "ETHBTC"), ("SOL_USDC", "SOLUSD"),
    ("BTC-EUR", "BTCEUR"),
])
def test_normalize_symbol(venue_sym: str, sym: str) -> None:
    assert normalize_symbol(venue_sym) == sym


def test_out_collects_columns_and_take_empties_it() -> None:
    out = Out("binance")
    out.trade(time=1, sym="BTCUSD", venue_sym="BTCUSDT", price="97000.10", size="0.001", side="buy",
              trade_id="42", seq=None, recv_time=2)
    out.event(time=3, kind="gap", detail="depth update 105 after 103", sym="BTCUSD", expected=104, got=105)
    assert out.rows("trade") == 1
    taken = out.take()
    assert set(taken) == {"trade", "feed_event"}
    assert list(taken["trade"]) == list(COLUMNS["trade"])
    assert taken["trade"]["price"] == ["97000.10"] and taken["trade"]["exchange"] == ["binance"]
    assert taken["feed_event"]["expected"] == [104]
    assert out.take() == {}
    with pytest.raises(ValueError, match="feed event kind"):
        out.event(time=1, kind="oops", detail="")


# --- to_batches ----------------------------------------------------------------------------------

REG = Registry.default()
T = 1_795_000_000_123_456_789


def four_tables() -> Out:
    """Rows of every table, nulls where a venue may leave a value out."""
    out = Out("coinbase")
    out.trade(time=T, sym="BTCUSD", venue_sym="BTC-USD", price="97000.10", size="0.001", side="buy",
              trade_id="42", seq=7, recv_time=T + 5)
    out.trade(time=T + 1, sym="ETHUSD", venue_sym="ETH-USD", price="3500", size="1e-8", side=None,
              recv_time=T + 6)
    out.quote(time=T, sym="BTCUSD", venue_sym="BTC-USD", bid_price="96999.99", bid_size="0.5",
              ask_price=None, ask_size=None, recv_time=T + 7, derived=True)
    out.l2(time=T, sym="BTCUSD", venue_sym="BTC-USD", side="bid", price="96999.99", size="0", is_snapshot=False,
           seq_first=10, seq_last=11, recv_time=T + 8)
    out.l2(time=T, sym="BTCUSD", venue_sym="BTC-USD", side="ask", price="97000.5", size="2.25", is_snapshot=True,
           seq_first=None, seq_last=None, recv_time=T + 8)
    out.event(time=T + 9, kind="gap", detail="sequence 105 after 103", sym="BTCUSD", venue_sym="BTC-USD",
              expected=104, got=105)
    out.event(time=T + 10, kind="connect", detail="connected to wss://example")
    return out


def test_to_batches_round_trips_all_four_tables() -> None:
    taken = four_tables().take()
    batches = to_batches(taken, REG)
    assert list(batches) == ["trade", "quote", "l2", "feed_event"]
    for table, batch in batches.items():
        wire = REG[table].wire
        assert batch.schema.equals(wire), table
        batch.validate(full=True)
        cols = taken[table]
        assert set(cols) == set(wire.names)  # every column the venue parsers fill is in the schema
        for field in wire:
            got = batch.column(field.name)
            if pa.types.is_timestamp(field.type):
                assert got.cast(pa.int64()).to_pylist() == cols[field.name]
            elif pa.types.is_floating(field.type):
                assert got.to_pylist() == [None if v is None else float(v) for v in cols[field.name]]
            else:
                assert got.to_pylist() == cols[field.name], (table, field.name)
    assert batches["trade"].column("price").to_pylist() == [97000.10, 3500.0]
    assert batches["quote"].column("derived").to_pylist() == [True]
    assert batches["feed_event"].column("sym").to_pylist() == ["BTCUSD", None]
    assert batches["feed_event"].column("exchange").to_pylist() == ["coinbase", "coinbase"]


def test_to_batches_of_an_empty_take_is_empty() -> None:
    out = Out("kraken")
    assert to_batches(out.take(), REG) == {}
    assert to_batches({"trade": {name: [] for name in COLUMNS["trade"]}}, REG) == {}


def test_missing_nullable_columns_are_null() -> None:
    cols: dict[str, list[Any]] = {"time": [T, T], "sym": ["A", "B"], "price": ["1", "2"], "size": ["3", "4"]}
    batch = to_batches({"trade": cols}, REG)["trade"]
    assert batch.schema.equals(REG["trade"].wire)
    for name in ("exchange", "side", "trade_id", "seq", "recv_time", "venue_sym"):
        assert batch.column(name).null_count == 2


@pytest.mark.parametrize("text", [
    "0.1", "97000.10", "1e-8", "1E-8", "0.00000001", "123456789.123456789", "0.30000000000000004", "1e+5",
    "4.35", "2.675", "1.0000000000000002", "9007199254740993", "5e-324", "1.7976931348623157e308", "+2.5", ".5",
])
def test_decimal_text_converts_to_the_nearest_float64(text: str) -> None:
    cols: dict[str, list[Any]] = {"time": [T], "sym": ["A"], "price": [text], "size": ["1"]}
    got = to_batches({"trade": cols}, REG)["trade"].column("price")[0].as_py()
    assert struct.pack("<d", got) == struct.pack("<d", float(text))  # bit for bit


@settings(max_examples=30, deadline=None)
@given(st.lists(st.decimals(min_value=Decimal("-1e300"), max_value=Decimal("1e300"), allow_nan=False,
                         allow_infinity=False), min_size=1, max_size=200),
       st.sampled_from(["f", "e"]))
def test_decimal_text_matches_pythons_correctly_rounded_float(values: list[Decimal], form: str) -> None:
    texts = [format(v, form) if form == "e" else str(v) for v in values]
    cols: dict[str, list[Any]] = {"time": [T] * len(texts), "sym": ["A"] * len(texts), "price": texts, "size": texts}
    got = to_batches({"trade": cols}, REG)["trade"].column("price").to_pylist()
    assert got == [float(t) for t in texts]


@pytest.mark.parametrize("bad", ["abc", "", "1,5", " 1", "0x10", "1_000", "nan", "NaN", "inf", "-Infinity", "1e999"])
def test_bad_decimal_names_column_row_and_value(bad: str) -> None:
    cols: dict[str, list[Any]] = {"time": [T, T], "sym": ["A", "B"], "price": ["1.5", bad], "size": ["1", "1"]}
    with pytest.raises(DataError) as info:
        to_batches({"trade": cols}, REG)
    msg = str(info.value)
    assert f"column trade.price: row 1 value {bad!r} is not a finite decimal number" in msg
    assert "decimal text such as '97000.10'" in msg and "or None" not in msg  # price is required


def test_bad_decimal_in_a_nullable_column() -> None:
    out = Out("binance")
    out.quote(time=T, sym="A", venue_sym="a", bid_price=None, bid_size=None, ask_price="1.2.3", ask_size="1",
              recv_time=T, derived=False)
    with pytest.raises(DataError, match=re.escape("column quote.ask_price: row 0 value '1.2.3' is not a finite "
                                                  "decimal number; the venue parser must pass decimal text such "
                                                  "as '97000.10' or None")):
        to_batches(out.take(), REG)


def test_a_float_where_decimal_text_belongs_is_refused() -> None:
    """A per-row float would already have rounded: the parser must pass the venue's text."""
    cols: dict[str, list[Any]] = {"time": [T], "sym": ["A"], "price": [0.1], "size": ["1"]}
    with pytest.raises(DataError, match=r"trade\.price: row 0 value 0\.1 is not"):
        to_batches({"trade": cols}, REG)


@pytest.mark.parametrize(("column", "values", "message"), [
    ("time", [T, "x"], "column trade.time: row 1 value 'x' is not integer nanoseconds since the epoch"),
    ("seq", [1, "12"], "column trade.seq: row 1 value '12' is not a int64"),
    ("side", ["buy", 3], "column trade.side: row 1 value 3 is not a string"),
    ("price", ["1", None], "column trade.price may not be null; row 1 is None"),
    ("sym", [None, "B"], "column trade.sym may not be null; row 0 is None"),
    ("size", ["1"], "column trade.size has 1 values, expected 2"),
])
def test_bad_values_of_other_types(column: str, values: list[Any], message: str) -> None:
    cols: dict[str, list[Any]] = {"time": [T, T], "sym": ["A", "B"], "price": ["1", "2"], "size": ["1", "1"]}
    cols[column] = values
    with pytest.raises(DataError, match=re.escape(message)):
        to_batches({"trade": cols}, REG)


def test_bad_bool_in_derived() -> None:
    out = Out("kraken")
    out.quote(time=T, sym="A", venue_sym="a", bid_price="1", bid_size="1", ask_price="2", ask_size="1",
              recv_time=T, derived="yes")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=re.escape("column quote.derived: row 0 value 'yes' is not a bool")):
        to_batches(out.take(), REG)


def test_missing_required_column_and_unknown_column() -> None:
    with pytest.raises(DataError, match="table 'trade' needs column 'price', which the rows lack"):
        to_batches({"trade": {"time": [T], "sym": ["A"], "size": ["1"]}}, REG)
    with pytest.raises(DataError, match=r"table 'trade' \(version 2\) has no column 'colour'"):
        to_batches({"trade": {"time": [T], "sym": ["A"], "price": ["1"], "size": ["1"], "colour": ["red"]}}, REG)


def test_a_tickerplant_schema_without_the_feed_columns_is_named() -> None:
    """A TP on a version-1 schema file: the error says which column or table is missing and the fix."""
    v1 = Registry([
        TableSchema("trade", 1, pa.schema([f for f in REG["trade"].wire if f.name != "venue_sym"])),
        REG["quote"], REG["l2"],
    ], "old.toml")
    taken = four_tables().take()
    with pytest.raises(DataError) as info:
        to_batches({"trade": taken["trade"]}, v1)
    assert "table 'trade' (version 1) has no column 'venue_sym'" in str(info.value)
    assert "bump the table's version" in str(info.value)
    with pytest.raises(DataError, match=r"unknown table 'feed_event'; tables in old\.toml: l2, quote, trade"):
        to_batches({"feed_event": taken["feed_event"]}, v1)


# -- the number check every parser uses -------------------------------------------------------


@pytest.mark.parametrize(("text", "positive", "non_negative"), [
    ("1", True, True), ("0.5", True, True), (".5", True, True), ("1.", True, True), ("1e-05", True, True),
    ("1.5E+3", True, True), ("0", False, True), ("0.000", False, True), ("0e5", False, True),
    ("-1", False, False), ("+1", False, False), (" 1", False, False), ("1 ", False, False), ("1_000", False, False),
    ("\u0661", False, False), ("0x10", False, False), ("NaN", False, False), ("Infinity", False, False),
    ("1e999", False, False), ("9" * 310, False, False), ("", False, False), (".", False, False), ("1e", False, False),
])
def test_is_decimal_accepts_exactly_what_arrow_casts_to_a_finite_float(
        text: str, positive: bool, non_negative: bool) -> None:
    assert is_decimal(text) is positive
    assert is_decimal(text, zero_ok=True) is non_negative
    if non_negative:  # what passes converts, finite, in a batch of its own
        (value,) = pa.array([text]).cast(pa.float64()).to_pylist()
        assert value == float(text) and value < float("inf")


@given(st.decimals(allow_nan=False, allow_infinity=False), st.sampled_from(["f", "e", "E"]))
@settings(max_examples=200, deadline=None)
def test_is_decimal_agrees_with_decimal_on_plain_numbers(value: Decimal, form: str) -> None:
    text = format(abs(value), form)  # signs are refused outright; "-0" would be the one disagreement
    assert is_decimal(text, zero_ok=True) == (Decimal(text) >= 0 and Decimal(text) <= Decimal("1.7976931348623157e308"))


def test_decimal_text_errors_name_the_field_and_value() -> None:
    assert decimal_text("97000.5", "price p") == "97000.5"
    with pytest.raises(BadMessage, match="price p ' 1' is not a positive finite decimal"):
        decimal_text(" 1", "price p")
    with pytest.raises(BadMessage, match="size q '-1' is not a non-negative finite decimal"):
        decimal_text("-1", "size q", zero_ok=True)
    with pytest.raises(BadMessage, match=r"price 1\.5 is not a decimal string"):
        decimal_text(1.5, "price")
    with pytest.raises(BadMessage, match=re.escape("'" + "9" * 39 + "...")):
        decimal_text("9" * 400, "price")  # long values are clipped in the message
