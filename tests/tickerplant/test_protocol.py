"""Tests of the wire protocol codec (``tickerplant/protocol.py``, ``docs/protocol.md``).

Round trips are checked against literal bytes written out here, so an accidental change
of the wire format fails loudly instead of round-tripping through the changed code.
"""

from __future__ import annotations

import struct
import zlib

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerplant import protocol
from tickerplant.exceptions import FrameTooLarge, ProtocolError
from tickerplant.protocol import Frame, FrameDecoder, FrameType

# --- helpers --------------------------------------------------------------------------------


def fields(frame: Frame) -> tuple[int, int, int, int, bytes, int]:
    """Everything a frame carries, comparable with ==."""
    return (frame.type, frame.seq, frame.time, frame.aux, bytes(frame.payload), frame.payload_crc)


def decode_one(data: bytes) -> Frame:
    dec = FrameDecoder()
    frames = dec.feed(data)
    assert len(frames) == 1
    assert dec.buffered == 0
    return frames[0]


def small_batch() -> pa.RecordBatch:
    return pa.record_batch(
        {
            "a": pa.array([1, 2], pa.int64()),
            "s": pa.array(["x", None], pa.string()),
        }
    )


def sample_stream() -> list[bytes]:
    """A few frames of every payload kind, encoded."""
    return [
        protocol.encode(FrameType.HEARTBEAT, seq=7, time=1),
        protocol.encode_json(FrameType.HELLO, {"role": "sub", "token": None, "name": "t"}),
        protocol.encode_schema("trade", small_batch().schema, 3),
        protocol.encode_upd("trade", small_batch(), seq=41, time=1_700_000_000_000_000_000),
        protocol.encode(FrameType.PUBMARK, bytes(range(16)), seq=5),
        protocol.encode_error("protocol", "bad things", fatal=True),
        protocol.encode(FrameType.ACK, struct.pack("<QQ", 9, 8), seq=8, time=3),
    ]


# --- literal bytes --------------------------------------------------------------------------

HEARTBEAT_HEX = (
    "544b010a"  # magic "TK", version 1, type 10
    "00000000"  # length 0
    "0700000000000000"  # seq 7
    "0100000000000000"  # time 1
    "00000000"  # aux 0
    "d0bca302"  # crc32 LE
)


def test_heartbeat_literal_bytes() -> None:
    data = bytes.fromhex(HEARTBEAT_HEX)
    assert protocol.encode(FrameType.HEARTBEAT, seq=7, time=1) == data
    # the CRC of an empty payload is just the CRC of the first 28 header bytes
    assert zlib.crc32(data[:28]) == 0x02A3BCD0
    frame = decode_one(data)
    assert frame.type == FrameType.HEARTBEAT
    assert frame.seq == 7
    assert frame.time == 1
    assert frame.aux == 0
    assert bytes(frame.payload) == b""
    assert frame.payload_crc == 0
    assert frame.header() == data
    assert frame.to_bytes() == data
    assert repr(frame) == "Frame(HEARTBEAT, seq=7, time=1, aux=0, 0B)"


def test_docs_heartbeat_example_matches() -> None:
    """The example in docs/protocol.md, minus its CRC placeholder."""
    doc = "54 4b 01 0a 00 00 00 00  07 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00  00 00 00 00"
    assert protocol.encode(FrameType.HEARTBEAT, seq=7, time=1)[:28] == bytes.fromhex(doc)


SUB_BODY = {"tables": ["trade"], "syms": None, "from_seq": 1}
SUB_HEX = (
    "544b0105"  # magic, version 1, type 5 (SUB)
    "30000000"  # length 48
    "0000000000000000"  # seq 0
    "0000000000000000"  # time 0
    "00000000"  # aux 0
    "ef31ebd6"  # crc32 LE
    # {"tables":["trade"],"syms":null,"from_seq":1} + 3 spaces = 48 bytes
    "7b227461626c6573223a5b227472616465225d2c2273796d73223a6e756c6c2c"
    "2266726f6d5f736571223a317d202020"
)


