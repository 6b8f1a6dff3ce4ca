"""Replay speed: read a tickerplant log back into Arrow, and verify it.

What this measures (one process, the log file already in the page cache):

* ``read_table``: ``tickerplant.log.read_table(path, "trade", registry)``, the replay fast
  path (memory-map, verify every chunk's CRC, decode the frames, read each UPD's Arrow
  batch zero-copy, conform it to the registry, add ``tp_time``, one ``pa.Table``);
  figure: rows/s.  Goal: >= 20M rows/s.
* ``check``: ``tickerplant.log.check(path)`` (``tick log check``): every chunk verified,
  every frame walked, messages and rows counted per table; rows/s and MB/s.
* both again on the same log rewritten with lz4-compressed chunks (``--compress``): the
  very same chunks, frame for frame, so only compression differs.
* ``arrow_ipc_stream`` (a reference ceiling, not ours): the same rows as 1,000-row batches
  in a plain Arrow IPC stream file, read with ``pa.ipc.open_stream(pa.memory_map(...))``.
  Nothing is verified there; it is the cost of Arrow alone for this batch size.

The log is either given (``--log PATH``; ``bench_e2e.py`` passes the one its ``batch_1000``
scenario wrote through a real TP) or written here with ``LogWriter`` exactly as the TP
writes it: 1,000-row simulator trade batches as UPD frames, ``--frames-per-chunk`` UPDs
per group-commit chunk, schema frames first.

Each figure is the median of ``max(3, --repeats)`` runs (a run takes well under a second).
Run ``python bench/bench_replay.py`` (``--quick`` for a smoke run, ``--json`` for JSON only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tickerplant`` / ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa

from feedhandlers.sim import Simulator
from tickerplant import log as tplog
from tickerplant import protocol
from tickerplant.schema import TP_TIME, Registry

TABLE = "trade"
ROWS = 5_000_000
QUICK_ROWS = 20_000
ROWS_PER_BATCH = 1000
FRAMES_PER_CHUNK = 16
GOAL_ROWS_PER_S = 20e6


# --------------------------------------------------------------------------- data


def trade_batches(rows: int, rows_per_batch: int = ROWS_PER_BATCH, seed: int = 0) -> list[pa.RecordBatch]:
    """``rows`` simulator trade rows as record batches of exactly ``rows_per_batch`` rows.

    ``trade_share=1`` makes every event a trade except the opening quote snapshot (one
    quote per sym and venue), so one :meth:`Simulator.step` yields them all.

    Each batch owns its memory, as a feed handler's would: a slice of a big batch keeps
    the whole parent alive and serializes ~4x slower, so slices are copied (``take``).
    """
    sim = Simulator(syms=4, venues=3, seed=seed, trade_share=1.0)
    n_batches = max(1, rows // rows_per_batch)
    need = n_batches * rows_per_batch
    snapshot = len(sim.syms) * len(sim.venues)
    index = pa.array(range(rows_per_batch), pa.int32())
    out: list[pa.RecordBatch] = []
    have = 0
    while have < need:
        step = min(need - have, 1_000_000)
        trade = sim.step(step + (snapshot if sim.events == 0 else 0)).get("trade")
        assert trade is not None and trade.num_rows == step, "simulator gave an unexpected trade count"
        out += [trade.slice(i, rows_per_batch).take(index) for i in range(0, step, rows_per_batch)]
        have += step
    return out


def write_log(log_dir: Path, batches: list[pa.RecordBatch], frames_per_chunk: int = FRAMES_PER_CHUNK,
              compress: bool = False, registry: Registry | None = None) -> Path:
    """A log as the TP writes it: schema frames, then UPD frames in group-commit chunks."""
    registry = registry or Registry.default()
    now = time.time_ns()
    day = dt.datetime.fromtimestamp(now / 1e9, dt.UTC).date()
    writer = tplog.LogWriter(tplog.log_path(log_dir, day), day, compress=compress, created_ns=now)
    try:
        writer.append([protocol.encode_schema(t.name, t.wire, t.version) for t in registry])
        seq = writer.last_seq
        for i in range(0, len(batches), frames_per_chunk):
            group = batches[i : i + frames_per_chunk]
            first = seq + 1
            frames = []
            for b in group:
                seq += 1
                frames.append(protocol.encode_upd(TABLE, b, seq=seq, time=time.time_ns()))
            writer.append([], frames, len(frames), first, seq)
    finally:
        writer.close()
    return writer.path


def recompress(src: Path, dst_dir: Path) -> Path:
    """``src`` rewritten with lz4-compressed chunks: the same chunks, frame for frame."""
    status = tplog.check(src, count_rows=False)
    if not status.ok or status.date is None:
        raise RuntimeError(f"{src} is not a clean log: {status.error}")
    dst_dir.mkdir(parents=True, exist_ok=True)
    writer = tplog.LogWriter(dst_dir / src.name, status.date, compress=True, created_ns=time.time_ns())
    try:
        # _chunks is the log module's own verified-chunk reader; a bench may use it to keep
        # the chunk boundaries the TP chose.
        for chunk in tplog._chunks(src, tplog.FILE_HEADER_SIZE):
            writer.append([], [chunk.payload], len(chunk.frames), chunk.first_seq, chunk.last_seq)
    finally:
        writer.close()
    return writer.path


# --------------------------------------------------------------------------- timing


def _timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    samples: list[float] = []
    result: Any = None
    for _ in range(runs):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return samples, result


def _figures(samples: list[float], rows: int, nbytes: int) -> dict[str, Any]:
    sec = statistics.median(samples)
    return {
        "rows": rows,
        "file_bytes": nbytes,
        "seconds": sec,
        "rows_per_s": rows / sec,
        "mb_per_s": nbytes / sec / 1e6,
        "samples_seconds": samples,
    }


def measure_read_table(path: Path, registry: Registry, runs: int) -> dict[str, Any]:
    samples, table = _timed(lambda: tplog.read_table(path, TABLE, registry), runs)
    out = _figures(samples, table.num_rows, path.stat().st_size)
    out["batches"] = len(table.to_batches())
    del table
    return out


def measure_check(path: Path, runs: int) -> dict[str, Any]:
    samples, status = _timed(lambda: tplog.check(path), runs)
    if not status.ok:
        raise RuntimeError(f"log check failed on {path}: {status.error}")
    out = _figures(samples, status.rows, path.stat().st_size)
    out.update(chunks=status.chunks, messages=status.messages)
    return out


def measure_arrow_ipc(path: Path, registry: Registry, workdir: Path, runs: int) -> dict[str, Any]:
    """Reference: the same rows as 1,000-row batches in a plain Arrow IPC stream file."""
    table = tplog.read_table(path, TABLE, registry).drop_columns([TP_TIME])
    ipc = workdir / "reference.arrows"
    with pa.OSFile(str(ipc), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=ROWS_PER_BATCH):
            w.write_batch(b)
    rows = table.num_rows
    del table

    def read() -> pa.Table:
        with pa.memory_map(str(ipc)) as src:
            return pa.ipc.open_stream(src).read_all()

    samples, _ = _timed(read, runs)
    out = _figures(samples, rows, ipc.stat().st_size)
    ipc.unlink()
    return out


def run(
    log: Path | None = None,
    *,
    rows: int | None = None,
    quick: bool = False,
    repeats: int = 1,
    compress: bool = True,
    reference: bool = True,
    frames_per_chunk: int = FRAMES_PER_CHUNK,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Measure replay of ``log`` (or of a log written here); returns the figures as a dict."""
    registry = Registry.default()
    runs = max(3, repeats)
    with tempfile.TemporaryDirectory(prefix="tp-bench-replay-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        out: dict[str, Any] = {"runs_per_figure": runs, "goal_rows_per_s": GOAL_ROWS_PER_S}
        if log is None:
            rows = rows if rows is not None else (QUICK_ROWS if quick else ROWS)
            t0 = time.perf_counter()
            batches = trade_batches(rows)
            log = write_log(tmpdir / "plain", batches, frames_per_chunk)
            del batches
            out["log_source"] = f"written by bench_replay (LogWriter, {frames_per_chunk} UPDs per chunk)"
            out["log_build_seconds"] = time.perf_counter() - t0
        else:
            out["log_source"] = str(log)
        log = Path(log)
        print(f"[replay] {log} ({log.stat().st_size / 1e6:,.0f} MB)", file=sys.stderr)
        out["read_table"] = measure_read_table(log, registry, runs)
        out["check"] = measure_check(log, runs)
        out["rows_per_s"] = out["read_table"]["rows_per_s"]
        out["check_rows_per_s"] = out["check"]["rows_per_s"]
        if compress:
            t0 = time.perf_counter()
            lz = recompress(log, tmpdir / "lz4")
            out["lz4_rewrite_seconds"] = time.perf_counter() - t0
            out["read_table_lz4"] = measure_read_table(lz, registry, runs)
            out["check_lz4"] = measure_check(lz, runs)
            out["lz4_ratio"] = log.stat().st_size / lz.stat().st_size
            out["lz4_rows_per_s"] = out["read_table_lz4"]["rows_per_s"]
            lz.unlink()
        if reference:
            out["arrow_ipc_stream"] = measure_arrow_ipc(log, registry, tmpdir, runs)
        out["goal_met"] = out["rows_per_s"] >= GOAL_ROWS_PER_S
        return out


# --------------------------------------------------------------------------- output


def format_table(res: dict[str, Any]) -> str:
    lines = [f"{'replay figure':<34} {'rows':>11} {'rows/s':>14} {'MB/s':>9} {'seconds':>9}"]
    for key, label in (
        ("read_table", "log.read_table"),
        ("read_table_lz4", "log.read_table (lz4 log)"),
        ("check", "log.check"),
        ("check_lz4", "log.check (lz4 log)"),
        ("arrow_ipc_stream", "reference: Arrow IPC stream read"),
    ):
        r = res.get(key)
        if r is None:
            continue
        lines.append(f"{label:<34} {r['rows']:>11,} {r['rows_per_s']:>14,.0f} {r['mb_per_s']:>9,.0f} "
                     f"{r['seconds']:>9.3f}")
    goal = "met" if res.get("goal_met") else "NOT met"
    lines.append(f"goal read_table >= {GOAL_ROWS_PER_S:,.0f} rows/s: {goal}")
    if "lz4_ratio" in res:
        lines.append(f"lz4 size ratio: {res['lz4_ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--log", type=Path, default=None, help="a log to read (default: write one)")
    ap.add_argument("--rows", type=int, default=None, help=f"rows in the written log (default {ROWS:,})")
    ap.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per figure is max(3, N); median reported")
    ap.add_argument("--frames-per-chunk", type=int, default=FRAMES_PER_CHUNK)
    ap.add_argument("--no-compress", action="store_true", help="skip the lz4 log")
    ap.add_argument("--no-baselines", action="store_true", help="skip the Arrow IPC reference")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    res = run(args.log, rows=args.rows, quick=args.quick, repeats=args.repeats, compress=not args.no_compress,
              reference=not args.no_baselines, frames_per_chunk=args.frames_per_chunk)
    res["nproc"] = os.cpu_count()
    res["loadavg"] = list(os.getloadavg())
    res["versions"] = {"python": sys.version.split()[0], "pyarrow": pa.__version__}
    print(json.dumps(res, indent=2, sort_keys=True))
    if not args.json:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
