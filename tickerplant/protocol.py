"""The wire protocol, sans I/O: bytes in, frames out; frames in, bytes out.

Specified byte for byte in ``docs/protocol.md``. Every message between processes and
every record in the log is a *frame*: a 32-byte header followed by a payload whose
length is a multiple of 8 (so Arrow buffers inside stay 8-byte aligned)::

    0      2      3      4        8                16               24      28       32
    +------+------+------+--------+----------------+----------------+-------+--------+
    | "TK" | ver  | type | length |      seq       |      time      |  aux  | crc32  |
    +------+------+------+--------+----------------+----------------+-------+--------+

``crc32`` covers the payload first, then header bytes 0..28, so the tickerplant can
give a publisher's UPD its sequence number and time by rewriting the header alone and
re-using the payload's CRC (the payload, which may be megabytes, is never re-hashed).

Nothing here touches a socket or a file: the asyncio server, the clients and the log
reader all drive the same :class:`FrameDecoder`.
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from typing import Any

import pyarrow as pa

from tickerplant.exceptions import FrameTooLarge, ProtocolError

MAGIC = b"TK"
VERSION = 1
HEADER = struct.Struct("<2sBBIQqI")  # without the trailing crc32
HEADER_SIZE = 32
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_CRC = struct.Struct("<I")
_PAD = bytes(8)


class FrameType(enum.IntEnum):
    """Frame types; the numbers are part of the wire and log format."""

    HELLO = 1  # client -> TP: role, token, publisher id (JSON)
    WELCOME = 2  # TP -> client: date, log position, settings (JSON); SCHEMA frames follow
    SCHEMA = 3  # either way: table name + Arrow IPC schema; seq = schema version
    UPD = 4  # either way: table name + Arrow IPC record batch; seq, time, aux = rows
    SUB = 5  # client -> TP: tables, syms, from_seq (JSON)
    SUBSCRIBED = 6  # TP -> client: log position and date (JSON), after the SCHEMA frames
    FLUSH = 7  # publisher -> TP: ack me up to pub seq `seq`; aux = 1 for durable
    ACK = 8  # TP -> publisher: seq = durable pub seq; payload: logged, durable (u64, u64)
    EOD = 9  # TP -> subscribers and log: seq = last seq of the day; JSON date/next
    HEARTBEAT = 10  # either way: seq = sender's position, time = sender's clock
    ERROR = 11  # TP -> client: code, reason (JSON); aux = 1 when the TP closes after it
    PUBMARK = 12  # log only: payload = 16-byte publisher id; seq = its last logged pub seq
    EOD_REQUEST = 13  # admin -> TP: roll the day now
    STATS_REQUEST = 14  # admin -> TP
    STATS = 15  # TP -> admin: counters (JSON)
    QUERY = 16  # client -> query service: seq = query id; SQL text and limits (JSON)
    RESULT = 17  # query service -> client: seq = query id; rows, bytes, seconds (JSON), after the UPDs


_TYPES = frozenset(int(t) for t in FrameType)
# What pyarrow raises on bytes that are not a valid IPC message.
ARROW_ERRORS = (pa.ArrowException, ValueError, OSError, EOFError)


class Frame:
    """One decoded frame. ``payload`` is a zero-copy view of the received bytes."""

    __slots__ = ("aux", "payload", "payload_crc", "seq", "time", "type")

    def __init__(
        self, type: int, seq: int, time: int, aux: int, payload: memoryview, payload_crc: int | None
    ) -> None:
        self.type = type
        self.seq = seq
        self.time = time
        self.aux = aux
        self.payload = payload
        self.payload_crc = payload_crc

    def __repr__(self) -> str:
        name = FrameType(self.type).name if self.type in _TYPES else str(self.type)
        return f"Frame({name}, seq={self.seq}, time={self.time}, aux={self.aux}, {len(self.payload)}B)"

    def json(self) -> Any:
        """The payload of a JSON-bodied frame (HELLO, WELCOME, SUB, ERROR, ...)."""
        try:
            return json.loads(bytes(self.payload).rstrip(b" "))
        except ValueError as exc:
            raise ProtocolError(f"{FrameType(self.type).name} payload is not valid JSON: {exc}") from exc

    def header(self) -> bytes:
        """The frame's 32-byte header, as it would be encoded now."""
        if self.payload_crc is None:  # decoded without verification (from a checksummed log chunk)
            self.payload_crc = zlib.crc32(self.payload)
        return header(self.type, len(self.payload), self.seq, self.time, self.aux, self.payload_crc)

    def to_bytes(self) -> bytes:
        return self.header() + bytes(self.payload)


