"""The issue's proof, with real processes: exactly once, in order, and nothing acked lost.

a. A publisher process sends 1,000,000 trade rows in mixed batch sizes; a live
   subscriber and the log each hold every row exactly once, in publish order.
b. The TP is killed with SIGKILL at random moments, 20 times, while a publisher process
   publishes with durable acks and reconnects by itself; afterwards every acked row is
   in the log exactly once (no duplicates of anything), the log checks clean and a
   subscriber replaying from seq 0 gets them all. Every fifth restart also finds a torn
   partial chunk at the end of the log, which the TP cuts into a sidecar file.
c. A naive publisher that re-sends everything after a kill -9 creates no duplicates:
   the restarted TP knows each publisher's last logged pub seq from the log.

Rows carry their global id in the trade ``seq`` column (and, as text, in ``trade_id``).
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.conftest import free_port
from tickerplant import Message, Subscriber, admin, protocol
from tickerplant import log as tplog
from tickerplant.convert import to_batch
from tickerplant.protocol import Frame, FrameType
from tickerplant.schema import Registry

from ._procs import TICK, TPProcess, end_process, spawn_python, trade_rows

TRADE = Registry.default()["trade"]
CLOCK = ["--clock-start", "2026-03-02T12:00:00Z"]  # one trading date, whatever the wall clock says


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Collector:
    """A blocking Subscriber iterated in a thread, keeping every message until told to stop."""

    def __init__(self, address: str, from_seq: int | None, done: Callable[[list[Message]], bool]) -> None:
        self.sub = Subscriber(address, from_seq=from_seq, name="test")
        self.messages: list[Message] = []
        self.error: BaseException | None = None
        self._done = done
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for msg in self.sub:
                self.messages.append(msg)
                if self._done(self.messages):
                    break
        except BaseException as exc:
            self.error = exc
        finally:
            self.sub.close()

    def join(self, timeout: float) -> list[Message]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.sub.close()
            self.thread.join(5)
            got = sum(m.data.num_rows for m in self.messages)
            raise AssertionError(f"subscriber still waiting after {timeout}s ({len(self.messages)} messages, "
                                 f"{got} rows, last seq {self.messages[-1].seq if self.messages else None})")
        if self.error is not None:
            raise self.error
        return self.messages


def ids_of(messages: list[Message]) -> np.ndarray:
    if not messages:
        return np.empty(0, np.int64)
    return np.concatenate([m.data.column("seq").to_numpy() for m in messages])


def check_trade_ids(messages: list[Message]) -> None:
    for m in messages:
        assert pc.all(pc.equal(pc.cast(m.data.column("seq"), pa.string()), m.data.column("trade_id"))).as_py()


def test_a_million_rows_exactly_once_in_order(tmp_path: Path) -> None:
    total = 1_000_000
    start = time.monotonic()
    tp = TPProcess(tmp_path / "logs", args=CLOCK)
    try:
        rows = 0

        def enough(msgs: list[Message]) -> bool:
            nonlocal rows
            rows += int(msgs[-1].data.num_rows)
            return rows >= total

        live = Collector(tp.address, None, enough)
        wait_until(lambda: live.sub.state.subscribed, 10, "the subscription")
        pub = spawn_python("mixed_publisher_main", tp.address, str(total))
        try:
            out, _ = pub.communicate(timeout=90)
        finally:
            end_process(pub)
        assert pub.returncode == 0
        report = json.loads(out)
        assert report["rows"] == total and report["dict_rows"] > 0
        messages = live.join(60)
        stats = admin.stats(tp.address)
        assert live.sub.state.gaps == 0
    finally:
        tp.stop()
    assert tp.proc.returncode == 0

    # Live: every row once, in publish order; the TP's sequence numbers have no gap.
    ids = ids_of(messages)
    assert len(ids) == total
    assert np.array_equal(ids, np.arange(total))
    check_trade_ids(messages)
    seqs = [m.seq for m in messages]
    assert seqs == list(range(1, len(seqs) + 1))
    assert stats["rows_in"] == total and stats["duplicates"] == 0 and stats["rejected"] == 0
    assert stats["upd_in"] == len(seqs)

    # The log: the same updates, once each, in order; replay ends in the live state.
    status = tplog.check(tp.log_path)
    assert status.ok and status.rows == total and status.messages == len(seqs)
    assert (status.first_seq, status.last_seq) == (1, len(seqs))
    replayed = list(tplog.replay(tp.log_path))
    assert [m.seq for m in replayed] == seqs
    assert np.array_equal(ids_of(replayed), np.arange(total))
    assert pa.Table.from_batches([m.data for m in replayed]).equals(
        pa.Table.from_batches([m.data for m in messages])
    )
    assert time.monotonic() - start < 60


def _acked(path: Path) -> tuple[list[int], int | None]:
    """The acked ids recorded so far, and the publisher's final count once it is done."""
    acked: list[int] = []
    done = None
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("done "):
                done = int(line.split()[1])
            elif line:
                acked.append(int(line))
    return acked, done