def test_json_frame_literal_bytes() -> None:
    data = bytes.fromhex(SUB_HEX)
    assert protocol.encode_json(FrameType.SUB, SUB_BODY) == data
    assert data[32:].endswith(b"}   ")  # padded with spaces, not zeros
    assert zlib.crc32(data[:28], zlib.crc32(data[32:])) == 0xD6EB31EF
    frame = decode_one(data)
    assert frame.type == FrameType.SUB
    assert (frame.seq, frame.time, frame.aux) == (0, 0, 0)
    assert len(frame.payload) == 48
    assert frame.payload_crc == zlib.crc32(data[32:])
    assert frame.json() == SUB_BODY
    assert frame.to_bytes() == data


@pytest.mark.parametrize("size", range(0, 17))
def test_json_padding_is_spaces_to_multiple_of_8(size: int) -> None:
    body = "x" * size
    data = protocol.encode_json(FrameType.STATS, body, seq=3, time=4, aux=5)
    raw = b'"' + b"x" * size + b'"'
    payload = data[32:]
    assert len(payload) % 8 == 0
    assert len(payload) - len(raw) < 8
    assert payload == raw + b" " * (len(payload) - len(raw))
    frame = decode_one(data)
    assert (frame.type, frame.seq, frame.time, frame.aux) == (FrameType.STATS, 3, 4, 5)
    assert frame.json() == body


def test_encode_error_frame() -> None:
    frame = decode_one(protocol.encode_error("auth", "token refused", fatal=True, extra=1))
    assert frame.type == FrameType.ERROR
    assert frame.aux == 1
    assert frame.json() == {"code": "auth", "reason": "token refused", "extra": 1}
    assert decode_one(protocol.encode_error("order", "no schema")).aux == 0


def test_frame_json_rejects_garbage() -> None:
    frame = decode_one(protocol.encode(FrameType.HELLO, b"{not json"))
    with pytest.raises(ProtocolError, match="HELLO payload is not valid JSON"):
        frame.json()


def test_binary_payload_zero_padded() -> None:
    data = protocol.encode(FrameType.PUBMARK, b"\x01\x02\x03", seq=2)
    assert data[4:8] == bytes.fromhex("08000000")
    assert data[32:] == b"\x01\x02\x03\x00\x00\x00\x00\x00"
    assert protocol.pad8(b"") == b""
    assert protocol.pad8(b"12345678") == b"12345678"
    assert protocol.pad8(b"123456789") == b"123456789" + bytes(7)


def test_schema_frame_literal_header() -> None:
    schema = pa.schema([pa.field("a", pa.int64())])
    arrow = schema.serialize().to_pybytes()
    name = bytes.fromhex("0174000000000000")  # u8 1, "t", zero padding to 8
    payload = name + arrow
    # The Arrow message's bytes belong to pyarrow; only their CRC is computed here.
    crc = zlib.crc32(
        bytes.fromhex(
            "544b0103"  # magic, version 1, type 3 (SCHEMA)
            "88000000"  # length 136 = 8 (name block) + 128 (Arrow schema message)
            "0200000000000000"  # seq = schema version 2
            "0000000000000000"  # time 0
            "00000000"  # aux 0
        ),
        zlib.crc32(payload),
    )
    expected = (
        bytes.fromhex(
            "544b0103"
            "88000000"
            "0200000000000000"
            "0000000000000000"
            "00000000"
        )
        + struct.pack("<I", crc)
        + payload
    )
    data = protocol.encode_schema("t", schema, 2)
    assert data == expected
    frame = decode_one(data)
    assert frame.type == FrameType.SCHEMA
    assert (frame.seq, frame.time, frame.aux) == (2, 0, 0)
    table, body = protocol.split_name(frame.payload)
    assert table == "t"
    assert bytes(body) == arrow
    assert protocol.decode_schema(frame) == ("t", schema)


