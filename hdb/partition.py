"""HDB partitions on disk: write one (table, date) atomically, list them, repair after a crash.

Layout (the contract with the query engine and the RDB)::

    <hdb>/<table>/date=YYYY-MM-DD/part-0.parquet [part-1.parquet ...]
    <hdb>/.staging/           temporary work, renamed into place; never queried
    <hdb>/.generation         an integer, bumped every time a partition is added or replaced
    <hdb>/.eod/YYYY-MM-DD.done  written once every table of a TP day is in the HDB

A partition's files hold the table's columns (no ``date``: the directory name carries it),
sorted by (sym, time) with ties in arrival order, zstd-compressed, in row groups of equal
size (at most ``row_group_size`` rows). The partition is sorted as a whole when its files
are read in name order: a sym may run on from ``part-0`` into ``part-1``.

Atomicity (DESIGN.md invariant 5). :func:`write_partition` writes every file under
``.staging/new.<table>.<date>.<token>/``, fsyncs the files and the directory, then renames
the directory to ``<table>/date=YYYY-MM-DD`` and fsyncs the parent. Replacing an existing
partition takes two renames: the old directory to ``.staging/old.<table>.<date>.<token>``,
then the new one into place; the old one is then deleted. A reader that lists the table
between those two renames sees no partition for that date (for a moment, never a partial
one). After a ``kill -9`` at any point, :func:`recover` deletes unfinished ``new.*``
directories and, for an ``old.*`` one, deletes it when its partition is in place or renames
it back when it is not. So the HDB holds the whole old partition, the whole new one, or
(for a first write) none; writing the day again gives the same rows, never duplicates.

Concurrency: writers hold a shared lock on ``.staging/.lock`` for as long as they have
files in ``.staging``; :func:`recover` takes it exclusively and skips its work (saying
so) while any writer runs. Renames into place and generation bumps are serialized by an
exclusive lock on ``.staging/.commit``. Both are ``flock`` locks: a killed process loses
them.

Speed (``bench/bench_eod.py``; 10M simulator trade rows, 2 cores): the sort is two
stable numpy argsorts (time, then small integer sym codes: a radix sort), skipped for
time when it is already in order, as it is when rows arrive from the tickerplant.
Low-cardinality string columns are dictionary-encoded once in Arrow, so neither the
reorder (``take`` of int32 indices instead of strings) nor the Parquet writer (no
hashing) touches the strings again; with ``store_schema=False`` readers still see plain
``string`` columns. Integer and timestamp columns use DELTA_BINARY_PACKED (about 30%
fewer bytes for zstd to compress). The rows are cut into one part file per thread, each
taking its rows and encoding them while the others do the same (pyarrow releases the GIL).
Measured (``bench/bench_eod.py``, 10M rows in 1,000-row chunks, this 2-core VM): with Arrow's
system allocator (as the RDB runs) 2.1 s against 3.1 s for ``pq.write_table`` of the same table
unsorted; with mimalloc 3.0 s against 2.8 s when the memory must be faulted in afresh (the
writer touches ~1.2 GB; this VM charges ~2 s of system time per GB of fresh huge pages) and
1.9 s when the process still has it mapped. The one-array-per-column copy is what makes the
per-row-group ``take`` cheap; without it each ``take`` on 10,000 chunks concatenates the
column again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import math
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tickerplant.exceptions import DataError

__all__ = [
    "DATE_COLUMN",
    "WriteResult",
    "bump_generation",
    "day_done",
    "generation",
    "mark_day_done",
    "partition_dir",
    "partitions",
    "recover",
    "tables",
    "write_partition",
]

DATE_COLUMN = "date"
STAGING = ".staging"
GENERATION = ".generation"
EOD_DIR = ".eod"
_WRITERS_LOCK = ".lock"  # inside .staging: shared by writers, exclusive for recover()
_COMMIT_LOCK = ".commit"  # inside .staging: renames into place and generation bumps
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_STAGED = re.compile(r"^(new|old)\.([A-Za-z_][A-Za-z0-9_]{0,62})\.(\d{4}-\d{2}-\d{2})\.([0-9a-f]+)$")

# Part files are named part-0 .. part-9, so name order is numeric order (DuckDB and
# pyarrow list a directory sorted by name) without zero padding the shared layout lacks.
MAX_PARTS = 10
# Threads writing part files. On 2 cores, 10M trade rows (medians of 4): 2 threads 2.9 s,
# 3 threads 2.1 s, 4 threads 2.0 s, 6 threads 1.95 s; the best runs were equal (1.8-1.9 s):
# more, smaller parts leave less of a straggler when a thread is descheduled.
DEFAULT_THREADS = min(MAX_PARTS, max(2, 2 * (os.cpu_count() or 1)), 4)
# A string column is dictionary-encoded when a sample of it has at most this share of
# distinct values (sym always is: its codes are the sort key).
_DICT_SHARE = 0.1
_DICT_SAMPLE = 20_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_partition` did: ``rows`` rows in ``bytes`` bytes of files under ``path``."""

    table: str
    date: dt.date
    path: Path
    rows: int
    bytes: int
    seconds: float


