"""Shared fixtures: real tickerplant processes on ephemeral ports, and helpers around them.

``tp_process(*args)`` starts ``tick tp --port 0 --log-dir <tmp> *args`` as a child process,
waits (bounded) for the one JSON "listening" line it prints on stdout and returns a
:class:`TPProcess`. ``tp_process.again(tp)`` starts a new process on the same log
directory (and, by default, the same port and arguments). ``tp_process.fails(...)``
runs one that is expected to refuse to start and returns its exit code and stderr.
Every process started is killed at the end of the test, whatever happened.

:class:`Collector` runs a blocking :class:`~tickerplant.Subscriber` in a thread and
records what it yields, so tests can wait (with a timeout) for what they expect.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tickerplant import EndOfDay, Message, Subscriber

REPO = Path(__file__).resolve().parents[1]
_BIN = Path(sys.executable).parent
TICK = str(_BIN / "tick") if (_BIN / "tick").exists() else str(REPO / ".venv" / "bin" / "tick")
START_TIMEOUT = 30.0  # seconds for a TP to print its "listening" line (imports take ~0.5 s)


class TPStartError(AssertionError):
    """The tickerplant exited (or stayed silent) instead of printing its listening line."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message}\n--- stderr ---\n{stderr[-4000:]}")
        self.returncode = returncode
        self.stderr = stderr


class ServiceProcess:
    """One running ``tick`` child process (tp, rdb, hdb) that printed its JSON "listening" line."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], args: tuple[str, ...],
                 stderr_path: Path) -> None:
        self.proc = proc
        self.info = info
        self.address: str = info["listening"]
        self.port = int(self.address.rpartition(":")[2])
        self.args = args
        self.stderr_path = stderr_path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pid={self.proc.pid}, {self.address}, tick {' '.join(self.args[:1])})"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipes()

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown) and wait at most ``timeout`` s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self!r} did not exit within {timeout}s of SIGTERM\n{self.stderr()}") from None
        self._close_pipes()
        return rc

    def _close_pipes(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class TPProcess(ServiceProcess):
    """One running ``tick tp`` child process."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], log_dir: Path, args: tuple[str, ...],
                 stderr_path: Path) -> None:
        super().__init__(proc, info, args, stderr_path)
        self.log_dir = log_dir
        self.log = Path(info["log"])  # today's log file, as the TP reported it
        self.seq = int(info["seq"])  # last seq in that log when the TP started


def read_first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    """The first line on the child's stdout, or None if it exits or times out first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not sel.select(remaining):
                continue
            data = os.read(fd, 4096)
            if not data:
                return None
            buf += data
    return buf.split(b"\n", 1)[0]


class TPFactory:
    """Starts tickerplants for one test and cleans every one of them up."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[TPProcess] = []
        self._n = 0

    def _paths(self) -> tuple[Path, Path]:
        self._n += 1
        return self.base / "tplogs", self.base / f"tp{self._n}.stderr"

    def _popen(self, log_dir: Path, port: int, args: tuple[str, ...], stderr_path: Path) -> subprocess.Popen[bytes]:
        cmd = [TICK, "tp", "--port", str(port), "--log-dir", str(log_dir), *args]
        with open(stderr_path, "wb") as err:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=self.base)

    def __call__(self, *args: str, log_dir: Path | None = None, port: int = 0,
                 timeout: float = START_TIMEOUT) -> TPProcess:
        default_dir, stderr_path = self._paths()
        log_dir = log_dir or default_dir
        proc = self._popen(log_dir, port, args, stderr_path)
        line = read_first_line(proc, timeout)
        if line is None:
            try:  # stdout closed (it is exiting) or it said nothing in time
                rc: int | None = proc.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
                proc.kill()
                proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()
            what = f"exited with code {rc}" if rc is not None else f"printed nothing within {timeout}s"
            raise TPStartError(f"tick tp {' '.join(args)} {what}", rc, stderr_path.read_text(errors="replace"))
        tp = TPProcess(proc, json.loads(line), log_dir, args, stderr_path)
        self.procs.append(tp)
        return tp

    def again(self, tp: TPProcess, *args: str, same_port: bool = True, timeout: float = START_TIMEOUT) -> TPProcess:
        """Start a new TP on ``tp``'s log directory (``tp`` must be stopped); by default same port and args."""
        assert not tp.alive, "stop the old tickerplant first"
        return self(*(args or tp.args), log_dir=tp.log_dir, port=tp.port if same_port else 0, timeout=timeout)

    def fails(self, *args: str, log_dir: Path, timeout: float = START_TIMEOUT) -> tuple[int, str]:
        """Run a TP that must refuse to start; returns (exit code, stderr)."""
        with pytest.raises(TPStartError) as info:
            self(*args, log_dir=log_dir, timeout=timeout)
        err = info.value
        assert err.returncode is not None, f"the tickerplant neither started nor exited: {err}"
        return err.returncode, err.stderr

    def cleanup(self) -> None:
        for tp in self.procs:
            with contextlib.suppress(Exception):
                tp.kill()


