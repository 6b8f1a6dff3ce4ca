"""Peer-system baselines: Redis Streams (AOF) and NATS JetStream (file storage).

What this measures
------------------
End-to-end *rows per second* through a real broker, from one publisher process to one
consumer process, on this machine (loopback only).  Our own benchmark runs this in the same
session and reports ratios against these figures, so both sides share the same hardware,
kernel, Python and load.

For each system two scenarios carry the same rows:

* ``blob_1000``  -- every message is an opaque ``bytes`` blob holding ``rows_per_msg=1000``
  rows (``1000 * row_bytes`` bytes; ``row_bytes`` defaults to 90, about one trade row in
  Arrow IPC).  This is the "batched feed handler" case.
* ``single_row`` -- every message carries exactly one row (``row_bytes`` bytes).  The
  publisher issues one broker operation per row; it may use the client library's ordinary
  pipelined / asynchronous transport, exactly as a fair user would, but it never packs
  several rows into one broker message.

rows/s = total rows / (time from the publisher's first send to the moment the consumer has
received the last message).  Both instants are read with ``time.perf_counter()``, which on
Linux is ``CLOCK_MONOTONIC`` and therefore comparable across processes.  Process start-up,
connection set-up, stream/consumer creation and server start-up are all *outside* the timed
window: both processes connect and report ready, then the parent fires a "go" event.

Each scenario gets a freshly started server with an empty data directory in a temporary
directory, bound to an ephemeral free port on 127.0.0.1; the server is killed afterwards even
if the measurement raises (and dies with us via ``PR_SET_PDEATHSIG`` if we are SIGKILLed).

Durability settings (deliberately comparable, neither is "fsync every message"):

* Redis: ``appendonly yes``, ``appendfsync everysec`` (write(2) per event-loop iteration,
  fsync once a second), RDB snapshots off (``save ""``).
* NATS JetStream: a stream with ``storage=file``, one replica.  The file store writes every
  message to its block files as it arrives and fsyncs periodically, not per message
  (a configurable ``sync_interval`` / ``always`` only arrived after the 2.9 series that
  Debian bookworm ships).

Clients: redis-py and nats-py (the Python clients a Python user would use); the NATS
processes run on uvloop when it is importable, as our own tickerplant does.  For single-row
traffic the Python client's per-message cost is a large part of what is measured; that is
deliberate, since our tick system is also Python and is compared on the same footing.

Exact method per system/scenario (``publisher -> broker -> consumer``):

* redis / blob_1000:  ``XADD stream * d <blob>``, one XADD per blob, sent through
  ``pipeline(transaction=False)`` with ``REDIS_BLOB_PIPELINE`` (10) commands per execute()
  (unpipelined, one round trip per blob, was ~2x slower here).
  Consumer: ``XREAD COUNT 1000 BLOCK 1000 STREAMS stream <last-id>`` in a loop.
* redis / single_row: one ``XADD`` per row, ``pipeline(transaction=False)`` with 1,000
  commands per execute() (one round trip per 1,000 XADDs, but 1,000 stream entries).
  Consumer: as above.
* jetstream / both:   ``js.publish_async`` per message (async acks, at most
  ``publish_async_max_pending`` outstanding), then ``publish_async_completed()``; every
  ack is checked for errors.  Consumer: an ordered push consumer (ack policy none, flow
  control) with a message callback.  Against a pull consumer (ack none, ``fetch(1000)``,
  capped at ~8 MB per fetch) it was ~1.6-2x faster for single rows and equal within noise
  for blobs under nats-py, so it is the default (``NATS_CONSUMER``); "pull" remains
  available via ``measure_jetstream(..., consumer="pull")``.

Noise: the machine has 2 cores and the three busy processes (server, publisher, consumer)
already contend for them; anything else running skews a single run by tens of percent.
Use ``repeats`` (median reported, all samples kept) when the figures matter.

Run ``python bench/baselines.py`` (``--quick`` for a smoke run, ``--json`` for JSON only).
If a server cannot be installed or started, that system is reported with
``"available": false`` and an ``"error"`` string; no number is ever invented.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

LOOPBACK = "127.0.0.1"
ROW_BYTES = 90

#: Debian package -> binary it must provide.
PACKAGES: dict[str, str] = {"redis-server": "redis-server", "nats-server": "nats-server"}

# Default row counts: each measurement stays well under ~20 s on the 2-core machine.
BLOB_ROWS = 5_000_000
SINGLE_ROWS = 150_000  # JetStream single-row runs ~12k rows/s here: ~12 s
QUICK_BLOB_ROWS = 50_000
QUICK_SINGLE_ROWS = 5_000
BLOB_ROWS_PER_MSG = 1000

REDIS_STREAM_KEY = "ticks"
REDIS_SINGLE_PIPELINE = 1000
REDIS_BLOB_PIPELINE = 10
REDIS_XREAD_COUNT = 1000

NATS_STREAM = "BENCH"
NATS_SUBJECT = "bench.ticks"
NATS_MAX_PENDING = 4000
NATS_PULL_BATCH = 1000
NATS_PULL_MAX_BYTES = 8 * 1024 * 1024
NATS_CONSUMER = "ordered"  # or "pull"

#: Upper bound on one timed run (publisher start .. consumer done), seconds.
RUN_TIMEOUT = 180.0
READY_TIMEOUT = 30.0


class BaselineUnavailable(RuntimeError):
    """A peer system cannot be installed or started on this machine."""


class BenchError(RuntimeError):
    """A measurement failed (process died, timed out, lost messages, broker error)."""


# --------------------------------------------------------------------------- install


def find_binary(name: str) -> str | None:
    """Path to ``name`` on PATH or in the usual sbin/bin dirs (nats-server is in /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _apt_install(packages: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def ensure_installed(packages: dict[str, str] | None = None) -> dict[str, str]:
    """Make sure the server binaries exist, installing Debian packages with apt-get if not.

    Returns ``{binary_name: path}``.  Runs ``apt-get update`` only if the first install
    attempt fails.  Raises :class:`BaselineUnavailable` if a binary is missing and we are
    not root, apt-get is absent, or the install fails.
    """
    packages = PACKAGES if packages is None else packages
    missing = [pkg for pkg, binary in packages.items() if find_binary(binary) is None]
    if missing:
        if os.geteuid() != 0:
            raise BaselineUnavailable(
                f"missing {', '.join(missing)} and not root: run 'sudo apt-get install -y {' '.join(missing)}'"
            )
        if shutil.which("apt-get") is None:
            raise BaselineUnavailable(f"missing {', '.join(missing)} and apt-get not found")
        res = _apt_install(missing)
        if res.returncode != 0:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            res = _apt_install(missing)
        if res.returncode != 0:
            raise BaselineUnavailable(
                f"apt-get install {' '.join(missing)} failed (rc={res.returncode}): {res.stderr.strip()[-2000:]}"
            )
    paths: dict[str, str] = {}
    for pkg, binary in packages.items():
        path = find_binary(binary)
        if path is None:
            raise BaselineUnavailable(f"package {pkg} installed but binary {binary} not found")
        paths[binary] = path
    return paths


def package_version(package: str) -> str | None:
    """Installed Debian package version (``dpkg-query``), or None."""
    try:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None


def server_version(binary: str) -> str | None:
    """First line of ``<binary> --version``, or None."""
    path = find_binary(binary)
    if path is None:
        return None
    res = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    out = (res.stdout or res.stderr).strip()
    return out.splitlines()[0] if out else None


# --------------------------------------------------------------------------- servers


@dataclass
class ServerHandle:
    """A broker we started: where it listens and how to reach its log."""

    name: str
    host: str
    port: int
    workdir: str
    log_path: str
    proc: subprocess.Popen[bytes]

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")


def free_port(host: str = LOOPBACK) -> int:
    """An ephemeral port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _server(
    name: str,
    argv_for: Callable[[int, str], list[str]],
    ready: Callable[[ServerHandle], bool],
    startup_timeout: float,
) -> Iterator[ServerHandle]:
    """Start ``argv_for(port, workdir)`` in a temp dir, wait for ``ready``, always stop it."""
    with tempfile.TemporaryDirectory(prefix=f"tp-bench-{name}-", ignore_cleanup_errors=True) as tmp:
        last_err = ""
        for attempt in range(3):  # retry: the free port may be taken between probe and bind
            port = free_port()
            log_path = os.path.join(tmp, f"{name}-{attempt}.log")
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    argv_for(port, tmp),
                    cwd=tmp,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # server dies with us even on SIGKILL
                    start_new_session=True,
                )
            handle = ServerHandle(name, LOOPBACK, port, tmp, log_path, proc)
            try:
                deadline = time.monotonic() + startup_timeout
                while time.monotonic() < deadline and proc.poll() is None:
                    if ready(handle):
                        break
                    time.sleep(0.05)
                else:
                    last_err = (
                        f"{name} exited rc={proc.returncode}"
                        if proc.poll() is not None
                        else f"{name} not ready after {startup_timeout}s"
                    ) + f"; log tail:\n{handle.log_tail()}"
                    continue
                yield handle
                return
            finally:
                _stop(proc)
        raise BaselineUnavailable(last_err)


def _redis_ready(h: ServerHandle) -> bool:
    import redis

    try:
        r = redis.Redis(host=h.host, port=h.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            return bool(r.ping())
        finally:
            r.close()
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False


@contextlib.contextmanager
def redis_server(startup_timeout: float = 15.0) -> Iterator[ServerHandle]:
    """A private redis-server: loopback, ephemeral port, AOF on, fsync everysec, no RDB."""
    binary = ensure_installed({"redis-server": "redis-server"})["redis-server"]

    def argv(port: int, tmp: str) -> list[str]:
        return [
            binary,
            "--bind", LOOPBACK,
            "--port", str(port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", tmp,
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", "",
            "--databases", "1",
        ]  # fmt: skip

    with _server("redis", argv, _redis_ready, startup_timeout) as h:
        yield h


def _nats_ready(h: ServerHandle) -> bool:
    try:
        socket.create_connection((h.host, h.port), timeout=0.5).close()
    except OSError:
        return False

    async def check() -> bool:
        import nats

        nc = await nats.connect(
            f"nats://{h.host}:{h.port}", connect_timeout=1, allow_reconnect=False,
            max_reconnect_attempts=0,
        )  # fmt: skip
        try:
            await nc.jetstream().account_info()
            return True
        finally:
            await nc.close()

    try:
        return asyncio.run(check())
    except Exception:
        return False


@contextlib.contextmanager
def nats_server(startup_timeout: float = 15.0) -> Iterator[ServerHandle]:
    """A private nats-server with JetStream (store dir in tmp) on loopback, ephemeral port."""
    binary = ensure_installed({"nats-server": "nats-server"})["nats-server"]

    def argv(port: int, tmp: str) -> list[str]:
        return [
            binary,
            "-a", LOOPBACK,
            "-p", str(port),
            "-n", "tp-bench",
            "-js",
            "-sd", os.path.join(tmp, "jetstream"),
        ]  # fmt: skip

    with _server("nats", argv, _nats_ready, startup_timeout) as h:
        yield h


# --------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Workload:
    """What one timed run carries."""

    host: str
    port: int
    n_msgs: int
    rows_per_msg: int
    row_bytes: int = ROW_BYTES
    batch: int = 1000  # publisher pipeline depth (redis) / max pending acks (nats)
    read_count: int = 1000  # consumer XREAD COUNT (redis) / fetch batch (nats pull)
    consumer: str = NATS_CONSUMER  # nats only: "ordered" | "pull"
    timeout: float = RUN_TIMEOUT

    @property
    def msg_bytes(self) -> int:
        return self.rows_per_msg * self.row_bytes


def _report(q: Any, role: str, fn: Callable[[], dict[str, Any]]) -> None:
    _die_with_parent()  # a publisher/consumer never outlives the harness
    try:
        q.put((role, fn()))
    except BaseException as e:  # report, never hang the parent
        q.put((role, {"error": f"{type(e).__name__}: {e}"}))


def _run_pair(
    publisher: Callable[..., None],
    consumer: Callable[..., None],
    wl: Workload,
    server: ServerHandle | None = None,
) -> dict[str, Any]:
    """Run consumer then publisher in two spawned processes; return the timed result.

    On failure the BenchError carries the tail of the server's log.
    """
    try:
        return _run_pair_inner(publisher, consumer, wl)
    except BenchError as e:
        if server is None:
            raise
        raise BenchError(f"{e}; {server.name} log tail:\n{server.log_tail(1500)}") from e


def _run_pair_inner(
    publisher: Callable[..., None],
    consumer: Callable[..., None],
    wl: Workload,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    cons_ready, pub_ready, go = ctx.Event(), ctx.Event(), ctx.Event()
    cons = ctx.Process(target=consumer, args=(wl, cons_ready, q), name="bench-consumer")
    pub = ctx.Process(target=publisher, args=(wl, pub_ready, go, q), name="bench-publisher")
    results: dict[str, dict[str, Any]] = {}
    try:
        cons.start()
        _wait_ready(cons_ready, cons, q, results, "consumer")
        pub.start()
        _wait_ready(pub_ready, pub, q, results, "publisher")
        go.set()
        deadline = time.monotonic() + wl.timeout + 30
        while len(results) < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out; got {sorted(results)}")
            try:
                role, res = q.get(timeout=min(left, 1.0))
            except queue.Empty:
                for p in (cons, pub):
                    if not p.is_alive() and p.name.split("-")[1] not in results:
                        raise BenchError(f"{p.name} died (exitcode {p.exitcode})") from None
                continue
            results[role] = res
            if "error" in res:
                raise BenchError(f"{role}: {res['error']}")
    finally:
        go.set()
        for p in (pub, cons):
            if p.pid is not None:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
        q.close()
        q.join_thread()

    c, p_ = results["consumer"], results["publisher"]
    if c["msgs"] != wl.n_msgs or c["bytes"] != wl.n_msgs * wl.msg_bytes:
        raise BenchError(f"consumer got {c['msgs']} msgs/{c['bytes']} B, expected {wl.n_msgs}")
    elapsed = c["t_last"] - p_["t0"]
    rows = wl.n_msgs * wl.rows_per_msg
    return {
        "rows": rows,
        "messages": wl.n_msgs,
        "rows_per_msg": wl.rows_per_msg,
        "msg_bytes": wl.msg_bytes,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "mb_per_s": rows * wl.row_bytes / elapsed / 1e6,
        "publisher_seconds": p_["t_done"] - p_["t0"],
    }


def _wait_ready(ev: Any, proc: Any, q: Any, results: dict[str, dict[str, Any]], role: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ev.wait(0.1):
        with contextlib.suppress(queue.Empty):
            r, res = q.get_nowait()
            results[r] = res
            if "error" in res:
                raise BenchError(f"{r}: {res['error']}")
        if not proc.is_alive():
            raise BenchError(f"{role} died before ready (exitcode {proc.exitcode})")
        if time.monotonic() > deadline:
            raise BenchError(f"{role} not ready after {READY_TIMEOUT}s")


def _payload(wl: Workload) -> bytes:
    return os.urandom(wl.msg_bytes)  # opaque, incompressible


# --------------------------------------------------------------------------- redis


def _redis_publisher(wl: Workload, ready: Any, go: Any, q: Any) -> None:
    def run() -> dict[str, Any]:
        import redis

        r = redis.Redis(host=wl.host, port=wl.port, decode_responses=False)
        r.ping()
        payload = _payload(wl)
        fields: dict[bytes, bytes] = {b"d": payload}
        key = REDIS_STREAM_KEY
        ready.set()
        if not go.wait(READY_TIMEOUT):
            raise BenchError("no go signal")
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        pending = 0
        for _ in range(wl.n_msgs):
            pipe.xadd(key, fields)  # type: ignore[arg-type]
            pending += 1
            if pending == wl.batch:
                pipe.execute()
                pending = 0
        if pending:
            pipe.execute()
        t_done = time.perf_counter()
        r.close()
        return {"t0": t0, "t_done": t_done}

    _report(q, "publisher", run)


def _redis_consumer(wl: Workload, ready: Any, q: Any) -> None:
    def run() -> dict[str, Any]:
        import redis

        r = redis.Redis(host=wl.host, port=wl.port, decode_responses=False, socket_timeout=30)
        r.ping()
        key = REDIS_STREAM_KEY
        last: bytes = b"0-0"
        n = nbytes = 0
        t_last = 0.0
        ready.set()
        deadline = time.monotonic() + READY_TIMEOUT + wl.timeout
        while n < wl.n_msgs:
            resp = r.xread({key: last}, count=wl.read_count, block=1000)
            if not resp:
                if time.monotonic() > deadline:
                    raise BenchError(f"timeout after {n} messages")
                continue
            entries = resp[0][1]
            n += len(entries)
            nbytes += sum(len(f[b"d"]) for _, f in entries)
            last = entries[-1][0]
        t_last = time.perf_counter()
        r.close()
        return {"t_last": t_last, "msgs": n, "bytes": nbytes}

    _report(q, "consumer", run)


def _redis_check_config(h: ServerHandle) -> dict[str, str]:
    import redis

    r = redis.Redis(host=h.host, port=h.port, decode_responses=True)
    try:
        cfg = {**r.config_get("appendonly"), **r.config_get("appendfsync")}
        cfg["aof_enabled"] = str(r.info("persistence").get("aof_enabled"))
    finally:
        r.close()
    if cfg.get("appendonly") != "yes" or cfg.get("appendfsync") != "everysec":
        raise BenchError(f"redis persistence not as intended: {cfg}")
    return cfg


def measure_redis(rows: int, rows_per_msg: int, row_bytes: int = ROW_BYTES) -> dict[str, Any]:
    """One Redis Streams run on a fresh AOF (everysec) server; returns the timed result."""
    n_msgs = max(1, rows // rows_per_msg)
    batch = REDIS_SINGLE_PIPELINE if rows_per_msg == 1 else REDIS_BLOB_PIPELINE
    with redis_server() as h:
        cfg = _redis_check_config(h)
        wl = Workload(h.host, h.port, n_msgs, rows_per_msg, row_bytes, batch, REDIS_XREAD_COUNT)
        res = _run_pair(_redis_publisher, _redis_consumer, wl, h)
        res["pipeline_depth"] = batch
        res["server_config"] = cfg
        return res


# --------------------------------------------------------------------------- nats


def _nats_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _nats_connect(wl: Workload) -> Any:
    import nats

    return await nats.connect(
        f"nats://{wl.host}:{wl.port}",
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=5,
        pending_size=8 * 1024 * 1024,
    )


def _nats_publisher(wl: Workload, ready: Any, go: Any, q: Any) -> None:
    async def main() -> dict[str, Any]:
        nc = await _nats_connect(wl)
        js = nc.jetstream(publish_async_max_pending=wl.batch)
        payload = _payload(wl)
        subject = NATS_SUBJECT
        await js.account_info()
        ready.set()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, go.wait, READY_TIMEOUT):
            raise BenchError("no go signal")
        t0 = time.perf_counter()
        futs = [await js.publish_async(subject, payload, wait_stall=wl.timeout) for _ in range(wl.n_msgs)]
        await asyncio.wait_for(js.publish_async_completed(), timeout=wl.timeout)
        t_done = time.perf_counter()
        errors = [f.exception() for f in futs if f.exception() is not None]
        await nc.close()
        if errors:
            raise BenchError(f"{len(errors)} publish errors, first: {errors[0]!r}")
        return {"t0": t0, "t_done": t_done}

    _nats_loop()
    _report(q, "publisher", lambda: asyncio.run(main()))


def _nats_consumer(wl: Workload, ready: Any, q: Any) -> None:
    async def main() -> dict[str, Any]:
        import nats.errors
        from nats.js import api

        nc = await _nats_connect(wl)
        js = nc.jetstream()
        n = nbytes = 0
        t_last = 0.0
        deadline = READY_TIMEOUT + wl.timeout
        if wl.consumer == "ordered":
            done = asyncio.Event()

            async def cb(msg: Any) -> None:
                nonlocal n, nbytes, t_last
                n += 1
                nbytes += len(msg.data)
                if n >= wl.n_msgs:
                    t_last = time.perf_counter()
                    done.set()

            await js.subscribe(
                NATS_SUBJECT,
                stream=NATS_STREAM,
                cb=cb,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
                pending_msgs_limit=4 * wl.n_msgs + 1024,
                pending_bytes_limit=2 * 1024**3,
            )
            ready.set()
            await asyncio.wait_for(done.wait(), timeout=deadline)
        elif wl.consumer == "pull":
            cfg = api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE,
                deliver_policy=api.DeliverPolicy.ALL,
            )
            psub = await js.pull_subscribe(
                NATS_SUBJECT, stream=NATS_STREAM, config=cfg,
                pending_msgs_limit=4 * wl.read_count + 1024, pending_bytes_limit=2 * 1024**3,
            )  # fmt: skip
            ready.set()
            end = time.monotonic() + deadline
            while n < wl.n_msgs:
                try:
                    msgs = await psub.fetch(min(wl.read_count, wl.n_msgs - n), timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    if time.monotonic() > end:
                        raise BenchError(f"timeout after {n} messages") from None
                    continue
                n += len(msgs)
                nbytes += sum(len(m.data) for m in msgs)
            t_last = time.perf_counter()
        else:
            raise ValueError(f"unknown consumer {wl.consumer!r}")
        await nc.close()
        return {"t_last": t_last, "msgs": n, "bytes": nbytes}

    _nats_loop()
    _report(q, "consumer", lambda: asyncio.run(main()))


def _nats_create_stream(h: ServerHandle, max_msg_size: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        import nats
        from nats.js import api

        nc = await nats.connect(f"nats://{h.host}:{h.port}", allow_reconnect=False)
        try:
            js = nc.jetstream()
            info = await js.add_stream(
                api.StreamConfig(
                    name=NATS_STREAM,
                    subjects=[NATS_SUBJECT],
                    storage=api.StorageType.FILE,
                    num_replicas=1,
                    retention=api.RetentionPolicy.LIMITS,
                    max_msg_size=max_msg_size,
                )
            )
            storage = str(getattr(info.config.storage, "value", info.config.storage))
            if storage != api.StorageType.FILE.value:
                raise BenchError(f"stream storage is {storage!r}, expected file")
            return {"storage": storage, "max_payload": nc.max_payload}
        finally:
            await nc.close()

    return asyncio.run(main())


def measure_jetstream(
    rows: int, rows_per_msg: int, row_bytes: int = ROW_BYTES, consumer: str = NATS_CONSUMER
) -> dict[str, Any]:
    """One NATS JetStream run on a fresh file-storage stream; returns the timed result."""
    n_msgs = max(1, rows // rows_per_msg)
    # A pull fetch of 1,000 x 90 KB blobs asks the server for 90 MB in one burst, which can
    # trip its slow-consumer write deadline while the Python client parses; cap a fetch at
    # ~NATS_PULL_MAX_BYTES (only affects the optional "pull" consumer).
    pull_batch = max(1, min(NATS_PULL_BATCH, NATS_PULL_MAX_BYTES // (rows_per_msg * row_bytes)))
    with nats_server() as h:
        cfg = _nats_create_stream(h, rows_per_msg * row_bytes)
        if rows_per_msg * row_bytes > cfg["max_payload"]:
            raise BenchError(f"message {rows_per_msg * row_bytes} B > max_payload {cfg}")
        wl = Workload(
            h.host, h.port, n_msgs, rows_per_msg, row_bytes,
            batch=NATS_MAX_PENDING, read_count=pull_batch, consumer=consumer,
        )  # fmt: skip
        res = _run_pair(_nats_publisher, _nats_consumer, wl, h)
        res["publish_async_max_pending"] = NATS_MAX_PENDING
        res["consumer"] = consumer
        if consumer == "pull":
            res["pull_batch"] = pull_batch
        res["server_config"] = cfg
        return res


# --------------------------------------------------------------------------- driver


def _system(
    name: str,
    package: str,
    measure: Callable[[int, int, int], dict[str, Any]],
    blob_rows: int,
    single_rows: int,
    row_bytes: int,
    repeats: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "available": True,
        "package": package,
        "package_version": None,
        "server_version": None,
        "blob_1000_rows_per_s": None,
        "single_row_per_s": None,
    }
    try:
        ensure_installed({package: PACKAGES[package]})
    except BaselineUnavailable as e:
        out["available"] = False
        out["error"] = str(e)
        return out
    out["package_version"] = package_version(package)
    out["server_version"] = server_version(PACKAGES[package])
    errors: dict[str, str] = {}
    for label, key, rows, rpm in (
        ("blob_1000", "blob_1000_rows_per_s", blob_rows, BLOB_ROWS_PER_MSG),
        ("single_row", "single_row_per_s", single_rows, 1),
    ):
        runs: list[dict[str, Any]] = []
        for _ in range(max(1, repeats)):
            try:
                runs.append(measure(rows, rpm, row_bytes))
            except Exception as e:  # one failed scenario must not lose the others' figures
                errors[label] = f"{type(e).__name__}: {e}"
        if not runs:
            continue
        runs.sort(key=lambda r: float(r["rows_per_s"]))
        res = runs[(len(runs) - 1) // 2]  # median (lower median for even counts)
        res["samples_rows_per_s"] = [r["rows_per_s"] for r in runs]
        out[key] = res["rows_per_s"]
        out[label] = res
    if errors:
        out["errors"] = errors
        if out["blob_1000_rows_per_s"] is None and out["single_row_per_s"] is None:
            out["available"] = False
    print(f"[baselines] {name}: done", file=sys.stderr)
    return out


def run_all(
    quick: bool = False,
    *,
    blob_rows: int | None = None,
    single_rows: int | None = None,
    row_bytes: int = ROW_BYTES,
    repeats: int = 1,
    systems: tuple[str, ...] = ("redis", "jetstream"),
) -> dict[str, Any]:
    """Measure every peer system; returns ``{"redis": {...}, "jetstream": {...}}``.

    Each system's dict has ``blob_1000_rows_per_s`` and ``single_row_per_s`` (float, or
    None if that scenario failed; the median over ``repeats`` runs), ``available``, versions, per-scenario details under
    ``blob_1000`` / ``single_row``, and ``error``/``errors`` when something failed.
    """
    if blob_rows is None:
        blob_rows = QUICK_BLOB_ROWS if quick else BLOB_ROWS
    if single_rows is None:
        single_rows = QUICK_SINGLE_ROWS if quick else SINGLE_ROWS
    table: dict[str, tuple[str, Callable[[int, int, int], dict[str, Any]]]] = {
        "redis": ("redis-server", measure_redis),
        "jetstream": ("nats-server", measure_jetstream),
    }
    out: dict[str, Any] = {}
    for name in systems:
        package, measure = table[name]
        out[name] = _system(name, package, measure, blob_rows, single_rows, row_bytes, repeats)
    return out


def format_table(results: dict[str, Any]) -> str:
    """A small fixed-width table of rows/s per system and scenario."""

    def cell(v: float | None) -> str:
        return f"{v:>14,.0f}" if v is not None else f"{'n/a':>14}"

    lines = [f"{'system':<10} {'version':<22} {'blob_1000 rows/s':>18} {'single_row rows/s':>18}"]
    for name, r in results.items():
        ver = r.get("package_version") or "unavailable"
        lines.append(
            f"{name:<10} {ver:<22} {cell(r.get('blob_1000_rows_per_s')):>18} {cell(r.get('single_row_per_s')):>18}"
        )
        for label, err in (r.get("errors") or {}).items():
            lines.append(f"  {label}: {err}")
        if r.get("error"):
            lines.append(f"  error: {r['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    ap.add_argument("--blob-rows", type=int, default=None)
    ap.add_argument("--single-rows", type=int, default=None)
    ap.add_argument("--row-bytes", type=int, default=ROW_BYTES)
    ap.add_argument("--repeats", type=int, default=1, help="runs per scenario; median reported")
    ap.add_argument("--only", choices=["redis", "jetstream"], action="append")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind so the context managers stop the servers

    signal.signal(signal.SIGTERM, on_term)
    results = run_all(
        args.quick,
        blob_rows=args.blob_rows,
        single_rows=args.single_rows,
        row_bytes=args.row_bytes,
        repeats=args.repeats,
        systems=tuple(args.only) if args.only else ("redis", "jetstream"),
    )
    print(json.dumps(results, indent=2, sort_keys=True))
    if not args.json:
        print(format_table(results))
    return 0 if all(r.get("available") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