# --------------------------------------------------------------------------- layout


def partition_dir(hdb: str | Path, table: str, date: dt.date) -> Path:
    """``<hdb>/<table>/date=YYYY-MM-DD``."""
    return Path(hdb) / table / f"date={date.isoformat()}"


def tables(hdb: str | Path) -> list[str]:
    """Names of the table directories in ``hdb``, sorted (hidden ``.staging`` etc. left out)."""
    root = Path(hdb)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _TABLE.match(p.name))


def partitions(hdb: str | Path, table: str) -> list[dt.date]:
    """Dates of ``table``'s partitions, sorted. Every one is complete: they only appear by rename."""
    root = Path(hdb) / table
    if not root.is_dir():
        return []
    out: list[dt.date] = []
    for p in root.iterdir():
        m = _PARTITION.match(p.name)
        if m and p.is_dir():
            with contextlib.suppress(ValueError):  # date=2026-13-45 is not ours
                out.append(dt.date.fromisoformat(m.group(1)))
    return sorted(out)


# --------------------------------------------------------------------------- durability helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs(path: Path) -> None:
    """Create ``path`` and any missing parents, fsyncing each parent that gained an entry."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        _fsync_dir(d.parent)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temporary file, fsync, ``os.replace``, fsync the directory."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Hold ``flock(path, mode)``; yields False instead of blocking when ``mode`` has LOCK_NB and it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _staging(hdb: Path) -> Path:
    staging = hdb / STAGING
    if not staging.is_dir():
        _mkdirs(staging)
    return staging


# --------------------------------------------------------------------------- generation, end-of-day markers


def generation(hdb: str | Path) -> int:
    """The HDB's generation: 0 for a new HDB, bumped by every partition added or replaced."""
    try:
        text = (Path(hdb) / GENERATION).read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError:
        raise DataError(
            f"{Path(hdb) / GENERATION} holds {text[:40]!r}, not an integer; "
            f"write a number into it (any value larger than the last one readers saw)"
        ) from None


def _bump_locked(hdb: Path) -> int:
    new = generation(hdb) + 1
    _write_atomic(hdb / GENERATION, f"{new}\n")
    return new


def bump_generation(hdb: str | Path) -> int:
    """Add one to ``<hdb>/.generation`` (atomic replace, fsynced); returns the new value."""
    root = Path(hdb)
    with _flock(_staging(root) / _COMMIT_LOCK, fcntl.LOCK_EX):
        return _bump_locked(root)


def _marker(hdb: str | Path, date: dt.date) -> Path:
    return Path(hdb) / EOD_DIR / f"{date.isoformat()}.done"


def day_done(hdb: str | Path, date: dt.date) -> bool:
    """Whether end of day finished writing every table of ``date``."""
    return _marker(hdb, date).exists()