def tear(path: Path, rng: random.Random) -> bytes:
    """Append the first part of a chunk (of rows that must never appear) to a log."""
    frame = protocol.encode_upd("trade", to_batch(trade_rows(10**9, 50), TRADE), seq=10**6, time=1)
    chunk = b"".join(bytes(p) for p in tplog.encode_chunk([frame], 1, 10**6, 10**6))
    torn = chunk[: rng.randrange(1, len(chunk))]
    with open(path, "ab") as fh:
        fh.write(torn)
    return torn


def wait_for_acks(path: Path, more: int, pub: subprocess.Popen[bytes], stderr: Path | None = None) -> None:
    """Wait until the publisher has recorded ``more`` new acks (it is making progress)."""
    target = len(_acked(path)[0]) + more
    deadline = time.monotonic() + 20
    while len(_acked(path)[0]) < target:
        if pub.poll() is not None:
            raise AssertionError(f"the publisher exited ({pub.returncode}): "
                                 f"{stderr.read_text() if stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError("the publisher got no ack from the restarted TP within 20s")
        time.sleep(0.01)


def test_kill_9_at_random_moments_loses_no_acked_row(tmp_path: Path) -> None:
    rounds = 20
    start = time.monotonic()
    rng = random.Random(20261124)
    log_dir = tmp_path / "logs"
    acked_file, stop_file = tmp_path / "acked", tmp_path / "stop"
    port = free_port()
    args = [*CLOCK, "--fsync", "group:5ms"]
    tp = TPProcess(log_dir, port, args, stderr_path=tmp_path / "tp0.stderr")
    pub_err = open(tmp_path / "publisher.stderr", "wb")  # noqa: SIM115
    pub = spawn_python("acked_publisher_main", tp.address, str(acked_file), str(stop_file), "1",
                       stdout=subprocess.DEVNULL, stderr=pub_err)
    kills = []
    tears = []
    try:
        for r in range(1, rounds + 1):
            # Let the publisher get going on this TP, then kill it mid-stream.
            wait_for_acks(acked_file, 1, pub, tmp_path / "publisher.stderr")
            time.sleep(rng.uniform(0.05, 0.5))
            acked_before_kill = _acked(acked_file)[0]
            tp.kill()
            kills.append(acked_before_kill[-1])
            tp.stop()
            if r % 5 == 0:  # as if the machine had died in the middle of a write
                tears.append(tear(tp.log_path, rng))
            tp = TPProcess(log_dir, port, args, stderr_path=tmp_path / f"tp{r}.stderr")
            assert tp.port == port
            if r % 5 == 0:
                assert "TORN LOG TAIL" in tp.stderr()

        # Stop the publisher: it flushes once more and records how many ids it sent.
        stop_file.touch()
        assert pub.wait(60) == 0, (tmp_path / "publisher.stderr").read_text()
        acked, done = _acked(acked_file)
        assert done is not None and acked and max(acked) == acked[-1] and done >= acked[-1] + 1
        last_seq = admin.stats(tp.address)["seq"]

        # A subscriber replaying from seq 0 against the final TP gets every row.
        replay_sub = Collector(tp.address, 0, lambda msgs: msgs[-1].seq >= last_seq)
        replayed = replay_sub.join(30)
        stats = admin.stats(tp.address)
    finally:
        end_process(pub)
        pub_err.close()
        tp.stop()
    assert tp.proc.returncode == 0

    # Every acked id is there; nothing is there twice (not even unacked re-sends); in order.
    ids = ids_of(replayed)
    assert len(np.unique(ids)) == len(ids), "duplicate rows in the log"
    assert np.array_equal(ids, np.arange(done)), "rows missing or out of order"
    assert max(acked) < done
    check_trade_ids(replayed)
    assert [m.seq for m in replayed] == list(range(1, last_seq + 1))
    # The publisher made progress on every TP it was given (each kill came mid-stream).
    assert len(kills) == rounds and len(set(kills)) == rounds and kills == sorted(kills)
    assert stats["rejected"] == 0

    # The TP cut each torn tail off on restart and kept the bytes in a sidecar file.
    sidecars = sorted(log_dir.glob("*.cut-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert [p.read_bytes() for p in sidecars] == tears

    # The log checks clean and replays the same.
    checked = subprocess.run([str(TICK), "log", "check", str(tp.log_path), "--json"], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    info = json.loads(checked.stdout)
    assert info["ok"] and info["rows"] == done and info["last_seq"] == last_seq
    assert np.array_equal(ids_of(list(tplog.replay(tp.log_path))), np.arange(done))
    assert time.monotonic() - start < 120


@pytest.mark.parametrize("fsync", ["always", "os"])
def test_acked_rows_survive_kill_9_under_other_fsync_policies(tmp_path: Path, fsync: str) -> None:
    """A shorter run of (b) with the other fsync policies: acks still wait for an fsync."""
    log_dir = tmp_path / "logs"
    acked_file, stop_file = tmp_path / "acked", tmp_path / "stop"
    port = free_port()
    args = [*CLOCK, "--fsync", fsync, "--compress"]
    tp = TPProcess(log_dir, port, args)
    pub = spawn_python("acked_publisher_main", tp.address, str(acked_file), str(stop_file), "2",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3):
            wait_for_acks(acked_file, 3, pub)
            time.sleep(0.1)
            tp.kill()
            tp.stop()
            tp = TPProcess(log_dir, port, args)
        stop_file.touch()
        assert pub.wait(60) == 0
        acked, done = _acked(acked_file)
        assert done is not None
    finally:
        end_process(pub)
        tp.stop()
    ids = ids_of(list(tplog.replay(tp.log_path)))
    assert np.array_equal(ids, np.arange(done)) and max(acked) < done


class RawPublisher:
    """A naive publisher speaking raw frames: it re-sends whatever it is told to, so the
    TP's own duplicate filter (pub seqs per pub_id, recovered from the log) is what is tested."""

    def __init__(self, address: str, pub_id: bytes) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.decoder = protocol.FrameDecoder()
        hello = {"role": "pub", "token": None, "name": "raw", "pub_id": pub_id.hex()}
        self.sock.sendall(protocol.encode_json(FrameType.HELLO, hello))
        self.welcome = self.until(lambda f: f.type == FrameType.WELCOME).json()
        self.sock.sendall(protocol.encode_schema("trade", TRADE.wire, TRADE.version))

    def until(self, pred: Callable[[Frame], bool]) -> Frame:
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise AssertionError("the TP closed the connection")
            for frame in self.decoder.feed(data):
                assert frame.type != FrameType.ERROR, frame.json()
                if pred(frame):
                    return frame

    def upd(self, pub_seq: int) -> None:
        """UPD number ``pub_seq`` carries rows ``10 * (pub_seq - 1) ..`` (10 rows)."""
        batch = to_batch(trade_rows(10 * (pub_seq - 1), 10), TRADE)
        self.sock.sendall(protocol.encode_upd("trade", batch, seq=pub_seq))

    def flush(self, pub_seq: int, durable: bool) -> tuple[int, int]:
        self.sock.sendall(protocol.encode(FrameType.FLUSH, seq=pub_seq, aux=int(durable)))
        ack = self.until(lambda f: f.type == FrameType.ACK and protocol.decode_ack(f)[int(durable)] >= pub_seq)
        return protocol.decode_ack(ack)

    def close(self) -> None:
        self.sock.close()


def test_resends_after_kill_9_are_dropped_by_the_tp(tmp_path: Path) -> None:
    """Updates logged but not yet acked when the TP dies are not logged again when re-sent."""
    log_dir, port, pub_id = tmp_path / "logs", free_port(), bytes(range(16))
    tp = TPProcess(log_dir, port, CLOCK)
    try:
        raw = RawPublisher(tp.address, pub_id)
        assert raw.welcome["pub_seq"] == 0
        for k in range(1, 6):
            raw.upd(k)
        assert raw.flush(5, durable=True) == (5, 5)
        for k in range(6, 9):
            raw.upd(k)
        assert raw.flush(8, durable=False)[0] == 8  # written (to the OS), maybe not fsynced
        tp.kill()
        raw.close()
        tp.stop()
        for restart in range(2):
            tp = TPProcess(log_dir, port, CLOCK)
            raw = RawPublisher(tp.address, pub_id)
            assert raw.welcome["pub_seq"] == 8 + 2 * restart
            for k in range(1, 11 + 2 * restart):  # everything again, plus two new ones
                raw.upd(k)
            assert raw.flush(10 + 2 * restart, durable=True)[1] == 10 + 2 * restart
            stats = admin.stats(tp.address)
            assert stats["duplicates"] == 8 + 2 * restart and stats["upd_in"] == 2
            raw.close()
            tp.kill()
            tp.stop()
    finally:
        tp.stop()
    ids = ids_of(list(tplog.replay(tp.log_path)))
    assert np.array_equal(ids, np.arange(120))
