"""The adapter registry: every venue by name, with its options."""

from __future__ import annotations

import pytest

from feedhandlers.venues import VENUES, make_venue


@pytest.mark.parametrize("name", sorted(VENUES))
def test_every_registered_venue_builds_and_is_named_as_registered(name: str) -> None:
    venue = make_venue(name, ["BTCUSDT"], ["trade"])
    assert venue.name == name and venue.symbols in (["BTCUSDT"], ["btcusdt"]) and venue.subscribe()


def test_options_round_trip_as_a_capture_header_records_them() -> None:
    kraken = make_venue("kraken", ["BTC/USD"], ["l2"], depth=25)
    assert kraken.options() == {"depth": 25}
    assert make_venue("kraken", ["BTC/USD"], ["l2"], **kraken.options()).options() == {"depth": 25}
    assert make_venue("binance", ["BTCUSDT"], ["l2"]).options() == {}


def test_unknown_venue_and_option_are_refused_with_what_there_is() -> None:
    with pytest.raises(ValueError, match=r"no feed adapter for venue 'nyse'; adapters: binance, "):
        make_venue("nyse", ["X"], ["trade"])
    with pytest.raises(ValueError, match=r"binance has no option depth; its options: none"):
        make_venue("binance", ["BTCUSDT"], ["l2"], depth=10)
    with pytest.raises(ValueError, match=r"kraken has no option speed; its options: depth"):
        make_venue("kraken", ["BTC/USD"], ["l2"], speed=1)
