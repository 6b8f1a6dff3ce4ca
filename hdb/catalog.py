"""The HDB directory as tables: which partitions exist, and the SQL that reads each table's history.

Layout (the contract with the end-of-day writer and ``tick hdb load``)::

    <hdb>/<table>/date=YYYY-MM-DD/part-N.parquet   hive partition; the files hold no ``date`` column
    <hdb>/.staging/...                              work in progress, renamed into place: never read
    <hdb>/.generation                               replaced whenever a partition is added or replaced

:meth:`Catalog.scan` lists the partition directories (only ``date=YYYY-MM-DD``; hidden files
and directories are skipped) and reads the footer schema of every file it has not seen before
(cached by path, size, mtime and inode, so a rescan after end of day reads one new footer per
table). :meth:`Catalog.stamp` is the cheap check (one ``stat``) for "did the HDB change?".

Files with the same schema form a *group*; a table's history is its groups joined with
``UNION ALL BY NAME`` (:func:`history_sql`). Why not one ``read_parquet(..., union_by_name=true)``:
DuckDB (2.0, measured) opens every file's footer while binding with ``union_by_name``, so one
unreadable file in any partition breaks every query of the table, and each query pays one
footer read per file. Without it DuckDB binds on the first file only and prunes the others on
``date`` before opening them, but every file must have the first file's columns (and columns
it has beyond them are silently dropped) -- identical schemas within a group rule out both.
Partitions written under an older schema version (fewer columns) form their own group and get
nulls for the newer columns.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("hdb.catalog")

GENERATION = ".generation"
DATE_COLUMN = "date"
_TABLE_DIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

Stamp = tuple[int, int, int]  # (inode, size, mtime_ns): a file replaced by rename gets a new inode
Columns = tuple[tuple[str, str], ...]  # (name, type) as DuckDB will see them: the key files are grouped by


@dataclass(frozen=True)
class Group:
    """Partition files that share one schema, sorted by (date, file name)."""

    columns: Columns | None  # None: a group of unreadable files only
    paths: tuple[str, ...]


@dataclass(frozen=True)
class TableFiles:
    """One table's partitions on disk."""

    name: str
    dates: frozenset[dt.date]
    # The first file of every group (but an all-unreadable one) was readable when scanned:
    # DuckDB binds a group on its first file.
    groups: tuple[Group, ...]
    # Files whose footer could not be read. They are kept, behind a readable file: queries that
    # reach them fail with DuckDB's message naming the file; queries pruned to other dates work.
    unreadable: tuple[str, ...] = ()


@dataclass
class Catalog:
    """Scans one HDB directory; remembers the footer schema of every file it has read."""

    root: Path
    _schemas: dict[str, tuple[Stamp, Columns | None]] = field(default_factory=dict)

    def stamp(self) -> Stamp | None:
        """Identity of ``<hdb>/.generation`` (None while it does not exist): changes when the HDB does."""
        return _stamp(self.root / GENERATION)

    def scan(self) -> dict[str, TableFiles]:
        """Every table that has at least one partition file, by name."""
        tables: dict[str, TableFiles] = {}
        seen: set[str] = set()
        for name, table_dir in _dirs(self.root, _TABLE_DIR):
            files: list[tuple[dt.date, str, Stamp]] = []
            for day, part_dir in _dirs(table_dir, _DATE_DIR):
                try:
                    date = dt.date.fromisoformat(day.removeprefix("date="))
                except ValueError:
                    log.warning("skipping %s: not a valid date", part_dir)
                    continue
                for entry in _entries(part_dir):
                    if entry.name.endswith(".parquet") and not entry.name.startswith(".") and entry.is_file():
                        st = entry.stat()
                        files.append((date, entry.path, (st.st_ino, st.st_size, st.st_mtime_ns)))
            if files:
                files.sort()
                seen.update(path for _, path, _ in files)
                tables[name] = self._group(name, files)
        # Forget files that are gone, so the cache does not grow with replaced partitions.
        for path in self._schemas.keys() - seen:
            del self._schemas[path]
        return tables

    def _group(self, name: str, files: list[tuple[dt.date, str, Stamp]]) -> TableFiles:
        groups: dict[Columns, list[str]] = {}
        unreadable: list[str] = []
        for _, path, stamp in files:
            key = self._schema(path, stamp)
            if key is None:
                unreadable.append(path)
            else:
                groups.setdefault(key, []).append(path)
        grouped = [Group(k, tuple(v)) for k, v in groups.items()]
        if unreadable:
            if grouped:
                grouped[0] = Group(grouped[0].columns, grouped[0].paths + tuple(unreadable))
            else:
                grouped.append(Group(None, tuple(unreadable)))
        return TableFiles(name, frozenset(d for d, _, _ in files), tuple(grouped), tuple(unreadable))

    def _schema(self, path: str, stamp: Stamp) -> Columns | None:
        cached = self._schemas.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        key: Columns | None
        try:
            key = columns(pq.read_schema(path))
        except (OSError, pa.ArrowException) as exc:
            log.warning("cannot read the Parquet footer of %s (%s); queries that reach its partition will fail "
                        "until it is rewritten (tick hdb load) or removed", path, exc)
            key = None
        self._schemas[path] = (stamp, key)
        return key


def columns(schema: pa.Schema) -> Columns:
    """A schema's (name, type) pairs, with the Arrow-only distinctions DuckDB does not see removed."""
    out = []
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_large_binary(t):
            t = pa.binary()
        out.append((f.name, str(t)))
    return tuple(out)


def history_sql(files: TableFiles | None, empty: str | None, declared: pa.Schema | None = None) -> str:
    """A SELECT over a table's partitions, with the partition date as a DATE column ``date``.

    ``empty`` names a zero-row relation with the ``declared`` columns and ``date``. It comes
    first (fixing the column order, and making every declared column exist even when no
    partition has it yet) unless a group of files has exactly the declared columns: that group
    then comes first instead, and the query is a plain Parquet scan (a union would cost, e.g.,
    ``count(*)`` its answer from the footers: it reads a column instead).
    """
    groups = list(files.groups) if files is not None else []
    want = columns(declared) if declared is not None else None
    exact = [g for g in groups if want is not None and g.columns == want]
    parts: list[str] = []
    if exact:
        groups.remove(exact[0])
        groups.insert(0, exact[0])
    elif empty is not None:
        parts.append(f"SELECT * FROM {empty}")
    for group in groups:
        paths = ", ".join(quote_literal(p) for p in group.paths)
        parts.append(f"SELECT * FROM read_parquet([{paths}], hive_partitioning = true, union_by_name = false, "
                     f"hive_types = {{'{DATE_COLUMN}': 'DATE'}})")
    if not parts:
        raise ValueError("history_sql needs partitions or an empty relation")
    return "\nUNION ALL BY NAME\n".join(parts)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _entries(directory: Path | str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError):
        return


def _dirs(directory: Path | str, pattern: re.Pattern[str]) -> Iterator[tuple[str, Path]]:
    """Subdirectories whose name matches ``pattern``, sorted by name (hidden ones never match)."""
    found = [(e.name, Path(e.path)) for e in _entries(directory)
             if pattern.match(e.name) and e.is_dir()]
    yield from sorted(found)
