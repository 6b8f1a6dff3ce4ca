"""The exchange adapters by name, as ``tick feed <name>`` and capture files name them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Collection, Sequence
from typing import Any

from feedhandlers.venue import Venue

# name -> (module, class); the name is also the rows' `exchange` and a capture's venue.
VENUES: dict[str, tuple[str, str]] = {
    "binance": ("feedhandlers.binance", "BinanceSpot"),
    "binance-futures": ("feedhandlers.binance", "BinanceFutures"),
    "bitstamp": ("feedhandlers.bitstamp", "Bitstamp"),
    "coinbase": ("feedhandlers.coinbase", "Coinbase"),
    "kraken": ("feedhandlers.kraken", "Kraken"),
    "okx": ("feedhandlers.okx", "Okx"),
    "bybit": ("feedhandlers.bybit", "Bybit"),
    "bybit-linear": ("feedhandlers.bybit", "BybitLinear"),
    "bybit-inverse": ("feedhandlers.bybit", "BybitInverse"),
}


def venue_class(name: str) -> type[Venue]:
    """The adapter class of venue ``name``; a clear error for an unknown one."""
    try:
        module, cls = VENUES[name]
    except KeyError:
        raise ValueError(f"no feed adapter for venue {name!r}; adapters: {', '.join(sorted(VENUES))}") from None
    factory: type[Venue] = getattr(importlib.import_module(module), cls)
    return factory


def make_venue(name: str, symbols: Sequence[str], channels: Collection[str], **options: Any) -> Venue:
    """Venue ``name`` for ``symbols`` and ``channels``, with its own options (e.g. ``depth``);
    an option the venue does not have is refused with the ones it has."""
    cls = venue_class(name)
    known = set(inspect.signature(cls).parameters) - {"symbols", "channels"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(sorted(unknown))}; "
                         f"its options: {', '.join(sorted(known)) or 'none'}")
    return cls(symbols, channels, **options)