def test_upd_frame_literal_header() -> None:
    batch = small_batch()
    arrow = batch.serialize().to_pybytes()
    name = bytes.fromhex("0574726164650000")  # u8 5, "trade", zero padding to 8
    head = bytes.fromhex(
        "544b0104"  # magic, version 1, type 4 (UPD)
        "08010000"  # length 264 = 8 (name block) + 256 (Arrow record batch message)
        "0500000000000000"  # seq 5
        "0900000000000000"  # time 9
        "02000000"  # aux = 2 rows
    )
    crc = zlib.crc32(head, zlib.crc32(name + arrow))
    data = protocol.encode_upd("trade", batch, seq=5, time=9)
    assert data == head + struct.pack("<I", crc) + name + arrow
    frame = decode_one(data)
    assert frame.type == FrameType.UPD
    assert (frame.seq, frame.time, frame.aux) == (5, 9, 2)
    assert frame.payload_crc == zlib.crc32(name + arrow)
    table, body = protocol.split_name(frame.payload)
    assert table == "trade"
    assert len(body) % 8 == 0
    got = protocol.read_batch(body, batch.schema)
    assert got.equals(batch)
    assert got.schema.equals(batch.schema)


def test_upd_of_empty_batch() -> None:
    batch = small_batch().slice(0, 0)
    frame = decode_one(protocol.encode_upd("q", batch))
    assert frame.aux == 0
    table, body = protocol.split_name(frame.payload)
    assert table == "q"
    assert protocol.read_batch(body, batch.schema).num_rows == 0


def test_name_block() -> None:
    assert protocol.name_block("t") == bytes.fromhex("0174000000000000")
    assert protocol.name_block("abcdefg") == b"\x07abcdefg"
    assert protocol.name_block("abcdefgh") == b"\x08abcdefgh" + bytes(7)
    assert len(protocol.name_block("x" * 255)) == 256
    assert protocol.name_block("é") == b"\x02\xc3\xa9" + bytes(5)
    for bad in ("", "x" * 256):
        with pytest.raises(ValueError, match=r"1\.\.255 bytes"):
            protocol.name_block(bad)


def test_decode_schema_rejects_garbage_arrow_body() -> None:
    body = protocol.name_block("t") + b"\xff" * 16
    frame = decode_one(protocol.encode(FrameType.SCHEMA, body))
    with pytest.raises(ProtocolError, match="holds no valid Arrow schema"):
        protocol.decode_schema(frame)


def test_decode_schema_rejects_empty_arrow_body() -> None:
    frame = decode_one(protocol.encode(FrameType.SCHEMA, protocol.name_block("t")))
    with pytest.raises(ProtocolError, match="SCHEMA frame for table 't' holds no valid Arrow"):
        protocol.decode_schema(frame)


# --- the CRC rule: re-stamping a header re-uses the payload's CRC --------------------------


def test_restamp_header_reuses_payload_crc() -> None:
    original = protocol.encode_upd("trade", small_batch(), seq=1, time=0)
    frame = decode_one(original)
    head = protocol.header(FrameType.UPD, len(frame.payload), 1234, 5678, frame.aux, frame.payload_crc)
    assert len(head) == protocol.HEADER_SIZE
    assert head[:28] == bytes.fromhex(
        "544b0104" "08010000" "d204000000000000" "2e16000000000000" "02000000"
    )
    # crc32(header[0:28], crc32(payload))
    assert head[28:] == struct.pack("<I", zlib.crc32(head[:28], zlib.crc32(frame.payload)))
    restamped = decode_one(head + bytes(frame.payload))
    assert (restamped.seq, restamped.time, restamped.aux) == (1234, 5678, 2)
    assert bytes(restamped.payload) == bytes(frame.payload)
    assert restamped.payload_crc == frame.payload_crc
    table, body = protocol.split_name(restamped.payload)
    assert table == "trade"
    assert protocol.read_batch(body, small_batch().schema).equals(small_batch())


