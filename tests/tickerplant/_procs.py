"""Real processes for the log and durability tests: a ``tick tp`` and a publisher script.

:class:`TPProcess` starts ``.venv/bin/tick tp --port P --log-dir DIR ...``, reads the one
JSON line it prints when ready (``{"listening": "127.0.0.1:PORT", "log": ..., "seq": N}``)
with a timeout, and can be stopped with SIGTERM (graceful) or SIGKILL. Its stderr goes to
a temporary file, shown when start-up fails. :func:`spawn_python` runs a function of this
module in a fresh interpreter (``python -c``), so a publisher is a separate process that a
test can keep running across TP restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import read_first_line

ROOT = Path(__file__).resolve().parents[2]
TICK = ROOT / ".venv" / "bin" / "tick"
PYTHON = ROOT / ".venv" / "bin" / "python"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class TPProcess:
    """A ``tick tp`` child process. Use as a context manager, or call :meth:`stop`."""

    def __init__(
        self,
        log_dir: str | Path,
        port: int = 0,
        args: Sequence[str] = (),
        timeout: float = 30.0,
        stderr_path: str | Path | None = None,
    ) -> None:
        """Start it and wait for its ready line. stderr is appended to ``stderr_path``
        (default: a temporary file, removed by :meth:`stop`)."""
        self.log_dir = Path(log_dir)
        self._own_stderr = stderr_path is None
        if stderr_path is None:
            fd, name = tempfile.mkstemp(prefix="tick-tp-", suffix=".stderr")
            os.close(fd)
            stderr_path = name
        self.stderr_path = Path(stderr_path)
        cmd = [str(TICK), "tp", "--port", str(port), "--log-dir", str(self.log_dir), *args]
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, env=_env()
            )
        assert self.proc.stdout is not None
        line = read_first_line(self.proc, timeout) or b""
        if not line:
            self.kill()
            text = self.stderr()
            if self._own_stderr:
                self.stderr_path.unlink(missing_ok=True)
            raise RuntimeError(f"`{' '.join(cmd)}` did not report ready within {timeout}s:\n{text}")
        self.ready: dict[str, Any] = json.loads(line)
        host, _, port_text = str(self.ready["listening"]).rpartition(":")
        self.host = host
        self.port = int(port_text)
        self.address = f"{host}:{self.port}"
        self.log_path = Path(self.ready["log"])

    def stderr(self) -> str:
        """What the TP has logged so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL (``kill -9``) and reap; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self._reap(10.0)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown: commit, fsync, close); SIGKILL if it overstays ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self._reap(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def _reap(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stop(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL) and release its files."""
        try:
            if self.proc.poll() is None:
                self.terminate()
            else:
                self._reap(1.0)
        finally:
            if self._own_stderr:
                self.stderr_path.unlink(missing_ok=True)

    def __enter__(self) -> TPProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def tp_process(log_dir: str | Path, port: int = 0, args: Sequence[str] = ()) -> Iterator[TPProcess]:
    tp = TPProcess(log_dir, port, args)
    try:
        yield tp
    finally:
        tp.stop()


def spawn_python(func: str, *args: str, stdout: Any = subprocess.PIPE, stderr: Any = None) -> subprocess.Popen[bytes]:
    """Run ``tests.tickerplant._procs.<func>(argv)`` in a fresh interpreter.

    stdout is a pipe by default; stderr is inherited unless a file is given (a pipe that
    nobody reads could fill up and stall the child).
    """
    code = f"import sys; from tests.tickerplant._procs import {func}; {func}(sys.argv[1:])"
    return subprocess.Popen(
        [str(PYTHON), "-c", code, *args], cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL,
        stdout=stdout, stderr=stderr,
    )


def end_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM a child, SIGKILL it if it does not exit within ``timeout``; returns its status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    return proc.wait(10.0)


# --- child process entry points (run with spawn_python) -------------------------------------

TRADE_SYMS = ("BTCUSD", "ETHUSD", "SOLUSD")


def trade_rows(start: int, n: int) -> dict[str, Any]:
    """``n`` trade rows whose ``seq`` column is the global row id ``start .. start+n-1``."""
    import numpy as np
    import pyarrow as pa

    ids = np.arange(start, start + n, dtype=np.int64)
    return {
        "time": pa.array(ids + 1_700_000_000_000_000_000, pa.timestamp("ns", tz="UTC")),
        "sym": pa.array(np.array(TRADE_SYMS, dtype=object)[ids % len(TRADE_SYMS)], pa.string()),
        "price": pa.array(100.0 + (ids % 1000) * 0.01),
        "size": pa.array(((ids % 7) + 1).astype(np.float64)),
        "trade_id": pa.array(ids.astype(str).astype(object), pa.string()),
        "seq": pa.array(ids),
    }


def trade_row(i: int) -> dict[str, Any]:
    """Row ``i`` of :func:`trade_rows` as a dict of scalars (a single-row publish)."""
    return {
        "time": 1_700_000_000_000_000_000 + i,  # integers are nanoseconds
        "sym": TRADE_SYMS[i % len(TRADE_SYMS)],
        "price": 100.0 + (i % 1000) * 0.01,
        "size": float(i % 7 + 1),
        "trade_id": str(i),
        "seq": i,
    }


def mixed_publisher_main(argv: list[str]) -> None:
    """``ADDRESS TOTAL``: publish rows 0..TOTAL-1 in mixed batch sizes, then flush durably.

    Sizes cycle through 1, 7, 100, 1000, 5000 rows, with single-row dict publishes in
    between; prints one JSON line with the number of publish calls when done.
    """
    from tickerplant import Publisher

    address, total = argv[0], int(argv[1])
    sizes = (1, 7, 100, 1000, 5000, 3, 250)
    calls = dicts = 0
    with Publisher(address, name="mixed", reconnect=False) as pub:
        i = k = 0
        while i < total:
            if k % 3 == 2:
                for _ in range(min(4, total - i)):  # a run of single-row dict publishes
                    pub.publish("trade", trade_row(i))
                    i += 1
                    dicts += 1
                    calls += 1
            else:
                n = min(sizes[k % len(sizes)], total - i)
                pub.publish("trade", trade_rows(i, n))
                i += n
                calls += 1
            k += 1
        pub.flush(durable=True, timeout=60)
    print(json.dumps({"rows": total, "calls": calls, "dict_rows": dicts}), flush=True)


def acked_publisher_main(argv: list[str]) -> None:
    """``ADDRESS ACKED_FILE STOP_FILE``: publish increasing ids until STOP_FILE exists.

    After each ``flush(durable=True)`` returns, appends ``<highest acked id>\\n`` to
    ACKED_FILE and fsyncs it. The TP may be killed and restarted under it at any time;
    the publisher (reconnect=True) carries on by itself. When STOP_FILE appears it
    flushes once more and writes ``done <next id>`` as the last line.
    """
    import random

    from tickerplant import Publisher

    address, acked_path, stop_path = argv[0], Path(argv[1]), Path(argv[2])
    rng = random.Random(int(argv[3]) if len(argv) > 3 else 0)
    fd = os.open(acked_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(text: str) -> None:
        os.write(fd, f"{text}\n".encode())
        os.fsync(fd)

    next_id = 0
    with Publisher(address, name="acked", reconnect=True, max_delay=0.001) as pub:
        while not stop_path.exists():
            for _ in range(rng.randint(1, 5)):
                n = rng.choice((1, 1, 3, 20, 200))
                if n == 1 and rng.random() < 0.5:
                    pub.publish("trade", trade_row(next_id))
                else:
                    pub.publish("trade", trade_rows(next_id, n))
                next_id += n
            pub.flush(durable=True, timeout=60)
            record(str(next_id - 1))
        pub.flush(durable=True, timeout=60)
        record(f"done {next_id}")
    os.close(fd)
