"""Capture files: every raw frame a feed handler receives, with its receive time, lz4-compressed.

Format, byte for byte, in ``docs/capture-format.md``. A capture is a header (venue,
creation time, free-form JSON such as ``ws_url``, symbols, channels) followed by
checksummed *blocks*; a block is one write and holds many *records*
``(recv_ns, stream, kind, payload)`` stored column by column (times, lengths, streams,
kinds, then the payloads) and compressed with ``lz4.block``. Replaying a capture runs the
very bytes the venue sent through the same parser, and tests feed adapters from a local
server that sends them as if it were the venue.

:class:`CaptureWriter` sits on the socket read path: :meth:`~CaptureWriter.write` appends
a tuple to a list and compares two numbers; the encoding, compression and the one
``writev`` per block happen in :meth:`~CaptureWriter.flush`, when the block holds
``block_bytes`` of payload or its first record is ``flush_ms`` older than the one being
written (the records' own receive times are the clock, so ``write`` reads none). A quiet
connection's last records wait for the next write, :meth:`~CaptureWriter.poll` or
:meth:`~CaptureWriter.close`; the owner calls ``poll`` from a timer it already has (the
idle watchdog). Measured on the 2-core development VM with 200-byte JSON trade messages
(``bytes`` or ``str``): about 190 ns per ``write`` call, and 540 ns per record including its
share of ``flush`` (columns, lz4 ~130 ns, CRC, ``writev``; 256 KiB blocks), 32 bytes per
record on disk.

:class:`CaptureReader` verifies each block's CRC before using it. A bad block with no
valid block after it is a *torn tail* (the writer was killed mid-write): the complete
blocks are read and a warning says where the tail starts and how many bytes were cut.
A bad block followed by valid ones is a *corrupt middle*: :class:`CorruptCapture` names
its offset and the records before it, unless the reader was asked to skip it.

:func:`replay` and :func:`areplay` yield records paced by their receive times divided by
``speed`` on the monotonic clock, sleeping only when the next record is due more than
``min_sleep`` ahead (never once per record for tiny gaps), or as fast as possible.

A writer is not thread-safe: one writer per feed handler, used from its event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, NamedTuple

import lz4.block
import numpy as np
import numpy.typing as npt

from tickerplant.exceptions import CorruptCapture, DataError, LogError

__all__ = [
    "BINARY",
    "CLOSE",
    "OPEN",
    "REST",
    "SENT",
    "TEXT",
    "Block",
    "CaptureHeader",
    "CaptureReader",
    "CaptureWriter",
    "CorruptCapture",
    "Record",
    "TornTail",
    "areplay",
    "close_payload",
    "parse_close",
    "parse_rest",
    "replay",
    "rest_payload",
]

log = logging.getLogger("feedhandlers.capture")

# Record kinds (u8). A reader yields kinds it does not know unchanged: new kinds are
# added without a version bump.
TEXT = 0  # a WebSocket text message, UTF-8
BINARY = 1  # a WebSocket binary message
REST = 2  # an HTTP response: rest_payload(url, status, body)
OPEN = 3  # a connection opened: its URL, UTF-8
CLOSE = 4  # a connection closed: close_payload(code, reason)
SENT = 5  # a message the handler sent (a subscribe request), as sent

VERSION = 1
FILE_MAGIC = b"TICKCAP\x00"
FILE_HEADER = struct.Struct("<8sHHIqI")  # magic, version, flags, json length, created ns, reserved; + crc32
FILE_HEADER_SIZE = 32
BLOCK_MAGIC = b"CPBK"
BLOCK_HEADER = struct.Struct("<4sHHIIIqq")  # magic, flags, rsv, stored, raw, records, first ns, last ns; + crc32
BLOCK_HEADER_SIZE = 40
BLOCK_LZ4 = 1
RECORD_COLUMNS = 15  # bytes of columns per record: i64 time, u32 length, u16 stream, u8 kind
_CRC = struct.Struct("<I")
_REST = struct.Struct("<HHI")  # status, reserved, url length
_CLOSE = struct.Struct("<H")
_LZ4_MAX_INPUT = 0x7E000000  # LZ4_MAX_INPUT_SIZE: larger blocks are stored uncompressed
_U32_MAX = 0xFFFFFFFF

DEFAULT_BLOCK_BYTES = 256 * 1024
DEFAULT_FLUSH_MS = 250.0


class Record(NamedTuple):
    recv_ns: int  # receive time, ns since the epoch (UTC)
    stream: int  # connection / stream id chosen by the writer (u16)
    kind: int  # TEXT, BINARY, REST, OPEN, CLOSE, SENT or a newer kind
    payload: bytes


@dataclass(frozen=True)
class CaptureHeader:
    venue: str
    meta: dict[str, Any]
    created_ns: int
    version: int
    size: int  # bytes before the first block


@dataclass(frozen=True)
class TornTail:
    """Where a capture's valid prefix ends and what was after it."""

    offset: int  # end of the last complete block = bytes that are valid
    cut_bytes: int  # bytes after it (ignored)
    detail: str  # why the block at ``offset`` is not valid
    records: int  # records in the valid prefix