def test_restamp_via_frame_attributes() -> None:
    frame = decode_one(protocol.encode_json(FrameType.STATS, {"n": 1}))
    frame.seq = 2**64 - 1
    frame.time = -(2**63)
    frame.aux = 2**32 - 1
    again = decode_one(frame.to_bytes())
    assert (again.seq, again.time, again.aux) == (2**64 - 1, -(2**63), 2**32 - 1)
    assert again.json() == {"n": 1}


def test_header_with_wrong_crc_fails_verification() -> None:
    frame = decode_one(protocol.encode(FrameType.PUBMARK, bytes(range(16))))
    head = protocol.header(FrameType.PUBMARK, 16, 9, 0, 0, frame.payload_crc ^ 1)
    with pytest.raises(ProtocolError, match="checksum mismatch in PUBMARK frame"):
        FrameDecoder().feed(head + bytes(frame.payload))


def test_unverified_frame_re_encodes_correctly() -> None:
    data = protocol.encode(FrameType.PUBMARK, bytes(range(16)), seq=3)
    (frame,) = FrameDecoder(verify=False).feed(data)
    assert frame.to_bytes() == data


def test_decode_all_returns_frames_and_bytes_used() -> None:
    frames = sample_stream()
    whole = b"".join(frames)
    got, used = protocol.decode_all(whole + frames[3][:40])
    assert used == len(whole)
    assert [(f.type, f.seq, f.time, f.aux, bytes(f.payload)) for f in got] == [
        fields(f)[:5] for f in FrameDecoder().feed(whole)
    ]
    assert protocol.decode_all(b"") == ([], 0)
    assert protocol.decode_all(memoryview(frames[0][:31])) == ([], 0)


def test_decode_all_does_not_verify_but_checks_structure() -> None:
    data = bytearray(protocol.encode(FrameType.PUBMARK, bytes(range(16)), seq=3))
    data[40] ^= 0xFF  # payload byte: not checked (the log chunk has its own checksum)
    (frame,), used = protocol.decode_all(bytes(data))
    assert used == 48
    assert frame.seq == 3
    data[0] = 0
    with pytest.raises(ProtocolError, match="bad magic"):
        protocol.decode_all(bytes(data))


def test_parse_does_not_keep_state_between_buffers() -> None:
    dec = FrameDecoder()
    a = protocol.encode(FrameType.HEARTBEAT, seq=1)
    assert [f.seq for f in dec.parse(a + a)[0]] == [1, 1]
    assert dec.buffered == 0


def test_verify_false_skips_checksum() -> None:
    data = bytearray(protocol.encode(FrameType.PUBMARK, bytes(range(16)), seq=3))
    data[40] ^= 0xFF
    (frame,) = FrameDecoder(verify=False).feed(bytes(data))
    assert bytes(frame.payload)[8] == 8 ^ 0xFF
    with pytest.raises(ProtocolError, match="checksum"):
        FrameDecoder().feed(bytes(data))


# --- FrameDecoder ---------------------------------------------------------------------------


def test_split_at_every_byte_boundary() -> None:
    stream = b"".join(sample_stream())
    want = [fields(f) for f in FrameDecoder().feed(stream)]
    assert len(want) == len(sample_stream())
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert [fields(f) for f in got] == want, cut
        assert dec.buffered == 0


def test_two_cuts_at_every_boundary_of_one_frame() -> None:
    data = protocol.encode_upd("trade", small_batch(), seq=5, time=9)
    want = fields(decode_one(data))
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            dec = FrameDecoder()
            got = dec.feed(data[:i]) + dec.feed(data[i:j]) + dec.feed(data[j:])
            assert [fields(f) for f in got] == [want], (i, j)


def test_byte_by_byte() -> None:
    stream = b"".join(sample_stream())
    dec = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
        assert dec.buffered == (i + 1) - sum(protocol.HEADER_SIZE + len(f.payload) for f in got)
    assert [fields(f) for f in got] == [fields(f) for f in FrameDecoder().feed(stream)]


