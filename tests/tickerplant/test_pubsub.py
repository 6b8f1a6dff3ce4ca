"""Fan-out filtering: which rows of an update a sym-filtered subscriber gets."""

from __future__ import annotations

import pyarrow as pa

from tickerplant.pubsub import sym_filter

WANTED = pa.array(["BTCUSD"])


def batch(syms: list[str | None]) -> pa.RecordBatch:
    return pa.record_batch({"sym": pa.array(syms, pa.string()), "i": pa.array(range(len(syms)))})


def test_rows_of_the_wanted_syms_and_rows_with_no_sym_pass() -> None:
    part = sym_filter(batch(["BTCUSD", "ETHUSD", None, "BTCUSD"]), WANTED)
    assert part is not None and part.column("i").to_pylist() == [0, 2, 3]
    whole = batch(["BTCUSD", None])
    assert sym_filter(whole, WANTED) is whole  # every row passes: the batch itself, no copy
    assert sym_filter(batch(["ETHUSD", "SOLUSD"]), WANTED) is None
    assert sym_filter(batch([None]), pa.array(["ETHUSD"])) is not None
