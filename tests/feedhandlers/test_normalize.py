"""feedhandlers.normalize: one symbol form for every venue; rows collected per table."""

from __future__ import annotations

import pytest

from feedhandlers.normalize import COLUMNS, Out, normalize_symbol


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