def test_many_frames_in_one_feed() -> None:
    frames = [protocol.encode(FrameType.HEARTBEAT, seq=i, time=i * 10) for i in range(1000)]
    dec = FrameDecoder()
    got = dec.feed(b"".join(frames))
    assert [(f.type, f.seq, f.time) for f in got] == [
        (FrameType.HEARTBEAT, i, i * 10) for i in range(1000)
    ]
    assert dec.buffered == 0


def test_whole_frames_plus_partial_tail() -> None:
    frames = sample_stream()
    tail = frames[3][:50]
    dec = FrameDecoder()
    got = dec.feed(frames[0] + frames[1] + tail)
    assert [f.type for f in got] == [FrameType.HEARTBEAT, FrameType.HELLO]
    assert dec.buffered == 50
    got = dec.feed(frames[3][50:])
    assert [f.type for f in got] == [FrameType.UPD]
    assert dec.buffered == 0


def test_partial_frame_returns_nothing_and_is_buffered() -> None:
    data = protocol.encode_upd("trade", small_batch())
    dec = FrameDecoder()
    assert dec.buffered == 0
    assert dec.feed(b"") == []
    assert dec.feed(data[:10]) == []  # part of the header
    assert dec.buffered == 10
    assert dec.feed(data[10:40]) == []  # header and part of the payload
    assert dec.buffered == 40
    assert dec.feed(data[40:-1]) == []  # all but the last byte
    assert dec.buffered == len(data) - 1
    (frame,) = dec.feed(data[-1:])
    assert frame.type == FrameType.UPD
    assert dec.buffered == 0


def test_decoded_payload_survives_later_feeds() -> None:
    a, b = sample_stream()[3], sample_stream()[4]
    dec = FrameDecoder()
    (first,) = dec.feed(a + b[:5])
    saved = bytes(first.payload)
    dec.feed(b[5:])
    assert bytes(first.payload) == saved


def raw_header(
    magic: bytes = b"TK",
    version: int = 1,
    ftype: int = FrameType.HEARTBEAT,
    length: int = 0,
    seq: int = 0,
    time: int = 0,
    aux: int = 0,
    crc: int = 0,
) -> bytes:
    return protocol.HEADER.pack(magic, version, ftype, length, seq, time, aux) + struct.pack("<I", crc)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(raw_header(magic=b"HT"), "bad magic b'HT' at stream offset 0", id="magic"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "does not speak the tickerplant",
            id="http",
        ),
        pytest.param(raw_header(version=2), "protocol version 2 is not supported", id="version"),
        pytest.param(raw_header(version=0), "protocol version 0 is not supported", id="version0"),
        pytest.param(raw_header(ftype=0), "unknown frame type 0", id="type0"),
        pytest.param(raw_header(ftype=18), "unknown frame type 18", id="type18"),
        pytest.param(raw_header(ftype=255), "unknown frame type 255", id="type255"),
        pytest.param(
            raw_header(length=12) + bytes(16), "payload length 12 is not a multiple of 8", id="len12"
        ),
        pytest.param(
            raw_header(length=1), "payload length 1 is not a multiple of 8", id="len1-header-only"
        ),
    ],
)
def test_malformed_header(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        FrameDecoder().feed(data)


def test_bad_magic_after_good_frames_reports_offset() -> None:
    good = protocol.encode(FrameType.HEARTBEAT, seq=1)
    with pytest.raises(ProtocolError, match="bad magic b'XX' at stream offset 64"):
        FrameDecoder().feed(good + good + raw_header(magic=b"XX"))


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "bad magic"),
        (2, "protocol version 0 is not supported"),
        (3, "checksum mismatch in EOD_REQUEST frame at stream offset 0"),  # type 12 -> 13
        (4, "payload length 17 is not a multiple of 8"),
        (8, "checksum mismatch in PUBMARK frame at stream offset 0"),  # seq
        (16, "checksum mismatch in PUBMARK frame"),  # time
        (24, "checksum mismatch in PUBMARK frame"),  # aux
        (28, "checksum mismatch in PUBMARK frame"),  # crc itself
        (31, "checksum mismatch in PUBMARK frame"),
        (32, "corrupted in transit"),  # payload
        (47, "corrupted in transit"),  # last payload byte
    ],
)
def test_corrupted_byte_is_caught(offset: int, message: str) -> None:
    data = bytearray(protocol.encode(FrameType.PUBMARK, bytes(range(16)), seq=5, time=6))
    assert len(data) == 48
    data[offset] ^= 0x01
    with pytest.raises(ProtocolError, match=message):
        FrameDecoder().feed(bytes(data))


