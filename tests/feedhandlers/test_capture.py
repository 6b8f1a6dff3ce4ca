"""Capture files (``feedhandlers/capture.py``, ``docs/capture-format.md``), on real files.

Files are written with :class:`CaptureWriter` as a feed handler writes them; damage is
done to the bytes on disk (truncation, a flipped byte, a writer killed with SIGKILL) and
the reader must find exactly where the good part ends. Replay pacing is measured on the
monotonic clock with generous bounds, and ``time.sleep`` is counted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import lz4.block
import numpy as np
import pytest

from feedhandlers.capture import (
    BINARY,
    CLOSE,
    OPEN,
    REST,
    SENT,
    TEXT,
    CaptureReader,
    CaptureWriter,
    CorruptCapture,
    Record,
    areplay,
    parse_close,
    parse_rest,
    replay,
)
from tickerplant.exceptions import CorruptLog, DataError, LogError

REPO = Path(__file__).resolve().parents[2]
T0 = 1_772_409_600_000_000_000  # 2026-03-02T00:00:00Z
META = {"ws_url": "wss://stream.binance.com:9443/ws", "symbols": ["BTCUSDT", "ETHUSDT"], "channels": ["trade"]}


def random_records(rng: random.Random, n: int, t0: int = T0) -> list[Record]:
    """Text and binary records with increasing times, a few streams and some empty payloads."""
    out, t = [], t0
    for _ in range(n):
        t += rng.randrange(0, 2_000_000)
        size = rng.choice([0, 1, 17, 200, 3000])
        if rng.random() < 0.5:
            text = "".join(rng.choice('abcé€{}":,0123456789') for _ in range(size))
            out.append(Record(t, rng.randrange(4), TEXT, text.encode()))
        else:
            out.append(Record(t, rng.randrange(4), BINARY, rng.randbytes(size)))
    return out


def write_records(path: Path, records: list[Record], **kw: object) -> CaptureWriter:
    with CaptureWriter(path, "binance", META, **kw) as w:  # type: ignore[arg-type]
        for r in records:
            w.write(r.recv_ns, r.stream, r.payload.decode() if r.kind == TEXT else r.payload)
    return w


def read_all(path: Path, **kw: bool) -> list[Record]:
    with CaptureReader(path, **kw) as r:
        return list(r)


def block_spans(path: Path) -> list[tuple[int, int, int]]:
    """(offset, end, records) of every block."""
    with CaptureReader(path) as r:
        return [(b.offset, b.end, len(b)) for b in r.blocks()]


# --------------------------------------------------------------------- round trips


def test_round_trip_random_records(tmp_path: Path) -> None:
    rng = random.Random(4)
    records = random_records(rng, 3000)
    records.insert(10, Record(T0 + 5, 7, BINARY, rng.randbytes(1 << 20)))  # 1 MB, in a block of its own
    records.insert(20, Record(T0 + 6, 0, BINARY, b""))
    records.insert(30, Record(T0 + 7, 65535, TEXT, b""))
    path = tmp_path / "a.cap"
    w = write_records(path, records, block_bytes=64 * 1024)
    assert w.records == len(records) and w.blocks > 10 and w.offset == path.stat().st_size
    with CaptureReader(path) as r:
        assert (r.venue, r.meta, r.header.version) == ("binance", META, 1)
        assert abs(r.header.created_ns - time.time_ns()) < 60e9
        got = list(r)
        assert r.torn is None
    assert got == records
    assert all(type(x.payload) is bytes for x in got)


def test_kinds_and_helpers(tmp_path: Path) -> None:
    path = tmp_path / "k.cap"
    with CaptureWriter(path, "kraken", {}) as w:
        w.write_open(T0, 1, "wss://ws.kraken.com/v2")
        w.write(T0 + 1, 1, '{"method":"subscribe"}', SENT)
        w.write(T0 + 2, 1, "héllo")
        w.write(T0 + 3, 1, bytearray(b"\x00\xff"))
        w.write(T0 + 4, 1, memoryview(b"mv"))
        w.write_rest(T0 + 5, 2, "https://api.kraken.com/0/public/Depth?pair=XBTUSD", 200, b'{"result":{}}')
        w.write_close(T0 + 6, 1, 1006, "abnormal")
        w.write_close(T0 + 7, 1, None)
        w.write(T0 + 8, 1, b"future kind", 200)
    got = read_all(path)
    assert [r.kind for r in got] == [OPEN, SENT, TEXT, BINARY, BINARY, REST, CLOSE, CLOSE, 200]
    assert got[0].payload == b"wss://ws.kraken.com/v2"
    assert got[1].payload == b'{"method":"subscribe"}'
    assert got[2].payload == "héllo".encode()
    assert got[3].payload == b"\x00\xff" and got[4].payload == b"mv"
    assert parse_rest(got[5].payload) == ("https://api.kraken.com/0/public/Depth?pair=XBTUSD", 200, b'{"result":{}}')
    assert parse_close(got[6].payload) == (1006, "abnormal")
    assert parse_close(got[7].payload) == (None, "")
    with pytest.raises(DataError, match="shorter than its 8-byte header"):
        parse_rest(b"\x00")
    with pytest.raises(DataError, match="announces a 100-byte URL"):
        parse_rest(struct.pack("<HHI", 200, 0, 100) + b"short")
    with pytest.raises(DataError, match="2-byte code"):
        parse_close(b"")


def test_literal_bytes(tmp_path: Path) -> None:
    """The layout in docs/capture-format.md, byte for byte, for one uncompressed block."""
    path = tmp_path / "lit.cap"
    with CaptureWriter(path, "okx", {"a": 1}, compress=False, created_ns=123) as w:
        w.write(1000, 3, b"hi")
        w.write(2000, 0, "é")
    body = b'{"meta":{"a":1},"venue":"okx"}'
    head = b"TICKCAP\x00" + struct.pack("<HHIqI", 1, 0, len(body), 123, 0)
    file_header = head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body
    raw = (
        struct.pack("<qq", 1000, 2000) + struct.pack("<II", 2, 2) + struct.pack("<HH", 3, 0) + bytes([BINARY, TEXT])
        + b"hi" + "é".encode()
    )
    block_head = b"CPBK" + struct.pack("<HHIIIqq", 0, 0, len(raw), len(raw), 2, 1000, 2000)
    block = block_head + struct.pack("<I", zlib.crc32(raw, zlib.crc32(block_head))) + raw
    assert path.read_bytes() == file_header + block


def test_blocks_are_lz4_unless_incompressible(tmp_path: Path) -> None:
    path = tmp_path / "z.cap"
    with CaptureWriter(path, "x", {}, block_bytes=10_000) as w:
        for i in range(100):
            w.write(T0 + i, 0, b'{"e":"trade","p":"60000.1"}' * 20)
        w.flush()
        w.write(T0 + 200, 0, os.urandom(50_000))
    data = path.read_bytes()
    spans = block_spans(path)
    flags = [struct.unpack_from("<H", data, off + 4)[0] for off, _end, _n in spans]
    assert flags[:-1] == [1] * (len(spans) - 1) and flags[-1] == 0
    first_off = spans[0][0]
    stored, raw = struct.unpack_from("<II", data, first_off + 8)
    assert stored < raw / 5
    assert len(lz4.block.decompress(data[first_off + 40 : first_off + 40 + stored], uncompressed_size=raw)) == raw


def test_bulk_blocks(tmp_path: Path) -> None:
    records = random_records(random.Random(9), 2000)
    path = tmp_path / "b.cap"
    write_records(path, records, block_bytes=20_000)
    with CaptureReader(path) as r:
        blocks = list(r.blocks())
    assert len(blocks) > 20
    assert np.array_equal(np.concatenate([b.recv_ns for b in blocks]), [x.recv_ns for x in records])
    assert np.array_equal(np.concatenate([b.stream for b in blocks]), [x.stream for x in records])
    assert np.array_equal(np.concatenate([b.kind for b in blocks]), [x.kind for x in records])
    flat = [b.payload(i) for b in blocks for i in range(len(b))]
    assert flat == [x.payload for x in records]
    assert all(b.end == nxt.offset for b, nxt in itertools.pairwise(blocks))
    assert blocks[-1].end == path.stat().st_size


# --------------------------------------------------------------------- grouping writes


def test_no_write_per_message_and_flush_triggers(tmp_path: Path) -> None:
    path = tmp_path / "g.cap"
    w = CaptureWriter(path, "x", {}, block_bytes=1000, flush_ms=50)
    header = path.stat().st_size
    for i in range(9):
        w.write(T0 + i, 0, b"x" * 100)  # 900 bytes, within 50 ms of the first
    assert path.stat().st_size == header and w.blocks == 0
    w.write(T0 + 9, 0, b"x" * 100)  # 1000 bytes: a block
    assert w.blocks == 1 and w.records == 10 and path.stat().st_size == w.offset > header
    w.write(T0 + 10**9, 0, b"a")
    w.write(T0 + 10**9 + 49_999_999, 0, b"b")  # 50 ms after the block's first record, less 1 ns
    assert w.blocks == 1
    w.write(T0 + 10**9 + 50_000_000, 0, b"c")  # 50 ms after it: flushed with it
    assert w.blocks == 2 and w.records == 13
    w.write(T0 + 2 * 10**9, 0, b"quiet")
    assert not w.poll(T0 + 2 * 10**9 + 49_000_000)
    assert w.poll(T0 + 2 * 10**9 + 50_000_000) and w.records == 14
    assert not w.poll() and not w.poll(T0 * 2)  # nothing buffered
    w.write(T0 + 3 * 10**9, 0, b"on close")
    w.close()
    w.close()
    assert w.closed and w.records == 15 and len(read_all(path)) == 15
    with pytest.raises(LogError, match="is closed; records written after close"):
        w.write(T0, 0, b"late")
    w.flush()  # nothing buffered: harmless


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "e.cap"
    path.write_bytes(b"precious")
    with pytest.raises(LogError, match=r"already exists.*choose a new path"):
        CaptureWriter(path, "x", {})
    assert path.read_bytes() == b"precious"
    with pytest.raises(DataError, match="JSON-serializable"):
        CaptureWriter(tmp_path / "m.cap", "x", {"when": object()})
    with pytest.raises(ValueError, match="block_bytes"):
        CaptureWriter(tmp_path / "n.cap", "x", {}, block_bytes=0)
    with CaptureWriter(tmp_path / "s.cap", "x", {}) as w:
        w.write(T0, 0, b"kept")
        with pytest.raises(DataError, match=r"stream must be 0\.\.65535.*stream=65536"):
            w.write(T0, 65536, b"x")
        with pytest.raises(DataError, match="kind=256"):
            w.write(T0, 0, b"x", 256)
    assert read_all(tmp_path / "s.cap") == [Record(T0, 0, BINARY, b"kept")]


def test_reader_refuses_what_is_not_a_capture(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cap"
    bad.write_bytes(b"TICKLOG1" + bytes(40))
    with pytest.raises(LogError, match="not a capture file"):
        CaptureReader(bad)
    good = tmp_path / "good.cap"
    with CaptureWriter(good, "x", {"k": "v"}):
        pass
    data = bytearray(good.read_bytes())
    bad.write_bytes(data[:-3])
    with pytest.raises(LogError, match="header is cut short or damaged"):
        CaptureReader(bad)
    data[-2] ^= 0x20
    bad.write_bytes(bytes(data))
    with pytest.raises(LogError, match="header is cut short or damaged"):
        CaptureReader(bad)
    newer = bytearray(good.read_bytes())
    newer[8] = 2
    bad.write_bytes(bytes(newer))
    with pytest.raises(LogError, match="version 2; this reader knows up to 1"):
        CaptureReader(bad)
    assert read_all(good) == []


# --------------------------------------------------------------------- torn tails and corruption


def three_blocks(path: Path) -> tuple[list[Record], list[tuple[int, int, int]]]:
    rng = random.Random(11)
    records = random_records(rng, 40)
    with CaptureWriter(path, "x", META) as w:
        for i, r in enumerate(records):
            w.write(r.recv_ns, r.stream, r.payload, r.kind)
            if i in (14, 29):
                w.flush()
    spans = block_spans(path)
    assert [n for _o, _e, n in spans] == [15, 15, 10]
    return records, spans


def test_torn_tail_at_every_offset_of_the_last_block(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.cap"
    records, spans = three_blocks(path)
    full = path.read_bytes()
    last_start, last_end, _ = spans[-1]
    assert last_end == len(full)
    caplog.set_level(logging.WARNING, "feedhandlers.capture")
    for cut in range(last_end - 1, last_start - 1, -1):
        os.truncate(path, cut)
        caplog.clear()
        with CaptureReader(path) as r:
            got = list(r)
            torn = r.torn
        assert got == records[:30], cut
        if cut == last_start:  # the file ends cleanly after block 2
            assert torn is None and not caplog.records
            continue
        assert torn is not None and (torn.offset, torn.cut_bytes, torn.records) == (last_start, cut - last_start, 30)
        (msg,) = [rec.getMessage() for rec in caplog.records]
        assert f"at byte offset {last_start} after 30 valid records; the last {cut - last_start} bytes" in msg
    path.write_bytes(full)
    assert read_all(path) == records


def test_damaged_last_block_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "l.cap"
    records, spans = three_blocks(path)
    data = bytearray(path.read_bytes())
    data[spans[-1][0] + 50] ^= 0x01
    path.write_bytes(bytes(data))
    with CaptureReader(path) as r:
        assert list(r) == records[:30]
        assert r.torn is not None and r.torn.detail == "block checksum mismatch"


@pytest.mark.parametrize(
    ("where", "detail"),
    [
        (0, "bad block magic"),
        (4, "block checksum mismatch"),  # flags
        (10, "runs past the end of the file"),  # stored length, high byte
        (8, "block checksum mismatch"),  # stored length, low byte
        (20, "block checksum mismatch"),  # first_ns
        (36, "block checksum mismatch"),  # the CRC itself
        (45, "block checksum mismatch"),  # the payload
    ],
)
def test_corrupt_middle_names_the_offset(tmp_path: Path, where: int, detail: str) -> None:
    path = tmp_path / "c.cap"
    records, spans = three_blocks(path)
    data = bytearray(path.read_bytes())
    mid = spans[1][0]
    data[mid + where] ^= 0x40
    path.write_bytes(bytes(data))
    with CaptureReader(path) as r:
        it = iter(r)
        assert [next(it) for _ in range(15)] == records[:15]  # what precedes the damage is read
        with pytest.raises(CorruptCapture) as info:
            next(it)
    exc = info.value
    assert isinstance(exc, CorruptLog) and isinstance(exc, LogError)
    assert (exc.valid_bytes, exc.valid_messages) == (mid, 15) and detail in exc.detail
    assert f"at byte offset {mid} after 15 valid records" in str(exc) and f"head -c {mid}" in str(exc)
    with CaptureReader(path, skip_corrupt=True) as r:
        assert list(r) == records[:15] + records[30:]
        assert [(s.offset, s.cut_bytes, s.records) for s in r.skipped] == [(mid, spans[2][0] - mid, 15)]
        assert r.torn is None


# --------------------------------------------------------------------- a writer killed with SIGKILL

CHILD = """
import sys
from feedhandlers.capture import CaptureWriter
w = CaptureWriter(sys.argv[1], "sim", {"child": True}, block_bytes=48_000, flush_ms=1e9)
i, flushed = 0, 0
while True:
    w.write(1_700_000_000_000_000_000 + i, i % 3, (b"%08d;" % i) * (1 + i % 40))
    i += 1
    if w.records != flushed:
        flushed = w.records
        print(flushed, flush=True)
