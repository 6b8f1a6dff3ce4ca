"""The engine runner against real TPs: outputs equal an oracle; restarts lose and duplicate nothing.

The engine under test, :class:`DayVwap`, is tiny and deterministic: for each trade update it
publishes, per sym in the update, the day's running count, volume and VWAP (table ``vwap``);
at end of day it publishes the day's totals (``revision = 1``) and starts clean. The oracle
is pandas' cumulative sums over the trades as the TP logged them, taken at the end of each
update. Prices and sizes are integers, so the sums are exact in float64 and rows compare
exactly.

Kill -9 tests run the engine as a child process (``python -c``; it imports this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rte.engine import Engine, EngineError, Output, RunStats, _own_src, run
from tests.conftest import REPO, Collector, TPFactory, TPProcess, trades, wait_until
from tickerplant import EndOfDay, Message, Publisher, Subscriber, admin

TS = pa.timestamp("ns", tz="UTC")


class DayVwap(Engine):
    """Running count, volume and VWAP per sym since the start of the day (vectorized per update)."""

    name = "day_vwap"
    inputs = ("trade",)
    outputs = ("vwap",)
    verify_outputs = ("vwap",)

    def __init__(self) -> None:
        self.start: dict[str, int] = {}  # first event time per sym today
        self.totals: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}  # count, volume, notional

    def on_upd(self, msg: Message) -> list[Output]:
        data = msg.data
        codes = pc.dictionary_encode(data.column("sym"))
        idx = codes.indices.to_numpy(zero_copy_only=False)
        names = codes.dictionary.to_pylist()
        price = data.column("price").to_numpy()
        size = data.column("size").to_numpy()
        t = data.column("time").cast(pa.int64()).to_numpy()
        n = len(names)
        counts = np.bincount(idx, minlength=n).astype(np.float64)
        volume = np.bincount(idx, weights=size, minlength=n)
        notional = np.bincount(idx, weights=price * size, minlength=n)
        first = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first, idx, t)
        rows: dict[str, list[Any]] = {k: [] for k in ("time", "sym", "vwap", "volume", "count", "revision")}
        for i, sym in enumerate(names):
            tot = self.totals.setdefault(sym, np.zeros(3))
            tot += (counts[i], volume[i], notional[i])
            start = self.start.setdefault(sym, int(first[i]))
            for k, v in zip(rows, (start, sym, tot[2] / tot[1], tot[1], int(tot[0]), 0), strict=True):
                rows[k].append(v)
        return [("vwap", _batch(rows))]

    def on_eod(self, date: str) -> list[Output]:
        rows: dict[str, list[Any]] = {k: [] for k in ("time", "sym", "vwap", "volume", "count", "revision")}
        for sym, tot in self.totals.items():
            for k, v in zip(rows, (self.start[sym], sym, tot[2] / tot[1], tot[1], int(tot[0]), 1), strict=True):
                rows[k].append(v)
        self.start, self.totals = {}, {}
        return [("vwap", _batch(rows))] if rows["sym"] else []


def _batch(rows: dict[str, list[Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "time": pa.array(rows["time"], pa.int64()).cast(TS), "sym": pa.array(rows["sym"], pa.string()),
        "vwap": pa.array(rows["vwap"], pa.float64()), "volume": pa.array(rows["volume"], pa.float64()),
        "count": pa.array(rows["count"], pa.int64()), "revision": pa.array(rows["revision"], pa.int32())})


class Flaky(DayVwap):
    """Not deterministic: its VWAP depends on how many instances this process made."""

    made = 0
    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        Flaky.made += 1
        self.bias = Flaky.made

    def on_upd(self, msg: Message) -> list[Output]:
        ((table, rows),) = super().on_upd(msg)
        vwap = pc.add(rows.column("vwap"), float(self.bias))
        return [(table, rows.set_column(rows.schema.get_field_index("vwap"), "vwap", vwap))]


# -- helpers ---------------------------------------------------------------------------------


def read_day(address: str, tables: list[str], timeout: float = 20.0) -> list[Message | EndOfDay]:
    """Everything in ``tables`` logged today (and after any roll seen), up to the TP's current seq."""
    target = admin.stats(address)["seq"]
    with Collector(Subscriber(address, tables=tables, from_seq=1)) as c:
        c.wait(lambda c: c.sub.state.subscribed and (c.sub.position or 0) >= target, timeout, f"seq {target}")
        return list(c.items)


def frame(msgs: list[Message], table: str) -> pd.DataFrame:
    parts = [m.data.to_pandas().assign(seq=m.seq) for m in msgs if m.table == table]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def oracle(trade_msgs: list[Message]) -> pd.DataFrame:
    """Per (input seq, sym): the day's running count, volume and VWAP after that update."""
    df = frame(trade_msgs, "trade")
    df["notional"] = df.price * df["size"]
    g = df.groupby("sym")
    df["count"] = g.cumcount() + 1
    df["volume"] = g["size"].cumsum()
    df["vwap"] = g["notional"].cumsum() / df["volume"]
    df["start"] = g["time"].transform("min").astype("int64")
    last = df.groupby(["seq", "sym"]).tail(1)
    return last.rename(columns={"seq": "src_seq"})[["src_seq", "sym", "count", "volume", "vwap"]].reset_index(
        drop=True)


