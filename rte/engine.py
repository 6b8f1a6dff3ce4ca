"""What every real-time engine is, and (below, to come) the runner that drives one.

An :class:`Engine` is a deterministic function of the TP's stream: given the same
updates in the same order it returns the same rows. That is what lets a restarted
engine replay the day's log from sequence 1, rebuild its state exactly, and publish
only the rows it had not published before (DESIGN.md invariants 3 and 4, applied to
derived tables). So an engine never reads the wall clock: its notion of "now" is the
TP's receive time of the update in hand (``Message.time``, the ``tp_time`` column),
which is logged and replays identically.
"""

from __future__ import annotations

import abc

import pyarrow as pa

from tickerplant.message import Message

# (table, rows): rows in the table's columns as the schema declares them, without
# ``tp_time`` (the TP stamps it) and without ``src_seq`` (the runner sets it to the
# sequence number of the update that produced the rows). Missing nullable columns are
# filled with nulls.
Output = tuple[str, pa.RecordBatch]


class Engine(abc.ABC):
    """A subscriber of ``inputs`` that publishes ``outputs``; it must be their only publisher."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @abc.abstractmethod
    def on_upd(self, msg: Message) -> list[Output]:
        """One update of an input table in; the rows it produces out (often none)."""

    def on_eod(self, date: str) -> list[Output]:
        """The TP closed ``date``: flush what is open (windows close), then start the next day clean."""
        return []
