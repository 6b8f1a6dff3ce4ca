"""Feed handlers: the adapters that turn exchange market data into tickerplant tables.

Each adapter (one module per exchange, plus :mod:`feedhandlers.sim`, the deterministic
simulated feed used by ``make demo``, the tests and the benchmarks) produces Arrow record
batches in exactly the wire schema of the registry (``Registry.default()[table].wire``)
and hands them to a publisher; it never sets ``tp_time``, which the tickerplant stamps on
receipt. The dependency runs one way: ``feedhandlers`` imports ``tickerplant``, and
``tickerplant`` never imports ``feedhandlers``.
"""