def mark_day_done(hdb: str | Path, date: dt.date) -> None:
    """Record (durably) that every table of ``date`` is in the HDB."""
    path = _marker(hdb, date)
    _mkdirs(path.parent)
    _write_atomic(path, dt.datetime.now(dt.UTC).isoformat() + "\n")


# --------------------------------------------------------------------------- recovery


def recover(hdb: str | Path) -> list[str]:
    """Clean ``<hdb>/.staging`` after a crash; returns one message per thing done.

    Unfinished writes (``new.*``) are deleted. A partition moved aside by a replace
    (``old.*``) is deleted when a partition for its date is in place, else renamed back.
    Nothing is done (one message says so) while another process is writing.
    """
    root = Path(hdb)
    staging = root / STAGING
    if not staging.is_dir():
        return []
    done: list[str] = []
    with _flock(staging / _WRITERS_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
        if not locked:
            return [f"{staging}: a partition write is in progress; left as it is (run recover when it ends)"]
        for entry in sorted(staging.iterdir()):
            if entry.name.startswith("."):  # our lock files
                continue
            m = _STAGED.match(entry.name)
            if m is None:
                _remove(entry)
                done.append(f"removed {entry}: not a partition write (nothing under .staging is ever queried)")
                continue
            kind, table, day = m.group(1), m.group(2), dt.date.fromisoformat(m.group(3))
            final = partition_dir(root, table, day)
            if kind == "new":
                _remove(entry)
                done.append(f"removed unfinished write of {table} {day} ({entry.name})")
            elif final.exists():
                _remove(entry)
                done.append(f"removed the replaced partition of {table} {day} ({entry.name}); the new one is in place")
            else:
                _mkdirs(final.parent)
                os.rename(entry, final)
                _fsync_dir(final.parent)
                done.append(f"restored {final} from {entry.name}: a replace was interrupted before the new one was in "
                            f"place")
        _fsync_dir(staging)
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- sorting


def _sort_codes(sym: pa.DictionaryArray) -> npt.NDArray[np.unsignedinteger]:
    """Per row, the rank of its sym in byte order (nulls last), as the narrowest unsigned integer.

    Narrow codes matter: numpy's stable argsort is a radix sort for 8- and 16-bit integers.
    """
    dictionary = sym.dictionary
    n_dict = len(dictionary)
    dtype = np.uint8 if n_dict < 2**8 else np.uint16 if n_dict < 2**16 else np.uint32
    rank = np.empty(n_dict + 1, dtype=dtype)
    rank[pc.sort_indices(dictionary).to_numpy()] = np.arange(n_dict, dtype=dtype)
    rank[n_dict] = n_dict  # null sym: after every other
    indices = sym.indices
    if indices.null_count:
        indices = pc.fill_null(indices, n_dict)
    codes: npt.NDArray[np.unsignedinteger] = rank[indices.to_numpy()]
    return codes


def sort_order(time_col: pa.Array, sym: pa.DictionaryArray) -> npt.NDArray[np.int64]:
    """Row order sorting by (sym, time), stable: rows with equal sym and time keep their order."""
    codes = _sort_codes(sym)
    if time_col.null_count:
        time_col = pc.fill_null(time_col, pa.scalar(np.iinfo(np.int64).max).cast(time_col.type))
    t = time_col.cast(pa.int64()).to_numpy()
    if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):  # in arrival order already: one radix sort
        return np.argsort(codes, kind="stable").astype(np.int64, copy=False)
    by_time = np.argsort(t, kind="stable")
    return by_time[np.argsort(codes[by_time], kind="stable")].astype(np.int64, copy=False)


def _low_cardinality(col: pa.ChunkedArray) -> bool:
    n = len(col)
    sample = col if n <= _DICT_SAMPLE else col.take(pa.array(np.linspace(0, n - 1, _DICT_SAMPLE).astype(np.int64)))
    distinct = pc.count_distinct(sample, mode="all").as_py()
    return bool(distinct <= max(1, _DICT_SHARE * len(sample)))


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _prepare(name: str, col: pa.ChunkedArray) -> pa.Array:
    """One column as a single array (``take`` on many chunks costs ~5x more per call), low-cardinality
    strings dictionary-encoded (chunk by chunk: the strings themselves are never copied)."""
    if _is_string(col.type) and not pa.types.is_dictionary(col.type) and (name == "sym" or _low_cardinality(col)):
        return pc.dictionary_encode(col).unify_dictionaries().combine_chunks()
    return col.combine_chunks()


