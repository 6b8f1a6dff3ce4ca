"""The bars and VWAP engines: trades in, event-time window aggregates and late rows out.

:class:`BarEngine` publishes tumbling OHLCV + VWAP bars (``bar_1s``, ``bar_1m``, ...),
:class:`VwapEngine` a sliding-window VWAP (table ``vwap``). Both are thin shells around
:class:`rte.windows.EventTimeWindows`, which owns the semantics (window alignment,
watermark, idleness, lateness, revisions; docs/streaming.md). Each firing is one row with
the whole aggregate and its ``revision``; rows too late for every window go to
``late_data`` with this engine's name, so they are counted and never silently dropped.

Output batches carry the tables' declared columns without ``tp_time`` (the TP stamps it)
and without ``src_seq`` (the runner in ``rte.engine`` sets it); they are built column by
column from numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from rte.engine import Engine, Output
from rte.windows import DEFAULT_BOUND_NS, DEFAULT_IDLE_NS, EventTimeWindows, Fired, Late
from tickerplant.message import Message
from tickerplant.schema import TIMESTAMP

INPUT = "trade"
LATE_TABLE = "late_data"

BAR_SCHEMA = pa.schema([
    pa.field("time", TIMESTAMP, nullable=False),  # window start
    pa.field("sym", pa.string(), nullable=False),
    pa.field("window_end", TIMESTAMP),  # exclusive
    pa.field("open", pa.float64()),
    pa.field("high", pa.float64()),
    pa.field("low", pa.float64()),
    pa.field("close", pa.float64()),
    pa.field("volume", pa.float64()),
    pa.field("vwap", pa.float64()),
    pa.field("count", pa.int64()),
    pa.field("revision", pa.int32()),
])
VWAP_SCHEMA = pa.schema([BAR_SCHEMA.field(n) for n in ("time", "sym", "window_end", "vwap", "volume", "count",
                                                      "revision")])
LATE_SCHEMA = pa.schema([
    pa.field("time", TIMESTAMP, nullable=False),  # the late row's event time
    pa.field("sym", pa.string(), nullable=False),
    pa.field("engine", pa.string()),
    pa.field("source_table", pa.string()),
    pa.field("watermark", TIMESTAMP),
    pa.field("price", pa.float64()),
    pa.field("size", pa.float64()),
])

_UNITS = (("d", 86_400_000_000_000), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
          ("ms", 1_000_000), ("us", 1_000), ("ns", 1))


def bar_table_name(every_ns: int) -> str:
    """The table bars of that length go to, in the largest unit that divides it: 60 s -> ``bar_1m``."""
    if every_ns <= 0:
        raise ValueError(f"bar length must be positive, got {every_ns}ns")
    for unit, ns in _UNITS:
        if every_ns % ns == 0:
            return f"bar_{every_ns // ns}{unit}"
    raise AssertionError("unreachable: every length is a whole number of ns")


def _timestamps(values: np.ndarray) -> pa.Array:
    # int64 viewed as timestamps: pa.array(values, TIMESTAMP) takes a ~3 us detour through pandas_compat
    return pa.array(np.asarray(values, np.int64)).view(TIMESTAMP)


def _nullable_floats(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=np.isnan(values))


class _WindowEngine(Engine):
    """Trades -> ``EventTimeWindows`` -> one output table plus ``late_data``."""

    inputs = (INPUT,)
    schema: pa.Schema

    def __init__(self, name: str, table: str, windows: EventTimeWindows) -> None:
        self.name = name
        self.table = table
        self.outputs = (table, LATE_TABLE)
        # late_data is shared by every windowed engine: on restart only rows naming this engine are ours.
        self.output_key = ("engine", name)
        self.windows = windows

    def on_upd(self, msg: Message) -> list[Output]:
        if msg.table != INPUT:
            return []
        data = msg.data
        # datetime64[ns] viewed as int64: a cast through pyarrow.compute costs ~5 us per call on 1-row updates
        times = np.asarray(data.column("time").to_numpy(zero_copy_only=False), "datetime64[ns]").view(np.int64)
        res = self.windows.update(
            times,
            data.column("sym"),
            data.column("price").to_numpy(zero_copy_only=False),
            data.column("size").to_numpy(zero_copy_only=False),
            msg.time,
        )
        out: list[Output] = []
        if len(res.fired):
            out.append((self.table, self.rows(res.fired)))
        if len(res.late):
            out.append((LATE_TABLE, self.late_rows(data, res.late)))
        return out

    def on_eod(self, date: str) -> list[Output]:
        fired = self.windows.flush()
        return [(self.table, self.rows(fired))] if len(fired) else []

    def rows(self, fired: Fired) -> pa.RecordBatch:
        column = self._COLUMNS  # only the schema's columns are built: VWAP rows skip open/high/low/close
        return pa.RecordBatch.from_arrays([column[f.name](fired) for f in self.schema], schema=self.schema)

    def columns(self, fired: Fired) -> dict[str, pa.Array]:
        """Every column an output row can have, by name."""
        return {name: build(fired) for name, build in self._COLUMNS.items()}

    _COLUMNS: dict[str, Callable[[Fired], pa.Array]] = {
        "time": lambda f: _timestamps(f.start),
        "sym": lambda f: f.sym,
        "window_end": lambda f: _timestamps(f.end),
        "open": lambda f: pa.array(f.open, pa.float64()),
        "high": lambda f: pa.array(f.high, pa.float64()),
        "low": lambda f: pa.array(f.low, pa.float64()),
        "close": lambda f: pa.array(f.close, pa.float64()),
        "volume": lambda f: pa.array(f.volume, pa.float64()),
        "vwap": lambda f: _nullable_floats(f.vwap),
        "count": lambda f: pa.array(f.count, pa.int64()),
        "revision": lambda f: pa.array(f.revision, pa.int32()),
    }

    def late_rows(self, data: pa.RecordBatch, late: Late) -> pa.RecordBatch:
        take = pa.array(late.row, pa.int64())
        n = len(late)
        return pa.RecordBatch.from_arrays([
            data.column("time").take(take).cast(TIMESTAMP),
            data.column("sym").take(take),
            pa.repeat(pa.scalar(self.name, pa.string()), n),
            pa.repeat(pa.scalar(INPUT, pa.string()), n),
            _timestamps(late.watermark),
            data.column("price").take(take),
            data.column("size").take(take),
        ], schema=LATE_SCHEMA)

    @property
    def late_count(self) -> int:
        """Trades this engine sent to ``late_data`` since it started."""
        return self.windows.late_count


class BarEngine(_WindowEngine):
    """Tumbling OHLCV + VWAP bars of ``every_ns`` per sym, to ``bar_<every>`` (or ``table``)."""

    schema = BAR_SCHEMA

    def __init__(self, every_ns: int, lateness_ns: int = 0, bound_ns: int = DEFAULT_BOUND_NS,
                 idle_ns: int = DEFAULT_IDLE_NS, table: str | None = None) -> None:
        table = table or bar_table_name(every_ns)
        super().__init__(table, table, EventTimeWindows(every_ns, bound_ns=bound_ns, idle_ns=idle_ns,
                                                        lateness_ns=lateness_ns))


class VwapEngine(_WindowEngine):
    """VWAP, volume and count over sliding windows of ``window_ns`` every ``slide_ns``, to table ``vwap``."""

    schema = VWAP_SCHEMA

    def __init__(self, window_ns: int, slide_ns: int, lateness_ns: int = 0, bound_ns: int = DEFAULT_BOUND_NS,
                 idle_ns: int = DEFAULT_IDLE_NS, table: str = "vwap") -> None:
        super().__init__("vwap", table, EventTimeWindows(window_ns, slide_ns, bound_ns=bound_ns, idle_ns=idle_ns,
                                                         lateness_ns=lateness_ns))