def test_corrupted_payload_byte_in_later_frame() -> None:
    frames = sample_stream()
    stream = bytearray(b"".join(frames))
    offset = len(frames[0]) + len(frames[1]) + len(frames[2])
    stream[offset + 40] ^= 0x80  # a payload byte of the UPD frame
    with pytest.raises(ProtocolError, match=f"checksum mismatch in UPD frame at stream offset {offset}"):
        FrameDecoder().feed(bytes(stream))


def test_frame_too_large_raised_on_header_alone() -> None:
    dec = FrameDecoder(max_frame=1024)
    # Only the 32-byte header: the payload it announces has not arrived and never will.
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(raw_header(ftype=FrameType.UPD, length=1032))
    assert info.value.length == 1032
    assert info.value.limit == 1024
    assert "frame of 1032 bytes exceeds the maximum frame size of 1024 bytes" in str(info.value)
    assert "--max-frame" in str(info.value)
    assert isinstance(info.value, ProtocolError)


def test_frame_too_large_header_split_in_pieces() -> None:
    head = raw_header(ftype=FrameType.UPD, length=2**32 - 8)  # ~4 GiB: must not be allocated
    dec = FrameDecoder()
    assert dec.feed(head[:31]) == []
    with pytest.raises(FrameTooLarge, match=f"frame of {2**32 - 8} bytes exceeds .* {64 * 1024 * 1024}"):
        dec.feed(head[31:])


def test_frame_too_large_after_a_good_frame() -> None:
    good = protocol.encode(FrameType.HEARTBEAT)
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=8).feed(good + raw_header(length=16))


def test_frame_at_exact_limit_is_accepted() -> None:
    data = protocol.encode(FrameType.PUBMARK, bytes(1024))
    assert len(FrameDecoder(max_frame=1024).feed(data)) == 1
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=1023).feed(data)


# --- split_name -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"", "payload of 0 bytes is too short", id="empty"),
        pytest.param(b"\x01t", "payload of 2 bytes is too short", id="short"),
        pytest.param(b"\x01t\x00\x00\x00\x00\x00", "payload of 7 bytes is too short", id="seven"),
        pytest.param(bytes(8), "table name length 0 does not fit a payload of 8 bytes", id="zero"),
        pytest.param(
            b"\x08abcdefg", "table name length 8 does not fit a payload of 8 bytes", id="overflow"
        ),
        pytest.param(
            b"\xffabc" + bytes(12), "table name length 255 does not fit a payload of 16", id="255"
        ),
        pytest.param(b"\x02\xc3\x28" + bytes(5), "table name is not valid UTF-8", id="utf8"),
        pytest.param(b"\x01\xff" + bytes(6), "table name is not valid UTF-8", id="utf8-ff"),
    ],
)
def test_split_name_rejects(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        protocol.split_name(memoryview(payload))


def test_split_name_accepts_exact_fit() -> None:
    assert protocol.split_name(memoryview(b"\x07abcdefg")) == ("abcdefg", memoryview(b""))
    table, rest = protocol.split_name(memoryview(b"\x08abcdefgh" + bytes(7) + b"12345678"))
    assert table == "abcdefgh"
    assert bytes(rest) == b"12345678"


# --- hypothesis -----------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow],
)