# ------------------------------------------------------------------ payload helpers


def rest_payload(url: str, status: int, body: bytes) -> bytes:
    """The payload of a REST record: u16 status, u16 0, u32 URL length, URL (UTF-8), body."""
    raw_url = url.encode()
    return _REST.pack(status, 0, len(raw_url)) + raw_url + body


def parse_rest(payload: bytes) -> tuple[str, int, bytes]:
    """``(url, status, body)`` from a REST record's payload."""
    if len(payload) < _REST.size:
        raise DataError(f"REST record payload of {len(payload)} bytes is shorter than its {_REST.size}-byte header")
    status, _rsv, url_len = _REST.unpack_from(payload, 0)
    end = _REST.size + url_len
    if end > len(payload):
        raise DataError(f"REST record announces a {url_len}-byte URL but holds {len(payload) - _REST.size} bytes")
    return payload[_REST.size : end].decode(), status, payload[end:]


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a CLOSE record: u16 close code (0: none, e.g. the TCP connection dropped), reason (UTF-8)."""
    return _CLOSE.pack(code or 0) + reason.encode()


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """``(code, reason)`` from a CLOSE record's payload; code None when the close had none."""
    if len(payload) < _CLOSE.size:
        raise DataError(f"CLOSE record payload of {len(payload)} bytes is shorter than its 2-byte code")
    (code,) = _CLOSE.unpack_from(payload, 0)
    return (code or None), payload[_CLOSE.size :].decode()


# ------------------------------------------------------------------ writing


