"""Administrative requests to a running tickerplant: end of day now, and its counters."""

from __future__ import annotations

import socket
from typing import Any

from tickerplant import protocol
from tickerplant.exceptions import ConnectionClosed, RejectedError
from tickerplant.protocol import Frame, FrameType
from tickerplant.subscriber import parse_address


def _request(address: str, token: str | None, request: FrameType, reply: FrameType, timeout: float) -> Frame:
    sock = socket.create_connection(parse_address(address), timeout=timeout)
    with sock:
        sock.sendall(protocol.encode_json(FrameType.HELLO, {"role": "admin", "token": token, "name": "tick"}))
        sock.sendall(protocol.encode(request))
        decoder = protocol.FrameDecoder()
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionClosed("the TP closed the connection")
            for frame in decoder.feed(data):
                if frame.type == FrameType.ERROR:
                    body = frame.json()
                    raise RejectedError(str(body.get("code")), str(body.get("reason")))
                if frame.type == reply:
                    return frame


def stats(address: str, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """The TP's counters: sequence, log, rows in, subscribers, slow disconnects, ..."""
    body: dict[str, Any] = _request(address, token, FrameType.STATS_REQUEST, FrameType.STATS, timeout).json()
    return body


def end_of_day(address: str, token: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Roll the day now; returns the closed day and seq, and the TP's counters for the new day."""
    eod = _request(address, token, FrameType.EOD_REQUEST, FrameType.EOD, timeout)
    closed = eod.json()
    return {"closed": closed["date"], "closed_seq": eod.seq, **stats(address, token, timeout)}