# --------------------------------------------------------------------------- writing


def _parquet_options(schema: pa.Schema) -> dict[str, object]:
    dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    delta = {f.name: "DELTA_BINARY_PACKED" for f in schema
             if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)}
    return {
        "compression": "zstd",
        "use_dictionary": dictionary,
        "column_encoding": delta,
        # Min/max statistics prune row groups by sym and by times and numbers; on other string
        # columns (every venue and side in each row group, ids in no order) they prune nothing
        # and cost ~0.2 s per 10M trade rows.
        "write_statistics": [f.name for f in schema if f.name == "sym" or not _is_string(f.type)],
        # Without the stored Arrow schema, readers see the dictionary columns as plain
        # strings; Parquet's own types keep timestamp[ns, UTC] and the not-null flags.
        "store_schema": False,
        # Recorded in each row group's metadata, for readers that use it.
        "sorting_columns": [pq.SortingColumn(schema.get_field_index("sym")),
                            pq.SortingColumn(schema.get_field_index("time"))],
    }


def _write_part(path: Path, schema: pa.Schema, columns: list[pa.Array], order: npt.NDArray[np.int64],
                groups: list[tuple[int, int]], cancel: threading.Event, done: queue.SimpleQueue[int | None]) -> None:
    """Write the rows ``order[a:b]`` of each group as one row group of ``path``, then fsync it."""
    try:
        with pq.ParquetWriter(str(path), schema, **_parquet_options(schema)) as writer:
            for a, b in groups:
                if cancel.is_set():
                    return
                idx = pa.array(order[a:b])
                writer.write_table(pa.Table.from_arrays([c.take(idx) for c in columns], schema=schema),
                                   row_group_size=b - a)
                done.put(b - a)
        _fsync_file(path)
    finally:
        done.put(None)