"""


def expected(i: int) -> Record:
    return Record(1_700_000_000_000_000_000 + i, i % 3, BINARY, (b"%08d;" % i) * (1 + i % 40))


def test_sigkill_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "killed.cap"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert child.stdout is not None
        flushed = 0
        deadline = time.monotonic() + 30
        while flushed < 20_000 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the child writer exited early"
            flushed = int(line)
        assert flushed >= 20_000
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with CaptureReader(path) as r:
        assert r.meta == {"child": True}
        got = list(r)
    assert len(got) >= flushed
    assert got == [expected(i) for i in range(len(got))]


def test_append_continues_a_capture_after_a_kill_and_cuts_the_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "restarted.cap"
    rng = random.Random(7)
    first, second = random_records(rng, 300), random_records(rng, 200, T0 + 10**12)
    write_records(path, first, block_bytes=4096)
    whole = path.stat().st_size
    with open(path, "ab") as fh:  # the next writer was killed mid-block: half a block header
        fh.write(b"CPBK\x01\x00garbage")
    with CaptureWriter(path, "binance", {"other": "meta"}, append=True, block_bytes=4096) as w:
        assert (w.offset, w.records) == (whole, 300) and w.cut == path.with_name("restarted.cap.cut-" + str(whole))
        for r in second:
            w.write(r.recv_ns, r.stream, r.payload.decode() if r.kind == TEXT else r.payload)
    assert w.cut.read_bytes() == b"CPBK\x01\x00garbage"
    with CaptureReader(path) as reader:
        assert reader.meta == META  # the file's own header stays
        assert list(reader) == first + second and reader.torn is None
    # append=True on a new path just creates it; another venue's capture is refused.
    with CaptureWriter(tmp_path / "new.cap", "kraken", {}, append=True) as w:
        w.write(T0, 0, b"x")
    assert read_all(tmp_path / "new.cap") == [Record(T0, 0, BINARY, b"x")]
    with pytest.raises(LogError, match=r"holds 'binance' frames, not 'kraken'"):
        CaptureWriter(path, "kraken", {}, append=True)


def test_append_refuses_a_corrupt_middle(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.cap"
    write_records(path, random_records(random.Random(3), 300), block_bytes=4096)
    (start, _, _), *_ = block_spans(path)
    data = bytearray(path.read_bytes())
    data[start + 50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCapture):
        CaptureWriter(path, "binance", {}, append=True)
    assert path.read_bytes() == bytes(data)  # untouched


# --------------------------------------------------------------------- replay


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` the replay makes (they still sleep)."""
    calls: list[float] = []
    real = time.sleep

    def counting(seconds: float) -> None:
        calls.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", counting)  # capture.py calls time.sleep
    return calls