def outputs(msgs: list[Message]) -> pd.DataFrame:
    df = frame(msgs, "vwap")
    return df[["src_seq", "sym", "count", "volume", "vwap", "revision"]].reset_index(drop=True)


def assert_exactly_once(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    live = out[out.revision == 0].drop(columns="revision")
    dups = live[live.duplicated(["src_seq", "sym"], keep=False)]
    assert dups.empty, f"duplicate rows:\n{dups}"
    got = live.sort_values(["src_seq", "sym"]).reset_index(drop=True)
    want = expected.sort_values(["src_seq", "sym"]).reset_index(drop=True)
    assert len(got) == len(want), f"{len(got)} rows published, {len(want)} expected"
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def feed(address: str, batches: int, rows: int = 20, start: int = 0, pause: float = 0.0) -> int:
    """Publish ``batches`` trade updates of ``rows`` rows each; returns the next ``start``."""
    with Publisher(address, name="test feed") as pub:
        for _ in range(batches):
            pub.publish("trade", trades(rows, start=start))
            start += rows
            if pause:
                time.sleep(pause)
        pub.flush()
    return start


def run_until_caught_up(engine: Engine, address: str, timeout: float = 30.0) -> RunStats:
    """Run ``engine`` in-process until it has handled every update the TP has now; then stop it."""
    target = max(m.seq for m in read_day(address, list(engine.inputs)) if isinstance(m, Message))

    async def main() -> RunStats:
        stop, stats = asyncio.Event(), RunStats()
        task = asyncio.get_running_loop().create_task(run(engine, address, stop=stop, stats=stats))
        deadline = time.monotonic() + timeout
        while not task.done() and not (stats.replayed and stats.seq >= target):
            assert time.monotonic() < deadline, f"engine did not reach seq {target}: {stats}"
            await asyncio.sleep(0.01)
        stop.set()
        return await task

    return asyncio.run(main())


ENGINE_SCRIPT = """
import json, logging, sys
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
from rte.engine import run_forever
from tests.rte.test_engine import DayVwap
stats = run_forever(DayVwap(), sys.argv[1])
print(json.dumps({{"published": stats.published, "suppressed": stats.suppressed, "mismatches": stats.mismatches}}),
      flush=True)
"""


class EngineProcess:
    """``DayVwap`` under :func:`rte.engine.run_forever` in a child process."""

    def __init__(self, address: str, tmp: Path, n: int) -> None:
        self.stderr_path = tmp / f"engine{n}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", ENGINE_SCRIPT.format(repo=str(REPO)), address],
                                         stdout=subprocess.PIPE, stderr=err, cwd=tmp)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, f"engine exited {self.proc.returncode}\n{self.stderr()}"
        return out.decode()


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Any]:
    made: list[EngineProcess] = []

    def start(address: str) -> EngineProcess:
        e = EngineProcess(address, tmp_path, len(made))
        made.append(e)
        return e

    yield start
    for e in made:
        with contextlib.suppress(Exception):
            e.kill()


def wait_output_for(address: str, seq: int, timeout: float = 30.0) -> None:
    """Wait until the engine has logged its row for input update ``seq``."""
    def done() -> bool:
        msgs = [m for m in read_day(address, ["vwap"]) if isinstance(m, Message)]
        return any(int(pc.max(m.data.column("src_seq")).as_py() or 0) >= seq for m in msgs)
    wait_until(done, timeout, f"the engine's output for seq {seq}", interval=0.2)


def last_trade_seq(address: str) -> int:
    return max(m.seq for m in read_day(address, ["trade"]) if isinstance(m, Message))


def day_messages(items: list[Message | EndOfDay]) -> list[list[Message]]:
    days: list[list[Message]] = [[]]
    for item in items:
        if isinstance(item, EndOfDay):
            days.append([])
        else:
            days[-1].append(item)
    return days


# -- tests -----------------------------------------------------------------------------------


def test_straggler_rows_from_the_previous_day_do_not_count() -> None:
    data = pa.RecordBatch.from_pydict({"src_seq": pa.array([3, None, 9, 12], pa.int64())})
    assert _own_src(Message("vwap", 10, 0, data)).tolist() == [3, -1, 9, -1]  # 12: logged at 10, so not today's


def test_rows_of_another_engine_sharing_the_table_do_not_count() -> None:
    data = pa.RecordBatch.from_pydict({"src_seq": pa.array([3, 4, 5], pa.int64()),
                                       "strategy": pa.array(["a", "b", None], pa.string())})
    assert _own_src(Message("orders", 10, 0, data), ("strategy", "a")).tolist() == [3, -1, -1]