def _plan(n: int, row_group_size: int, threads: int) -> list[list[tuple[int, int]]]:
    """Row ranges of the row groups of each part file: equal-size groups, spread evenly over the parts."""
    n_groups = max(1, math.ceil(n / row_group_size))
    size = math.ceil(n / n_groups)
    bounds = [(g * size, min((g + 1) * size, n)) for g in range(n_groups)]
    n_parts = max(1, min(threads, n_groups, MAX_PARTS))
    return [bounds[n_groups * i // n_parts: n_groups * (i + 1) // n_parts] for i in range(n_parts)]


def write_partition(
    hdb: str | Path,
    table: str,
    date: dt.date,
    data: pa.Table,
    *,
    row_group_size: int = 500_000,
    progress: Progress | None = None,
    threads: int | None = None,
) -> WriteResult:
    """Write ``data`` as ``table``'s partition for ``date``, atomically, replacing any existing one.

    ``data`` holds the table's columns (wire columns and ``tp_time``) in arrival order, in
    any number of chunks; a ``date`` column is dropped (the directory carries the date).
    Rows are sorted by (sym, time), ties kept in arrival order. ``progress(rows_done,
    rows_total)`` is called from this thread after each row group is written.

    Empty ``data`` writes nothing (no partition, no generation bump) and returns a result
    with ``rows == 0`` and the path the partition would have had.

    Memory: every column is combined into one array first (the RDB holds many small chunks),
    so the write needs about the table's size again, plus one row group per thread.
    """
    t0 = time.perf_counter()
    root = Path(hdb)
    if not _TABLE.match(table):
        raise DataError(f"table name {table!r} is not valid: use letters, digits and _ (at most 63)")
    if row_group_size < 1:
        raise DataError(f"row_group_size must be at least 1, got {row_group_size}")
    final = partition_dir(root, table, date)
    if DATE_COLUMN in data.column_names:
        data = data.drop_columns([DATE_COLUMN])
    n = data.num_rows
    if n == 0:
        return WriteResult(table, date, final, 0, 0, time.perf_counter() - t0)
    for required in ("time", "sym"):
        if required not in data.column_names:
            raise DataError(f"cannot write {table} {date}: no {required!r} column (partitions are sorted by sym, "
                            f"time); columns: {', '.join(data.column_names)}")
    for f in data.schema:
        if not f.nullable and data.column(f.name).null_count:
            raise DataError(f"cannot write {table} {date}: column {f.name!r} is declared not null but holds "
                            f"{data.column(f.name).null_count} null(s); fill them or declare the column nullable")

    n_threads = threads if threads is not None else DEFAULT_THREADS
    staging = _staging(root)
    token = uuid.uuid4().hex[:16]
    new = staging / f"new.{table}.{date.isoformat()}.{token}"
    with _flock(staging / _WRITERS_LOCK, fcntl.LOCK_SH), ThreadPoolExecutor(max(1, n_threads)) as pool:
        try:
            new.mkdir()
            columns = list(pool.map(_prepare, data.column_names, data.columns))
            schema = pa.schema([pa.field(f.name, c.type, f.nullable, f.metadata) for f, c in zip(data.schema, columns,
                                                                                                  strict=True)])
            sym = columns[data.column_names.index("sym")]
            if not isinstance(sym, pa.DictionaryArray):  # not a string column: codes for the sort only
                sym = pc.dictionary_encode(sym)
            order = sort_order(columns[data.column_names.index("time")], sym)
            parts = _plan(n, row_group_size, n_threads)
            paths = [new / f"part-{i}.parquet" for i in range(len(parts))]
            _run_parts(pool, paths, schema, columns, order, parts, n, progress)
            del columns, order
            _fsync_dir(new)
            nbytes = sum(p.stat().st_size for p in paths)
            _commit(root, staging, new, final, table, date, token)
        except BaseException:
            with contextlib.suppress(OSError):
                _remove(new)
            raise
    return WriteResult(table, date, final, n, nbytes, time.perf_counter() - t0)


def _run_parts(pool: ThreadPoolExecutor, paths: list[Path], schema: pa.Schema, columns: list[pa.Array],
               order: npt.NDArray[np.int64], parts: list[list[tuple[int, int]]], n: int,
               progress: Progress | None) -> None:
    """Write the part files in the pool; report progress from this thread; stop them all on any error."""
    done: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    cancel = threading.Event()
    futures: list[Future[None]] = [
        pool.submit(_write_part, path, schema, columns, order, groups, cancel, done)
        for path, groups in zip(paths, parts, strict=True)
    ]
    try:
        rows, running = 0, len(futures)
        while running:
            item = done.get()
            if item is None:
                running -= 1
                continue
            rows += item
            if progress is not None:
                progress(rows, n)
    except BaseException:
        cancel.set()
        raise
    finally:
        for f in futures:
            f.exception()  # wait: no thread may still write into a directory about to be removed
    for f in futures:
        f.result()


def _commit(root: Path, staging: Path, new: Path, final: Path, table: str, date: dt.date, token: str) -> None:
    """Rename the staged directory into place (moving an existing partition aside first), bump the generation."""
    with _flock(staging / _COMMIT_LOCK, fcntl.LOCK_EX):
        _mkdirs(final.parent)
        old: Path | None = None
        if final.exists():
            old = staging / f"old.{table}.{date.isoformat()}.{token}"
            os.rename(final, old)
            _fsync_dir(final.parent)
        try:
            os.rename(new, final)
        except BaseException:
            if old is not None:  # put the old partition back now rather than leave it to recover()
                os.rename(old, final)
            raise
        _fsync_dir(final.parent)
        _fsync_dir(staging)
        if old is not None:
            shutil.rmtree(old)
            _fsync_dir(staging)
        _bump_locked(root)
