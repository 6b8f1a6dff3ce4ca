"""End-to-end throughput and latency: publisher process -> TP process -> subscriber process.

What this measures
------------------
Every scenario starts a fresh tickerplant, ``tick tp --port 0 --log-dir <tmp> --fsync
group:5ms`` (zero-latency mode: a group commit every event-loop pass; ``--fsync``,
``--batch-ms``, ``--compress`` and ``--tp-arg`` change that), then one subscriber process
(the blocking :class:`~tickerplant.Subscriber`, ``tables=["trade"]``, default options, so a
subscriber the TP cuts off as slow reconnects and catches up from the log; cut-offs are
reported) and one publisher process (the blocking :class:`~tickerplant.Publisher`, what
users use, unless stated). The publisher pre-builds its data, publishes a few warm-up rows
and flushes them (first-use costs, e.g. pyarrow loading pandas on its first ``pa.array``,
~0.2 s); once the subscriber has received those too, the parent says "go".

rows/s = rows / (time from the publisher's first ``publish`` call to the moment the
subscriber has received, decoded, the last row). Both instants are ``time.time_ns()`` read in
their own process (one machine, one clock). The publisher then ``flush()``es (durable ack).

* ``batch_1000``: trade rows from :class:`feedhandlers.sim.Simulator` pre-built as exactly
  1,000-row RecordBatches (all distinct), one ``publish("trade", batch)`` per batch.
* ``per_tick``: one ``publish("trade", {...one row...})`` per tick; the Publisher coalesces
  (default ``max_delay`` 2 ms, ``max_rows`` 10,000). ``built``: the row dict is built for
  every tick from Python scalars (the honest figure, reported as ``per_tick``);
  ``prebuilt``: the same dict object is published every time (the library's cost alone).
* ``latency``: ``--latency-rate`` ticks/s (default 10,000) paced for ``--latency-seconds``
  (default 5) with ``max_delay=0`` (no coalescing delay; ticks that are due together still
  travel together). Ticks are paced by sleeping until each tick's slot (never busy-waiting;
  the asyncio variant sleeps on the event loop, whose timers have ~1 ms resolution under
  uvloop, so it sends small groups). Every row carries ``recv_time`` = ``time.time_ns()``
  read just before its ``publish`` call, and ``time`` = its slot on the schedule. The
  subscriber takes ``time.time_ns()`` as each message is yielded; latency = that minus
  ``recv_time``, per row (``schedule_*`` figures use ``time``, so they include pacing
  lateness; ``publisher_to_tp`` / ``tp_to_subscriber`` split the path at ``tp_time``, the
  TP's receive time). The first 0.5 s of paced ticks are warm-up and left out. Variants:
  ``sync`` (``Publisher``) and ``async`` (``AsyncPublisher`` on uvloop).
* ``replay``: :mod:`bench.bench_replay` on the log ``batch_1000`` wrote (and an lz4 copy).

CPU: the TP's from ``/proc/<pid>/stat`` (utime+stime, all threads) read just before "go"
and just after the subscriber is done; the publisher's and subscriber's from
``os.times()`` (all threads) in each process around its timed part; user and system
time are also reported apart (``cpu_user_sys_s``), system time being mostly the kernel's
socket and page-cache copies.

Baselines (:mod:`bench.baselines`, the same session): Redis Streams and NATS JetStream,
``blob_1000`` with as many rows as ``batch_1000``, ``single_row`` with the baselines'
default count (JetStream does ~12k rows/s, so a million would take minutes). Ratios: ours /
theirs, ``batch_1000`` vs ``blob_1000`` and ``per_tick`` vs ``single_row``.

``--profile DIR`` runs the TP in-process under cProfile (``tickerplant.server.run``) and the
publisher (both threads of the sync Publisher) and subscriber under cProfile, writes
``.prof`` files and a ``profile.txt`` summary to DIR; figures from such a run are slowed
by profiling and only tell where the time goes.

The machine has 2 cores shared by three busy processes, and other work on it skews a run:
the load average is recorded before and after each run. ``--repeats N`` runs each scenario N times
and reports the median (all samples kept). Every child process is killed on the way out.

Run ``python bench/bench_e2e.py`` (``--quick`` for a smoke run, ``--no-baselines``,
``--json`` for JSON only).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import platform
import queue
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``tickerplant`` / ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_replay  # noqa: E402

# Default counts keep a full run (with baselines) around two minutes on the 2-core machine.
BATCH_ROWS = 5_000_000
TICKS = 1_000_000
LATENCY_RATE = 10_000
LATENCY_SECONDS = 5.0
QUICK_BATCH_ROWS = 20_000
QUICK_TICKS = 5_000
QUICK_LATENCY_RATE = 2_000
QUICK_LATENCY_SECONDS = 0.5
ROWS_PER_BATCH = 1000
WARMUP_BATCH_ROWS = 10_000  # published and flushed before "go" (first-use costs)
WARMUP_TICKS = 1_000
LATENCY_WARMUP_SECONDS = 0.5  # paced ticks before the measured ones, left out of the figures

FSYNC = "group:5ms"
READY_TIMEOUT = 60.0
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT", 240))

GOALS = {
    "batch_1000_rows_per_s": 10e6,
    "per_tick_ticks_per_s": 500e3,
    "latency_p50_us": 100.0,
    "latency_p99_us": 1000.0,
    "replay_rows_per_s": 20e6,
}


class BenchError(RuntimeError):
    """A measurement failed: a process died, timed out, or rows went missing."""


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def tick_command() -> str:
    for cand in (Path(sys.executable).parent / "tick", ROOT / ".venv" / "bin" / "tick"):
        if cand.exists():
            return str(cand)
    found = shutil.which("tick")
    if found is None:
        raise BenchError("the `tick` command is not installed (pip install -e .)")
    return found


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def _cpu_since(t0: Any) -> tuple[float, float]:
    """(user, system) CPU seconds of this process (all threads) since ``os.times()`` gave ``t0``."""
    t1 = os.times()
    return t1.user - t0.user, t1.system - t0.system


@dataclass(frozen=True)
class TPOptions:
    """How the TP is started (the defaults are the benchmark's configuration)."""

    fsync: str = FSYNC
    batch_ms: float = 0.0
    compress: bool = False
    extra: tuple[str, ...] = ()  # any other ``tick tp`` options, e.g. ("--sub-buffer", "268435456")

    def argv(self) -> list[str]:
        out = ["--fsync", self.fsync, *self.extra]
        if self.batch_ms:
            out += ["--batch-ms", str(self.batch_ms)]
        if self.compress:
            out.append("--compress")
        return out


@dataclass
class TPHandle:
    proc: subprocess.Popen[bytes]
    address: str
    log: Path
    stderr_path: Path

    def stderr_tail(self, n: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            if not sel.select(min(left, 0.2)):
                if proc.poll() is not None:
                    return b""
                continue
            data = os.read(fd, 4096)
            if not data:
                return b""
            buf += data
    return buf.split(b"\n", 1)[0]


_PROFILED_TP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from bench.bench_e2e import profiled_tp; profiled_tp(sys.argv[2:])"
)


def profiled_tp(argv: list[str]) -> None:
    """``tick tp`` equivalent run in-process under cProfile: argv = [prof_out, log_dir, fsync, batch_ms, compress]."""
    import cProfile

    from tickerplant import server

    out, log_dir = argv[0], Path(argv[1])
    config = server.Config(port=0, log_dir=log_dir, fsync=argv[2], batch_ms=float(argv[3]), compress=argv[4] == "1")

    def ready(tp: server.Tickerplant) -> None:
        info = {"listening": f"127.0.0.1:{tp.port}", "log": str(tp.writer.path), "seq": tp.last_seq}
        print(json.dumps(info), flush=True)

    prof = cProfile.Profile()
    prof.enable()
    try:
        server.run(config, ready)
    finally:
        prof.disable()
        prof.dump_stats(out)


@contextlib.contextmanager
def tickerplant(workdir: Path, tp: TPOptions, profile_out: Path | None = None) -> Iterator[TPHandle]:
    """A fresh TP on an ephemeral port with its log under ``workdir``; always stopped."""
    log_dir = workdir / "tplogs"
    stderr_path = workdir / "tp.stderr"
    if profile_out is None:
        cmd = [tick_command(), "tp", "--port", "0", "--log-dir", str(log_dir), *tp.argv()]
    else:
        cmd = [sys.executable, "-c", _PROFILED_TP, str(ROOT), str(profile_out), str(log_dir), tp.fsync,
               str(tp.batch_ms), str(int(tp.compress))]
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir,
                                preexec_fn=_die_with_parent, start_new_session=True)
    try:
        line = _read_line(proc, READY_TIMEOUT)
        if not line:
            tail = stderr_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"tickerplant did not start (rc={proc.poll()}):\n{tail}")
        info = json.loads(line)
        yield TPHandle(proc, info["listening"], Path(info["log"]), stderr_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # graceful: commit, fsync and close the log
            try:
                proc.wait(30 if profile_out is not None else 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- children


def _report(q: Any, role: str, fn: Callable[[], dict[str, Any]]) -> None:
    _die_with_parent()
    try:
        q.put((role, fn()))
    except BaseException as exc:  # report, never leave the parent waiting
        import traceback

        q.put((role, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))


class _Profiler:
    """cProfile for the calling thread (and optionally a Publisher's I/O thread); no-op without a path."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.main: Any = None
        self.io: Any = None

    def start(self, loop: Any = None) -> None:
        if self.path is None:
            return
        import cProfile

        self.main = cProfile.Profile()
        if loop is not None:  # the sync Publisher's event-loop thread
            self.io = cProfile.Profile()
            self._in_loop(loop, self.io.enable)
        self.main.enable()

    @staticmethod
    def _in_loop(loop: Any, fn: Callable[[], None]) -> None:
        """Run ``fn`` in ``loop``'s thread (a profiler hooks the thread it is enabled in)."""
        done = threading.Event()

        def call() -> None:
            fn()
            done.set()

        loop.call_soon_threadsafe(call)
        done.wait(5)

    def stop(self, loop: Any = None) -> None:
        if self.main is None:
            return
        self.main.disable()
        self.main.dump_stats(self.path)
        if self.io is not None and loop is not None:
            self._in_loop(loop, self.io.disable)
            self.io.dump_stats(str(self.path).replace(".prof", "-io.prof"))


def _subscriber_proc(cfg: dict[str, Any], ready: Any, warmed: Any, progress: Any, q: Any) -> None:
    def run() -> dict[str, Any]:
        import numpy as np

        from tickerplant import Subscriber

        warm_rows = int(cfg.get("warmup_rows", 0))
        total, latency = int(cfg["rows"]) + warm_rows, bool(cfg.get("latency"))
        warm_ticks = int(cfg.get("warmup_ticks", 0))
        # reconnect=True (the default): a subscriber the TP cuts off as slow resumes from its
        # position (catch-up from the log); the cut-offs are counted and reported.
        sub = Subscriber(cfg["address"], tables=["trade"], name="bench-sub")

        def watch() -> None:  # ready once the TP confirmed the subscription
            deadline = time.monotonic() + READY_TIMEOUT
            while not sub.state.subscribed and time.monotonic() < deadline:
                time.sleep(0.002)
            ready.set()
            if not warm_rows:
                warmed.set()

        threading.Thread(target=watch, daemon=True).start()
        # Per-row latency data goes into arrays allocated up front: keeping a numpy view of
        # every message's columns would keep (GC-tracked) pyarrow objects alive, and the
        # full collections they cause showed up as ~50 ms latency tails of our own making.
        size = total if latency else 0
        sent, slots, recv, seqs, tp_times = (np.zeros(size, dtype=np.int64) for _ in range(5))
        rows = msgs = 0
        t_first = t_last = 0
        is_warm = not warm_rows  # a local flag: Event.is_set() per message costs ~5 us
        prof = _Profiler(cfg.get("profile"))
        if os.environ.get("BENCH_SUB_NOGC"):  # diagnostic: is a tail the subscriber's garbage collector?
            import gc

            gc.disable()
        prof.start()
        cpu0 = os.times()
        try:
            for msg in sub:
                now = time.time_ns()
                n = msg.data.num_rows
                if not msgs:
                    t_first = now
                if latency and rows + n <= size:
                    data = msg.data
                    sent[rows : rows + n] = data.column("recv_time").to_numpy().view(np.int64)
                    slots[rows : rows + n] = data.column("time").to_numpy().view(np.int64)
                    seqs[rows : rows + n] = data.column("seq").to_numpy()
                    recv[rows : rows + n] = now
                    tp_times[rows : rows + n] = msg.time
                    del data
                rows += n
                progress.value = rows  # for the parent's diagnostics on a timeout
                msgs += 1
                if not is_warm and rows >= warm_rows:
                    is_warm = True
                    warmed.set()  # the warm-up rows are through: the parent may say "go"
                if rows >= total:
                    t_last = now
                    break
        finally:
            cpu = _cpu_since(cpu0)
            prof.stop()
            gaps, reconnects = sub.state.gaps, sub.reconnects
            sub.close()
        out: dict[str, Any] = {"rows": rows - warm_rows, "messages": msgs, "t_first": t_first,
                               "t_last": t_last, "cpu_s": cpu, "gaps": gaps, "reconnects": reconnects}
        if latency:
            if cfg.get("dump"):  # raw per-row data, for looking into outliers
                np.savez(cfg["dump"], seq=seqs, sent=sent, slot=slots, recv=recv, tp=tp_times)
            keep = seqs >= warm_ticks  # warm-up ticks (and the pre-go rows, seq < 0) are left out
            out["latency"] = _latency_stats(sent[keep], slots[keep], recv[keep], tp_times[keep], warm_ticks)
        return out

    _report(q, "subscriber", run)


def _latency_stats(sent: Any, slots: Any, recv: Any, tp_time: Any, warm: int) -> dict[str, Any]:
    import numpy as np

    lat = (recv - sent) / 1e3
    sched = (recv - slots) / 1e3
    late = (sent - slots) / 1e3

    def pct(a: Any) -> dict[str, float]:
        p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
        return {"p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99), "p999_us": float(p999),
                "max_us": float(a.max()), "mean_us": float(a.mean())}

    return {"rows_measured": len(lat), "warmup_ticks": warm, **pct(lat),
            "schedule": pct(sched), "pacing_lateness": pct(late),
            "publisher_to_tp": pct((tp_time - sent) / 1e3), "tp_to_subscriber": pct((recv - tp_time) / 1e3)}


def _publisher_proc(cfg: dict[str, Any], ready: Any, go: Any, q: Any) -> None:
    def run() -> dict[str, Any]:
        mode = cfg["mode"]
        if mode == "batch":
            return _publish_batches(cfg, ready, go)
        if mode in ("tick_built", "tick_prebuilt"):
            return _publish_ticks(cfg, ready, go, prebuilt=mode == "tick_prebuilt")
        if mode == "latency_sync":
            return _publish_paced_sync(cfg, ready, go)
        if mode == "latency_async":
            return _publish_paced_async(cfg, ready, go)
        raise ValueError(f"unknown publisher mode {mode!r}")

    _report(q, "publisher", run)


def _wait_go(go: Any) -> None:
    if not go.wait(READY_TIMEOUT):
        raise BenchError("no go signal")


def _publish_batches(cfg: dict[str, Any], ready: Any, go: Any) -> dict[str, Any]:
    from tickerplant import Publisher

    warm = int(cfg.get("warmup_rows", 0))
    batches = bench_replay.trade_batches(int(cfg["rows"]) + warm, ROWS_PER_BATCH, seed=1)
    warm_batches, batches = batches[: warm // ROWS_PER_BATCH], batches[warm // ROWS_PER_BATCH :]
    with Publisher(cfg["address"], name="bench-pub") as pub:
        for b in warm_batches:  # first-use costs (imports, schema frames) out of the timed window
            pub.publish("trade", b)
        pub.flush()
        prof = _Profiler(cfg.get("profile"))
        ready.set()
        _wait_go(go)
        prof.start(pub._loop)
        cpu0 = os.times()
        t0 = time.time_ns()
        for b in batches:
            pub.publish("trade", b)
        t_calls = time.time_ns()
        pub.flush()
        t_done = time.time_ns()
        cpu = _cpu_since(cpu0)
        prof.stop(pub._loop)
        stats = pub.stats
    return {"t0": t0, "t_calls": t_calls, "t_done": t_done, "cpu_s": cpu, "rows": sum(b.num_rows for b in batches),
            "publishes": len(batches), "pub_stats": stats}


SYMS = ("BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD")


def _tick_row(i: int, slot: int) -> dict[str, Any]:
    """One trade row built from Python scalars; ``recv_time`` is read now (the send time)."""
    return {"time": slot, "sym": SYMS[i & 3], "exchange": "SIMA", "price": 60000.0 + (i & 255), "size": 0.25,
            "side": "buy" if i & 1 else "sell", "trade_id": str(i), "seq": i, "recv_time": time.time_ns()}


def _warm_ticks(pub: Any, n: int) -> None:
    """Publish ``n`` ticks (seq < 0) and wait until they are durable: first-use costs out of the way.

    The first row-dict conversion costs ~0.2 s here (pyarrow loads pandas on its first
    ``pa.array`` call); in a timed window it would show as a stall.
    """
    for i in range(n):
        pub.publish("trade", _tick_row(-1 - i, time.time_ns()))
    pub.flush()


def _publish_ticks(cfg: dict[str, Any], ready: Any, go: Any, prebuilt: bool) -> dict[str, Any]:
    from tickerplant import Publisher

    n = int(cfg["rows"])
    syms, time_ns = SYMS, time.time_ns
    with Publisher(cfg["address"], name="bench-pub") as pub:
        _warm_ticks(pub, int(cfg.get("warmup_rows", 0)))
        publish = pub.publish
        prof = _Profiler(cfg.get("profile"))
        ready.set()
        _wait_go(go)
        prof.start(pub._loop)
        cpu0 = os.times()
        t0 = time_ns()
        if prebuilt:
            row = {"time": t0, "sym": "BTCUSD", "exchange": "SIMA", "price": 60000.5, "size": 0.25, "side": "buy",
                   "trade_id": "000000000001", "seq": 1, "recv_time": t0}
            for _ in range(n):
                publish("trade", row)
        else:
            for i in range(n):
                now = time_ns()
                publish("trade", {"time": now, "sym": syms[i & 3], "exchange": "SIMA", "price": 60000.0 + (i & 255),
                                  "size": 0.25, "side": "buy" if i & 1 else "sell", "trade_id": str(i), "seq": i,
                                  "recv_time": now})
        t_calls = time_ns()
        pub.flush()
        t_done = time_ns()
        cpu = _cpu_since(cpu0)
        prof.stop(pub._loop)
        stats = pub.stats
    return {"t0": t0, "t_calls": t_calls, "t_done": t_done, "cpu_s": cpu, "rows": n, "publishes": n,
            "pub_stats": stats}


def _publish_paced_sync(cfg: dict[str, Any], ready: Any, go: Any) -> dict[str, Any]:
    """Ticks 0 .. warm-1 are a paced warm-up (left out by the subscriber), then ``rows`` measured ticks."""
    from tickerplant import Publisher

    n, warm, period = int(cfg["rows"]), int(cfg["warmup_ticks"]), 1e9 / float(cfg["rate"])
    with Publisher(cfg["address"], name="bench-pub", max_delay=0.0) as pub:
        _warm_ticks(pub, int(cfg.get("warmup_rows", 0)))
        prof = _Profiler(cfg.get("profile"))
        ready.set()
        _wait_go(go)
        prof.start(pub._loop)
        cpu0 = os.times()
        start = time.time_ns() + 1_000_000
        t0 = 0
        for i in range(warm + n):
            slot = start + int(i * period)
            wait = slot - time.time_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            if not t0:
                t0 = time.time_ns()
            pub.publish("trade", _tick_row(i, slot))
        t_calls = time.time_ns()
        pub.flush()
        t_done = time.time_ns()
        cpu = _cpu_since(cpu0)
        prof.stop(pub._loop)
        stats = pub.stats
    return {"t0": t0, "t_calls": t_calls, "t_done": t_done, "cpu_s": cpu, "rows": n + warm, "publishes": n + warm,
            "pub_stats": stats}


def _publish_paced_async(cfg: dict[str, Any], ready: Any, go: Any) -> dict[str, Any]:
    import asyncio

    from tickerplant import AsyncPublisher
    from tickerplant.aio import new_event_loop

    n, warm, period = int(cfg["rows"]), int(cfg["warmup_ticks"]), 1e9 / float(cfg["rate"])

    async def main() -> dict[str, Any]:
        async with AsyncPublisher(cfg["address"], name="bench-pub", max_delay=0.0) as pub:
            for i in range(int(cfg.get("warmup_rows", 0))):
                await pub.publish("trade", _tick_row(-1 - i, time.time_ns()))
            await pub.flush()
            prof = _Profiler(cfg.get("profile"))
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, _wait_go, go)
            prof.start()
            cpu0 = os.times()
            start = time.time_ns() + 1_000_000
            t0 = 0
            for i in range(warm + n):
                slot = start + int(i * period)
                wait = slot - time.time_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                if not t0:
                    t0 = time.time_ns()
                await pub.publish("trade", _tick_row(i, slot))
            t_calls = time.time_ns()
            await pub.flush()
            t_done = time.time_ns()
            cpu = _cpu_since(cpu0)
            prof.stop()
            stats = {"pub_seq": pub.pub_seq, "durable": pub.durable}
        return {"t0": t0, "t_calls": t_calls, "t_done": t_done, "cpu_s": cpu, "rows": n + warm,
                "publishes": n + warm, "pub_stats": stats}

    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# --------------------------------------------------------------------------- harness


def _wait_ready(ev: Any, proc: Any, q: Any, role: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ev.wait(0.1):
        with contextlib.suppress(queue.Empty):
            r, res = q.get_nowait()
            raise BenchError(f"{r} failed before ready: {res.get('error')}\n{res.get('traceback', '')}")
        if not proc.is_alive():
            raise BenchError(f"{role} died before ready (exitcode {proc.exitcode})")
        if time.monotonic() > deadline:
            raise BenchError(f"{role} not ready after {READY_TIMEOUT}s")


def _tp_stats_or_error(address: str) -> Any:
    try:
        from tickerplant import admin

        return admin.stats(address, timeout=5)
    except Exception as exc:
        return f"stats failed: {exc!r}"


def run_once(name: str, pub_cfg: dict[str, Any], sub_cfg: dict[str, Any], workdir: Path,
             tp_options: TPOptions | None = None, profile_dir: Path | None = None,
             timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """One scenario run: fresh TP, subscriber, publisher; returns figures and the TP's log path."""
    tp_prof = profile_dir / f"{name}-tp.prof" if profile_dir is not None else None
    if profile_dir is not None:
        pub_cfg = {**pub_cfg, "profile": str(profile_dir / f"{name}-publisher.prof")}
        sub_cfg = {**sub_cfg, "profile": str(profile_dir / f"{name}-subscriber.prof")}
    load_before = list(os.getloadavg())
    with tickerplant(workdir, tp_options or TPOptions(), tp_prof) as tp:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        sub_ready, sub_warmed, pub_ready, go = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
        sub_cfg = {**sub_cfg, "address": tp.address}
        pub_cfg = {**pub_cfg, "address": tp.address}
        progress = ctx.Value("q", 0, lock=False)
        sub = ctx.Process(target=_subscriber_proc, args=(sub_cfg, sub_ready, sub_warmed, progress, q),
                          name="bench-subscriber")
        pub = ctx.Process(target=_publisher_proc, args=(pub_cfg, pub_ready, go, q), name="bench-publisher")
        results: dict[str, dict[str, Any]] = {}
        try:
            sub.start()
            _wait_ready(sub_ready, sub, q, "subscriber")
            pub.start()
            _wait_ready(pub_ready, pub, q, "publisher")
            _wait_ready(sub_warmed, sub, q, "subscriber (warm-up rows)")
            tp_cpu0 = proc_cpu_seconds(tp.proc.pid)
            go.set()
            deadline = time.monotonic() + timeout
            tp_cpu1 = None
            while len(results) < 2:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{name}: timed out after {timeout}s; have {sorted(results)}; the subscriber "
                                     f"has {progress.value:,} of {sub_cfg['rows'] + sub_cfg.get('warmup_rows', 0):,} "
                                     f"rows; TP: {_tp_stats_or_error(tp.address)}")
                try:
                    role, res = q.get(timeout=min(left, 0.5))
                except queue.Empty:
                    for p in (sub, pub):
                        if not p.is_alive() and p.name.split("-")[1] not in results:
                            raise BenchError(f"{name}: {p.name} died (exitcode {p.exitcode})") from None
                    if tp.proc.poll() is not None:
                        raise BenchError(
                            f"{name}: the TP died (rc={tp.proc.returncode}):\n{tp.stderr_tail()}") from None
                    continue
                if "error" in res:
                    raise BenchError(f"{name}: {role} failed: {res['error']}\n{res.get('traceback', '')}")
                results[role] = res
                if role == "subscriber":
                    tp_cpu1 = proc_cpu_seconds(tp.proc.pid)
            assert tp_cpu1 is not None
            from tickerplant import admin

            tp_stats = admin.stats(tp.address)
        finally:
            go.set()
            for p in (pub, sub):
                if p.pid is not None:
                    p.join(timeout=10)
                    if p.is_alive():
                        p.kill()
                        p.join(timeout=5)
            q.close()
            q.join_thread()
        log_path = tp.log
    s, p_ = results["subscriber"], results["publisher"]
    expected = int(sub_cfg["rows"])
    if s["rows"] != expected or p_["rows"] != expected:
        raise BenchError(f"{name}: subscriber got {s['rows']} rows, publisher sent {p_['rows']}, expected {expected}")
    if s["gaps"]:
        raise BenchError(f"{name}: subscriber saw {s['gaps']} sequence gaps")
    elapsed = (s["t_last"] - p_["t0"]) / 1e9
    tp_us = (tp_cpu1[0] - tp_cpu0[0], tp_cpu1[1] - tp_cpu0[1])
    pub_us, sub_us = tuple(p_["cpu_s"]), tuple(s["cpu_s"])
    tp_cpu, pub_cpu, sub_cpu = sum(tp_us), sum(pub_us), sum(sub_us)
    out: dict[str, Any] = {
        "rows": expected,
        "seconds": elapsed,
        "rows_per_s": expected / elapsed,
        "publish_calls_seconds": (p_["t_calls"] - p_["t0"]) / 1e9,
        "publish_calls_per_s": p_["publishes"] / max((p_["t_calls"] - p_["t0"]) / 1e9, 1e-9),
        "flush_done_seconds": (p_["t_done"] - p_["t0"]) / 1e9,
        "messages_received": s["messages"],
        "subscriber_reconnects": s["reconnects"],
        "rows_per_message_received": (expected + int(sub_cfg.get("warmup_rows", 0))) / max(s["messages"], 1),
        "cpu_s": {"tp": tp_cpu, "publisher": pub_cpu, "subscriber": sub_cpu},
        "cpu_user_sys_s": {"tp": tp_us, "publisher": pub_us, "subscriber": sub_us},
        "cpu_share_of_elapsed": {"tp": tp_cpu / elapsed, "publisher": pub_cpu / elapsed,
                                 "subscriber": sub_cpu / elapsed},
        "tp_stats": {k: tp_stats.get(k) for k in ("upd_in", "rows_in", "commits", "fsyncs", "duplicates",
                                                    "rejected", "slow_disconnects", "log_bytes")},
        "publisher_stats": p_.get("pub_stats"),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "log": str(log_path),
    }
    commits = tp_stats.get("commits") or 0
    if commits:
        out["upd_per_commit"] = (tp_stats.get("upd_in") or 0) / commits
    if "latency" in s:
        out["latency"] = s["latency"]
    return out


def _median_run(runs: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    ordered = sorted(runs, key=key)
    res = dict(ordered[(len(ordered) - 1) // 2])  # the median run (lower median for even counts)
    res["samples"] = [key(r) for r in runs]
    return res


# --------------------------------------------------------------------------- scenarios


@dataclass
class Counts:
    batch_rows: int
    ticks: int
    latency_rate: int
    latency_seconds: float

    @classmethod
    def make(cls, quick: bool, args: argparse.Namespace | None = None) -> Counts:
        c = (cls(QUICK_BATCH_ROWS, QUICK_TICKS, QUICK_LATENCY_RATE, QUICK_LATENCY_SECONDS) if quick
             else cls(BATCH_ROWS, TICKS, LATENCY_RATE, LATENCY_SECONDS))
        if args is not None:
            c.batch_rows = args.batch_rows or c.batch_rows
            c.ticks = args.ticks or c.ticks
            c.latency_rate = args.latency_rate or c.latency_rate
            c.latency_seconds = args.latency_seconds or c.latency_seconds
        c.batch_rows = max(ROWS_PER_BATCH, c.batch_rows // ROWS_PER_BATCH * ROWS_PER_BATCH)
        return c


def _log(msg: str) -> None:
    print(f"[bench_e2e] {msg}", file=sys.stderr, flush=True)


def run_scenarios(counts: Counts, repeats: int, workdir: Path, tp_options: TPOptions, only: set[str] | None = None,
                  profile_dir: Path | None = None, replay: bool = True) -> dict[str, Any]:
    """Run every scenario ``repeats`` times; medians, samples, and replay on the batch log."""
    out: dict[str, Any] = {}

    def want(name: str) -> bool:
        return only is None or name in only

    def repeat(name: str, pub_cfg: dict[str, Any], sub_cfg: dict[str, Any],
               key: Callable[[dict[str, Any]], float], keep_last: bool = False) -> dict[str, Any]:
        runs = []
        for i in range(repeats):
            wd = Path(tempfile.mkdtemp(prefix=f"{name}-{i}-", dir=workdir))
            runs.append(run_once(name, pub_cfg, sub_cfg, wd, tp_options, profile_dir))
            r = runs[-1]
            _log(f"{name} run {i + 1}/{repeats}: {r['rows_per_s']:,.0f} rows/s in {r['seconds']:.2f}s, "
                 f"sub reconnects {r['subscriber_reconnects']}, "
                 f"cpu tp/pub/sub {r['cpu_s']['tp']:.2f}/{r['cpu_s']['publisher']:.2f}/"
                 f"{r['cpu_s']['subscriber']:.2f}s" + (
                     f", p50 {r['latency']['p50_us']:.0f}us p99 {r['latency']['p99_us']:.0f}us"
                     if "latency" in r else ""))
            if not (keep_last and i == repeats - 1):
                shutil.rmtree(wd, ignore_errors=True)
        res = _median_run(runs, key)
        res["last_run_log"] = runs[-1]["log"]  # the one log kept (keep_last)
        if "latency" in res:  # each percentile's own median over the runs, too
            res["latency_medians"] = {k: statistics.median(r["latency"][k] for r in runs)
                                      for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")}
        return res

    rows_per_s: Callable[[dict[str, Any]], float] = lambda r: float(r["rows_per_s"])  # noqa: E731
    p50: Callable[[dict[str, Any]], float] = lambda r: float(r["latency"]["p50_us"])  # noqa: E731

    warm_b = min(WARMUP_BATCH_ROWS, counts.batch_rows // 10 // ROWS_PER_BATCH * ROWS_PER_BATCH)
    warm_t = min(WARMUP_TICKS, max(counts.ticks // 10, 1))
    if want("batch_1000"):
        cfg = {"rows": counts.batch_rows, "warmup_rows": warm_b}
        res = repeat("batch_1000", {"mode": "batch", **cfg}, cfg, rows_per_s, keep_last=True)
        res["rows_per_publish"] = ROWS_PER_BATCH
        out["batch_1000"] = res
    if want("per_tick"):
        cfg = {"rows": counts.ticks, "warmup_rows": warm_t}
        built = repeat("per_tick_built", {"mode": "tick_built", **cfg}, cfg, rows_per_s)
        pre = repeat("per_tick_prebuilt", {"mode": "tick_prebuilt", **cfg}, cfg, rows_per_s)
        out["per_tick"] = {"ticks_per_s": built["rows_per_s"], "built": built, "prebuilt": pre}
    if want("latency"):
        n = int(counts.latency_rate * counts.latency_seconds)
        warm = int(counts.latency_rate * min(LATENCY_WARMUP_SECONDS, counts.latency_seconds / 5))
        lat: dict[str, Any] = {"rate": counts.latency_rate, "seconds": counts.latency_seconds, "ticks": n,
                               "warmup_ticks": warm, "max_delay": 0.0}
        for variant in ("sync", "async"):
            pub_cfg = {"mode": f"latency_{variant}", "rows": n, "rate": counts.latency_rate, "warmup_ticks": warm,
                       "warmup_rows": 100}
            sub_cfg = {"rows": n + warm, "warmup_rows": 100, "warmup_ticks": warm, "latency": True}
            r = repeat(f"latency_{variant}", pub_cfg, sub_cfg, p50)
            lat[variant] = r
        out["latency"] = lat
    if replay and "batch_1000" in out:
        log = Path(out["batch_1000"]["last_run_log"])
        _log(f"replay of {log}")
        out["replay"] = bench_replay.run(log, repeats=repeats, workdir=workdir)
        shutil.rmtree(log.parent.parent, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- report


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("tickerplant", "pyarrow", "numpy", "uvloop", "lz4", "redis", "nats-py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False, timeout=10)
        out["git"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return out


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": round(os.sysconf("SC_PAGE_SIZE")
                                                                  * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(scen: dict[str, Any], base: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ratios vs baselines, goals with value and met)."""
    batch = scen.get("batch_1000", {}).get("rows_per_s")
    tick = scen.get("per_tick", {}).get("ticks_per_s")
    ratios: dict[str, Any] = {}
    if base:
        for sysname in ("redis", "jetstream"):
            b = base.get(sysname) or {}
            ratios[f"batch_1000_vs_{sysname}_blob_1000"] = _ratio(batch, b.get("blob_1000_rows_per_s"))
            ratios[f"per_tick_vs_{sysname}_single_row"] = _ratio(tick, b.get("single_row_per_s"))
    lat = scen.get("latency", {})
    values = {
        "batch_1000_rows_per_s": batch,
        "per_tick_ticks_per_s": tick,
        "latency_p50_us": lat.get("sync", {}).get("latency", {}).get("p50_us"),
        "latency_p99_us": lat.get("sync", {}).get("latency", {}).get("p99_us"),
        "replay_rows_per_s": scen.get("replay", {}).get("rows_per_s"),
    }
    goals: dict[str, Any] = {}
    for k, goal in GOALS.items():
        v = values[k]
        met = None if v is None else (v <= goal if k.endswith("_us") else v >= goal)
        goals[k] = {"goal": goal, "value": v, "met": met}
        if k.startswith("latency") and lat.get("async"):
            av = lat["async"]["latency"][k.removeprefix("latency_")]
            goals[k]["value_async"] = av
            goals[k]["met_async"] = av <= goal
    return ratios, goals


def format_table(res: dict[str, Any]) -> str:
    scen, ratios = res["scenarios"], res.get("ratios", {})
    m = res["machine"]
    lines = [f"machine: {m['nproc']} cpus ({m['cpu']}), load before {_load(res['loadavg_before'])}, "
             f"after {_load(res['loadavg_after'])}; python {res['versions']['python']}, "
             f"pyarrow {res['versions'].get('pyarrow')}, git {res['versions'].get('git')}"]
    lines.append(f"{'scenario':<26} {'rows/s':>13} {'seconds':>8} {'cpu s tp/pub/sub':>18} "
                 f"{'rows/msg':>9} {'slow cut':>8} {'vs redis':>9} {'vs jetstr':>9}")

    def row(label: str, r: dict[str, Any], rk: str | None = None, jk: str | None = None) -> None:
        c = r["cpu_s"]
        red = ratios.get(rk) if rk else None
        jet = ratios.get(jk) if jk else None
        cpu = f"{c['tp']:.2f}/{c['publisher']:.2f}/{c['subscriber']:.2f}"
        lines.append(f"{label:<26} {r['rows_per_s']:>13,.0f} {r['seconds']:>8.2f} {cpu:>18} "
                     f"{r['rows_per_message_received']:>9,.0f} {r['subscriber_reconnects']:>8} "
                     f"{_x(red):>9} {_x(jet):>9}")

    if "batch_1000" in scen:
        row("batch_1000", scen["batch_1000"], "batch_1000_vs_redis_blob_1000", "batch_1000_vs_jetstream_blob_1000")
    if "per_tick" in scen:
        row("per_tick (dict per tick)", scen["per_tick"]["built"], "per_tick_vs_redis_single_row",
            "per_tick_vs_jetstream_single_row")
        row("per_tick (prebuilt dict)", scen["per_tick"]["prebuilt"])
    if "latency" in scen:
        lat = scen["latency"]
        lines.append(f"latency at {lat['rate']:,} ticks/s for {lat['seconds']}s, max_delay=0 "
                     f"(us, publish call -> subscriber):")
        lines.append(f"  {'publisher':<10} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>9} "
                     f"{'rows/msg':>9} {'sched p99':>10}")
        for v in ("sync", "async"):
            if v in lat:
                r = lat[v]
                s = r["latency"]
                lines.append(f"  {v:<10} {s['p50_us']:>8.0f} {s['p90_us']:>8.0f} {s['p99_us']:>8.0f} "
                             f"{s['p999_us']:>8.0f} {s['max_us']:>9.0f} {r['rows_per_message_received']:>9.2f} "
                             f"{s['schedule']['p99_us']:>10.0f}")
    if "replay" in scen:
        lines.append(bench_replay.format_table(scen["replay"]))
    if res.get("baselines"):
        from bench import baselines

        lines.append(baselines.format_table(res["baselines"]))
    lines.append("goals:")
    for k, g in res["goals"].items():
        v = g["value"]
        shown = "n/a" if v is None else (f"{v:,.0f}" if v > 1000 else f"{v:,.1f}")
        extra = f" (async {g['value_async']:,.1f}, {'met' if g['met_async'] else 'NOT met'})" \
            if "value_async" in g else ""
        status = "n/a" if g["met"] is None else ("met" if g["met"] else "NOT met")
        lines.append(f"  {k:<24} goal {g['goal']:>12,.0f}  value {shown:>12}  {status}{extra}")
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v else "-"


def _load(v: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in v)


def profile_summary(profile_dir: Path, top: int = 18) -> str:
    """The top functions by own time of every .prof file in ``profile_dir``."""
    import io
    import pstats

    parts = []
    for prof in sorted(profile_dir.glob("*.prof")):
        buf = io.StringIO()
        st = pstats.Stats(str(prof), stream=buf)
        st.sort_stats("tottime").print_stats(top)
        total = getattr(st, "total_tt", 0.0)
        parts.append(f"===== {prof.name} (total {total:.2f}s) =====\n{_trim_pstats(buf.getvalue())}")
    return "\n".join(parts)


def _trim_pstats(text: str) -> str:
    keep, started = [], False
    for line in text.splitlines():
        if "ncalls" in line:
            started = True
        if started and line.strip():
            keep.append(line.replace(str(ROOT) + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", ""))
    return "\n".join(keep)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny counts (smoke run)")
    ap.add_argument("--no-baselines", action="store_true", help="skip Redis / JetStream")
    ap.add_argument("--repeats", type=int, default=1, help="runs per scenario; the median is reported")
    ap.add_argument("--only", action="append", choices=["batch_1000", "per_tick", "latency"],
                    help="run only this scenario (repeatable)")
    ap.add_argument("--no-replay", action="store_true", help="skip replay of the batch_1000 log")
    ap.add_argument("--batch-rows", type=int, default=None, help=f"batch_1000 rows (default {BATCH_ROWS:,})")
    ap.add_argument("--ticks", type=int, default=None, help=f"per_tick ticks (default {TICKS:,})")
    ap.add_argument("--latency-rate", type=int, default=None, help=f"ticks/s (default {LATENCY_RATE:,})")
    ap.add_argument("--latency-seconds", type=float, default=None, help=f"default {LATENCY_SECONDS}")
    ap.add_argument("--fsync", default=FSYNC, help=f"TP --fsync policy (default {FSYNC})")
    ap.add_argument("--batch-ms", type=float, default=0.0, help="TP --batch-ms (default 0: zero-latency)")
    ap.add_argument("--compress", action="store_true", help="TP --compress (lz4 log chunks)")
    ap.add_argument("--tp-arg", action="append", metavar="ARG",
                    help="extra `tick tp` argument, repeatable (e.g. --tp-arg=--sub-buffer --tp-arg=268435456)")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="cProfile TP, publisher and subscriber; .prof files and profile.txt into DIR")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind: the context managers stop every child

    signal.signal(signal.SIGTERM, on_term)
    counts = Counts.make(args.quick, args)
    tp_options = TPOptions(args.fsync, args.batch_ms, args.compress, tuple(args.tp_arg or ()))
    repeats = max(1, args.repeats)
    result: dict[str, Any] = {
        "machine": _machine(),
        "versions": _versions(),
        "loadavg_before": list(os.getloadavg()),
        "config": {"quick": args.quick, "repeats": repeats, "batch_rows": counts.batch_rows, "ticks": counts.ticks,
                   "latency_rate": counts.latency_rate, "latency_seconds": counts.latency_seconds,
                   "tp_args": tp_options.argv(), "profile": bool(args.profile)},
    }
    t_start = time.monotonic()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tp-bench-e2e-", ignore_cleanup_errors=True) as tmp:
        result["scenarios"] = run_scenarios(counts, repeats, Path(tmp), tp_options,
                                            set(args.only) if args.only else None,
                                            args.profile, replay=not args.no_replay)
    base = None
    if not args.no_baselines:
        from bench import baselines

        _log("baselines (Redis Streams, NATS JetStream)")
        base = baselines.run_all(args.quick, blob_rows=counts.batch_rows if not args.quick else None,
                                 repeats=repeats)
        result["baselines"] = base
    result["ratios"], result["goals"] = summarize(result["scenarios"], base)
    result["loadavg_after"] = list(os.getloadavg())
    result["wall_seconds"] = time.monotonic() - t_start
    if args.profile is not None:
        text = profile_summary(args.profile)
        (args.profile / "profile.txt").write_text(text)
        result["profile_summary"] = str(args.profile / "profile.txt")
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    if not args.json:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