def header(ftype: int, length: int, seq: int, time: int, aux: int, payload_crc: int) -> bytes:
    """Encode a header for a payload of ``length`` bytes whose crc32 is ``payload_crc``."""
    head = HEADER.pack(MAGIC, VERSION, ftype, length, seq, time, aux)
    return head + _CRC.pack(zlib.crc32(head, payload_crc))


def pad8(payload: bytes) -> bytes:
    rem = len(payload) % 8
    return payload + _PAD[: 8 - rem] if rem else payload


def encode(ftype: int, payload: bytes = b"", seq: int = 0, time: int = 0, aux: int = 0) -> bytes:
    """Encode one frame; the payload is zero-padded to a multiple of 8 bytes."""
    payload = pad8(payload)
    return header(ftype, len(payload), seq, time, aux, zlib.crc32(payload)) + payload


def encode_json(ftype: int, body: Any, seq: int = 0, time: int = 0, aux: int = 0) -> bytes:
    """Encode a JSON-bodied frame (padded with spaces, which JSON ignores)."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    rem = len(raw) % 8
    if rem:
        raw += b" " * (8 - rem)
    return encode(ftype, raw, seq, time, aux)


def encode_error(code: str, reason: str, fatal: bool = False, **extra: Any) -> bytes:
    return encode_json(FrameType.ERROR, {"code": code, "reason": reason, **extra}, aux=int(fatal))


# --- table name block: u8 length, UTF-8 name, zero padding to a multiple of 8 --------------


def name_block(table: str) -> bytes:
    raw = table.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"table name {table!r} must be 1..255 bytes of UTF-8")
    return pad8(bytes((len(raw),)) + raw)


def split_name(payload: memoryview) -> tuple[str, memoryview]:
    """Split a SCHEMA/UPD payload into its table name and the Arrow bytes after it."""
    if len(payload) < 8:
        raise ProtocolError(f"payload of {len(payload)} bytes is too short to hold a table name")
    n = payload[0]
    end = (1 + n + 7) & ~7
    if n == 0 or end > len(payload):
        raise ProtocolError(f"table name length {n} does not fit a payload of {len(payload)} bytes")
    try:
        table = bytes(payload[1 : 1 + n]).decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"table name is not valid UTF-8: {exc}") from exc
    return table, payload[end:]


def upd_parts(table: str, batch: pa.RecordBatch, seq: int = 0, time: int = 0) -> tuple[bytes, pa.Buffer]:
    """A UPD frame as two buffers (header + name block, Arrow body), for ``writelines``.

    Hot paths send these without joining them: copying a large body into a new bytes
    object costs more than the serialisation itself.
    """
    body = batch.serialize()
    block = name_block(table)
    crc = zlib.crc32(body, zlib.crc32(block))
    return header(FrameType.UPD, len(block) + body.size, seq, time, batch.num_rows, crc) + block, body


def encode_upd(table: str, batch: pa.RecordBatch, seq: int = 0, time: int = 0) -> bytes:
    """A UPD frame carrying ``batch`` (Arrow IPC record batch message, no schema)."""
    head, body = upd_parts(table, batch, seq, time)
    return head + memoryview(body)


_ACK = struct.Struct("<QQ")


def encode_ack(logged: int, durable: int, time: int) -> bytes:
    """ACK: header seq = durable pub seq; payload = logged and durable pub seqs."""
    body = _ACK.pack(logged, durable)
    return header(FrameType.ACK, len(body), durable, time, 0, zlib.crc32(body)) + body


def decode_ack(frame: Frame) -> tuple[int, int]:
    """(logged, durable) pub seqs of an ACK frame."""
    if len(frame.payload) != _ACK.size:
        raise ProtocolError(f"ACK payload must be {_ACK.size} bytes, got {len(frame.payload)}")
    logged, durable = _ACK.unpack(frame.payload)
    return int(logged), int(durable)


def encode_schema(table: str, schema: pa.Schema, version: int) -> bytes:
    return encode(FrameType.SCHEMA, name_block(table) + schema.serialize().to_pybytes(), seq=version)


def decode_schema(frame: Frame) -> tuple[str, pa.Schema]:
    table, body = split_name(frame.payload)
    try:
        return table, pa.ipc.read_schema(pa.py_buffer(body))
    except ARROW_ERRORS as exc:
        raise ProtocolError(f"SCHEMA frame for table {table!r} holds no valid Arrow schema: {exc}") from exc


def read_batch(body: memoryview, schema: pa.Schema) -> pa.RecordBatch:
    """Read a UPD body as a record batch of ``schema``, zero-copy; raises one of ARROW_ERRORS."""
    return pa.ipc.read_record_batch(pa.py_buffer(body), schema)


# --- decoding -------------------------------------------------------------------------------


def decode_all(buf: bytes | memoryview) -> tuple[list[Frame], int]:
    """Frames of a whole buffer already verified elsewhere (a log chunk): no CRC check.

    Returns the frames and the number of bytes they used.
    """
    return FrameDecoder(max_frame=1 << 32, verify=False).parse(buf)


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns every complete frame in one pass.

    The payload size is checked against ``max_frame`` from the header alone, before any
    memory is set aside for it. Pieces of a large frame are kept in a list and joined
    once, so a frame arriving in many reads costs one copy, not quadratic copying.
    After a :class:`ProtocolError` the stream cannot be resynchronised: drop the
    connection.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, verify: bool = True) -> None:
        self.max_frame = max_frame
        self.verify = verify
        self._pieces: list[bytes] = []
        self._have = 0
        self._need = HEADER_SIZE

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return self._have

    def feed(self, data: bytes) -> list[Frame]:
        if not data:
            return []
        self._pieces.append(data)
        self._have += len(data)
        if self._have < self._need:
            return []
        buf = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        frames, used = self.parse(buf)
        rest = buf[used:]
        self._pieces = [rest] if rest else []
        self._have = len(rest)
        return frames

    def parse(self, buf: bytes | memoryview) -> tuple[list[Frame], int]:
        """Decode the complete frames at the start of ``buf``; returns them and bytes used."""
        frames: list[Frame] = []
        view = memoryview(buf)
        pos, end = 0, len(buf)
        unpack, crc32, max_frame, verify = HEADER.unpack_from, zlib.crc32, self.max_frame, self.verify
        while end - pos >= HEADER_SIZE:
            magic, version, ftype, length, seq, time, aux = unpack(buf, pos)
            if magic != MAGIC:
                raise ProtocolError(
                    f"bad magic {magic!r} at stream offset {pos} (expected {MAGIC!r}): "
                    f"the peer does not speak the tickerplant protocol"
                )
            if version != VERSION:
                raise ProtocolError(f"protocol version {version} is not supported (this side speaks {VERSION})")
            if ftype not in _TYPES:
                raise ProtocolError(f"unknown frame type {ftype}")
            if length > max_frame:
                raise FrameTooLarge(length, max_frame)
            if length % 8:
                raise ProtocolError(f"frame payload length {length} is not a multiple of 8")
            stop = pos + HEADER_SIZE + length
            if stop > end:
                self._need = stop - pos
                break
            payload = view[pos + HEADER_SIZE : stop]
            pcrc = crc32(payload) if verify else None
            if verify:
                (want,) = _CRC.unpack_from(buf, pos + 28)
                if crc32(view[pos : pos + 28], pcrc) != want:  # type: ignore[arg-type]
                    raise ProtocolError(
                        f"checksum mismatch in {FrameType(ftype).name} frame at stream offset {pos}: "
                        f"the frame was corrupted in transit"
                    )
            frames.append(Frame(ftype, seq, time, aux, payload, pcrc))
            pos = stop
        else:
            self._need = HEADER_SIZE
        return frames, pos
