"""End of day: a TP day's tables into HDB partitions, from memory or from the day's log.

The RDB writes the day it holds in memory when the TP's EOD message arrives. A day the
RDB could not write — it was down at midnight, or killed in the middle of the write — is
written on the next start from the TP's log for that day, which holds exactly the same
rows (DESIGN.md invariants 4 and 5). Each table's partition appears whole by an atomic
rename (``hdb.partition``); the day is marked done only after every table is written,
so a day not marked done is written again and its partitions replaced, never appended to.

Rows are partitioned by the TP's date (the day of the log they were logged in), not by
their event time, as kdb+ does: a trade stamped 23:59:59.999 by the venue that reaches
the TP after midnight belongs to the next day's partition.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from hdb import partition
from tickerplant import log as tplog
from tickerplant.exceptions import LogError
from tickerplant.schema import Registry

logger = logging.getLogger("rdb.eod")

_LOG_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.log$")


class _Progress:
    """Logs a long write's progress at most once every ``every`` seconds."""

    def __init__(self, date: dt.date, table: str, every: float = 1.0) -> None:
        self.label = f"end of day {date} {table}"
        self.every = every
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            logger.info("%s: %s/%s rows written", self.label, f"{done:,}", f"{total:,}")


def write_day(hdb: Path, date: dt.date, tables: Mapping[str, pa.Table]) -> list[partition.WriteResult]:
    """Write every table of one TP day, then mark the day done."""
    results = []
    for name, data in sorted(tables.items()):
        if data.num_rows == 0:
            continue
        result = partition.write_partition(hdb, name, date, data, progress=_Progress(date, name))
        rate = result.rows / result.seconds if result.seconds else 0.0
        logger.info("end of day %s %s: %s rows to %s in %.2fs (%s rows/s)", date, name, f"{result.rows:,}",
                    result.path, result.seconds, f"{rate:,.0f}")
        results.append(result)
    partition.mark_day_done(hdb, date)
    return results


def day_from_log(path: Path, registry: Registry) -> dict[str, pa.Table]:
    """Every table's rows in one day's log, conformed to ``registry``."""
    return {t.name: tplog.read_table(path, t.name, registry) for t in registry}


def missing_days(hdb: Path, log_dir: Path, before: dt.date) -> list[tuple[dt.date, Path]]:
    """Logs of days before ``before`` whose end of day has not been written to the HDB."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        m = _LOG_NAME.match(path.name)
        if m is None:
            continue
        date = dt.date.fromisoformat(m.group(1))
        if date < before and not partition.day_done(hdb, date):
            found.append((date, path))
    return found


def write_missing_days(hdb: Path, log_dir: Path, before: dt.date, registry: Registry) -> list[dt.date]:
    """Write, from their logs, the days before ``before`` that the HDB lacks; returns them."""
    written = []
    for date, path in missing_days(hdb, log_dir, before):
        logger.warning("end of day %s was not written to %s (the RDB was down or stopped mid-write); "
                       "writing it from %s", date, hdb, path)
        try:
            tables = day_from_log(path, registry)
        except LogError as exc:
            logger.error("cannot write day %s from its log: %s", date, exc)
            continue
        write_day(hdb, date, tables)
        written.append(date)
    return written