def _encode_header(venue: str, meta: dict[str, Any], created_ns: int) -> bytes:
    try:
        body = json.dumps({"venue": venue, "meta": meta}, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise DataError(f"capture meta must be JSON-serializable (str, numbers, lists, dicts): {exc}") from None
    head = FILE_HEADER.pack(FILE_MAGIC, VERSION, 0, len(body), created_ns, 0)
    return head + _CRC.pack(zlib.crc32(body, zlib.crc32(head))) + body


Payload = bytes | bytearray | memoryview | str


def encode_block(records: list[tuple[int, int, int, Payload]], compress: bool = True) -> list[bytes]:
    """One block, as the buffers to ``writev``: 40-byte header (with CRC) and stored payload.

    ``records`` are ``(recv_ns, stream, kind, payload)``; kind -1 means TEXT for a ``str``
    payload (encoded UTF-8) and BINARY otherwise.
    """
    n = len(records)
    times, streams, kinds, payloads = zip(*records)  # noqa: B905 - every record is a 4-tuple
    kind = np.array(kinds, dtype=np.int16)
    default = kind < 0
    types = set(map(type, payloads))
    if str in types:
        data = [p.encode() if isinstance(p, str) else p for p in payloads]
        if len(types) == 1:
            kind[default] = TEXT
        else:
            text = np.fromiter((isinstance(p, str) for p in payloads), dtype=bool, count=n)
            kind[default] = np.where(text[default], TEXT, BINARY)
    else:
        data = list(payloads)  # no str among them
        kind[default] = BINARY
    lengths = np.fromiter(map(len, data), dtype="<u4", count=n)
    ns = np.array(times, dtype="<i8")
    raw = b"".join(
        [ns.tobytes(), lengths.tobytes(), np.array(streams, dtype="<u2").tobytes(), kind.astype(np.uint8).tobytes(),
         *data]
    )
    if len(raw) > _U32_MAX:
        raise DataError(f"a capture block of {len(raw)} bytes exceeds 4 GiB; no single payload may be that large")
    stored, flags = raw, 0
    if compress and len(raw) <= _LZ4_MAX_INPUT:
        packed = lz4.block.compress(raw, store_size=False)
        if len(packed) < len(raw):  # incompressible payloads (already compressed) are stored as they are
            stored, flags = packed, BLOCK_LZ4
    head = BLOCK_HEADER.pack(BLOCK_MAGIC, flags, 0, len(stored), len(raw), n, int(ns[0]), int(ns[-1]))
    return [head + _CRC.pack(zlib.crc32(stored, zlib.crc32(head))), stored]


class _Closed(list[tuple[int, int, int, Payload]]):
    """The buffer of a closed writer: appending to it raises, so ``write`` needs no check of its own."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def append(self, item: tuple[int, int, int, Payload]) -> None:
        raise LogError(f"capture writer for {self.path} is closed; records written after close() are refused")


class CaptureWriter:
    """Append records to a capture file, one ``writev`` per block.

    ``block_bytes``: flush once the buffered payloads reach this many bytes (characters
    for ``str`` payloads). ``flush_ms``: flush when a record arrives this long (by the
    records' receive times) after the block's first one. Never overwrites a file: an
    existing one is refused, or with ``append=True`` (a restarted feed handler) checked
    and continued: it must be a capture of the same venue with no corrupt middle; a torn
    tail (the last writer was killed mid-block) is cut off into ``<path>.cut-<offset>``
    with a warning, and the new blocks follow the last complete one.
    """

    def __init__(
        self,
        path: str | Path,
        venue: str,
        meta: dict[str, Any] | None = None,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        flush_ms: float = DEFAULT_FLUSH_MS,
        compress: bool = True,
        created_ns: int | None = None,
        append: bool = False,
    ) -> None:
        if block_bytes <= 0 or flush_ms < 0:
            raise ValueError(f"block_bytes must be > 0 and flush_ms >= 0, got {block_bytes} and {flush_ms}")
        self.path = Path(path)
        self.venue = venue
        self.meta = dict(meta or {})
        self._block_bytes = block_bytes
        self._max_age_ns = int(flush_ms * 1_000_000)
        self._compress = compress
        self._records: list[tuple[int, int, int, Payload]] = []
        self._pending = 0
        self._deadline = 0
        self.offset = 0  # the file's size: bytes written so far (after an append's valid prefix)
        self.blocks = 0  # blocks in the file (not counting those still buffered)
        self.records = 0  # records in the file
        self.cut: Path | None = None  # where an append moved a torn tail
        if append and self.path.exists():
            self._fd: int | None = self._continue(venue)
            return
        header = _encode_header(venue, self.meta, time.time_ns() if created_ns is None else created_ns)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise LogError(
                f"capture file {self.path} already exists; captures are never overwritten: choose a new path "
                f"(e.g. with the start time in its name), move the old file away, or append to it"
            ) from None
        self._write_all([header])

    def _continue(self, venue: str) -> int:
        """Check an existing capture, cut a torn tail into a sidecar, and open it for appending."""
        with CaptureReader(self.path) as reader:  # CorruptCapture on a corrupt middle: never written past
            if reader.venue != venue:
                raise LogError(f"capture file {self.path} holds {reader.venue!r} frames, not {venue!r}: "
                               f"give this feed its own capture file")
            self.offset = reader.header.size
            for block in reader.blocks():
                self.blocks += 1
                self.records += len(block)
                self.offset = block.end
            torn = reader.torn
        if torn is not None:
            self.cut = _cut_tail(self.path, torn.offset)
            log.warning("TORN CAPTURE TAIL in %s cut before appending: %d bytes after byte %d (%s) moved to %s",
                        self.path, torn.cut_bytes, torn.offset, torn.detail, self.cut)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def write(self, recv_ns: int, stream: int, payload: Payload, kind: int = -1) -> None:
        """Buffer one record; ``kind`` defaults to TEXT for ``str`` payloads and BINARY for bytes.

        The payload is kept by reference until the block is flushed: do not mutate a
        ``bytearray`` passed here.
        """
        records = self._records
        if not records:
            self._deadline = recv_ns + self._max_age_ns
        if not 0 <= stream <= 0xFFFF or not -1 <= kind <= 0xFF:
            raise DataError(f"capture stream must be 0..65535 and kind 0..255, got stream={stream} kind={kind}")
        records.append((recv_ns, stream, kind, payload))
        self._pending += len(payload)
        if self._pending >= self._block_bytes or recv_ns >= self._deadline:
            self.flush()

    def write_rest(self, recv_ns: int, stream: int, url: str, status: int, body: bytes) -> None:
        """Record an HTTP response (a REST snapshot) with its URL and status."""
        self.write(recv_ns, stream, rest_payload(url, status, body), REST)

    def write_open(self, recv_ns: int, stream: int, url: str) -> None:
        """Record that connection ``stream`` opened to ``url``."""
        self.write(recv_ns, stream, url.encode(), OPEN)

    def write_close(self, recv_ns: int, stream: int, code: int | None, reason: str = "") -> None:
        """Record that connection ``stream`` closed (code None when there was no close frame)."""
        self.write(recv_ns, stream, close_payload(code, reason), CLOSE)

    def poll(self, now_ns: int | None = None) -> bool:
        """Flush if the oldest buffered record is ``flush_ms`` old at ``now_ns`` (default: now); True if flushed."""
        if self._records and (time.time_ns() if now_ns is None else now_ns) >= self._deadline:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the buffered records as one block (nothing if none are buffered)."""
        records = self._records
        if not records:
            return
        if self._fd is None:
            raise LogError(f"capture writer for {self.path} is closed")
        self._records = []
        self._pending = 0
        self._write_all(encode_block(records, self._compress))
        self.blocks += 1
        self.records += len(records)

    def _write_all(self, buffers: list[bytes]) -> None:
        assert self._fd is not None
        total = sum(len(b) for b in buffers)
        done = os.writev(self._fd, buffers)
        if done < total:  # a short write (rare on regular files): finish with the rest
            rest = memoryview(b"".join(buffers))[done:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]
        self.offset += total

    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        if self._fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None
            self._records = _Closed(self.path)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ------------------------------------------------------------------ reading


def _cut_tail(path: Path, offset: int) -> Path:
    """Move the bytes of ``path`` after ``offset`` to ``<path>.cut-<offset>`` (kept, never deleted), then truncate."""
    sidecar = path.with_name(f"{path.name}.cut-{offset}")
    n = 0
    while sidecar.exists():  # torn at the same place again: keep every cut
        n += 1
        sidecar = path.with_name(f"{path.name}.cut-{offset}.{n}")
    with open(path, "r+b") as fh:
        fh.seek(offset)
        with open(sidecar, "xb") as out:
            while chunk := fh.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        fh.truncate(offset)
        fh.flush()
        os.fsync(fh.fileno())
    return sidecar


@dataclass(frozen=True)
class Block:
    """One verified block, column by column: the bulk path for vectorized consumers."""

    offset: int  # byte offset of the block in the file
    end: int  # byte offset of the next block
    recv_ns: npt.NDArray[np.int64]
    stream: npt.NDArray[np.uint16]
    kind: npt.NDArray[np.uint8]
    starts: npt.NDArray[np.int64]  # n + 1 offsets into ``raw``: payload i is raw[starts[i]:starts[i + 1]]
    raw: bytes  # the decompressed block

    def __len__(self) -> int:
        return len(self.recv_ns)

    def payload(self, i: int) -> bytes:
        return self.raw[self.starts[i] : self.starts[i + 1]]

    def records(self) -> Iterator[Record]:
        raw, starts = self.raw, self.starts.tolist()
        for t, s, k, a, b in zip(
            self.recv_ns.tolist(), self.stream.tolist(), self.kind.tolist(), starts, starts[1:], strict=False
        ):
            yield Record(t, s, k, raw[a:b])


def _decode_block(head: bytes, stored: bytes, offset: int) -> Block | str:
    """The block whose 40-byte header and stored payload are given, or why it is not valid."""
    _magic, flags, _rsv, _stored, raw_len, n, _first, _last = BLOCK_HEADER.unpack_from(head, 0)
    (want,) = _CRC.unpack_from(head, BLOCK_HEADER_SIZE - 4)
    if zlib.crc32(stored, zlib.crc32(head[: BLOCK_HEADER_SIZE - 4])) != want:
        return "block checksum mismatch"
    if flags & BLOCK_LZ4:
        try:
            raw = lz4.block.decompress(stored, uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as exc:
            return f"block does not decompress: {exc}"
    else:
        raw = stored
    cols = n * RECORD_COLUMNS
    if len(raw) != raw_len or cols > raw_len:
        return f"block of {len(raw)} bytes cannot hold the {n} records its header announces"
    lengths = np.frombuffer(raw, dtype="<u4", count=n, offset=8 * n)
    starts = np.empty(n + 1, dtype=np.int64)
    starts[0] = cols
    np.cumsum(lengths, out=starts[1:])
    starts[1:] += cols
    if starts[-1] != raw_len:
        return f"block payload lengths add up to {int(starts[-1]) - cols} bytes, not {raw_len - cols}"
    return Block(
        offset,
        offset + BLOCK_HEADER_SIZE + len(stored),
        np.frombuffer(raw, dtype="<i8", count=n).astype(np.int64, copy=False),
        np.frombuffer(raw, dtype="<u2", count=n, offset=12 * n).astype(np.uint16, copy=False),
        np.frombuffer(raw, dtype=np.uint8, count=n, offset=14 * n),
        starts,
        raw,
    )


def _header_problem(head: bytes, room: int) -> str | None:
    """Why a block header cannot start a block with ``room`` bytes left in the file, or None."""
    if len(head) < BLOCK_HEADER_SIZE:
        return f"block header cut short ({len(head)} of {BLOCK_HEADER_SIZE} bytes)"
    magic, _flags, _rsv, stored, _raw, _n, _first, _last = BLOCK_HEADER.unpack_from(head, 0)
    if magic != BLOCK_MAGIC:
        return f"bad block magic {magic!r}"
    if stored > room - BLOCK_HEADER_SIZE:
        return f"block of {stored} bytes runs past the end of the file ({room - BLOCK_HEADER_SIZE} bytes left)"
    return None


def _read_header(fh: BinaryIO, path: Path) -> CaptureHeader:
    head = fh.read(FILE_HEADER_SIZE)
    if len(head) < FILE_HEADER_SIZE or head[:8] != FILE_MAGIC:
        raise LogError(f"{path} is not a capture file (it does not start with the {FILE_MAGIC!r} header)")
    _magic, version, _flags, body_len, created, _rsv = FILE_HEADER.unpack_from(head, 0)
    if version > VERSION:
        raise LogError(f"{path} is capture format version {version}; this reader knows up to {VERSION}: upgrade")
    body = fh.read(body_len)
    (want,) = _CRC.unpack_from(head, FILE_HEADER_SIZE - 4)
    if len(body) != body_len or zlib.crc32(body, zlib.crc32(head[: FILE_HEADER_SIZE - 4])) != want:
        raise LogError(f"{path}: the capture header is cut short or damaged (checksum mismatch); no record is usable")
    doc = json.loads(body)
    return CaptureHeader(doc["venue"], doc["meta"], created, version, FILE_HEADER_SIZE + body_len)


class CaptureReader:
    """Read a capture: ``.header``, then records (iterate) or verified blocks (:meth:`blocks`), in order.

    A torn tail ends the iteration after the last complete block with a warning; the
    reader's ``torn`` says where. A corrupt middle raises :class:`CorruptCapture` when it
    is reached, or with ``skip_corrupt=True`` is logged (``skipped`` lists it) and reading
    resumes at the next valid block. The file is read up to its size at each iteration's start.
    """

    def __init__(self, path: str | Path, *, skip_corrupt: bool = False) -> None:
        self.path = Path(path)
        self.skip_corrupt = skip_corrupt
        self._fh: BinaryIO | None = open(self.path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        try:
            self.header = _read_header(self._fh, self.path)
        except BaseException:
            self.close()
            raise
        self.torn: TornTail | None = None
        self.skipped: list[TornTail] = []  # corrupt stretches skipped with skip_corrupt

    @property
    def venue(self) -> str:
        return self.header.venue

    @property
    def meta(self) -> dict[str, Any]:
        return self.header.meta

    def blocks(self) -> Iterator[Block]:
        fh = self._fh
        if fh is None:
            raise LogError(f"capture reader for {self.path} is closed")
        size = os.fstat(fh.fileno()).st_size
        pos, records = self.header.size, 0
        self.torn, self.skipped = None, []
        while pos < size:
            fh.seek(pos)
            head = fh.read(BLOCK_HEADER_SIZE)
            problem = _header_problem(head, size - pos)
            if problem is None:
                stored = fh.read(BLOCK_HEADER.unpack_from(head, 0)[3])
                block = _decode_block(head, stored, pos)
                if isinstance(block, Block):
                    yield block
                    pos, records = block.end, records + len(block)
                    continue
                problem = block
            nxt = self._next_valid(fh, pos + 1, size)
            if nxt is None:
                self.torn = TornTail(pos, size - pos, problem, records)
                log.warning(
                    "TORN CAPTURE TAIL in %s: %s at byte offset %d after %d valid records; the last %d bytes "
                    "(a write cut short, e.g. the writer was killed) are ignored",
                    self.path, problem, pos, records, size - pos,
                )
                return
            if not self.skip_corrupt:
                raise CorruptCapture(str(self.path), pos, records, problem)
            self.skipped.append(TornTail(pos, nxt - pos, problem, records))
            log.error(
                "CORRUPT CAPTURE %s: %s at byte offset %d after %d valid records; skipped %d bytes to the next "
                "valid block", self.path, problem, pos, records, nxt - pos,
            )
            pos = nxt

    @staticmethod
    def _next_valid(fh: BinaryIO, start: int, size: int) -> int | None:
        """Offset of the first valid block at or after ``start``; only read when something is wrong."""
        fh.seek(start)
        buf = fh.read(size - start)
        at = buf.find(BLOCK_MAGIC)
        while at >= 0:
            head = buf[at : at + BLOCK_HEADER_SIZE]
            if _header_problem(head, len(buf) - at) is None:
                stored = buf[at + BLOCK_HEADER_SIZE : at + BLOCK_HEADER_SIZE + BLOCK_HEADER.unpack_from(head, 0)[3]]
                if isinstance(_decode_block(head, stored, start + at), Block):
                    return start + at
            at = buf.find(BLOCK_MAGIC, at + 1)
        return None

    def __iter__(self) -> Iterator[Record]:
        for block in self.blocks():
            yield from block.records()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ------------------------------------------------------------------ replay

Speed = float | Literal["max"] | None


def _pacing(speed: Speed) -> float | None:
    if speed is None or speed == "max":
        return None
    if isinstance(speed, str) or not speed > 0 or speed == float("inf"):
        raise ValueError(
            f"replay speed must be a positive finite number, 'max' or None (as fast as possible), got {speed!r}"
        )
    return float(speed)


def _schedule(records: Iterator[Record], speed: float, min_sleep_ns: int) -> Iterator[tuple[float, Record]]:
    """``(seconds to wait, record)``: each record is due at start + (recv_ns - first recv_ns) / speed.

    ``now`` is the last clock reading, which is never later than the real time: a record
    due within ``min_sleep`` of it is yielded without reading the clock again.
    """
    first = next(records, None)
    if first is None:
        return
    start = now = time.monotonic_ns()
    t0 = first.recv_ns
    yield 0.0, first
    for rec in records:
        due = start + int((rec.recv_ns - t0) / speed)
        if due - now > min_sleep_ns:
            now = time.monotonic_ns()
            if due - now > min_sleep_ns:
                wait = due - now
                now = due  # the caller sleeps until then
                yield wait / 1e9, rec
                continue
        yield 0.0, rec


def replay(path: str | Path, speed: Speed = None, *, min_sleep: float = 0.001) -> Iterator[Record]:
    """Yield a capture's records, paced at ``speed`` times their recorded rate (None or "max": no pacing).

    A record is yielded at most ``min_sleep`` seconds before it is due; time spent by
    the consumer counts towards the gaps, so a consumer slower than the capture falls
    behind instead of being slept on.
    """
    pace = _pacing(speed)
    with CaptureReader(path) as reader:
        if pace is None:
            yield from reader
            return
        for wait, rec in _schedule(iter(reader), pace, int(min_sleep * 1e9)):
            if wait:
                time.sleep(wait)
            yield rec


async def areplay(path: str | Path, speed: Speed = None, *, min_sleep: float = 0.001) -> AsyncIterator[Record]:
    """:func:`replay` for asyncio: waits with ``asyncio.sleep`` (blocks are read and decompressed inline)."""
    pace = _pacing(speed)
    with CaptureReader(path) as reader:
        if pace is None:
            for i, rec in enumerate(reader):
                if i % 1024 == 1023:  # let other tasks run during a long unpaced replay
                    await asyncio.sleep(0)
                yield rec
            return
        for wait, rec in _schedule(iter(reader), pace, int(min_sleep * 1e9)):
            if wait:
                await asyncio.sleep(wait)
            yield rec
