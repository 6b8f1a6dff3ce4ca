"""Tests of the HDB directory scan (``hdb/catalog.py``): partitions found, grouped by schema, footers cached."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdb.catalog import Catalog, Group, TableFiles, columns, history_sql

D1, D2, D3 = dt.date(2026, 11, 17), dt.date(2026, 11, 18), dt.date(2026, 11, 19)
V1 = pa.schema([("sym", pa.string()), ("price", pa.float64())])
V2 = V1.append(pa.field("venue", pa.string()))


def write(root: Path, table: str, day: dt.date, schema: pa.Schema, part: int = 0) -> str:
    path = root / table / f"date={day}" / f"part-{part}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.empty_table(), path)
    return str(path)


def test_files_are_grouped_by_schema_in_date_order(tmp_path: Path) -> None:
    a = write(tmp_path, "trade", D1, V1)
    b1 = write(tmp_path, "trade", D2, V2)
    b0 = write(tmp_path, "trade", D2, V2, part=1)
    c = write(tmp_path, "trade", D3, V1)
    q = write(tmp_path, "quote", D3, V1)
    found = Catalog(tmp_path).scan()
    assert found == {
        "trade": TableFiles("trade", frozenset({D1, D2, D3}),
                            (Group(columns(V1), (a, c)), Group(columns(V2), (b1, b0)))),
        "quote": TableFiles("quote", frozenset({D3}), (Group(columns(V1), (q,)),)),
    }


def test_only_partition_directories_and_parquet_files_are_listed(tmp_path: Path) -> None:
    good = write(tmp_path, "trade", D1, V1)
    write(tmp_path / ".staging", "trade", D2, V1)
    write(tmp_path, ".hidden", D2, V1)
    write(tmp_path, "bad-name", D2, V1)
    (tmp_path / "trade" / "date=2026-02-30").mkdir()
    (tmp_path / "trade" / "date=2026-02-30" / "part-0.parquet").write_bytes(b"")
    (tmp_path / "trade" / "date=20261117").mkdir()
    (tmp_path / "trade" / "date=20261117" / "part-0.parquet").write_bytes(b"")
    (tmp_path / "trade" / f"date={D1}" / ".part-1.parquet").write_bytes(b"")
    (tmp_path / "trade" / f"date={D1}" / "part-1.parquet.tmp").write_bytes(b"")
    (tmp_path / "trade" / f"date={D1}" / "sub.parquet").mkdir()
    (tmp_path / "empty" / f"date={D1}").mkdir(parents=True)
    (tmp_path / "notes.parquet").write_bytes(b"")
    assert Catalog(tmp_path).scan() == {"trade": TableFiles("trade", frozenset({D1}), (Group(columns(V1), (good,)),))}
    assert Catalog(tmp_path / "missing").scan() == {}


def test_unreadable_files_go_behind_a_readable_one(tmp_path: Path) -> None:
    bad = tmp_path / "trade" / f"date={D1}" / "part-0.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    good = write(tmp_path, "trade", D2, V1)
    (only,) = Catalog(tmp_path).scan().values()
    assert only.groups == (Group(columns(V1), (good, str(bad))),)
    assert only.unreadable == (str(bad),)
    os.remove(good)
    (only,) = Catalog(tmp_path).scan().values()
    assert only.groups == (Group(None, (str(bad),)),)


def test_footers_are_read_once_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = pq.read_schema

    def counting(path: str) -> pa.Schema:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(pq, "read_schema", counting)  # what hdb.catalog calls
    a = write(tmp_path, "trade", D1, V1)
    cat = Catalog(tmp_path)
    cat.scan()
    b = write(tmp_path, "trade", D2, V1)
    cat.scan()
    assert reads == [a, b]  # the second scan reads the new file only
    tmp = tmp_path / "new.parquet"
    pq.write_table(V2.empty_table(), tmp)
    os.replace(tmp, a)  # the day written again
    assert cat.scan()["trade"].groups == (Group(columns(V2), (a,)), Group(columns(V1), (b,)))
    assert reads == [a, b, a]


def test_the_generation_stamp_changes_on_replace(tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    assert cat.stamp() is None
    (tmp_path / ".generation").write_text("1")
    first = cat.stamp()
    assert first is not None and cat.stamp() == first
    (tmp_path / ".generation.tmp").write_text("2")
    os.replace(tmp_path / ".generation.tmp", tmp_path / ".generation")
    assert cat.stamp() != first


def test_columns_compare_as_duckdb_reads_them() -> None:
    dictionary = pa.schema([("sym", pa.dictionary(pa.int32(), pa.string())), ("price", pa.float64())])
    large = pa.schema([("sym", pa.large_string()), ("price", pa.float64())])
    assert columns(dictionary) == columns(large) == columns(V1) == (("sym", "string"), ("price", "double"))


def test_history_sql_puts_the_declared_schema_first() -> None:
    old, new = Group(columns(V1), ("/h/t/date=2026-11-17/part-0.parquet",)), Group(columns(V2), ("/h/t/x'.parquet",))
    files = TableFiles("t", frozenset({D1, D2}), (old, new))
    sql = history_sql(files, "_tick.t", V2)
    # A group with exactly the declared columns reads first, and the zero-row relation is not needed.
    assert "_tick.t" not in sql
    assert sql.index("x''.parquet") < sql.index("part-0.parquet")
    assert sql.count("UNION ALL BY NAME") == 1
    # No such group: the zero-row relation comes first, so every declared column exists.
    sql = history_sql(TableFiles("t", frozenset({D1}), (old,)), "_tick.t", V2)
    assert sql.startswith("SELECT * FROM _tick.t\nUNION ALL BY NAME\n")
    assert history_sql(None, "_tick.t", V2) == "SELECT * FROM _tick.t"
    with pytest.raises(ValueError, match="needs partitions"):
        history_sql(None, None)
