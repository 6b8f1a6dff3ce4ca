"""The query engine: read-only DuckDB SQL over today's rows in memory and the HDB on disk, in one relation per table.

::

    engine = QueryEngine("./hdb", Registry.default(), memory=rdb.snapshot)
    with engine.query("SELECT sym, count(*) FROM trade WHERE date = current_date GROUP BY sym") as q:
        for batch in q: ...           # Arrow record batches, streamed

Names a query sees:

- ``<table>`` -- every table of the registry, and every table found on disk: its declared columns
  plus ``date`` (DATE). Rows are the in-memory rows of ``memory()`` (one ``(date, pa.Table)``
  per day held, registered with DuckDB without copying) and the HDB partitions of every other
  date: when a date is both in memory and on disk (briefly, during end of day) memory wins.
- ``hdb.<table>`` -- the partitions on disk only (see :mod:`hdb.catalog`).

One DuckDB database serves every query; each query gets its own cursor (a DuckDB connection),
so queries run in parallel from many threads, and DuckDB releases the GIL while it executes.
``hdb.<table>`` and ``<table>`` (history only) are views in the database, replaced under
:attr:`QueryEngine._lock` when ``<hdb>/.generation`` changes; a query that reads a table with
rows in memory shadows ``<table>`` with a temporary view on its own cursor.

Safety (issue 3, part 4): only one read statement per query (:func:`check_sql`); the database
reads no file outside the HDB, scans no Python variable, loads no extension, and its
configuration is locked; a watchdog interrupts queries past their timeout and results are
capped in rows and bytes while they stream. Errors are :class:`QueryError` with codes
``query_refused``, ``query_timeout``, ``result_too_large`` and ``query_failed``.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import itertools
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import duckdb
import pyarrow as pa

from hdb.catalog import DATE_COLUMN, Catalog, TableFiles, history_sql, quote_ident, quote_literal
from tickerplant.exceptions import QueryError, SchemaError
from tickerplant.schema import Registry

MemoryTables = Mapping[str, Sequence[tuple[dt.date, pa.Table]]]

BATCH_ROWS = 131_072  # rows per streamed batch (DuckDB's default vector multiple)
_EMPTY_SCHEMA = "_tick"  # zero-row tables with each declared schema: every column exists in every relation
_ALLOWED = "only SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE, FROM and VALUES queries are accepted"
# EXPLAIN's own words before the statement it explains: ANALYZE, or an option list in parentheses.
_EXPLAIN = re.compile(r"\s*EXPLAIN\s*(?:ANALYZE\b|\((?:[^()'\"]|'[^']*')*\))?", re.IGNORECASE)
_parser_lock = threading.Lock()
_parser: list[duckdb.DuckDBPyConnection] = []  # a connection that only parses, for check_sql
T = TypeVar("T")


def check_sql(sql: str) -> None:
    """Raise QueryError("query_refused", why) unless ``sql`` is exactly one read statement.

    A syntax error is QueryError("query_failed", DuckDB's message).
    """
    with _parser_lock:  # a DuckDB connection is used by one thread at a time
        if not _parser:
            _parser.append(duckdb.connect(":memory:", config={"enable_external_access": False}))
        _read_statement(sql, _parser[0])


def _read_statement(sql: str, con: duckdb.DuckDBPyConnection) -> duckdb.Statement:
    """The one statement of ``sql`` if it only reads; refuses anything else."""
    statements = _parse(sql, con)
    if not statements:
        raise QueryError("query_refused", "empty query: send one SELECT statement")
    if len(statements) > 1:
        kinds = ", ".join(_kind(s) for s in statements)
        raise QueryError("query_refused", f"one statement per query: got {len(statements)} ({kinds}); "
                                          f"send them as separate queries")
    statement = statements[0]
    kind = _kind(statement)
    if kind == "SELECT":  # DuckDB parses WITH, DESCRIBE, SHOW, SUMMARIZE, FROM-first, VALUES, PIVOT ... IN as SELECT
        return statement
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs the statement it explains (EXPLAIN ANALYZE COPY ... TO writes the file):
        # the explained statement must itself be a read.
        match = _EXPLAIN.match(statement.query)
        inner = statement.query[match.end():] if match else ""
        try:
            explained = _parse(inner, con)
        except QueryError:
            explained = []
        if len(explained) != 1 or _kind(explained[0]) != "SELECT":
            what = _kind(explained[0]) if len(explained) == 1 else "this"
            raise QueryError("query_refused", f"EXPLAIN of {what} statement is not allowed: EXPLAIN [ANALYZE] "
                                              f"accepts one SELECT query")
        return statement
    if kind == "MULTI":
        raise QueryError("query_refused", f"this statement runs several statements (PIVOT without an IN list does): "
                                          f"{_ALLOWED}; list the pivot values with ON col IN (...)")
    raise QueryError("query_refused", f"{kind} statements are not allowed: {_ALLOWED} (the service is read-only)")


def _parse(sql: str, con: duckdb.DuckDBPyConnection) -> list[duckdb.Statement]:
    try:
        return con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError("query_failed", str(exc)) from None


def _kind(statement: duckdb.Statement) -> str:
    try:
        return statement.type.name
    except ValueError:  # a statement type the Python package has no name for (e.g. UPDATE EXTENSIONS)
        return "UNKNOWN"


class QueryEngine:
    """Read-only SQL over the registry's tables: memory (today) and the HDB (history), streamed as Arrow."""

    def __init__(self, hdb: str | Path | None, registry: Registry, *,
                 memory: Callable[[], MemoryTables] | None = None,
                 timeout: float = 30.0, max_rows: int = 1_000_000, max_bytes: int = 256 << 20,
                 threads: int | None = None, memory_limit: str | None = None) -> None:
        for table in registry:
            if DATE_COLUMN in table.schema.names:
                raise SchemaError(f"table {table.name!r} declares a column named {DATE_COLUMN!r}, which the HDB "
                                  f"adds as the partition column; rename it in {registry.source}")
        self.hdb = Path(hdb).resolve() if hdb is not None else None
        self.registry = registry
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._memory = memory
        self._catalog = Catalog(self.hdb) if self.hdb is not None else None
        self._db = _open_database(self.hdb, registry, threads, memory_limit)
        self._admin = self._db.cursor()  # runs the view DDL, under _lock; _db itself only makes cursors
        self._cursor_lock = threading.Lock()
        self._lock = threading.Lock()  # one rescan at a time; never held while a query runs
        self._stamp: object = None
        self._history: dict[str, str] = {}  # table -> SQL of its hdb.<table> view as installed
        self._watchdog = _Watchdog()
        self._install(force=True)

    # -- queries ---------------------------------------------------------------------------

    def query(self, sql: str, *, timeout: float | None = None, max_rows: int | None = None) -> Query:
        """Start one query; iterate the returned :class:`Query` for its batches (from this thread), then close it."""
        started = time.perf_counter()
        limit = self.timeout if timeout is None else timeout
        # memory() before the generation check: if end of day drops a day from memory after we
        # looked, its partition was written (and .generation bumped) before, and we see it below.
        snapshot = self._memory() if self._memory is not None else {}
        self._maybe_rescan()
        with self._cursor_lock:
            cursor = self._db.cursor()
        q = Query(cursor, limit, self.max_rows if max_rows is None else max_rows, self.max_bytes, started)
        self._watchdog.arm(time.monotonic() + limit, q)
        try:
            statement = q._step(lambda: _read_statement(sql, cursor))
            q._step(lambda: self._bind_memory(cursor, sql, snapshot))
            q._start(statement)
        except BaseException:
            q.close()
            raise
        return q

    def execute(self, sql: str, *, timeout: float | None = None, max_rows: int | None = None) -> pa.Table:
        """The whole result of one query, as an Arrow table."""
        with self.query(sql, timeout=timeout, max_rows=max_rows) as q:
            return pa.Table.from_batches(list(q), schema=q.schema)

    def refresh(self) -> bool:
        """Rescan the HDB now (``tick hdb load`` or end of day also bump ``.generation``); True if anything changed."""
        return self._install(force=True)

    def close(self) -> None:
        """Stop the watchdog and close the database (queries still open fail)."""
        self._watchdog.stop()
        self._admin.close()
        self._db.close()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the catalog -------------------------------------------------------------------------

    def _maybe_rescan(self) -> None:
        if self._catalog is not None and self._catalog.stamp() != self._stamp:
            self._install(force=False)

    def _install(self, force: bool) -> bool:
        """(Re)create hdb.<table> and <table> for every table whose partitions changed; True if any did."""
        with self._lock:
            stamp = self._catalog.stamp() if self._catalog is not None else None
            if not force and stamp == self._stamp:
                return False  # another thread rescanned while this one waited for the lock
            try:
                on_disk = self._catalog.scan() if self._catalog is not None else {}
            except OSError as exc:
                raise QueryError("query_failed", f"cannot scan the HDB {self.hdb}: {exc}") from exc
            declared = {t.name.casefold() for t in self.registry}
            wanted: dict[str, str] = {}
            for table in self.registry:
                wanted[table.name] = history_sql(on_disk.get(table.name),
                                                 f"{_EMPTY_SCHEMA}.{quote_ident(table.name)}", table.schema)
            for name, files in on_disk.items():
                if name.casefold() not in declared:  # backfilled or derived tables: history only, as written
                    wanted[name] = history_sql(files, None)
            changed = {n: s for n, s in wanted.items() if self._history.get(n) != s}
            gone = self._history.keys() - wanted.keys()
            if changed or gone:
                admin = self._admin
                admin.begin()  # every view switches at once for the queries that start after the commit
                try:
                    for name, sql in changed.items():
                        ident = quote_ident(name)
                        admin.execute(f"CREATE OR REPLACE VIEW hdb.{ident} AS {sql}")
                        zoned = self._zoned(name, on_disk.get(name))
                        admin.execute(f"CREATE OR REPLACE VIEW main.{ident} AS "
                                      f"{_naive_times(f'SELECT * FROM hdb.{ident}', zoned)}")
                    for name in gone:
                        admin.execute(f"DROP VIEW IF EXISTS main.{quote_ident(name)}")
                        admin.execute(f"DROP VIEW IF EXISTS hdb.{quote_ident(name)}")
                    admin.commit()
                except duckdb.Error as exc:
                    admin.rollback()
                    raise QueryError("query_failed", f"cannot read the HDB {self.hdb}: {exc}") from exc
                self._history = wanted
            self._stamp = stamp
            return bool(changed or gone)

    def _bind_memory(self, cursor: duckdb.DuckDBPyConnection, sql: str, snapshot: MemoryTables) -> None:
        """Shadow <table> on this cursor by memory rows plus history, for each table with rows the query names."""
        for name, days in snapshot.items():
            # A query that does not name the table (SHOW TABLES, information_schema) needs no rows:
            # the history view has the same columns, and the listing stays free of registrations.
            if not days or not _names(name).search(sql):
                continue
            parts: list[str] = []
            if name in self._history:
                dates = ", ".join(f"DATE '{d.isoformat()}'" for d, _ in days)
                parts.append(f"SELECT * FROM hdb.{quote_ident(name)} WHERE {DATE_COLUMN} NOT IN ({dates})")
            for i, (day, rows) in enumerate(days):
                if rows.num_rows == 0 and parts:
                    continue
                registered = f"_rdb_{name}_{i}"
                cursor.register(registered, rows)  # zero-copy: DuckDB scans the Arrow buffers
                parts.append(f"SELECT *, DATE '{day.isoformat()}' AS {DATE_COLUMN} FROM {quote_ident(registered)}")
            union = "\nUNION ALL BY NAME\n".join(parts)
            zoned = [f.name for f in days[0][1].schema if _is_zoned(f.type)]
            cursor.execute(f"CREATE TEMP VIEW {quote_ident(name)} AS {_naive_times(union, zoned)}")

    def _zoned(self, name: str, files: TableFiles | None) -> list[str]:
        """The table's timestamp-with-zone columns (declared, or as the files on disk have them)."""
        if name in self.registry:
            return [f.name for f in self.registry[name].schema if _is_zoned(f.type)]
        cols = files.groups[0].columns if files is not None and files.groups else None
        return [c for c, t in cols or () if t.startswith("timestamp[") and "tz=" in t]


def _is_zoned(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) and t.tz is not None


def _naive_times(select: str, zoned: Sequence[str]) -> str:
    """``select`` with its UTC timestamp columns as DuckDB TIMESTAMP_NS (UTC, no zone attached).

    DuckDB reads Arrow/Parquet timestamp[ns, tz=UTC] as TIMESTAMPTZ_NS, which time_bucket,
    date_trunc, extract, interval arithmetic and avg do not accept (duckdb 2.0); TIMESTAMP_NS
    keeps the nanoseconds and works with all of them. Results come back as timestamp[ns].
    """
    if not zoned:
        return select
    casts = ", ".join(f"{quote_ident(c)}::TIMESTAMP_NS AS {quote_ident(c)}" for c in zoned)
    return f"SELECT * REPLACE ({casts}) FROM ({select})"


@functools.lru_cache(maxsize=256)
def _names(table: str) -> re.Pattern[str]:
    """Matches ``table`` as a word anywhere in a query: in identifiers, quoted names and strings
    (query_table('trade')) alike. A match where the word means something else (a column, a comment)
    only costs the query its memory view; DuckDB's get_table_names binds the query, and fails on
    views over read_parquet (duckdb 2.0)."""
    return re.compile(rf"(?<![A-Za-z0-9_$]){re.escape(table)}(?![A-Za-z0-9_$])", re.IGNORECASE)


class Query:
    """One running query. Iterate it for Arrow record batches; close it (or exhaust it) to free its cursor.

    Consumed by the thread that called :meth:`QueryEngine.query`; :meth:`close` may also be
    called from another thread, which interrupts the query where it runs.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, timeout: float, max_rows: int, max_bytes: int,
                 started: float) -> None:
        self.schema = pa.schema([])
        self.rows = 0
        self.bytes = 0
        self.seconds = 0.0
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._started = started
        self._cursor = cursor
        self._reader: pa.RecordBatchReader | None = None
        self._lock = threading.Lock()  # guards the flags below; held only around interrupt and close
        self._busy = False  # the owner thread is inside DuckDB on this cursor
        self._closing = False  # close() was called
        self._released = False  # the cursor is closed
        self._expired = False  # the watchdog interrupted it

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        reader = self._reader
        if reader is None or self._closing:
            raise StopIteration
        try:
            batch = self._step(reader.read_next_batch)
        except StopIteration:
            self.close()
            raise
        rows, size = self.rows + batch.num_rows, self.bytes + batch.nbytes
        if rows > self.max_rows:
            self.close()
            raise QueryError("result_too_large", f"the result has more than {self.max_rows:,} rows (the limit); "
                                                 f"add LIMIT or aggregate, or raise --max-rows")
        if size > self.max_bytes:
            self.close()
            raise QueryError("result_too_large", f"the result is larger than {self.max_bytes:,} bytes (the limit); "
                                                 f"select fewer columns, add LIMIT or aggregate, or raise --max-bytes")
        self.rows, self.bytes = rows, size
        self.seconds = time.perf_counter() - self._started
        return batch

    def close(self) -> None:
        """Free the cursor; a query still running is interrupted."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._busy:  # another thread is in DuckDB: stop it there; it releases on its way out
                self._cursor.interrupt()
                return
        self._release()

    def __enter__(self) -> Query:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self, statement: duckdb.Statement) -> None:
        def run() -> pa.RecordBatchReader:
            relation = self._cursor.sql(statement)
            if relation is None:
                raise QueryError("query_failed", "the statement returned no result")
            return relation.to_arrow_reader(BATCH_ROWS)

        self._reader = self._step(run)
        self.schema = self._reader.schema

    def _step(self, call: Callable[[], T]) -> T:
        """Run one call into DuckDB on this query's cursor, turning its errors into QueryError."""
        with self._lock:
            if self._closing:
                raise QueryError("query_failed", "the query was closed")
            self._busy = True
        try:
            if self._expired:
                raise self._timeout()
            return call()
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            raise self._failure(exc) from exc
        finally:
            with self._lock:
                self._busy = False
                release = self._closing
            if release:
                self._release()

    def _failure(self, exc: Exception) -> QueryError:
        cancelled = self._closing  # close() from another thread interrupted it
        self.close()
        if self._expired:
            return self._timeout()
        if cancelled:
            return QueryError("query_failed", "the query was cancelled (closed while it ran)")
        message = str(exc)
        if isinstance(exc, duckdb.PermissionException):
            return QueryError("query_failed", f"{message} -- queries may read the tables and the HDB only: "
                                              f"access outside the HDB is not allowed")
        return QueryError("query_failed", message)

    def _timeout(self) -> QueryError:
        return QueryError("query_timeout", f"the query ran past its {self.timeout:g} s limit and was stopped; "
                                           f"narrow it with WHERE date/sym or raise --query-timeout")

    def _expire(self) -> bool:
        """The watchdog's call: interrupt the query; True while it is still open (so it is called again)."""
        with self._lock:
            if self._released:
                return False
            self._expired = True
            self._cursor.interrupt()  # lost if DuckDB is between two calls: hence called again until closed
            return True

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.seconds = time.perf_counter() - self._started
        try:
            if self._reader is not None:
                self._reader.close()
        finally:
            self._cursor.close()


