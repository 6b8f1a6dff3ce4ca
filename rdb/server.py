"""The real-time database process: today's rows in memory, SQL over today and history.

``RDB`` subscribes to every table of the TP from sequence 1, so the TP replays today's
log up to the subscription's position and then continues live, with no gap and no
duplicate (DESIGN.md invariant 4: restarting the RDB at any moment gives the same rows).
Updates are applied in the read loop itself (appending Arrow batches), so the RDB never
falls behind the TP while it answers queries: queries run on a thread pool, end of day
on a thread of its own.

At the TP's end of day the RDB writes the day to the HDB (``rdb.eod``), drops it from
memory, and running HDB services see the new partitions (the write bumps the HDB's
generation file, which they check before every query). On start it writes any earlier
day whose end of day never happened, from that day's log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from hdb import partition
from hdb.engine import QueryEngine
from hdb.service import QueryService
from rdb import eod
from rdb.tables import Store
from tickerplant import log as tplog
from tickerplant.aio import install_uvloop
from tickerplant.exceptions import TickError
from tickerplant.message import Message
from tickerplant.schema import Registry
from tickerplant.subscriber import AsyncSubscriber, EndOfDay

logger = logging.getLogger("rdb")


@dataclass
class Config:
    tp: str
    hdb: Path
    host: str = "127.0.0.1"
    port: int = 5011
    log_dir: Path | None = None  # the TP's log directory; default: where the TP says its log is
    schema: Path | None = None  # the TP's schema file (to read old logs); default: the built-in one
    token: str | None = None  # to subscribe to the TP
    tokens: dict[str, set[str]] | None = None  # who may query this RDB
    query_timeout: float = 30.0
    max_rows: int = 1_000_000
    max_bytes: int = 256 << 20
    workers: int = 10


class RDB:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry.load(config.schema)
        self.hdb = Path(config.hdb)
        self.store = Store()
        self.last_seq: dict[dt.date, int] = {}  # last update applied, per day
        self.engine = QueryEngine(self.hdb, self.registry, memory=self.store.snapshot,
                                  timeout=config.query_timeout, max_rows=config.max_rows,
                                  max_bytes=config.max_bytes)
        self.service = QueryService(self.engine, kind="rdb", info=self.info, workers=config.workers,
                                    tokens=config.tokens)
        self.sub = AsyncSubscriber(config.tp, from_seq=1, token=config.token, name="rdb", on_event=self.apply)
        # One writer thread: days are written in order, and never two at once.
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="eod")
        self._dates: dict[str, dt.date] = {}
        self.address: tuple[str, int] | None = None

    def info(self) -> dict[str, Any]:
        date = self.sub.state.date
        return {"date": date, "seq": self.sub.position, "tp": self.config.tp, "hdb": str(self.hdb),
                "tables": {t.name: t.version for t in self.registry}, "memory": self.store.stats()}

    def _date(self, iso: str) -> dt.date:
        date = self._dates.get(iso)
        if date is None:
            date = self._dates[iso] = dt.date.fromisoformat(iso)
        return date

    # -- ingestion (event loop thread) -------------------------------------------------------

    def apply(self, event: Message | EndOfDay) -> None:
        if isinstance(event, Message):
            date = self._date(self.sub.state.date or "")
            self.store.append(date, event.table, event.data)
            self.last_seq[date] = event.seq
        else:
            logger.info("end of day %s at seq %d; today is now %s", event.date, event.seq, event.next)
            self.writer.submit(self._end_of_day, self._date(event.date))

    # -- end of day (writer thread) ----------------------------------------------------------

    def _log_dir(self) -> Path | None:
        if self.config.log_dir is not None:
            return Path(self.config.log_dir)
        log = self.sub.state.welcome.get("log")
        return Path(log).parent if log else None

    def _end_of_day(self, date: dt.date) -> None:
        try:
            self._top_up(date)
            eod.write_day(self.hdb, date, self.store.day(date))
        except (TickError, OSError):
            logger.exception("end of day %s failed; the day stays in memory and is written from its log "
                             "when the RDB next starts", date)
            return
        self.store.drop(date)
        self.last_seq.pop(date, None)
        self.engine.refresh()

    def _top_up(self, date: dt.date) -> None:
        """Add the day's updates the RDB missed (it was disconnected when the day rolled) from the log."""
        log_dir = self._log_dir()
        path = tplog.log_path(log_dir, date) if log_dir is not None else None
        have = self.last_seq.get(date, 0)
        if path is None or not path.exists():
            logger.warning("end of day %s: no local log to check the day is complete (have up to seq %d); "
                           "run the RDB beside the TP or pass --log-dir", date, have)
            return
        added = 0
        for msg in tplog.replay(path, self.registry, from_seq=have + 1):
            self.store.append(date, msg.table, msg.data)
            self.last_seq[date] = msg.seq
            added += 1
        if added:
            logger.warning("end of day %s: %d updates after seq %d were missed while disconnected; "
                           "taken from %s", date, added, have, path)

    def _write_missing_days(self, before: dt.date) -> None:
        log_dir = self._log_dir()
        if log_dir is None or not log_dir.is_dir():
            logger.warning("no local TP log directory: days whose end of day was missed cannot be written; "
                           "pass --log-dir")
            return
        if eod.write_missing_days(self.hdb, log_dir, before, self.registry):
            self.engine.refresh()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        for line in partition.recover(self.hdb):
            logger.warning("%s", line)
        self.address = await self.service.start(self.config.host, self.config.port)
        return self.address

    async def serve(self) -> None:
        """Ingest until the subscription ends (close() or a final error from the TP)."""
        ingest = asyncio.get_running_loop().create_task(self._ingest())
        while self.sub.state.date is None and not ingest.done():
            await asyncio.sleep(0.02)
        if self.sub.state.date is not None:
            today = self._date(self.sub.state.date)
            self.writer.submit(self._write_missing_days, today)
        await ingest

    async def _ingest(self) -> None:
        async for _ in self.sub.events():  # with on_event, this only drives the connection
            pass

    async def close(self) -> None:
        await self.sub.close()
        self.service.close()
        # Let an end-of-day write in progress finish: a partition is only ever renamed in whole.
        await asyncio.get_running_loop().run_in_executor(None, self.writer.shutdown, True)
        self.engine.close()


def run(config: Config, ready: Callable[[RDB], None] | None = None) -> None:
    """Run an RDB until SIGTERM or SIGINT."""
    install_uvloop()
    # Arrow's default allocator (mimalloc) keeps the segments freed by compaction mapped: RSS
    # grew 1.35x the rows' Arrow size with it, 1.07x with the system allocator (bench_query).
    pa.set_memory_pool(pa.system_memory_pool())

    async def main() -> None:
        rdb = RDB(config)
        await rdb.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(rdb.close()))
        if ready is not None:
            ready(rdb)
        await rdb.serve()

    asyncio.run(main())
