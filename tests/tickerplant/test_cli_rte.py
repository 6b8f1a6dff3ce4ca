"""`tick rte ...` and `tick strategy run` as real processes against a real TP fed by `tick feed sim`."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TICK, Collector, TPFactory

ROOT = Path(__file__).resolve().parents[2]

# (command, the table it publishes)
ENGINES = [
    (["rte", "bars", "--every", "1s"], "bar_1s"),
    (["rte", "vwap", "--window", "2s", "--slide", "1s"], "vwap"),
    (["rte", "indicators", "--rsi", "5", "--ema", "5", "--vol", "10s"], "indicator"),
    (["rte", "spread", "--window", "10s"], "spread_z"),
    (["rte", "qc", "--stale", "5s"], "qc_alert"),
    (["strategy", "run", str(ROOT / "examples" / "vwap_reversion.py"), "--param", "threshold_bps=1.0",
      "--param", "cooldown='100ms'"], "orders"),
]


def start(args: list[str], address: str) -> subprocess.Popen[str]:
    return subprocess.Popen([TICK, *args, "--tp", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_every_engine_publishes_its_table_and_stops_cleanly(tp_process: TPFactory,
                                                            collect: Callable[..., Collector]) -> None:
    tp = tp_process()
    seen = collect(tp.address, tables=[table for _, table in ENGINES], from_seq=1)
    seen.wait_subscribed()
    procs = [start(args, tp.address) for args, _ in ENGINES]
    try:
        # Outliers so QC has something to raise; a seed so the run is the same every time.
        feed = subprocess.run([TICK, "feed", "sim", "--tp", tp.address, "--rate", "4000", "--duration", "4",
                               "--seed", "3", "--outliers", "0.01"], capture_output=True, text=True, timeout=60)
        assert feed.returncode == 0, feed.stderr

        def tables(c: Collector) -> set[str]:
            return {m.table for m in c.messages if m.data.num_rows}

        want = {table for _, table in ENGINES}
        seen.wait(lambda c: want <= tables(c), 30, f"rows in {sorted(want)}")
    finally:
        results = [stop(p) for p in procs]
    for (args, table), (code, out, err) in zip(ENGINES, results, strict=True):
        assert code == 0, f"{args}: {err}"
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["published"].get(table, 0) > 0, (args, stats)
    for m in seen.messages:  # every derived row names the input update it came from
        assert m.data.column("src_seq").null_count == 0, m.table


def test_no_tp_is_refused_with_the_fix() -> None:
    result = subprocess.run([TICK, "rte", "bars", "--tp", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot reach the TP at 127.0.0.1:1" in result.stderr and "start it (tick tp)" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["rte", "bars", "--every", "5 minutes"], "--every: duration '5 minutes' not understood"),
    (["rte", "vwap", "--window", "5s", "--slide", "2s"], "W % S == 0"),
    (["rte", "qc", "--stale", "book=5s"], "unknown table 'book'"),
    (["rte", "qc", "--xsource", "fifty"], "e.g. 50bps"),
    (["rte", "bars", "--every", "5s"], "bar_5s"),  # not in the schema: the TP has bar_1s and bar_1m
    (["strategy", "run", "nowhere.py"], "nowhere.py"),
    (["strategy", "run", str(ROOT / "examples" / "vwap_reversion.py"), "--param", "nope=1"], "no parameter 'nope'"),
    (["strategy", "run", str(ROOT / "examples" / "vwap_reversion.py"), "--param", "x"], "write NAME=VALUE"),
])
def test_bad_options_are_refused_with_the_fix(tp_process: TPFactory, args: list[str], message: str) -> None:
    tp = tp_process()
    result = subprocess.run([TICK, *args, "--tp", tp.address], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