def test_outputs_equal_the_oracle_and_a_restart_publishes_nothing_again(tp_process: TPFactory) -> None:
    tp = tp_process("--heartbeat", "0.2")
    feed(tp.address, 30, rows=17)
    first = run_until_caught_up(DayVwap(), tp.address)
    feed(tp.address, 10, rows=5, start=10_000)  # more input while the engine is down
    second = run_until_caught_up(DayVwap(), tp.address)
    items = [m for m in read_day(tp.address, ["trade", "vwap"]) if isinstance(m, Message)]
    expected = oracle(items)
    assert_exactly_once(outputs(items), expected)
    assert first.published["vwap"] == 30 * 3 and first.mismatches == 0
    # The restart replayed all 40 updates, published only the last 10, and its replay matched the log.
    assert second.suppressed == {"vwap": 90} and second.published == {"vwap": 30} and second.mismatches == 0


def test_a_non_deterministic_engine_is_reported(tp_process: TPFactory, caplog: pytest.LogCaptureFixture) -> None:
    tp = tp_process("--heartbeat", "0.2")
    feed(tp.address, 5, rows=6)
    run_until_caught_up(Flaky(), tp.address)
    second = run_until_caught_up(Flaky(), tp.address)
    assert second.mismatches == 5
    assert "NOT DETERMINISTIC" in caplog.text


def test_unknown_output_table_names_the_fix(tp: TPProcess) -> None:
    class Nowhere(DayVwap):
        name = "nowhere"
        outputs = ("my_table",)

    with pytest.raises(EngineError, match="declare it in the TP's schema"):
        asyncio.run(run(Nowhere(), tp.address, stop=asyncio.Event()))


def test_kill_9_engine_mid_stream_then_restart(tp_process: TPFactory, engines: Any) -> None:
    tp = tp_process("--heartbeat", "0.2")
    feed(tp.address, 20)
    first = engines(tp.address)
    fed = threading.Thread(target=feed, args=(tp.address, 300, 20, 400, 0.003))
    fed.start()
    wait_output_for(tp.address, 60)
    first.kill()
    assert fed.is_alive(), "the feed was over before the kill: not mid-stream"
    engines_second = engines(tp.address)
    fed.join(60)
    wait_output_for(tp.address, last_trade_seq(tp.address))
    report = json.loads(engines_second.terminate())
    assert report["mismatches"] == 0 and report["suppressed"]["vwap"] >= 60 * 3, report
    assert "replay done" in engines_second.stderr()
    items = [m for m in read_day(tp.address, ["trade", "vwap"]) if isinstance(m, Message)]
    assert_exactly_once(outputs(items), oracle(items))


def test_tp_kill_9_and_restart_under_a_running_engine(tp_process: TPFactory, engines: Any) -> None:
    tp = tp_process("--heartbeat", "0.2")
    engine = engines(tp.address)
    feed(tp.address, 20)
    wait_output_for(tp.address, 20)
    fed = threading.Thread(target=feed, args=(tp.address, 200, 20, 400, 0.003))
    fed.start()
    wait_until(lambda: admin.stats(tp.address)["seq"] > 150, 20, "more updates")
    tp.kill()
    tp2 = tp_process.again(tp)
    fed.join(60)
    assert not fed.is_alive()
    wait_output_for(tp2.address, last_trade_seq(tp2.address))
    assert engine.proc.poll() is None, engine.stderr()
    engine.terminate()
    assert "reconnecting" in engine.stderr()
    items = [m for m in read_day(tp2.address, ["trade", "vwap"]) if isinstance(m, Message)]
    assert len(frame(items, "trade")) == 220 * 20
    assert_exactly_once(outputs(items), oracle(items))


def test_end_of_day_then_restart_on_the_new_day(tp_process: TPFactory, engines: Any) -> None:
    tp = tp_process("--heartbeat", "0.2")
    engine = engines(tp.address)
    feed(tp.address, 12)
    wait_output_for(tp.address, 12)
    day1 = [m for m in read_day(tp.address, ["trade"]) if isinstance(m, Message)]
    admin.end_of_day(tp.address, timeout=30)
    next_start = feed(tp.address, 8, start=5000)
    wait_output_for(tp.address, last_trade_seq(tp.address))
    engine.kill()
    engine = engines(tp.address)
    feed(tp.address, 6, start=next_start)
    wait_output_for(tp.address, last_trade_seq(tp.address))
    engine.terminate()
    day2 = [m for m in read_day(tp.address, ["trade", "vwap"]) if isinstance(m, Message)]
    out = outputs(day2)
    # The closed day's totals, once, with src_seq 0, in the new day's log.
    eod = out[out.revision == 1].drop(columns="revision").sort_values("sym").reset_index(drop=True)
    totals = oracle(day1).groupby("sym").tail(1).assign(src_seq=0).sort_values("sym").reset_index(drop=True)
    pd.testing.assert_frame_equal(eod, totals, check_dtype=False)
    # The new day's rows start from a clean state, each once, across the restart.
    assert_exactly_once(out, oracle(day2))
    assert os.path.exists(tp.log_dir)