def check_feeds(pieces: list[bytes]) -> None:
    """Feed pieces; every outcome is a list of Frames until, at most, one ProtocolError."""
    dec = FrameDecoder(max_frame=1 << 16)
    for piece in pieces:
        try:
            out = dec.feed(piece)
        except ProtocolError:
            return
        assert isinstance(out, list)
        assert all(isinstance(f, Frame) for f in out)
        assert dec.buffered >= 0


def plausible_header() -> st.SearchStrategy[bytes]:
    """Headers that get past some of the checks (so the fuzzing reaches deeper)."""
    return st.builds(
        raw_header,
        magic=st.sampled_from([b"TK", b"TK", b"TK", b"KT", b"\x00\x00"]),
        version=st.sampled_from([1, 1, 1, 0, 2, 255]),
        ftype=st.integers(0, 255) | st.sampled_from([int(t) for t in FrameType]),
        length=st.sampled_from([0, 8, 16, 24, 64, 7, 9, 1 << 16, (1 << 16) + 8, 2**32 - 1])
        | st.integers(0, 2**32 - 1),
        seq=st.integers(0, 2**64 - 1),
        time=st.integers(-(2**63), 2**63 - 1),
        aux=st.integers(0, 2**32 - 1),
        crc=st.integers(0, 2**32 - 1),
    )


fuzz_bytes = st.binary(max_size=400) | st.builds(
    lambda h, tail: h + tail, plausible_header(), st.binary(max_size=200)
) | st.lists(
    st.builds(lambda h, tail: h + tail, plausible_header(), st.binary(max_size=64)), max_size=4
).map(b"".join)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


@FUZZ
@given(fuzz_bytes)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_feeds([data])


@FUZZ
@given(fuzz_bytes, st.lists(st.integers(0, 1000), max_size=12))
def test_fuzz_arbitrary_bytes_arbitrary_splits(data: bytes, cuts: list[int]) -> None:
    check_feeds(split_at(data, cuts))


STREAM = sample_stream()


@FUZZ
@given(
    st.lists(st.sampled_from(range(len(STREAM))), min_size=1, max_size=6),
    st.data(),
)
def test_fuzz_single_byte_corruption(which: list[int], data: st.DataObject) -> None:
    frames = [STREAM[i] for i in which]
    stream = bytearray(b"".join(frames))
    pos = data.draw(st.integers(0, len(stream) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != stream[pos]), label="byte")
    stream[pos] = new
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    dec = FrameDecoder(max_frame=1 << 16)
    got: list[Frame] = []
    raised = False
    try:
        for piece in split_at(bytes(stream), cuts):
            got += dec.feed(piece)
    except ProtocolError:
        raised = True
    # What came out is frames from before the corrupted one, never it or anything after.
    # (A feed that raises drops the good frames it had decoded in that same call.)
    bad = next(i for i in range(len(frames)) if pos < sum(len(f) for f in frames[: i + 1]))
    want = [fields(f) for f in FrameDecoder().feed(b"".join(frames[:bad]))]
    assert [fields(f) for f in got] == want[: len(got)]
    if not raised:  # the corruption made a length larger: the decoder waits for more
        assert [fields(f) for f in got] == want
        assert dec.buffered > 0


frame_strategy = st.one_of(
    st.builds(
        protocol.encode,
        st.sampled_from(list(FrameType)),
        st.binary(max_size=80),
        st.integers(0, 2**64 - 1),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        protocol.encode_json,
        st.sampled_from(list(FrameType)),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ),
        seq=st.integers(0, 2**64 - 1),
    ),
    st.sampled_from(STREAM),
)


@FUZZ
@given(st.lists(frame_strategy, max_size=8), st.lists(st.integers(0, 2000), max_size=10))
def test_valid_stream_any_splits_yields_original_frames(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    dec = FrameDecoder(max_frame=1 << 16)
    got: list[Frame] = []
    for piece in split_at(stream, cuts):
        got += dec.feed(piece)
    assert dec.buffered == 0
    assert [f.to_bytes() for f in got] == frames
    for f, raw in zip(got, frames, strict=True):
        assert f.payload_crc == zlib.crc32(raw[32:])
