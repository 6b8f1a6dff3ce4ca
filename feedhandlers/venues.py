"""The exchange adapters by name, as ``tick feed <name>`` and capture files name them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Sequence

from feedhandlers.venue import Venue

# name -> (module, class). Bitstamp, OKX and Bybit are not built yet (their order-book rules and
# checksums are in feedhandlers.book); they are absent here rather than half-working.
VENUES: dict[str, tuple[str, str]] = {
    "binance": ("feedhandlers.binance", "BinanceSpot"),
    "binance-futures": ("feedhandlers.binance", "BinanceFutures"),
    "coinbase": ("feedhandlers.coinbase", "Coinbase"),
    "kraken": ("feedhandlers.kraken", "Kraken"),
}


def venue_class(name: str) -> Callable[[Sequence[str], Collection[str]], Venue]:
    """The adapter class of venue ``name``; a clear error for an unknown one."""
    try:
        module, cls = VENUES[name]
    except KeyError:
        raise ValueError(f"no feed adapter for venue {name!r}; adapters: {', '.join(sorted(VENUES))}") from None
    factory: Callable[[Sequence[str], Collection[str]], Venue] = getattr(importlib.import_module(module), cls)
    return factory