def paced_capture(path: Path) -> list[Record]:
    """2,001 records over 1 s of receive time: 0.35 ms apart, with a 300 ms silence in the middle."""
    times = [T0 + i * 350_000 for i in range(1001)] + [T0 + 650_000_000 + i * 350_000 for i in range(1000)]
    records = [Record(t, 0, TEXT, b'{"i":%d}' % i) for i, t in enumerate(times)]
    write_records(path, records, block_bytes=4096)
    return records


def test_replay_at_speed_10(tmp_path: Path, sleeps: list[float]) -> None:
    path = tmp_path / "p.cap"
    records = paced_capture(path)
    span = (records[-1].recv_ns - records[0].recv_ns) / 1e9  # ~1.0 s
    lag = []
    start = time.monotonic()
    got = []
    for rec in replay(path, 10):
        lag.append(time.monotonic() - start - (rec.recv_ns - records[0].recv_ns) / 1e9 / 10)
        got.append(rec)
    elapsed = time.monotonic() - start
    assert got == records
    assert span / 10 - 0.002 <= elapsed < span / 10 + 0.5
    assert min(lag) > -0.0011  # never more than min_sleep early
    # Records 35 us apart at speed 10 are batched between sleeps; the 30 ms silence is one sleep.
    assert 1 <= len(sleeps) < 150
    assert max(sleeps) > 0.02


