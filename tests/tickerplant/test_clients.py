"""Integration tests of the client side: Publisher/Subscriber (blocking and asyncio) against real TPs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import T0, Collector, TPFactory, TPProcess, free_port, trade_ids, trades
from tickerplant import AsyncPublisher, AsyncSubscriber, Message, Publisher, Subscriber
from tickerplant import log as tplog
from tickerplant.schema import TIMESTAMP, Registry

TRADE = Registry.default()["trade"]
Collect = Callable[..., Collector]


@pytest.fixture(scope="module")
def shared_tp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TPProcess]:
    """One TP for the data-form cases (each uses its own sym, so they do not see each other)."""
    factory = TPFactory(Path(tmp_path_factory.mktemp("shared_tp")))
    try:
        yield factory()
    finally:
        factory.cleanup()


# --- every accepted data form arrives with the right values ----------------------------------

T1, T2 = T0 + 1000, T0 + 2000  # whole microseconds, so datetime64[us] can carry them exactly
PRICE, SIZE, SIDE = [1.5, 2.5], [1.0, 2.0], ["buy", "sell"]


def _rows(sym: str, times: list[Any]) -> list[dict[str, Any]]:
    return [{"time": t, "sym": sym, "price": p, "size": s, "side": d}
            for t, p, s, d in zip(times, PRICE, SIZE, SIDE, strict=True)]


FORMS: dict[str, Callable[[str], list[Any]]] = {
    # dict of columns
    "columns-lists-int-ns": lambda sym: [{"time": [T1, T2], "sym": [sym, sym], "price": PRICE, "size": SIZE,
                                          "side": SIDE}],
    "columns-numpy-datetime64-ns": lambda sym: [{
        "time": np.array([T1, T2], dtype="datetime64[ns]"), "sym": np.array([sym, sym]),
        "price": np.array(PRICE), "size": np.array(SIZE), "side": np.array(SIDE)}],
    "columns-numpy-datetime64-us": lambda sym: [{
        "time": np.array([T1 // 1000, T2 // 1000], dtype="datetime64[us]"), "sym": [sym, sym],
        "price": PRICE, "size": SIZE, "side": SIDE}],
    "columns-pandas-series": lambda sym: [{
        "time": pd.Series(pd.to_datetime([T1, T2], utc=True)), "sym": pd.Series([sym, sym]),
        "price": pd.Series(PRICE), "size": pd.Series(SIZE), "side": pd.Series(SIDE)}],
    "columns-int-prices-cast": lambda sym: [{"time": [T1, T2], "sym": [sym, sym], "price": [1.5, 2.5],
                                             "size": np.array([1, 2]), "side": SIDE}],
    # one dict per row (scalars)
    "row-dicts-int-ns": lambda sym: _rows(sym, [T1, T2]),
    "row-dicts-pandas-timestamp": lambda sym: _rows(sym, [pd.Timestamp(T1, tz="UTC"), pd.Timestamp(T2, tz="UTC")]),
    "row-dicts-pandas-timestamp-naive": lambda sym: _rows(sym, [pd.Timestamp(T1), pd.Timestamp(T2)]),
    "row-dicts-numpy-scalars": lambda sym: [
        {"price": np.float64(p), "time": np.datetime64(t, "ns"), "sym": sym, "size": np.float64(s), "side": d}
        for t, p, s, d in zip([T1, T2], PRICE, SIZE, SIDE, strict=True)],
    # a list of row dicts
    "row-list-int-ns": lambda sym: [_rows(sym, [T1, T2])],
    "row-list-datetime64": lambda sym: [_rows(sym, [np.datetime64(T1, "ns"), np.datetime64(T2, "ns")])],
    # pandas
    "dataframe-datetime64-utc": lambda sym: [pd.DataFrame({
        "time": pd.to_datetime([T1, T2], utc=True), "sym": [sym, sym], "price": PRICE, "size": SIZE, "side": SIDE})],
    "dataframe-int-ns-indexed": lambda sym: [pd.DataFrame(
        {"time": [T1, T2], "sym": [sym, sym], "price": PRICE, "size": SIZE, "side": SIDE}, index=[7, 3])],
    # Arrow
    "arrow-table-chunked": lambda sym: [pa.concat_tables([
        pa.table({"time": pa.array([t], TIMESTAMP), "sym": [sym], "price": [p], "size": [s], "side": [d]})
        for t, p, s, d in zip([T1, T2], PRICE, SIZE, SIDE, strict=True)])],
    "arrow-batch-wire-schema": lambda sym: [pa.RecordBatch.from_pylist(
        [{**r, "time": pd.Timestamp(r["time"], tz="UTC")} for r in _rows(sym, [T1, T2])], schema=TRADE.wire)],
    "arrow-batch-subset-int-time": lambda sym: [pa.record_batch({
        "side": SIDE, "size": SIZE, "price": PRICE, "sym": pa.array([sym, sym], pa.large_string()),
        "time": pa.array([T1, T2], pa.int64())})],
}


@pytest.mark.parametrize("form", list(FORMS))
def test_publish_accepts_data_form(shared_tp: TPProcess, collect: Collect, form: str) -> None:
    sym = f"F{list(FORMS).index(form)}"
    c = collect(shared_tp.address, tables=["trade"], syms=[sym])
    c.wait_subscribed()
    with Publisher(shared_tp.address) as pub:
        for data in FORMS[form](sym):
            pub.publish("trade", data)
        pub.flush(timeout=10)
    c.wait_rows(2)
    table = pa.Table.from_batches([m.data for m in c.messages])
    assert table.schema.equals(TRADE.schema)
    assert table.num_rows == 2
    assert table.column("time").cast(pa.int64()).to_pylist() == [T1, T2]
    assert table.column("sym").to_pylist() == [sym, sym]
    assert table.column("price").to_pylist() == PRICE
    assert table.column("size").to_pylist() == SIZE
    assert table.column("side").to_pylist() == SIDE
    for absent in ("exchange", "trade_id", "seq", "recv_time"):
        assert table.column(absent).null_count == 2, absent


# --- asyncio clients ------------------------------------------------------------------------


def test_async_publisher_and_subscriber_round_trip(tp: TPProcess) -> None:
    async def main() -> tuple[list[Message], int]:
        got: list[Message] = []
        sub = AsyncSubscriber(tp.address, tables=["trade"], from_seq=1)
        messages = aiter(sub)
        try:
            async with AsyncPublisher(tp.address, name="async") as pub:
                for i in range(5):
                    await pub.publish("trade", trades(10, 10 * i))
                await pub.flush(timeout=10)
                for _ in range(5):  # from the log
                    got.append(await asyncio.wait_for(anext(messages), 20))
                await pub.publish("trade", trades(10, 50))  # live
                await pub.flush(durable=False, timeout=10)  # (one window's updates go out table by table)
                await pub.publish("quote", {"time": [T0], "sym": ["BTCUSD"], "bid_price": [1.0]})  # filtered out
                await pub.publish("trade", trades(10, 60))
                await pub.flush(timeout=10)
                for _ in range(2):
                    got.append(await asyncio.wait_for(anext(messages), 20))
        finally:
            await messages.aclose()  # type: ignore[attr-defined]
            await sub.close()
        return got, sub.state.gaps

    got, gaps = asyncio.run(main())
    assert [m.table for m in got] == ["trade"] * 7
    assert trade_ids(got) == [f"t{i}" for i in range(70)]
    assert [m.seq for m in got] == [1, 2, 3, 4, 5, 6, 8]  # seq 7 is the quote
    assert gaps == 0
    for m in got:
        assert m.data.schema.equals(TRADE.schema)
        assert m.data.column("tp_time").cast(pa.int64()).to_pylist() == [m.time] * m.data.num_rows


# --- a subscriber and a publisher ride out a SIGKILL of the TP --------------------------------


def test_subscriber_resumes_after_tp_sigkill(tp_process: TPFactory, collect: Collect) -> None:
    tp = tp_process(port=free_port())
    c = collect(tp.address)
    c.wait_subscribed()
    batches, rows = 40, 25
    with Publisher(tp.address, name="resilient") as pub:
        for i in range(batches):
            pub.publish("trade", trades(rows, rows * i))
            if i % 5 == 4:
                pub.flush(durable=True, timeout=30)
            if i == 22:  # mid-stream: 20 batches acked, 3 sent but not (yet) acked
                c.wait(lambda c: c.rows >= 20 * rows, what="the first acked rows")
                tp.kill()
                tp = tp_process.again(tp)  # same log dir, same port
        pub.flush(durable=True, timeout=30)
        assert pub.stats["reconnects"] >= 1
    want = [f"t{i}" for i in range(batches * rows)]
    c.wait_rows(len(want), timeout=30)
    got = trade_ids(c.messages)
    assert got == want, "every acked row exactly once, in order"
    assert c.sub.state.gaps == 0
    assert c.sub.reconnects >= 1
    assert [m.seq for m in c.messages] == list(range(1, c.messages[-1].seq + 1))
    status = tplog.check(tp.log)
    assert status.ok and status.rows == len(want)


def test_callback_forms(tp: TPProcess) -> None:
    with Publisher(tp.address) as pub:
        pub.publish("trade", trades(30, 0))
        pub.flush(timeout=10)

    seen: list[Message] = []
    sub = Subscriber(tp.address, tables=["trade"], from_seq=1)

    def on_msg(msg: Message) -> None:
        seen.append(msg)
        if sum(m.data.num_rows for m in seen) >= 30:
            sub.close()

    sub.run(on_msg)
    assert trade_ids(seen) == [f"t{i}" for i in range(30)]

    async def main() -> list[Message]:
        got: list[Message] = []
        asub = AsyncSubscriber(tp.address, tables=["trade"], from_seq=1)

        async def on_async(msg: Message) -> None:
            got.append(msg)
            if sum(m.data.num_rows for m in got) >= 30:
                await asub.close()

        await asyncio.wait_for(asub.run(on_async), 20)
        return got

    assert trade_ids(asyncio.run(main())) == [f"t{i}" for i in range(30)]