@pytest.fixture
def tp_process(tmp_path: Path) -> Iterator[TPFactory]:
    factory = TPFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def tp(tp_process: TPFactory) -> TPProcess:
    """One tickerplant with default settings."""
    return tp_process()


# --- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago (for restarting a TP on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


T0 = 1_700_000_000_000_000_000  # an event time, ns


def trades(n: int, start: int = 0, syms: tuple[str, ...] = ("BTCUSD", "ETHUSD", "SOLUSD"),
           t0: int = T0) -> dict[str, Any]:
    """``n`` trade rows as a dict of columns; row ``i`` has price ``start + i`` and trade_id ``t{start+i}``."""
    idx = np.arange(start, start + n)
    return {
        "time": (t0 + idx * 1000).astype(np.int64),
        "sym": [syms[i % len(syms)] for i in range(start, start + n)],
        "price": idx.astype(np.float64),
        "size": np.ones(n),
        "trade_id": [f"t{i}" for i in idx],
    }


def trade_ids(batches: list[pa.RecordBatch] | list[Message]) -> list[str]:
    out: list[str] = []
    for b in batches:
        data = b.data if isinstance(b, Message) else b
        out += data.column("trade_id").to_pylist()
    return out


class Collector:
    """A blocking Subscriber iterated in a background thread; what it yields is kept in ``items``."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.items: list[Message | EndOfDay] = []
        self.error: BaseException | None = None
        self.done = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            for event in self.sub.events():
                with self.cond:
                    self.items.append(event)
                    self.cond.notify_all()
        except BaseException as exc:
            error = exc
        finally:
            with self.cond:
                self.error, self.done = error, True
                self.cond.notify_all()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def messages(self) -> list[Message]:
        with self.cond:
            return [m for m in self.items if isinstance(m, Message)]

    @property
    def rows(self) -> int:
        return sum(m.data.num_rows for m in self.messages)

    @property
    def last_seq(self) -> int:
        msgs = self.messages
        return msgs[-1].seq if msgs else 0

    def wait(self, pred: Callable[[Collector], Any], timeout: float = 20.0, what: str = "") -> None:
        """Wait until ``pred(self)`` holds; fail on timeout or if the subscriber raised."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if pred(self):
                    return
                if self.error is not None:
                    raise AssertionError(f"subscriber failed while waiting for {what}: {self.error!r}") from self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or pred}; have {len(self.items)} events, "
                        f"the last: {self.items[-1] if self.items else None!r:.200}"
                    )
                self.cond.wait(min(remaining, 0.05))

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        self.wait(lambda c: c.sub.state.subscribed, timeout, "SUBSCRIBED")

    def wait_rows(self, n: int, timeout: float = 20.0) -> None:
        self.wait(lambda c: c.rows >= n, timeout, f"{n} rows")

    def close(self) -> None:
        self.sub.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "subscriber thread did not stop after close()"


@pytest.fixture
def collect() -> Iterator[Callable[..., Collector]]:
    """``collect(address, **Subscriber kwargs)`` -> a started Collector, closed at the end of the test."""
    made: list[Collector] = []

    def start(address: str, **kwargs: Any) -> Collector:
        c = Collector(Subscriber(address, **kwargs))
        made.append(c)
        return c

    try:
        yield start
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                c.close()


# --- other tick processes (rdb, hdb) --------------------------------------------------------


class ServiceFactory:
    """``services("rdb", "--tp", addr, ...)`` starts ``tick rdb ...`` and waits for its listening line."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[ServiceProcess] = []

    def __call__(self, *args: str, timeout: float = START_TIMEOUT) -> ServiceProcess:
        stderr_path = self.base / f"{args[0]}{len(self.procs)}.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([TICK, *args], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=self.base)
        line = read_first_line(proc, timeout)
        if line is None:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"tick {' '.join(args)} did not start:\n{stderr_path.read_text(errors='replace')}")
        service = ServiceProcess(proc, json.loads(line), args, stderr_path)
        self.procs.append(service)
        return service

    def cleanup(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.kill()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[ServiceFactory]:
    factory = ServiceFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()
