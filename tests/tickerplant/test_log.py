"""Tests of the log files (``tickerplant/log.py``, ``docs/log-format.md``), on real files.

Logs are written with :class:`LogWriter` the way the TP writes them: a first chunk of
SCHEMA frames, then one chunk per group commit holding a PUBMARK and some UPD frames.
Damage is done to the bytes on disk (truncation, garbage, a flipped bit) and the
readers must find exactly where the good part ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerplant import log as tplog
from tickerplant import protocol
from tickerplant.convert import to_batch
from tickerplant.exceptions import CorruptLog, LogError
from tickerplant.protocol import FrameType
from tickerplant.schema import Registry, TableSchema

from ._procs import trade_rows

DATE = dt.date(2026, 3, 2)
T0 = 1_772_409_600_000_000_000  # 2026-03-02T00:00:00Z
REG = Registry.default()
TRADE = REG["trade"]
PUB_A = bytes(range(16))
PUB_B = bytes(range(16, 32))


# --- helpers --------------------------------------------------------------------------------


def trade_batch(start: int, n: int, ts: TableSchema = TRADE) -> pa.RecordBatch:
    """``n`` trade rows with ids ``start..`` (in the ``seq`` and ``trade_id`` columns)."""
    return to_batch(trade_rows(start, n), ts)


@dataclass
class Upd:
    seq: int
    time: int
    batch: pa.RecordBatch


@dataclass
class Written:
    """A log written by :func:`write_log`, with where every chunk starts and ends."""

    path: Path
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (start, end), the SCHEMA chunk first
    upds: list[list[Upd]] = field(default_factory=list)  # per chunk
    pubs: list[dict[bytes, int]] = field(default_factory=list)  # publisher marks after each chunk

    @property
    def all_upds(self) -> list[Upd]:
        return [u for chunk in self.upds for u in chunk]

    def upds_before(self, cut: int) -> list[Upd]:
        """The updates in chunks that end at or before byte ``cut``."""
        return [u for (_, end), chunk in zip(self.chunks, self.upds, strict=True) if end <= cut for u in chunk]


def write_log(
    path: Path,
    chunk_sizes: list[list[int]],
    compress: bool = False,
) -> Written:
    """A log: a SCHEMA chunk, then one chunk per entry of ``chunk_sizes`` (rows per UPD)."""
    w = tplog.LogWriter(path, DATE, compress=compress, created_ns=T0)
    out = Written(path)
    start = w.offset
    out.chunks.append((start, w.append([protocol.encode_schema("trade", TRADE.wire, TRADE.version)])))
    out.upds.append([])
    out.pubs.append({})
    seq = row = 0
    marks: dict[bytes, int] = {}
    for n_chunk, sizes in enumerate(chunk_sizes):
        frames: list[bytes | memoryview] = []
        upds: list[Upd] = []
        for n in sizes:
            seq += 1
            b = trade_batch(row, n)
            row += n
            upds.append(Upd(seq, T0 + seq * 1_000, b))
            frames.append(protocol.encode_upd("trade", b, seq=seq, time=T0 + seq * 1_000))
        pub = PUB_A if n_chunk % 3 else PUB_B
        marks[pub] = marks.get(pub, 0) + len(sizes)
        control = [protocol.encode(FrameType.PUBMARK, pub, seq=marks[pub])]
        first = upds[0].seq if upds else 0
        start = w.offset
        out.chunks.append((start, w.append(control, frames, len(frames), first, seq)))
        out.upds.append(upds)
        out.pubs.append(dict(marks))
    w.close()
    return out


def assert_replays(path: Path, expected: list[Upd], registry: Registry | None = None) -> None:
    """``replay`` yields exactly ``expected``: same seqs, times and values, tp_time = frame time."""
    got = list(tplog.replay(path, registry))
    assert [m.seq for m in got] == [u.seq for u in expected]
    for m, u in zip(got, expected, strict=True):
        assert m.table == "trade"
        assert m.time == u.time
        assert m.data.schema.equals(TRADE.schema)
        assert m.data.select(TRADE.wire.names).equals(u.batch)
        assert m.data.column("tp_time").cast(pa.int64()).to_pylist() == [u.time] * u.batch.num_rows


# --- writing and reading back ---------------------------------------------------------------

CHUNKS = [[1], [7, 100], [3, 3, 3], [1000], [2, 1]]


@pytest.mark.parametrize("compress", [False, True])
def test_check_counts_what_was_written(tmp_path: Path, compress: bool) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS, compress)
    st_ = tplog.check(w.path)
    upds = w.all_upds
    assert st_.ok and st_.error is None and not st_.torn and st_.next_valid is None
    assert st_.date == DATE
    assert st_.chunks == len(CHUNKS) + 1
    assert st_.messages == len(upds) == 9
    assert st_.rows == sum(u.batch.num_rows for u in upds) == 1120
    assert st_.rows_by_table == {"trade": 1120}
    assert (st_.first_seq, st_.last_seq) == (1, 9)
    assert st_.file_bytes == st_.valid_bytes == w.path.stat().st_size == w.chunks[-1][1]
    assert not st_.ended


@pytest.mark.parametrize("compress", [False, True])
def test_replay_yields_the_batches_with_tp_time(tmp_path: Path, compress: bool) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS, compress)
    assert_replays(w.path, w.all_upds)
    assert_replays(w.path, w.all_upds, REG)
    # from_seq and a table filter
    assert [m.seq for m in tplog.replay(w.path, from_seq=5)] == [5, 6, 7, 8, 9]
    assert list(tplog.replay(w.path, tables=["quote"])) == []
    table = tplog.read_table(w.path, "trade")
    assert table.num_rows == 1120
    assert table.column("seq").to_pylist() == list(range(1120))


def test_iter_frames_yields_control_frames_first_in_each_chunk(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1, 2], [3]])
    kinds = [(FrameType(f.type).name, f.seq) for f in tplog.iter_frames(w.path)]
    # A SCHEMA frame's seq field carries the table's version.
    assert kinds == [("SCHEMA", TRADE.version), ("PUBMARK", 2), ("UPD", 1), ("UPD", 2), ("PUBMARK", 1), ("UPD", 3)]


def test_compressed_log_reads_identically_and_is_smaller(tmp_path: Path) -> None:
    sizes = [[500, 500], [1000], [10] * 20]
    plain = write_log(tmp_path / "plain.log", sizes, compress=False)
    lz4 = write_log(tmp_path / "lz4.log", sizes, compress=True)
    a, b = tplog.check(plain.path), tplog.check(lz4.path)
    assert (a.chunks, a.messages, a.rows, a.first_seq, a.last_seq) == (b.chunks, b.messages, b.rows, 1, 23)
    assert lz4.path.stat().st_size < plain.path.stat().st_size / 2
    for x, y in zip(tplog.replay(plain.path), tplog.replay(lz4.path), strict=True):
        assert (x.seq, x.time) == (y.seq, y.time)
        assert x.data.equals(y.data)
    # A compressed chunk says so in its flags; the stored length is the lz4 block's.
    raw = lz4.path.read_bytes()
    start = lz4.chunks[1][0]
    _magic, flags, _rsv, stored, rawlen, first, last, frames = tplog.CHUNK_HEADER.unpack_from(raw, start)
    assert flags & tplog.CHUNK_LZ4 and stored < rawlen and (first, last, frames) == (1, 2, 3)


def test_writer_reopen_recovers_state(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS)
    writer = tplog.LogWriter(w.path, DATE)
    try:
        assert writer.repaired is None
        assert writer.last_seq == 9
        assert writer.pubs == w.pubs[-1]
        assert writer.schemas["trade"][0] == TRADE.version and writer.schemas["trade"][1].equals(TRADE.wire)
        assert writer.offset == w.chunks[-1][1]
        # The sparse index finds the chunk holding a seq.
        assert writer.offset_for(1) == w.chunks[1][0]
        assert writer.offset_for(3) == w.chunks[2][0]
        assert writer.offset_for(4) == w.chunks[3][0]
        assert writer.offset_for(9) == w.chunks[5][0]
        assert writer.offset_for(0) == tplog.FILE_HEADER_SIZE
        # Appending goes on from there.
        b = trade_batch(5000, 2)
        writer.append([], [protocol.encode_upd("trade", b, seq=10, time=T0)], 1, 10, 10)
    finally:
        writer.close()
    assert_replays(w.path, [*w.all_upds, Upd(10, T0, b)])


def test_writer_refuses_a_log_of_another_day(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1]])
    with pytest.raises(LogError, match="2026-03-02"):
        tplog.LogWriter(w.path, DATE + dt.timedelta(days=1))


def test_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"hello")
    with pytest.raises(LogError, match="too short"):
        tplog.check(path)
    path.write_bytes(b"x" * 64)
    with pytest.raises(LogError, match="not a tickerplant log"):
        tplog.check(path)


# --- torn tails -----------------------------------------------------------------------------


def _expected_valid(w: Written, cut: int, garbage: bytes) -> int:
    """Where the good part of ``w`` cut at ``cut`` (inside its last chunk) + ``garbage`` ends.

    The last chunk survives only if its header and stored bytes are whole and the file
    reaches its padded end (the padding itself is not checksummed).
    """
    start, end = w.chunks[-1]
    stored = tplog.CHUNK_HEADER.unpack_from(w.path.read_bytes(), start)[3]
    data_end = start + tplog.CHUNK_HEADER_SIZE + stored
    return end if cut >= data_end and cut + len(garbage) >= end else start


@pytest.mark.parametrize("compress", [False, True])
def test_torn_tail_at_every_offset_of_the_last_chunk(tmp_path: Path, compress: bool) -> None:
    w = write_log(tmp_path / "orig.log", [[2, 1], [5], [1, 1]], compress)
    data = w.path.read_bytes()
    start, end = w.chunks[-1]
    rng = random.Random(7)
    path = tmp_path / "torn.log"
    for cut in range(start, end):
        variants = [b""] if cut > start else []
        garbage = bytearray(rng.randbytes(rng.choice((1, 5, 8, 40, 300))))
        if garbage[0] == data[cut]:  # make sure the bytes really differ from the original
            garbage[0] ^= 0xFF
        variants.append(bytes(garbage))
        for junk in variants:
            path.write_bytes(data[:cut] + junk)
            valid = _expected_valid(w, cut, junk)
            status = tplog.check(path)
            assert not status.ok, (cut, junk)
            assert status.torn and status.next_valid is None, (cut, junk)
            assert status.valid_bytes == valid, (cut, len(junk))
            assert status.file_bytes == cut + len(junk)
            assert status.messages == len(w.upds_before(valid))
            assert status.last_seq == max((u.seq for u in w.upds_before(valid)), default=0)


@pytest.mark.parametrize("compress", [False, True])
def test_repair_truncates_the_torn_tail_into_a_sidecar(tmp_path: Path, compress: bool) -> None:
    w = write_log(tmp_path / "orig.log", [[2, 1], [5], [1, 1]], compress)
    data = w.path.read_bytes()
    start, end = w.chunks[-1]
    rng = random.Random(11)
    cuts = sorted({start, start + 1, start + 39, start + 40, start + 41, end - 1, *rng.sample(range(start, end), 12)})
    for i, cut in enumerate(cuts):
        path = tmp_path / f"torn{i}.log"
        junk = b"\xde\xad\xbe\xef" * rng.randint(0, 30)
        if cut == start and not junk:
            junk = b"\x01"
        path.write_bytes(data[:cut] + junk)
        valid = _expected_valid(w, cut, junk)
        status, sidecar = tplog.repair(path)
        assert status.torn and status.valid_bytes == valid
        assert sidecar == path.with_name(f"{path.name}.cut-{valid}")
        assert sidecar.read_bytes() == (data[:cut] + junk)[valid:]
        assert path.read_bytes() == (data[:cut] + junk)[:valid]  # (a cut in padding keeps the junk as padding)
        after = tplog.check(path)
        assert after.ok and after.valid_bytes == after.file_bytes == valid
        assert_replays(path, w.upds_before(valid))
        # Repairing a valid log does nothing.
        again, none = tplog.repair(path)
        assert again.ok and none is None and path.stat().st_size == valid


@pytest.mark.parametrize("compress", [False, True])
def test_writer_reopen_repairs_a_torn_tail_loudly(
    tmp_path: Path, compress: bool, caplog: pytest.LogCaptureFixture
) -> None:
    w = write_log(tmp_path / "orig.log", [[2, 1], [5], [1, 1], [4]], compress)
    data = w.path.read_bytes()
    start, end = w.chunks[-1]
    path = tmp_path / "torn.log"
    path.write_bytes(data[: (start + end) // 2] + b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="tickerplant.log"):
        writer = tplog.LogWriter(path, DATE, compress=compress)
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "TORN" in r.getMessage()]
        assert len(warnings) == 1
        text = warnings[0].getMessage()
        assert str(start) in text and f"{path.name}.cut-{start}" in text
        assert writer.repaired is not None
        status, sidecar = writer.repaired
        assert sidecar.exists() and sidecar.read_bytes() == data[start : (start + end) // 2] + b"\x00garbage"
        assert status.valid_bytes == start
        # State as of the last good chunk.
        assert writer.last_seq == 5
        assert writer.pubs == w.pubs[-2]
        assert writer.offset == start
        # The writer appends after the cut; the result is a valid log.
        b = trade_batch(9999, 3)
        writer.append([protocol.encode(FrameType.PUBMARK, PUB_A, seq=99)],
                      [protocol.encode_upd("trade", b, seq=7, time=T0 + 7)], 1, 7, 7)
    finally:
        writer.close()
    assert tplog.check(path).ok
    assert_replays(path, [*w.upds_before(start), Upd(7, T0 + 7, b)])
    assert tplog.LogWriter(path, DATE).pubs[PUB_A] == 99


def test_repeated_tears_at_the_same_offset_keep_every_sidecar(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1], [2]])
    end = w.chunks[-1][1]
    sidecars = []
    for junk in (b"first torn write", b"second torn write", b"third"):
        with open(w.path, "ab") as fh:
            fh.write(junk)
        status, sidecar = tplog.repair(w.path)
        assert status.valid_bytes == end and sidecar is not None
        sidecars.append(sidecar)
    assert [p.name for p in sidecars] == [f"a.log.cut-{end}", f"a.log.cut-{end}.1", f"a.log.cut-{end}.2"]
    assert [p.read_bytes() for p in sidecars] == [b"first torn write", b"second torn write", b"third"]


def test_torn_file_header_chunk(tmp_path: Path) -> None:
    """Cut inside the very first (SCHEMA) chunk: nothing valid but the file header."""
    w = write_log(tmp_path / "orig.log", [[1]])
    data = w.path.read_bytes()
    path = tmp_path / "torn.log"
    path.write_bytes(data[:50])
    status = tplog.check(path)
    assert status.torn and status.valid_bytes == tplog.FILE_HEADER_SIZE and status.messages == 0
    writer = tplog.LogWriter(path, DATE)
    writer.close()
    assert writer.last_seq == 0 and writer.schemas == {} and path.stat().st_size == tplog.FILE_HEADER_SIZE


# --- corrupt middle -------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_corrupt_middle_is_reported_not_skipped(tmp_path: Path, compress: bool) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS, compress)
    data = bytearray(w.path.read_bytes())
    start, end = w.chunks[2]  # the second chunk of updates (seqs 2, 3)
    data[start + tplog.CHUNK_HEADER_SIZE + 100] ^= 0x01  # one bit of its payload
    w.path.write_bytes(bytes(data))

    status = tplog.check(w.path)
    assert not status.ok and not status.torn
    assert status.valid_bytes == start
    assert status.next_valid == end == w.chunks[3][0]
    assert status.messages == 1 and status.last_seq == 1
    assert "checksum" in (status.error or "")

    with pytest.raises(CorruptLog) as info:
        list(tplog.iter_frames(w.path))
    exc = info.value
    assert exc.valid_bytes == start and exc.valid_messages == 1
    text = str(exc)
    assert f"byte offset {start}" in text and "after 1 valid messages" in text
    assert f"tick log repair {w.path}" in text

    with pytest.raises(CorruptLog, match=f"byte offset {start}"):
        list(tplog.replay(w.path))
    with pytest.raises(CorruptLog, match="tick log repair"):
        tplog.LogWriter(w.path, DATE)
    # The writer did not touch the file.
    assert w.path.read_bytes() == bytes(data)


def test_corrupt_chunk_header_finds_the_next_valid_chunk(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS)
    data = bytearray(w.path.read_bytes())
    start, end = w.chunks[1]
    data[start] = ord("X")  # chunk magic
    w.path.write_bytes(bytes(data))
    status = tplog.check(w.path)
    assert not status.torn and status.valid_bytes == start and status.next_valid == end
    assert "magic" in (status.error or "")


def test_repair_of_a_corrupt_middle_cuts_everything_after(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS)
    data = bytearray(w.path.read_bytes())
    start, _ = w.chunks[3]
    data[start + tplog.CHUNK_HEADER_SIZE + 8] ^= 0x80
    w.path.write_bytes(bytes(data))
    status, sidecar = tplog.repair(w.path)
    assert not status.torn and status.next_valid == w.chunks[4][0]
    assert sidecar is not None and sidecar.read_bytes() == bytes(data[start:])
    assert_replays(w.path, w.upds_before(start))


def test_iter_frames_not_strict_stops_quietly_at_a_torn_tail(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", CHUNKS)
    start, end = w.chunks[-1]
    with open(w.path, "r+b") as fh:
        fh.truncate(end - 3)
    upds = [f.seq for f in tplog.iter_frames(w.path, strict=False) if f.type == FrameType.UPD]
    assert upds == [u.seq for u in w.upds_before(start)]
    with pytest.raises(CorruptLog):
        list(tplog.iter_frames(w.path))


# --- property: any truncation point ---------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=4), min_size=1, max_size=6),
    compress=st.booleans(),
    where=st.floats(0.0, 1.0),
)
def test_any_truncation_leaves_exactly_the_whole_chunks(chunks: list[list[int]], compress: bool, where: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = write_log(Path(tmp) / "a.log", chunks, compress)
        size = w.chunks[-1][1]
        cut = tplog.FILE_HEADER_SIZE + int(where * (size - tplog.FILE_HEADER_SIZE))
        with open(w.path, "r+b") as fh:
            fh.truncate(cut)
        whole = [end for _, end in w.chunks if end <= cut]
        valid = whole[-1] if whole else tplog.FILE_HEADER_SIZE
        expected = w.upds_before(cut)

        status = tplog.check(w.path)  # never raises
        assert status.valid_bytes == valid
        assert status.ok == (cut == valid)
        assert status.torn == (cut != valid)
        assert status.messages == len(expected)
        assert status.rows == sum(u.batch.num_rows for u in expected)

        partial = [f.seq for f in tplog.iter_frames(w.path, strict=False) if f.type == FrameType.UPD]
        assert partial == [u.seq for u in expected]
        tplog.repair(w.path)
        assert_replays(w.path, expected)


# --- schema evolution inside one log --------------------------------------------------------


def test_schema_evolution_within_a_log(tmp_path: Path) -> None:
    v2_wire = TRADE.wire.insert(3, pa.field("venue_flags", pa.string()))
    trade_v2 = TableSchema("trade", 2, v2_wire)
    reg2 = Registry([trade_v2, REG["quote"], REG["l2"]])
    path = tmp_path / "evolve.log"
    w = tplog.LogWriter(path, DATE)
    w.append([protocol.encode_schema("trade", TRADE.wire, 1)])
    old = [trade_batch(0, 3), trade_batch(3, 2)]
    for i, b in enumerate(old, 1):
        w.append([], [protocol.encode_upd("trade", b, seq=i, time=T0 + i)], 1, i, i)
    change_at = w.offset
    new_cols = trade_rows(5, 4)
    new_cols["venue_flags"] = ["x", None, "y", "z"]
    new = to_batch(new_cols, trade_v2)
    w.append([protocol.encode_schema("trade", v2_wire, 2)], [protocol.encode_upd("trade", new, seq=3, time=T0 + 3)],
             1, 3, 3)
    w.close()

    got = list(tplog.replay(path, reg2))
    assert [m.seq for m in got] == [1, 2, 3]
    for m in got:
        assert m.data.schema.equals(trade_v2.schema)
    for m, b in zip(got[:2], old, strict=True):
        assert m.data.column("venue_flags").null_count == b.num_rows
        assert m.data.select(TRADE.wire.names).equals(b)
    assert got[2].data.select(v2_wire.names).equals(new)
    table = tplog.read_table(path, "trade", reg2)
    assert table.num_rows == 9 and table.column("seq").to_pylist() == list(range(9))
    assert table.column("venue_flags").to_pylist() == [None] * 5 + ["x", None, "y", "z"]

    # Without a registry each update keeps the schema it was logged under.
    plain = list(tplog.replay(path))
    assert plain[0].data.schema.equals(TRADE.schema) and plain[2].data.schema.equals(trade_v2.schema)

    # Reopened, the writer knows the latest schema and which one was in force where.
    writer = tplog.LogWriter(path, DATE)
    writer.close()
    assert writer.schemas["trade"][0] == 2 and writer.schemas["trade"][1].equals(v2_wire)
    before = writer.schemas_at(change_at)["trade"]
    after = writer.schemas_at(change_at + 1)["trade"]
    assert protocol.decode_schema(protocol.decode_all(before)[0][0])[1].equals(TRADE.wire)
    assert protocol.decode_schema(protocol.decode_all(after)[0][0])[1].equals(v2_wire)


def test_fresh_log_file_layout(tmp_path: Path) -> None:
    """A new log is a 32-byte file header (magic, date, created time, CRC), fsynced."""
    path = tmp_path / "sub" / "new.log"
    writer = tplog.LogWriter(path, DATE, created_ns=T0)
    writer.close()
    raw = path.read_bytes()
    assert len(raw) == tplog.FILE_HEADER_SIZE
    assert raw == tplog.encode_file_header(DATE, T0)
    assert raw[:8] == b"TICKLOG1" and int.from_bytes(raw[8:12], "little") == 20260302
    status = tplog.check(path)
    assert status.ok and status.chunks == 0 and status.messages == 0
    # An empty file (a crash right after creating it) is started afresh.
    os.truncate(path, 0)
    tplog.LogWriter(path, DATE).close()
    assert path.read_bytes()[:8] == b"TICKLOG1"
    shutil.rmtree(path.parent)


def test_cut_inside_chunk_padding_is_torn_and_appends_stay_readable(tmp_path: Path) -> None:
    """Regression: a compressed chunk cut inside its zero padding used to pass as whole,
    leaving the file unaligned; the next chunk appended was then unreadable and a later
    reopen cut it (and everything after it) off as a torn tail."""
    for i, sizes in enumerate(([[3], [2], [5]], [[1], [1], [1]], [[7], [4, 4], [6]])):
        w = write_log(tmp_path / f"a{i}.log", sizes, compress=True)
        start, end = w.chunks[-1]
        stored = tplog.CHUNK_HEADER.unpack_from(w.path.read_bytes(), start)[3]
        data_end = start + tplog.CHUNK_HEADER_SIZE + stored
        if data_end == end:
            continue  # no padding in this chunk
        os.truncate(w.path, data_end)
        status = tplog.check(w.path)
        assert status.torn and status.valid_bytes == start
        writer = tplog.LogWriter(w.path, DATE, compress=True)
        b = trade_batch(100, 2)
        writer.append([], [protocol.encode_upd("trade", b, seq=50, time=T0)], 1, 50, 50)
        writer.close()
        assert tplog.check(w.path).ok
        assert_replays(w.path, [*w.upds_before(start), Upd(50, T0, b)])
        break
    else:
        pytest.fail("no padded chunk to cut")
