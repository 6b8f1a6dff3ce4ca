"""SubscriberState (sans I/O): the seq the TP had when it answered SUB (``subscribed_seq``)."""

from __future__ import annotations

from tickerplant import protocol
from tickerplant.protocol import FrameType
from tickerplant.subscriber import EndOfDay, SubscriberState


def _frame(data: bytes) -> protocol.Frame:
    frames = protocol.FrameDecoder().feed(data)
    assert len(frames) == 1
    return frames[0]


def _state(from_seq: int | None) -> SubscriberState:
    state = SubscriberState(["vwap"], None, from_seq, None, "test")
    welcome = {"date": "2026-11-24", "seq": 40, "heartbeat": 1.0, "tables": {}}
    assert state.receive(_frame(protocol.encode_json(FrameType.WELCOME, welcome, seq=40))) is None
    return state


def test_subscribed_seq_is_the_tp_position_at_sub_and_catch_up_reaches_it() -> None:
    state = _state(from_seq=1)
    assert state.subscribed_seq is None
    body = {"date": "2026-11-24", "seq": 42, "from_seq": 1, "tables": {"vwap": 1}}
    state.receive(_frame(protocol.encode_json(FrameType.SUBSCRIBED, body, seq=42)))
    assert state.subscribed_seq == 42
    assert state.position == 0  # replay from 1 still to come
    # A filtered stream's heartbeat after the catch-up carries the TP's seq: caught up.
    state.receive(_frame(protocol.encode(FrameType.HEARTBEAT, seq=42)))
    assert state.position is not None and state.subscribed_seq is not None and state.position >= state.subscribed_seq


def test_subscribed_seq_is_zero_after_end_of_day() -> None:
    state = _state(from_seq=None)
    body = {"date": "2026-11-24", "seq": 7, "from_seq": None, "tables": {"vwap": 1}}
    state.receive(_frame(protocol.encode_json(FrameType.SUBSCRIBED, body, seq=7)))
    assert (state.subscribed_seq, state.position) == (7, 7)
    eod = state.receive(_frame(protocol.encode_json(FrameType.EOD, {"date": "2026-11-24", "next": "2026-11-25"},
                                                    seq=9)))
    assert eod == EndOfDay("2026-11-24", "2026-11-25", 9)
    assert (state.subscribed_seq, state.position) == (0, 0)
