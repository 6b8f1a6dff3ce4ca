"""L2 book: exact decimal levels, depth truncation, validity, venue checksums and sequence rules.

Checksum vectors come from the venues' own documentation:

* Kraken: the BTC/USD snapshot worked example of "Book checksum (WebSocket v2)"
  (docs.kraken.com/exchange/guides/websockets/book-checksum-v2), checksum 3310070434.
* OKX: the two worked examples of OKX's order-book checksum section (an even book and
  one where the asks run longer than the bids), checksums -1881014294 and 831078360;
  OKX v5 ``books`` uses the same "bid:ask" interleaving and signed CRC32.

Everything else is hand-computed in the test, or checked against a plain-dict oracle.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.book import (
    APPLY,
    ASK,
    BID,
    RESET,
    SKIP,
    BinanceFuturesSync,
    BinanceSpotSync,
    BitstampSync,
    Book,
    BybitSync,
    CoinbaseSync,
    SeqCheck,
    kraken_checksum,
    kraken_checksum_input,
    okx_checksum,
    okx_checksum_input,
)
from tickerplant.exceptions import DataError

D = Decimal


def book_of(bids: list[tuple[str, str]], asks: list[tuple[str, str]], depth: int | None = None) -> Book:
    book = Book("test", "BTCUSD", depth=depth)
    book.apply_snapshot(bids, asks, seq=1)
    return book


def everything(book: Book) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return book.top_raw(10**9)


# -- snapshot and deltas ------------------------------------------------------------------


def test_snapshot_then_deltas_match_a_hand_computed_book() -> None:
    book = book_of(
        bids=[("100.0", "1"), ("99.5", "2"), ("99.0", "3")],
        asks=[("101.0", "1.5"), ("100.5", "0.25"), ("102", "7")],  # unsorted on purpose
    )
    assert book.valid and book.reason is None and book.seq == 1
    book.apply_many(
        bids=[("99.5", "0"), ("99.8", "4"), ("100.0", "1.25")],  # remove, insert, change
        asks=[("100.5", "0.5"), ("103", "1"), ("102", "0")],
        seq=2,
    )
    book.apply(ASK, "100.8", "2")
    book.apply(BID, "98", "9")
    assert everything(book) == (
        [("100.0", "1.25"), ("99.8", "4"), ("99.0", "3"), ("98", "9")],
        [("100.5", "0.5"), ("100.8", "2"), ("101.0", "1.5"), ("103", "1")],
    )
    assert book.best_bid() == (D("100.0"), D("1.25"))
    assert book.best_ask() == (D("100.5"), D("0.5"))
    assert book.top(2) == ([(D(100), D("1.25")), (D("99.8"), D(4))], [(D("100.5"), D("0.5")), (D("100.8"), D(2))])
    assert book.counts == (4, 4)
    assert book.seq == 2
    assert not book.crossed and not book.locked


def test_removal_in_every_zero_spelling_and_of_a_missing_level() -> None:
    book = book_of([("10", "1"), ("9", "1"), ("8", "1")], [("11", "1")])
    book.apply(BID, "10", "0.00000000")
    book.apply(BID, "9.0", "0.0")  # same price, other spelling
    book.apply(BID, "7", "0")  # never existed: nothing happens (Binance: "normal")
    assert everything(book) == ([("8", "1")], [("11", "1")])
    book.apply(ASK, "11", "0")
    assert book.best_ask() is None and book.best_bid() == (D(8), D(1))
    assert book.top(5) == ([(D(8), D(1))], [])
    assert book.top(0) == ([], [])


def test_snapshot_replaces_everything_and_ignores_zero_levels() -> None:
    book = book_of([("10", "1")], [("11", "1")])
    book.apply_snapshot([("20", "2"), ("19", "0")], [("21", "3")], seq=9)
    assert everything(book) == ([("20", "2")], [("21", "3")])
    assert book.seq == 9


def test_repeated_price_in_one_message_ends_at_its_last_size() -> None:
    book = book_of([("10", "1")], [("11", "1")])
    book.apply_many([("10", "5"), ("10", "0"), ("10", "2")], [])
    assert book.best_bid() == (D(10), D(2))


def test_extra_fields_after_price_and_size_are_ignored() -> None:
    # Kraken v1 sends [price, volume, timestamp]; OKX sends [price, size, "0", orders].
    book = book_of([("3366.1", "7", "0", "3")], [["3366.8", "9", "1582905486.493008"]])  # type: ignore[list-item]
    assert everything(book) == ([("3366.1", "7")], [("3366.8", "9")])


# -- crossed / locked ---------------------------------------------------------------------


def test_crossed_and_locked() -> None:
    book = book_of([("100", "1")], [("101", "1")])
    assert not book.crossed and not book.locked
    book.apply(BID, "101.00", "1")  # equal to the best ask, spelled differently
    assert book.crossed and book.locked
    book.apply(BID, "101.5", "1")
    assert book.crossed and not book.locked
    empty = Book("test", "X")
    assert not empty.crossed and not empty.locked


# -- depth truncation ---------------------------------------------------------------------


def test_snapshot_is_truncated_to_depth_worst_levels_first() -> None:
    book = book_of(
        [("100", "1"), ("99", "1"), ("98", "1"), ("97", "1")],
        [("101", "1"), ("102", "1"), ("103", "1"), ("104", "1")],
        depth=2,
    )
    assert everything(book) == ([("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")])


def test_insert_pushes_the_worst_level_out_of_a_depth_limited_book() -> None:
    book = book_of([("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")], depth=2)
    book.apply_many([("99.5", "3")], [("100.5", "4")])
    assert everything(book) == ([("100", "1"), ("99.5", "3")], [("100.5", "4"), ("101", "1")])
    # The dropped levels are really gone: removing a better level does not bring them back.
    book.apply_many([("100", "0")], [("100.5", "0")])
    assert everything(book) == ([("99.5", "3")], [("101", "1")])


def test_truncation_happens_once_per_message_not_per_level() -> None:
    # Kraken: process every level of the message, then truncate. Insert-then-remove in one
    # message leaves the old worst level in scope, so it must survive.
    book = book_of([("100", "1"), ("99", "1")], [("101", "1")], depth=2)
    book.apply_many([("100.5", "1"), ("100", "0")], [])
    assert everything(book)[0] == [("100.5", "1"), ("99", "1")]
    # apply() alone does not truncate; truncate() does.
    book.apply(BID, "101", "1")
    assert book.counts == (3, 1)
    book.truncate()
    assert everything(book)[0] == [("101", "1"), ("100.5", "1")]


def test_bad_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="positive number of levels"):
        Book("v", "s", depth=0)


# -- validity -----------------------------------------------------------------------------


def test_validity_lifecycle() -> None:
    book = Book("kraken", "BTC/USD", depth=10)
    assert not book.valid and book.reason == "no snapshot yet"
    book.apply_snapshot([("10", "1")], [("11", "1")])
    assert book.valid
    book.invalidate("gap: expected 5, got 7")
    assert not book.valid and book.reason == "gap: expected 5, got 7"
    # An invalid book is empty, so no stale quote can be derived from it.
    assert book.best_bid() is None and book.best_ask() is None and book.counts == (0, 0)
    assert "invalid (gap: expected 5, got 7)" in repr(book)
    book.apply_snapshot([("10", "1")], [("11", "1")])
    assert book.valid and book.reason is None


@pytest.mark.parametrize(
    "level",
    [
        ("abc", "1"),
        ("100", "x"),
        ("NaN", "1"),
        ("100", "NaN"),
        ("-100", "1"),
        ("0", "1"),
        ("Infinity", "1"),
        ("100", "-1"),
        ("100", "Infinity"),
        ("1e999", "1"),  # a finite decimal, but inf as a float64 column
        ("100", "2E+308"),
        (100.1, "1"),  # a float already lost the venue's digits
        ("100", 0.5),
        ("100",),
    ],
)
def test_malformed_level_raises_data_error_and_invalidates(level: tuple[object, ...]) -> None:
    book = book_of([("10", "1")], [("11", "1")])
    with pytest.raises(DataError, match=r"test BTCUSD: malformed bid level .*invalid until the next snapshot"):
        book.apply_many([("9", "1"), level], [])  # type: ignore[list-item]
    assert not book.valid and "malformed bid level" in str(book.reason)
    assert book.counts == (0, 0)


def test_malformed_snapshot_leaves_the_book_invalid() -> None:
    book = Book("v", "s")
    with pytest.raises(DataError):
        book.apply_snapshot([("10", "1")], [("oops", "1")])
    assert not book.valid


# -- exact decimals -----------------------------------------------------------------------


def test_prices_are_exact_decimals_not_floats() -> None:
    # As floats these two prices are the same number; as venue decimals they are two levels.
    assert float("0.30000000000000001") == float("0.3")
    book = book_of([("0.3", "1"), ("0.30000000000000001", "2")], [("0.4", "1")])
    assert book.counts == (2, 1)
    assert book.best_bid() == (D("0.30000000000000001"), D(2))
    # 0.1 + 0.2 with floats is 0.30000000000000004; the book's sizes add exactly.
    book.apply(ASK, "0.4", "0.1")
    book.apply(ASK, "0.5", "0.2")
    (_, s1), (_, s2) = book.top(2)[1]
    assert s1 + s2 == D("0.3")


def test_same_price_in_another_spelling_is_the_same_level_and_keeps_the_latest_strings() -> None:
    book = book_of([("97000.1", "1.5")], [("97000.2", "1")])
    book.apply(BID, "97000.10", "1.50000000")
    assert book.counts == (1, 1)
    assert book.top_raw(1)[0] == [("97000.10", "1.50000000")]
    book.apply(BID, "97000.100", "0")
    assert book.best_bid() is None


def test_trailing_zeros_are_kept_in_checksum_strings() -> None:
    book = book_of([("97000.10", "0.00150000")], [("97000.20", "1.00000000")])
    assert kraken_checksum_input(book) == "9700020100000000" + "9700010150000"
    assert okx_checksum_input(book) == "97000.10:0.00150000:97000.20:1.00000000"


# -- checksums ----------------------------------------------------------------------------

# docs.kraken.com "Book checksum (WebSocket v2)" worked example (BTC/USD snapshot).
KRAKEN_DOC_BIDS = [
    ("45283.5", "0.10000000"),
    ("45283.4", "1.54582015"),
    ("45282.1", "0.10000000"),
    ("45281.0", "0.10000000"),
    ("45280.3", "1.54592586"),
    ("45279.0", "0.07990000"),
    ("45277.6", "0.03310103"),
    ("45277.5", "0.30000000"),
    ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238"),
]
KRAKEN_DOC_ASKS = [
    ("45285.2", "0.00100000"),
    ("45286.4", "1.54571953"),
    ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"),
    ("45290.2", "0.15890660"),
    ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"),
    ("45296.1", "0.35380000"),
    ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827"),
]


def test_kraken_checksum_doc_example() -> None:
    book = book_of(KRAKEN_DOC_BIDS, KRAKEN_DOC_ASKS, depth=10)
    # The doc's first step: ask 45285.2 / 0.00100000 -> "452852" + "100000".
    assert kraken_checksum_input(book).startswith("452852100000")
    assert kraken_checksum(book) == 3310070434


def test_kraken_checksum_uses_only_the_top_ten_and_sees_every_change() -> None:
    book = book_of(KRAKEN_DOC_BIDS, KRAKEN_DOC_ASKS, depth=25)
    book.apply_many([("45270.0", "9")], [("45300.0", "9")])  # 11th levels: outside the checksum
    assert kraken_checksum(book) == 3310070434
    book.apply_many([("45283.5", "0.10000001")], [])
    assert kraken_checksum(book) != 3310070434
    book.apply_many([("45283.5", "0.10000000")], [])
    assert kraken_checksum(book) == 3310070434
    book.apply_many([("45270.0", "0")], [("45300.0", "7")])  # below the top 10 again: the remembered value
    assert kraken_checksum(book) == 3310070434
    book.apply_many([], [("45285.2", "0")])  # the 10th ask goes: the 11th moves into the checksum
    assert kraken_checksum(book) == zlib.crc32(kraken_checksum_input(book_of(*everything(book))).encode())


def test_kraken_checksum_strips_leading_zeros_of_small_numbers() -> None:
    # Kraken v1 doc step: "0.05000" -> "005000" -> "5000"; volume "0.00000304" -> "304".
    book = book_of([], [("0.05000", "0.00000304")])
    assert kraken_checksum_input(book) == "5000304"
    assert kraken_checksum(book) == zlib.crc32(b"5000304")


def test_okx_checksum_doc_examples() -> None:
    even = book_of([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")])
    assert okx_checksum_input(even) == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert okx_checksum(even) == -1881014294  # negative: the signed conversion matters
    odd = book_of([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")])
    assert okx_checksum_input(odd) == "3366.1:7:3366.8:9:3368:8:3372:8"
    assert okx_checksum(odd) == 831078360


def test_okx_checksum_uses_only_the_top_25_levels() -> None:
    bids = [(f"{1000 - i}", "1") for i in range(25)]
    asks = [(f"{1001 + i}", "2") for i in range(25)]
    book = book_of(bids, asks)
    before = okx_checksum(book)
    book.apply_many([("900", "5")], [("1100", "5")])  # 26th levels
    assert okx_checksum(book) == before
    book.apply(BID, "1000", "1.0")  # same value, other string: OKX hashes strings
    assert okx_checksum(book) != before


# -- sequence rules -----------------------------------------------------------------------


def test_seq_check_singletons_and_gap_fields() -> None:
    assert APPLY.action == "apply" and SKIP.action == "skip" and RESET.action == "reset"
    assert SeqCheck("gap", 5, 7) == SeqCheck("gap", expected=5, got=7)


def test_binance_spot_sync() -> None:
    sync = BinanceSpotSync(last_update_id=100)
    assert sync.check(90, 95) is SKIP  # entirely inside the snapshot
    assert sync.check(95, 100) is SKIP  # u == lastUpdateId: still inside
    assert sync.check(98, 103) is APPLY  # first event straddles lastUpdateId + 1
    assert sync.last == 103
    assert sync.check(104, 104) is APPLY  # U == previous u + 1
    assert sync.check(101, 104) is SKIP  # replayed
    assert sync.check(107, 110) == SeqCheck("gap", expected=105, got=107)
    assert sync.last == 104  # a gap applies nothing


def test_binance_spot_sync_snapshot_older_than_the_first_event_is_a_gap() -> None:
    assert BinanceSpotSync(100).check(150, 160) == SeqCheck("gap", expected=101, got=150)


def test_binance_futures_sync() -> None:
    sync = BinanceFuturesSync(last_update_id=100)
    assert sync.check(80, 99, 79) is SKIP  # u < lastUpdateId
    assert sync.check(95, 105, 94) is APPLY  # U <= lastUpdateId <= u
    assert sync.check(106, 110, 105) is APPLY  # pu == previous u
    assert sync.check(106, 110, 105) is SKIP  # duplicate
    assert sync.check(115, 120, 112) == SeqCheck("gap", expected=110, got=112)
    assert sync.last == 110


def test_binance_futures_sync_first_event_after_the_snapshot_is_a_gap() -> None:
    assert BinanceFuturesSync(100).check(101, 105, 99) == SeqCheck("gap", expected=100, got=101)
    # u == lastUpdateId is kept (the docs drop only u < lastUpdateId).
    assert BinanceFuturesSync(100).check(99, 100, 98) is APPLY


def test_bybit_sync() -> None:
    sync = BybitSync()
    assert sync.check(41, snapshot=False) == SeqCheck("gap", expected=None, got=41)  # delta before snapshot
    assert sync.check(40, snapshot=True) is RESET
    assert sync.check(41, snapshot=False) is APPLY
    assert sync.check(41, snapshot=False) is SKIP
    assert sync.check(43, snapshot=False) == SeqCheck("gap", expected=42, got=43)
    assert sync.check(1, snapshot=False) is RESET  # service restart: u == 1 overwrites
    assert sync.check(2, snapshot=False) is APPLY
    assert sync.check(500, snapshot=True) is RESET  # a new snapshot always resets


def test_coinbase_sync() -> None:
    sync = CoinbaseSync()
    assert sync.check(0) is APPLY
    assert sync.check(1) is APPLY
    assert sync.check(1) is SKIP
    assert sync.check(4) == SeqCheck("gap", expected=2, got=4)
    sync.reset()  # reconnect: the counter restarts
    assert sync.check(3) == SeqCheck("gap", expected=0, got=3)
    assert sync.check(0) is APPLY
    loose = CoinbaseSync(first=None)
    assert loose.check(57) is APPLY and loose.check(58) is APPLY


def test_bitstamp_sync() -> None:
    sync = BitstampSync(snapshot_microtimestamp=1_700_000_000_000_500)
    assert sync.check(1_700_000_000_000_400) is SKIP
    assert sync.check(1_700_000_000_000_500) is SKIP  # same instant: already in the snapshot
    assert sync.check(1_700_000_000_000_501) is APPLY
    assert sync.check(1_700_000_000_000_501) is SKIP
    assert sync.check(1_700_000_000_900_000) is APPLY  # no ids: a lost diff is invisible


# -- property: the book equals a plain dict oracle -------------------------------------

# Prices from a small grid, each spelled with 0-2 extra trailing zeros, so the same level
# arrives under different strings; sizes are "0" (remove) about a quarter of the time.
_price = st.builds(lambda n, z: f"{n // 10}.{n % 10}" + "0" * z, st.integers(1, 40), st.integers(0, 2))
_size = st.one_of(
    st.just("0"),
    st.just("0.000"),
    st.builds(lambda n, z: f"{n // 1000}.{n % 1000:03d}" + "0" * z, st.integers(1, 5000), st.integers(0, 3)),
)
_levels = st.lists(st.tuples(_price, _size), max_size=6)
_message = st.tuples(_levels, _levels)


def _oracle_apply(
    oracle: tuple[dict[Decimal, tuple[str, str]], dict[Decimal, tuple[str, str]]],
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    depth: int | None,
) -> None:
    for side, levels in ((0, bids), (1, asks)):
        for p, s in levels:
            if Decimal(s) == 0:
                oracle[side].pop(Decimal(p), None)
            else:
                oracle[side][Decimal(p)] = (p, s)
    if depth is not None:
        for side, best_first in ((0, True), (1, False)):
            keep = sorted(oracle[side], reverse=best_first)[:depth]
            for k in list(oracle[side]):
                if k not in keep:
                    del oracle[side][k]


@settings(max_examples=150, deadline=None)
@given(
    snapshot=_message,
    messages=st.lists(_message, max_size=25),
    depth=st.one_of(st.none(), st.integers(1, 8)),
    n=st.integers(2, 6),
)
def test_random_delta_streams_match_a_dict_oracle(
    snapshot: tuple[list[tuple[str, str]], list[tuple[str, str]]],
    messages: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]],
    depth: int | None,
    n: int,
) -> None:
    book = Book("prop", "X", depth=depth)
    book.apply_snapshot(*snapshot)
    oracle: tuple[dict[Decimal, tuple[str, str]], dict[Decimal, tuple[str, str]]] = ({}, {})
    _oracle_apply(oracle, *snapshot, depth)
    for bids, asks in messages:
        book.apply_many(bids, asks)
        _oracle_apply(oracle, bids, asks, depth)
        want_bids = [oracle[0][k] for k in sorted(oracle[0], reverse=True)]
        want_asks = [oracle[1][k] for k in sorted(oracle[1])]
        # The same n after every message: the cached top must follow every change at or above its n-th level.
        assert book.top_raw(n) == (want_bids[:n], want_asks[:n])
        best_bid = book.best_bid()
        if oracle[0]:
            k = max(oracle[0])
            assert best_bid == (k, Decimal(oracle[0][k][1]))
        else:
            assert best_bid is None
        best_ask = book.best_ask()
        if oracle[1]:
            k = min(oracle[1])
            assert best_ask == (k, Decimal(oracle[1][k][1]))
        else:
            assert best_ask is None
        if oracle[0] and oracle[1]:
            assert book.crossed == (max(oracle[0]) >= min(oracle[1]))
            assert book.locked == (max(oracle[0]) == min(oracle[1]))
    assert everything(book) == ([oracle[0][k] for k in sorted(oracle[0], reverse=True)],
                                [oracle[1][k] for k in sorted(oracle[1])])
    assert book.valid


@settings(max_examples=100, deadline=None)
@given(snapshot=_message, messages=st.lists(_message, max_size=25), depth=st.one_of(st.none(), st.integers(1, 12)))
def test_kraken_checksum_after_every_message_equals_one_computed_from_scratch(
    snapshot: tuple[list[tuple[str, str]], list[tuple[str, str]]],
    messages: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]],
    depth: int | None,
) -> None:
    book = Book("kraken", "X", depth=depth)
    book.apply_snapshot(*snapshot)
    oracle: tuple[dict[Decimal, tuple[str, str]], dict[Decimal, tuple[str, str]]] = ({}, {})
    _oracle_apply(oracle, *snapshot, depth)
    for bids, asks in messages:
        book.apply_many(bids, asks)
        _oracle_apply(oracle, bids, asks, depth)
        top_bids = [oracle[0][k] for k in sorted(oracle[0], reverse=True)[:10]]
        top_asks = [oracle[1][k] for k in sorted(oracle[1])[:10]]
        fresh = book_of(top_bids, top_asks)
        assert kraken_checksum(book) == zlib.crc32(kraken_checksum_input(fresh).encode("ascii"))
