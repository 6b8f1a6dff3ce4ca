"""What every real-time engine is, and the runner that drives one against a TP.

An :class:`Engine` is a deterministic function of the TP's stream: given the same
updates in the same order it returns the same rows. That is what lets a restarted
engine replay the day's log from sequence 1, rebuild its state exactly, and publish
only the rows it had not published before (DESIGN.md invariants 3 and 4, applied to
derived tables). So an engine never reads the wall clock: its notion of "now" is the
TP's receive time of the update in hand (``Message.time``, the ``tp_time`` column),
which is logged and replays identically.

The runner (:func:`run`, :func:`run_forever`) makes an engine an ordinary subscriber
that restarts without losing or duplicating a row:

1. *Resume point.* It reads the engine's output tables of today from seq 1 until it
   has everything the TP had logged when it subscribed; ``last_src[table]`` is the
   largest ``src_seq`` already logged per output table.
2. *Replay, then live.* It subscribes to ``engine.inputs`` from seq 1 and feeds every
   update to ``engine.on_upd``; each output is published with ``src_seq`` = the
   update's seq, unless ``seq <= last_src[table]`` (logged before the restart). One
   update's rows for one table go out in one UPD, so they are logged atomically and,
   per table, the logged ``src_seq`` values are a prefix of what the engine produces:
   this is what makes the rule exact. (A batch larger than half the TP's frame limit is
   split by the publisher and loses that atomicity; engines emit far less per update.)
3. *End of day.* ``engine.on_eod(date)`` rows are published with ``src_seq = 0`` (they
   land in the next day's log, and 0 never suppresses a next-day row); ``last_src``
   starts again for the new day. Rows still in flight when the TP rolled are logged in
   the new day with the old day's ``src_seq``; the resume step recognises them (a row
   cannot come from an update logged after it: ``src_seq >= own seq``) and ignores them.
4. The subscriber and publisher reconnect by themselves when the TP restarts; the
   publisher re-sends what the TP had not fsynced and the TP drops what it already has.

Engines that share output tables (strategies share ``orders``, ``fill``, ``position``; the
windowed engines share ``late_data``) set ``output_key = (column, value)``: in tables that
have that column, only rows with that value are theirs when resuming.
An engine may name output tables in ``verify_outputs`` (the strategy engine names
``orders`` and ``fill``): their logged rows are kept during the resume step and compared
with what the replay regenerates; a difference means the engine is not deterministic and
is logged as an error (the logged rows stay what they are).

Limits: only today's log is replayed, so an engine's state starts clean each day (which
is what ``on_eod`` promises); rows an engine emits from ``on_eod`` are lost if it is
killed between the TP's roll and their publication.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tickerplant.aio import install_uvloop
from tickerplant.convert import to_batch
from tickerplant.exceptions import TickError
from tickerplant.message import Message
from tickerplant.publisher import AsyncPublisher
from tickerplant.schema import TP_TIME
from tickerplant.subscriber import AsyncSubscriber, EndOfDay

logger = logging.getLogger("rte.engine")

SRC_SEQ = "src_seq"

# (table, rows): rows in the table's columns as the schema declares them, without
# ``tp_time`` (the TP stamps it) and without ``src_seq`` (the runner sets it to the
# sequence number of the update that produced the rows). Missing nullable columns are
# filled with nulls.
Output = tuple[str, pa.RecordBatch]


class Engine(abc.ABC):
    """A subscriber of ``inputs`` that publishes ``outputs``: their only publisher, or it sets ``output_key``."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @abc.abstractmethod
    def on_upd(self, msg: Message) -> list[Output]:
        """One update of an input table in; the rows it produces out (often none)."""

    def on_eod(self, date: str) -> list[Output]:
        """The TP closed ``date``: flush what is open (windows close), then start the next day clean."""
        return []


class EngineError(TickError):
    """An engine cannot run against this TP, or broke its contract (the message says which fix)."""