def test_replay_max_speed_never_sleeps(tmp_path: Path, sleeps: list[float]) -> None:
    path = tmp_path / "m.cap"
    records = paced_capture(path)
    start = time.monotonic()
    assert list(replay(path, "max")) == records
    assert list(replay(path, None)) == records
    assert time.monotonic() - start < 0.5 and sleeps == []
    for bad in (0, -1.0, float("inf"), float("nan"), "fast"):
        with pytest.raises(ValueError, match="replay speed must be a positive finite number"):
            list(replay(path, bad))  # type: ignore[arg-type]


def test_areplay(tmp_path: Path) -> None:
    path = tmp_path / "a.cap"
    records = paced_capture(path)
    span = (records[-1].recv_ns - records[0].recv_ns) / 1e9

    async def run(speed: float | str) -> tuple[list[Record], float]:
        start = time.monotonic()
        out = [rec async for rec in areplay(path, speed)]  # type: ignore[arg-type]
        return out, time.monotonic() - start

    got, elapsed = asyncio.run(run(20))
    assert got == records and span / 20 - 0.002 <= elapsed < span / 20 + 0.5
    got, elapsed = asyncio.run(run("max"))
    assert got == records and elapsed < 0.5


def test_empty_capture_replays_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.cap"
    CaptureWriter(path, "x", {}).close()
    assert list(replay(path, 5)) == [] and list(replay(path)) == []
    header = json.loads(path.read_bytes()[32:])
    assert header == {"meta": {}, "venue": "x"}
