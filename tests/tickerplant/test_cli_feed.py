"""`tick feed binance` against a local venue (capturing), then `tick feed replay` of that capture."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import TICK, Collector, TPFactory
from tests.feedhandlers.test_binance import wrap
from tests.feedhandlers.venue_server import VenueServer

ACK = '{"result": null, "id": 1}'
TRADES = [{"e": "trade", "E": 1672515782136 + i, "s": "BTCUSDT", "t": 100 + i, "p": f"97000.{i}0", "q": "0.5",
           "T": 1672515782136 + i, "m": i % 2 == 0, "M": True} for i in range(5)]


def trade_rows(c: Collector) -> list[tuple[str, str, float, str]]:
    out = []
    for m in c.messages:
        if m.table == "trade":
            d = m.data.to_pydict()
            out += list(zip(d["sym"], d["venue_sym"], d["price"], d["side"], strict=True))
    return out


async def run_feed(address: str, capture: Path) -> subprocess.CompletedProcess[str]:
    async with VenueServer([[ACK, *(wrap("btcusdt@trade", t) for t in TRADES)]]) as server:
        proc = await asyncio.create_subprocess_exec(
            TICK, "feed", "binance", "--tp", address, "--symbols", "BTCUSDT", "--channels", "trade",
            "--ws-url", server.url, "--rest-url", "http://127.0.0.1:9", "--capture", str(capture),
            "--duration", "3", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert server.received and '"SUBSCRIBE"' in str(server.received[0][0])
    return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())


def test_feed_binance_then_replay_its_capture(tp_process: TPFactory, collect: Callable[..., Collector],
                                              tmp_path: Path) -> None:
    live_tp = tp_process()
    live = collect(live_tp.address, tables=["trade"], from_seq=1)
    capture = tmp_path / "binance.cap"
    result = asyncio.run(run_feed(live_tp.address, capture))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["messages"] >= 6
    live.wait(lambda c: len(trade_rows(c)) == 5, 10, "5 trades")
    want = [("BTCUSD", "BTCUSDT", 97000 + i / 10, "sell" if i % 2 == 0 else "buy") for i in range(5)]
    assert trade_rows(live) == want

    other_tp = tp_process(log_dir=tmp_path / "other")
    again = collect(other_tp.address, tables=["trade"], from_seq=1)
    replayed = subprocess.run([TICK, "feed", "replay", str(capture), "--tp", other_tp.address],
                              capture_output=True, text=True, timeout=60, check=False)
    assert replayed.returncode == 0, replayed.stderr
    again.wait(lambda c: len(trade_rows(c)) == 5, 10, "5 replayed trades")
    assert trade_rows(again) == want


def test_unknown_venue_and_missing_symbols_are_refused() -> None:
    r = subprocess.run([TICK, "feed", "nosuchvenue"], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode != 0 and "No such command" in r.stderr
    r = subprocess.run([TICK, "feed", "binance", "--symbols", "BTCUSDT", "--depth", "10"], capture_output=True,
                       text=True, timeout=30, check=False)
    assert r.returncode != 0 and "binance has no option depth" in r.stderr
    r = subprocess.run([TICK, "feed", "kraken", "--duration", "1"], capture_output=True, text=True, timeout=30,
                       check=False)
    assert r.returncode == 2 and "--symbols" in r.stderr
