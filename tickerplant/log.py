"""The tickerplant log: one append-only file per day of checksummed chunks of frames.

Format in ``docs/log-format.md``. A chunk is one group commit: every frame the TP
logged in one pass (or one ``--batch-ms`` window), written with a single ``writev``.
Chunk payloads are the very frames the TP publishes, optionally lz4-compressed.

Reading verifies every chunk's CRC. A bad chunk with no valid chunk after it is a
*torn tail* (a write cut short by a crash or power loss): the writer truncates it on
open, keeping the cut bytes in a sidecar file, and says so loudly. A bad chunk followed
by valid ones is a *corrupt middle*: reported with the valid prefix and its offset
(kdb+'s ``-11!(-2;file)``), never silently skipped.

This module does file I/O but knows nothing of sockets, clocks or fsync policy.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lz4.block
import numpy as np
import pyarrow as pa

from tickerplant import protocol
from tickerplant.exceptions import CorruptLog, LogError, ProtocolError
from tickerplant.message import Message, UpdReader
from tickerplant.protocol import Frame, FrameType
from tickerplant.schema import TIMESTAMP, TP_TIME, Registry

log = logging.getLogger("tickerplant.log")

FILE_MAGIC = b"TICKLOG1"
FILE_HEADER = struct.Struct("<8sIIqI")  # magic, yyyymmdd, flags, created ns, reserved; + crc32
FILE_HEADER_SIZE = 32
CHUNK_MAGIC = b"TKCH"
CHUNK_HEADER = struct.Struct("<4sHHIIQQI")  # magic, flags, rsv, stored, raw, first, last, frames
CHUNK_HEADER_SIZE = 40
CHUNK_LZ4 = 1
_CRC = struct.Struct("<I")
_LENGTH = struct.Struct("<I")
_ZEROS = bytes(8)
_CONTROL = (FrameType.SCHEMA, FrameType.PUBMARK)


def log_path(log_dir: str | Path, date: dt.date) -> Path:
    return Path(log_dir) / f"{date.isoformat()}.log"


def _align8(n: int) -> int:
    return (n + 7) & ~7


def encode_file_header(date: dt.date, created_ns: int) -> bytes:
    head = FILE_HEADER.pack(FILE_MAGIC, date.year * 10000 + date.month * 100 + date.day, 0, created_ns, 0)
    return head + _CRC.pack(zlib.crc32(head))


def _frame_headers_crc(pieces: Sequence[bytes | memoryview]) -> int:
    """CRC-32 of the 32-byte headers of the frames in ``pieces`` (a header never spans pieces)."""
    crc, rest = 0, 0  # rest: payload bytes of the current frame still to skip
    for piece in pieces:
        size, pos = len(piece), 0
        while pos < size:
            if rest:
                step = min(rest, size - pos)
                rest -= step
                pos += step
                continue
            head = piece[pos : pos + protocol.HEADER_SIZE]
            crc = zlib.crc32(head, crc)
            rest = _LENGTH.unpack_from(head, 4)[0]
            pos += protocol.HEADER_SIZE
    return crc


def encode_chunk(
    pieces: Sequence[bytes | memoryview], frames: int, first_seq: int, last_seq: int, compress: bool = False
) -> list[bytes | memoryview]:
    """A chunk as buffers for ``writev``: header, the frames' bytes (or their lz4 block), padding.

    ``pieces`` concatenated are ``frames`` whole frames (a frame may span pieces, e.g. a
    re-stamped header and its payload). Control frames (SCHEMA, PUBMARK) come first, so
    opening a log reads them without walking every UPD. The chunk's CRC covers its header
    and the frames' headers, each of which holds the CRC of its own payload: payload bytes
    are hashed once, by whoever made the frame, not again here.
    """
    raw_len = sum(len(p) for p in pieces)
    out: list[bytes | memoryview]
    if compress:
        stored = lz4.block.compress(b"".join(pieces), store_size=False)
        out, stored_len, flags = [stored], len(stored), CHUNK_LZ4
    else:
        out, stored_len, flags = list(pieces), raw_len, 0
    head = CHUNK_HEADER.pack(CHUNK_MAGIC, flags, 0, stored_len, raw_len, first_seq, last_seq, frames)
    pad = _align8(stored_len) - stored_len
    if pad:
        out.append(_ZEROS[:pad])
    return [head + _CRC.pack(zlib.crc32(head, _frame_headers_crc(pieces))), *out]


@dataclass
class Chunk:
    offset: int
    end: int  # offset of the next chunk
    first_seq: int
    last_seq: int
    payload: memoryview  # the frames, decompressed
    frames: list[Frame]  # verified


def _verify(head: bytes | memoryview, stored: bytes | memoryview, pos: int, end: int) -> Chunk | str:
    _magic, flags, _rsv, _stored, raw, first, last, nframes = CHUNK_HEADER.unpack_from(head, 0)
    if flags & CHUNK_LZ4:
        try:
            payload = memoryview(lz4.block.decompress(stored, uncompressed_size=raw))
        except lz4.block.LZ4BlockError as exc:
            return f"lz4 chunk does not decompress: {exc}"
    else:
        payload = memoryview(stored)
    try:
        frames, used = protocol.FrameDecoder(max_frame=1 << 32).parse(payload)  # checks every frame's CRC
    except ProtocolError as exc:
        return f"bad frame in chunk: {exc}"
    if used != len(payload) or len(frames) != nframes:
        return f"chunk holds {len(frames)} whole frames in {used} of {len(payload)} bytes, header says {nframes}"
    (want,) = _CRC.unpack_from(head, CHUNK_HEADER_SIZE - 4)
    if zlib.crc32(head[: CHUNK_HEADER_SIZE - 4], _frame_headers_crc([payload])) != want:
        return "chunk checksum mismatch"
    return Chunk(pos, end, first, last, payload, frames)


def _header_problem(head: bytes | memoryview, pos: int, size: int) -> str | int:
    """Why the chunk header at ``pos`` is unusable, or the stored payload length."""
    if len(head) < CHUNK_HEADER_SIZE:
        return f"{len(head)} trailing bytes are too few for a chunk header"
    magic, _flags, _rsv, stored, *_ = CHUNK_HEADER.unpack_from(head, 0)
    if magic != CHUNK_MAGIC:
        return f"bad chunk magic {bytes(magic)!r}"
    # The padding must be there too: a chunk cut inside it was never fsynced, and accepting
    # it would leave the file unaligned, so the next chunk appended would be unreadable.
    if _align8(pos + CHUNK_HEADER_SIZE + stored) > size:
        return (f"chunk announces {stored} bytes (padded to {_align8(stored)}) but only "
                f"{size - pos - CHUNK_HEADER_SIZE} remain")
    return int(stored)


def _chunk_at(buf: memoryview, pos: int) -> Chunk | str:
    """Verify the chunk at ``pos``; its length is checked against the file first."""
    size = len(buf)
    head = buf[pos : pos + CHUNK_HEADER_SIZE]
    stored = _header_problem(head, pos, size)
    if isinstance(stored, str):
        return stored
    start = pos + CHUNK_HEADER_SIZE
    return _verify(head, buf[start : start + stored], pos, min(size, _align8(start + stored)))


def _map(path: Path) -> memoryview:
    """The file, memory-mapped read-only.

    The map is never closed explicitly: frames and Arrow batches read from the log are
    zero-copy views into it, and it is unmapped when the last of them is gone. Reading
    into fresh buffers instead costs a page fault per 4 KiB, which made replay 5x slower.
    """
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return memoryview(b"")
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        return memoryview(mmap.mmap(fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ))


def _next_valid_chunk(buf: memoryview, pos: int) -> int | None:
    """Offset of the first valid chunk after ``pos`` (8-aligned search), if any."""
    raw = buf.obj
    assert isinstance(raw, mmap.mmap | bytes)
    search = pos + 8
    while (found := raw.find(CHUNK_MAGIC, search)) >= 0:
        if found % 8 == 0 and isinstance(_chunk_at(buf, found), Chunk):
            return found
        search = found + 1
    return None


@dataclass
class LogStatus:
    """What ``tick log check`` reports about one file."""

    path: str
    date: dt.date | None = None
    file_bytes: int = 0
    valid_bytes: int = 0
    chunks: int = 0
    messages: int = 0  # UPD frames
    rows: int = 0
    first_seq: int = 0
    last_seq: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    ended: bool = False  # an EOD frame closes the day
    error: str | None = None
    torn: bool = False  # the bad part is a torn tail (no valid chunk after it)
    next_valid: int | None = None  # for a corrupt middle: offset of the next valid chunk

    @property
    def ok(self) -> bool:
        return self.error is None


def _read_file_header(buf: memoryview, path: Path) -> dt.date:
    if len(buf) < FILE_HEADER_SIZE:
        raise LogError(f"{path} is too short ({len(buf)} bytes) to be a tickerplant log")
    magic, ymd, _flags, _created, _rsv = FILE_HEADER.unpack_from(buf, 0)
    (want,) = _CRC.unpack_from(buf, 28)
    if magic != FILE_MAGIC or zlib.crc32(buf[:28]) != want:
        raise LogError(f"{path} is not a tickerplant log (bad file header)")
    return dt.date(ymd // 10000, ymd // 100 % 100, ymd % 100)


def _chunks(path: Path, start: int, status: LogStatus | None = None) -> Iterator[Chunk]:
    """Verified chunks from ``start``; at a bad chunk, record it in ``status`` or raise."""
    buf = _map(path)
    date = _read_file_header(buf, path)
    if status is not None:
        status.file_bytes, status.date = len(buf), date
    pos = start
    while pos < len(buf):
        chunk = _chunk_at(buf, pos)
        if isinstance(chunk, str):
            if status is None:
                raise CorruptLog(str(path), pos, -1, chunk)
            status.error = chunk
            status.next_valid = _next_valid_chunk(buf, pos)
            status.torn = status.next_valid is None
            return
        yield chunk
        pos = chunk.end


def check(path: str | Path, count_rows: bool = True) -> LogStatus:
    """Verify every chunk of a log; count messages and rows (``tick log check``)."""
    path = Path(path)
    status = LogStatus(str(path), valid_bytes=FILE_HEADER_SIZE)
    for chunk in _chunks(path, FILE_HEADER_SIZE, status):
        for frame in chunk.frames:
            if frame.type == FrameType.UPD:
                status.messages += 1
                status.rows += frame.aux
                if count_rows:
                    table, _ = protocol.split_name(frame.payload)
                    status.rows_by_table[table] = status.rows_by_table.get(table, 0) + frame.aux
                if not status.first_seq:
                    status.first_seq = frame.seq
                status.last_seq = frame.seq
            elif frame.type == FrameType.EOD:
                status.ended = True
        status.chunks += 1
        status.valid_bytes = chunk.end
    return status


def repair(path: str | Path) -> tuple[LogStatus, Path | None]:
    """Truncate a log to its valid prefix; the cut bytes go to ``<path>.cut-<offset>``."""
    path = Path(path)
    status = check(path, count_rows=False)
    if status.ok:
        return status, None
    sidecar = path.with_name(f"{path.name}.cut-{status.valid_bytes}")
    n = 0
    while sidecar.exists():  # torn at the same place again (a crash loop): keep both cuts
        n += 1
        sidecar = path.with_name(f"{path.name}.cut-{status.valid_bytes}.{n}")
    with open(path, "r+b") as fh:
        fh.seek(status.valid_bytes)
        with open(sidecar, "xb") as out:
            while block := fh.read(1 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        fh.truncate(status.valid_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    return status, sidecar


def iter_frames(path: str | Path, start: int = FILE_HEADER_SIZE, strict: bool = True) -> Iterator[Frame]:
    """Every frame in the log from chunk offset ``start``; a bad chunk raises CorruptLog.

    With ``strict=False`` a bad tail ends the iteration quietly: a log that is being
    appended to can be read up to its last whole chunk.
    """
    path = Path(path)
    messages = 0
    status = None if strict else LogStatus(str(path))
    try:
        for chunk in _chunks(path, start, status):
            for frame in chunk.frames:
                messages += frame.type == FrameType.UPD
                yield frame
    except CorruptLog as exc:
        raise CorruptLog(str(path), exc.valid_bytes, messages, exc.detail) from None


def replay(
    path: str | Path,
    registry: Registry | None = None,
    from_seq: int = 0,
    tables: Sequence[str] | None = None,
) -> Iterator[Message]:
    """The ``upd`` messages of a log, as the TP published them, conformed to ``registry``."""
    reader = UpdReader(registry)
    wanted = set(tables) if tables else None
    for frame in iter_frames(path):
        if frame.type == FrameType.SCHEMA:
            reader.on_schema(frame)
        elif frame.type == FrameType.UPD and frame.seq >= from_seq:
            if wanted is not None and protocol.split_name(frame.payload)[0] not in wanted:
                continue
            yield reader.decode(frame)


def read_table(path: str | Path, table: str, registry: Registry | None = None) -> pa.Table:
    """All of one table's rows in a log as one Arrow table (the replay fast path).

    The same rows as :func:`replay`, but ``tp_time`` is built once for the whole table
    instead of once per message.
    """
    reader = UpdReader(registry)
    batches: list[pa.RecordBatch] = []
    times: list[int] = []
    rows: list[int] = []
    for frame in iter_frames(path):
        if frame.type == FrameType.SCHEMA:
            reader.on_schema(frame)
        elif frame.type == FrameType.UPD and protocol.split_name(frame.payload)[0] == table:
            batch = reader.decode_wire(frame)[1]
            batches.append(batch)
            times.append(frame.time)
            rows.append(batch.num_rows)
    if table not in reader.tables:
        if registry is None or table not in registry:
            raise LogError(f"table {table!r} has no rows in {path}")
        return registry[table].schema.empty_table()
    schema = reader.tables[table].schema
    stamps = np.repeat(np.array(times, dtype=np.int64), rows)
    wire = pa.Table.from_batches(batches, schema=reader.tables[table].wire)
    return wire.append_column(schema.field(TP_TIME), pa.chunked_array([pa.array(stamps, TIMESTAMP)]))


class LogWriter:
    """Appends chunks to today's log; on open, recovers the state the TP needs.

    Recovered: the last sequence number, each publisher's last logged pub seq (for
    idempotent re-sends), the schema each table was last logged under, and a sparse
    index ``first_seq -> offset`` for catch-up reads.
    """

    def __init__(self, path: str | Path, date: dt.date, compress: bool = False, created_ns: int = 0) -> None:
        self.path = Path(path)
        self.date = date
        self.compress = compress
        self.last_seq = 0
        self.pubs: dict[bytes, int] = {}
        self.schemas: dict[str, tuple[int, pa.Schema]] = {}  # table -> (version, last logged schema)
        self.schema_changes: list[tuple[int, str, bytes]] = []  # (offset, table, frame)
        self.index_seq: list[int] = []
        self.index_off: list[int] = []
        self.ended = False
        self.repaired: tuple[LogStatus, Path] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._recover()
        else:
            with open(self.path, "wb") as fh:
                fh.write(encode_file_header(date, created_ns))
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(self.path.parent)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.offset = os.fstat(self.fd).st_size
        # A killed TP may have left chunks in the page cache only; the TP acks what it
        # recovered as durable when a publisher reconnects, so make it so first.
        os.fsync(self.fd)

    def _recover(self) -> None:
        status = check(self.path, count_rows=False)
        if status.date != self.date:
            raise LogError(f"{self.path} holds day {status.date}, not {self.date}")
        if not status.ok:
            if not status.torn:
                raise CorruptLog(str(self.path), status.valid_bytes, status.messages, status.error or "")
            status, sidecar = repair(self.path)
            assert sidecar is not None
            self.repaired = (status, sidecar)
            log.warning(
                "TORN LOG TAIL in %s: %s at byte %d after %d valid messages. Truncated to %d bytes; "
                "the %d cut bytes are kept in %s",
                self.path, status.error, status.valid_bytes, status.messages, status.valid_bytes,
                status.file_bytes - status.valid_bytes, sidecar,
            )
        for chunk in _chunks(self.path, FILE_HEADER_SIZE):
            self._index(chunk.first_seq, chunk.last_seq, chunk.offset)
            self._control(chunk.payload, chunk.offset)

    def _control(self, frames: memoryview, offset: int) -> None:
        """Note the control frames at the head of a chunk (an EOD stands alone in its chunk)."""
        pos = 0
        while pos + protocol.HEADER_SIZE <= len(frames):
            _magic, _ver, ftype, length, seq, _time, _aux = protocol.HEADER.unpack_from(frames, pos)
            end = pos + protocol.HEADER_SIZE + length
            if ftype == FrameType.SCHEMA:
                raw = bytes(frames[pos:end])
                table, schema = protocol.decode_schema(protocol.decode_all(raw)[0][0])
                self.schemas[table] = (seq, schema)
                self.schema_changes.append((offset, table, raw))
            elif ftype == FrameType.PUBMARK:
                self.pubs[bytes(frames[pos + protocol.HEADER_SIZE : pos + protocol.HEADER_SIZE + 16])] = seq
            elif ftype == FrameType.EOD:
                self.ended = True
            else:
                return
            pos = end

    def _index(self, first_seq: int, last_seq: int, offset: int) -> None:
        if first_seq:
            self.index_seq.append(first_seq)
            self.index_off.append(offset)
        if last_seq:
            self.last_seq = last_seq

    def offset_for(self, seq: int) -> int:
        """File offset of the chunk holding ``seq`` (or the first chunk after it)."""
        i = bisect.bisect_right(self.index_seq, seq) - 1
        return self.index_off[i] if i >= 0 else FILE_HEADER_SIZE

    def schemas_at(self, offset: int) -> dict[str, bytes]:
        """The SCHEMA frame in force for each table just before ``offset``."""
        out: dict[str, bytes] = {}
        for off, table, raw in self.schema_changes:
            if off >= offset:
                break
            out[table] = raw
        return out

    def append(
        self,
        control: Sequence[bytes],
        pieces: Sequence[bytes | memoryview] = (),
        frames: int = 0,
        first_seq: int = 0,
        last_seq: int = 0,
    ) -> int:
        """Write one chunk: ``control`` frames, then ``frames`` UPD frames in ``pieces``.

        Returns the new end offset. The data reaches the OS (page cache) before this
        returns; :meth:`fsync` makes it durable.
        """
        chunk = encode_chunk([*control, *pieces], len(control) + frames, first_seq, last_seq, self.compress)
        written = 0
        for i in range(0, len(chunk), 1000):  # writev takes at most IOV_MAX (1024) buffers
            written += os.writev(self.fd, chunk[i : i + 1000])
        expected = sum(len(p) for p in chunk)
        if written != expected:
            raise LogError(f"short write to {self.path}: {written} of {expected} bytes (disk full?)")
        offset, self.offset = self.offset, self.offset + written
        if control:
            self._control(memoryview(b"".join(control)), offset)
        self._index(first_seq, last_seq, offset)
        return self.offset

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