class _Watchdog:
    """One thread that interrupts queries past their deadline (a Timer per query would start a thread per query)."""

    RETRY = 0.1  # seconds between interrupts of a query that has not stopped yet

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, weakref.ref[Query]]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="hdb-query-watchdog", daemon=True)
        self._thread.start()

    def arm(self, deadline: float, query: Query) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), weakref.ref(query)))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, ref = heapq.heappop(self._heap)
            query = ref()  # a query closed and dropped before its deadline is gone: nothing to do
            if query is not None and query._expire():
                self.arm(time.monotonic() + self.RETRY, query)


def _open_database(hdb: Path | None, registry: Registry, threads: int | None,
                   memory_limit: str | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads nothing but the HDB, with the empty tables and schemas the views use."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "python_enable_replacements": False,  # else FROM <name> scans a Python variable of this process
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
    }
    if threads is not None:
        config["threads"] = threads
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    db = duckdb.connect(":memory:", config=config)
    allowed = [quote_literal(str(hdb) + os.sep)] if hdb is not None else []
    # Order matters: DuckDB refuses allowed_directories once external access is off.
    db.execute(f"SET allowed_directories = [{', '.join(allowed)}]")
    db.execute("SET enable_external_access = false")
    # Timestamps come back as timestamp[ns, tz=UTC] and day boundaries are UTC's, whatever the
    # server's zone (DuckDB's default is the machine's). Not settable in connect()'s config.
    db.execute("SET GLOBAL TimeZone = 'UTC'")
    db.execute(f"CREATE SCHEMA {_EMPTY_SCHEMA}")
    db.execute("CREATE SCHEMA hdb")
    for table in registry:
        # Typed by DuckDB's own reading of the Arrow schema, as the memory rows and Parquet files are.
        db.register("_declared", table.schema.empty_table())
        db.execute(f"CREATE TABLE {_EMPTY_SCHEMA}.{quote_ident(table.name)} AS "
                   f"SELECT *, NULL::DATE AS {DATE_COLUMN} FROM _declared")
        db.unregister("_declared")
    db.execute("SET lock_configuration = true")
    return db