@dataclass
class RunStats:
    """What a run did; pass one to :func:`run` to watch it live."""

    updates: int = 0  # input updates handed to the engine
    seq: int = 0  # seq of the last one
    published: dict[str, int] = field(default_factory=dict)  # rows per output table
    suppressed: dict[str, int] = field(default_factory=dict)  # rows not published: logged before a restart
    mismatches: int = 0  # replayed outputs that differ from the logged ones (verify_outputs)
    days: int = 0  # ends of day seen
    replayed: bool = False  # the replay of what was already logged is over


@dataclass
class ResumePoint:
    """Where an engine left off today: the last ``src_seq`` logged per output table."""

    last_src: dict[str, int]
    logged: dict[str, pa.Table]  # rows of the tables asked to ``keep``, as logged (tp_time included)
    seq: int  # the TP's seq when the output tables were read


def _own_src(msg: Message, key: tuple[str, str] | None = None) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The ``src_seq`` of a logged output batch; -1 where null, not ours, or not today's.

    A row is logged after the update that produced it, so ``src_seq >= msg.seq`` marks a row
    that was in flight when the TP rolled the day and carries the previous day's seq. With
    ``key = (column, value)``, only rows whose column holds value are this engine's.
    """
    src: np.ndarray[Any, np.dtype[np.int64]] = (
        msg.data.column(SRC_SEQ).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=True)
    )
    src[src >= msg.seq] = -1
    if key is not None and key[0] in msg.data.schema.names:  # a table without the column is the engine's alone
        mine = pc.fill_null(pc.equal(msg.data.column(key[0]), key[1]), False).to_numpy(zero_copy_only=False)
        src[~mine] = -1
    return src


async def resume_point(
    tp: str | tuple[str, int],
    tables: Sequence[str],
    *,
    token: str | None = None,
    keep: Sequence[str] = (),
    key: tuple[str, str] | None = None,
    name: str = "engine",
    poll: float = 0.01,
) -> ResumePoint:
    """Read today's ``tables`` from seq 1 up to the TP's position when subscribed.

    Done when the subscriber's position reaches the seq the SUBSCRIBED frame carried: by
    the last row of one of the tables, or by the HEARTBEAT a filtered stream gets once its
    catch-up from the log is over (so this takes up to one heartbeat interval). With
    ``key = (column, value)`` only rows holding ``value`` in ``column`` count (engines that
    share a table, like strategies sharing ``orders``).
    """
    last: dict[str, int] = {}
    kept: dict[str, list[pa.RecordBatch]] = {t: [] for t in keep}
    if not tables:
        return ResumePoint({}, {}, 0)

    def on_event(event: Message | EndOfDay) -> None:
        if isinstance(event, EndOfDay):  # the day rolled while reading: only the new day counts
            last.clear()
            for batches in kept.values():
                batches.clear()
            return
        src = _own_src(event, key)
        if len(src):
            last[event.table] = max(last.get(event.table, 0), int(src.max()))
        if event.table in kept:
            kept[event.table].append(event.data.filter(pa.array(src >= 0)))

    sub = AsyncSubscriber(tp, tables=list(tables), from_seq=1, token=token, name=f"{name} resume", on_event=on_event)

    async def drive() -> None:
        async for _ in sub.events():
            pass

    driver = asyncio.get_running_loop().create_task(drive())
    state = sub.state
    try:
        while not (state.subscribed and state.subscribed_seq is not None and state.position is not None
                   and state.position >= state.subscribed_seq):
            if driver.done():
                driver.result()  # raises the subscriber's final error
                raise EngineError(f"{name}: the subscription to {', '.join(tables)} ended before it caught up")
            await asyncio.sleep(poll)
        seq = state.subscribed_seq
    finally:
        await sub.close()
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError, TickError, OSError):
            await driver
    logged = {t: pa.Table.from_batches(b) for t, b in kept.items() if b}
    return ResumePoint({t: s for t, s in last.items() if s > 0}, logged, seq)


class _Verifier:
    """Compares the rows a replay regenerates with those logged before the restart."""

    def __init__(self, name: str, logged: Mapping[str, pa.Table]) -> None:
        self.name = name
        self.groups: dict[str, dict[int, pa.Table]] = {}
        for table, rows in logged.items():
            src = rows.column(SRC_SEQ).to_numpy()
            order = np.argsort(src, kind="stable")
            rows, src = rows.take(pa.array(order)), src[order]
            starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
            ends = np.r_[starts[1:], len(src)]
            self.groups[table] = {int(src[a]): rows.slice(a, b - a) for a, b in zip(starts, ends, strict=True)}
        self.mismatches = 0

    def check(self, table: str, seq: int, rows: pa.RecordBatch) -> None:
        groups = self.groups.get(table)
        if groups is None:
            return
        expected = groups.pop(seq, None)
        names = [n for n in rows.schema.names if n != SRC_SEQ]
        got = pa.Table.from_batches([rows]).select(names)
        if expected is None:
            self._differ(table, seq, f"the replay produced {rows.num_rows} rows, the log has none")
            return
        expected = expected.select(names)
        if expected.num_rows != got.num_rows or not all(
            expected.column(n).equals(got.column(n)) for n in names
        ):
            logged, replayed = expected.slice(0, 3).to_pylist(), got.slice(0, 3).to_pylist()
            self._differ(table, seq, f"logged {logged}, replayed {replayed}")

    def finish(self) -> None:
        """The replay is over: logged rows it did not produce are differences too."""
        for table, groups in self.groups.items():
            for seq, rows in groups.items():
                if seq > 0:
                    self._differ(table, seq, f"logged {rows.num_rows} rows the replay did not produce")
        self.groups.clear()

    def _differ(self, table: str, seq: int, detail: str) -> None:
        self.mismatches += 1
        logger.error(
            "%s: NOT DETERMINISTIC: %s rows for input seq %d differ from those logged before the restart (%s). "
            "The logged rows are kept; make the engine a pure function of its input updates (no wall clock, "
            "no unseeded randomness, no state from outside the log).", self.name, table, seq, detail)


def _check_tables(engine: Engine, tables: Mapping[str, Any]) -> None:
    for kind, names in (("input", engine.inputs), ("output", engine.outputs)):
        missing = [t for t in names if t not in tables]
        if missing:
            raise EngineError(
                f"{engine.name}: the TP has no {kind} table {', '.join(map(repr, missing))}: declare it in the TP's "
                f"schema (tick tp --schema FILE; the built-in one is tickerplant/schema.toml)")
    for t in engine.outputs:
        if SRC_SEQ not in tables[t].wire.names:
            raise EngineError(f"{engine.name}: output table {t!r} has no {SRC_SEQ!r} column: add "
                              f"{{ name = \"{SRC_SEQ}\", type = \"int64\" }} to it in the TP's schema")


def _columns(rows: pa.RecordBatch, src_seq: int) -> dict[str, Any]:
    cols: dict[str, Any] = {n: rows.column(i) for i, n in enumerate(rows.schema.names) if n not in (TP_TIME, SRC_SEQ)}
    cols[SRC_SEQ] = pa.array(np.full(rows.num_rows, src_seq, dtype=np.int64))
    return cols


async def run(
    engine: Engine,
    tp: str | tuple[str, int],
    *,
    token: str | None = None,
    stop: asyncio.Event | None = None,
    stats: RunStats | None = None,
    max_queue: int = 1000,
    flush_timeout: float = 10.0,
) -> RunStats:
    """Run ``engine`` against the TP at ``tp`` until ``stop`` is set (or the TP refuses us).

    Resumes where the engine's logged outputs end (see the module docstring), so it may be
    killed and restarted at any moment. On stop, everything published is flushed durably.
    """
    stats = stats if stats is not None else RunStats()
    name = engine.name
    pub = AsyncPublisher(tp, token=token, name=f"{name} publisher", connect_timeout=flush_timeout)
    await pub.connect()
    sub: AsyncSubscriber | None = None
    stopper: asyncio.Task[None] | None = None
    try:
        _check_tables(engine, pub.tables)
        verify = [t for t in getattr(engine, "verify_outputs", ()) if t in engine.outputs]
        started = time.monotonic()
        resume = await resume_point(tp, engine.outputs, token=token, keep=verify,
                                    key=getattr(engine, "output_key", None), name=name)
        last_src = dict(resume.last_src)
        replay_until = max(last_src.values(), default=0)
        verifier = _Verifier(name, resume.logged)
        logger.info("%s: outputs logged today up to input seq %d (%s); replaying inputs %s from seq 1",
                    name, replay_until, ", ".join(f"{t}={s}" for t, s in last_src.items()) or "none",
                    ", ".join(engine.inputs))
        sub = AsyncSubscriber(tp, tables=list(engine.inputs), from_seq=1, token=token, name=name,
                              max_queue=max_queue)
        if stop is not None:
            stopper = asyncio.get_running_loop().create_task(_close_on(stop, sub))
        outputs = frozenset(engine.outputs)

        def replay_over(at: int) -> None:
            verifier.finish()
            stats.replayed = True
            stats.mismatches = verifier.mismatches
            logger.info("%s: replay done at seq %d in %.2fs: %d rows suppressed (already logged)%s; live from here",
                        name, at, time.monotonic() - started, sum(stats.suppressed.values()),
                        f", {verifier.mismatches} NOT DETERMINISTIC differences" if verifier.mismatches else "")

        async def emit(outs: list[Output], src_seq: int, suppress_upto: Mapping[str, int]) -> None:
            for table, rows in outs:
                if table not in outputs:
                    raise EngineError(f"{name} returned rows for {table!r}, which is not among its outputs "
                                      f"{sorted(outputs)}: add it to the engine's `outputs`")
                if rows.num_rows == 0:
                    continue
                if src_seq and src_seq <= suppress_upto.get(table, 0):
                    stats.suppressed[table] = stats.suppressed.get(table, 0) + rows.num_rows
                    if table in verifier.groups:
                        verifier.check(table, src_seq, to_batch(_columns(rows, src_seq), pub.table(table)))
                    continue
                await pub.publish(table, _columns(rows, src_seq))
                stats.published[table] = stats.published.get(table, 0) + rows.num_rows

        if replay_until == 0:
            replay_over(0)
        async for event in sub.events():
            if isinstance(event, EndOfDay):
                logger.info("%s: end of day %s (seq %d); the next day starts clean", name, event.date, event.seq)
                await emit(engine.on_eod(event.date), 0, {})
                last_src, replay_until = {}, 0
                stats.days += 1
                if not stats.replayed:
                    verifier.groups.clear()
                    replay_over(event.seq)
            else:
                if not stats.replayed and event.seq > replay_until:
                    replay_over(event.seq - 1)
                await emit(engine.on_upd(event), event.seq, last_src)
                stats.updates += 1
                stats.seq = event.seq
                if not stats.replayed and event.seq >= replay_until:  # nothing left that could be suppressed
                    replay_over(event.seq)
            if stop is not None and stop.is_set():
                break
    finally:
        if stopper is not None:
            stopper.cancel()
        if sub is not None:
            await sub.close()
        try:
            await pub.flush(durable=True, timeout=flush_timeout)
        except (TimeoutError, TickError) as exc:
            logger.error("%s: published rows not confirmed durable by the TP (%r); a restart re-publishes them",
                         name, exc)
        with contextlib.suppress(TimeoutError, TickError):
            await pub.close()
    return stats


async def _close_on(stop: asyncio.Event, sub: AsyncSubscriber) -> None:
    await stop.wait()
    await sub.close()


def run_forever(engine: Engine, tp: str | tuple[str, int], *, install_signals: bool = True,
                **options: Any) -> RunStats:
    """Blocking :func:`run` on uvloop (when installed); SIGINT/SIGTERM stop it gracefully (flush, close)."""
    install_uvloop()

    async def main() -> RunStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM) if install_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            return await run(engine, tp, stop=stop, **options)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


__all__ = ["Engine", "EngineError", "Output", "ResumePoint", "RunStats", "resume_point", "run", "run_forever"]
