"""hdb.load: backfill a day from Parquet or CSV, validated against the schema; every refusal names the fix."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from hdb import partition as P
from hdb.load import load
from tickerplant.exceptions import DataError
from tickerplant.schema import TIMESTAMP, TP_TIME, Registry

REG = Registry.default()
DAY = dt.date(2026, 11, 20)
T0 = 1_795_000_000_000_000_000  # 2026-11-18T...; any instant will do


def source_rows(n: int, seed: int = 0) -> pa.Table:
    """A backfill file's rows: no tp_time, ``size`` as int64 (converted to float64), shuffled."""
    rng = np.random.default_rng(seed)
    t = T0 + rng.integers(0, 10**12, n)
    return pa.table({
        "time": pa.array(t, pa.int64()).cast(TIMESTAMP),
        "sym": pa.array(np.array(["ETHUSD", "BTCUSD", "SOLUSD"])[rng.integers(0, 3, n)]),
        "exchange": pa.array(np.array(["X", "Y"])[rng.integers(0, 2, n)]),
        "price": pa.array(rng.random(n) * 1000),
        "size": pa.array(rng.integers(1, 50, n), pa.int64()),
        "seq": pa.array(np.arange(n, dtype=np.int64)),
    })


def stored(hdb: Path) -> pa.Table:
    files = sorted(P.partition_dir(hdb, "trade", DAY).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).combine_chunks()


def oracle(rows: pa.Table) -> pa.Table:
    """What the partition must hold: schema order, absent columns null, sorted by (sym, time, arrival)."""
    n = rows.num_rows
    target = REG["trade"].schema
    cols = [rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(n, f.type)
            for f in target]
    full = pa.table(cols, names=target.names)
    order = pc.sort_indices(full, [("sym", "ascending"), ("time", "ascending"), ("seq", "ascending")])
    return full.take(order).combine_chunks()


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(line + "\n" for line in lines))
    return path


# --------------------------------------------------------------------------- happy paths


def test_load_parquet(tmp_path: Path) -> None:
    rows = source_rows(5000, seed=1)
    src = tmp_path / "trades.parquet"
    pq.write_table(rows, src)
    progress: list[int] = []
    res = load(tmp_path / "hdb", "trade", DAY, src, REG, progress=lambda d, t: progress.append(d))
    assert res.rows == 5000 and progress[-1] == 5000 and P.partitions(tmp_path / "hdb", "trade") == [DAY]
    back = stored(tmp_path / "hdb")
    assert back.column_names == REG["trade"].schema.names  # schema order, tp_time last
    assert back.schema.field("size").type == pa.float64() and back.schema.field(TP_TIME).nullable
    assert back.column(TP_TIME).null_count == 5000 and back.column("side").null_count == 5000
    assert back.cast(oracle(rows).schema).equals(oracle(rows))


def test_load_csv_timestamps_zones_and_nulls(tmp_path: Path) -> None:
    lines = [
        "2026-11-20T10:00:00.123456789Z,BTCUSD,SIMA,100.5,1,buy,t1,7",
        "2026-11-20T11:00:00.000000001+01:00,BTCUSD,,100,2,,t2,",  # 10:00:00.000000001 UTC; empty = null
        "2026-11-20 09:30:00.5,ETHUSD,SIMB,3000,3,sell,t3,9",  # no zone: UTC
        "2026-11-20T09:30:00.5-0230,ETHUSD,SIMB,3001,1e2,sell,t4,10",  # 12:00:00.5 UTC
    ]
    src = write_csv(tmp_path / "day.csv", "time,sym,exchange,price,size,side,trade_id,seq", lines)
    res = load(tmp_path, "trade", DAY, src, REG)
    assert res.rows == 4
    back = stored(tmp_path)
    ns = back.column("time").cast(pa.int64()).to_pylist()
    base = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()) * 10**9
    h = 3600 * 10**9
    assert ns == [base + 10 * h + 1, base + 10 * h + 123_456_789, base + 9 * h + h // 2 + 5 * 10**8,
                  base + 12 * h + 5 * 10**8]
    assert back.column("trade_id").to_pylist() == ["t2", "t1", "t3", "t4"]
    assert back.column("exchange").to_pylist() == [None, "SIMA", "SIMB", "SIMB"]
    assert back.column("seq").to_pylist() == [None, 7, 9, 10]
    assert back.column("size").to_pylist() == [2.0, 1.0, 3.0, 100.0]
    assert back.schema.field("time").type == TIMESTAMP


def test_load_gzipped_csv_with_a_matching_date_column(tmp_path: Path) -> None:
    rows = source_rows(2000, seed=2)
    buf = pa.BufferOutputStream()
    pcsv.write_csv(rows.append_column("date", pa.array([DAY] * 2000, pa.date32())), buf)
    src = tmp_path / "export.csv.gz"
    src.write_bytes(gzip.compress(buf.getvalue().to_pybytes()))
    assert load(tmp_path, "trade", DAY, src, REG).rows == 2000
    back = stored(tmp_path)
    assert back.cast(oracle(rows).schema).equals(oracle(rows))


def test_replace_and_empty_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(source_rows(300, seed=3), first)
    pq.write_table(source_rows(200, seed=4), second)
    load(tmp_path, "trade", DAY, first, REG)
    with pytest.raises(DataError, match=r"already has a partition for 2026-11-20 .*use --replace"):
        load(tmp_path, "trade", DAY, second, REG)
    assert stored(tmp_path).num_rows == 300
    assert load(tmp_path, "trade", DAY, second, REG, replace=True).rows == 200
    assert stored(tmp_path).num_rows == 200 and P.generation(tmp_path) == 2

    empty = write_csv(tmp_path / "empty.csv", "time,sym,price,size", [])
    res = load(tmp_path, "trade", DAY + dt.timedelta(days=1), empty, REG)
    assert res.rows == 0 and not res.path.exists()


# --------------------------------------------------------------------------- refusals


def refused(tmp_path: Path, name: str, header: str, lines: list[str]) -> str:
    src = write_csv(tmp_path / name, header, lines)
    with pytest.raises(DataError) as info:
        load(tmp_path / "hdb", "trade", DAY, src, REG)
    assert not (tmp_path / "hdb").exists() or P.partitions(tmp_path / "hdb", "trade") == []
    return str(info.value)


GOOD = "2026-11-20T10:00:00Z,BTCUSD,1,2"


def test_unknown_columns_name_them_and_the_tables_columns(tmp_path: Path) -> None:
    msg = refused(tmp_path, "u.csv", "time,sym,price,size,venue,colour", [GOOD + ",X,red"])
    assert "unknown column(s) venue, colour" in msg and "table 'trade'" in msg
    assert "time, sym, exchange, price, size, side, trade_id, seq, recv_time, venue_sym, tp_time" in msg


def test_missing_required_columns(tmp_path: Path) -> None:
    msg = refused(tmp_path, "m.csv", "time,sym,price", ["2026-11-20T10:00:00Z,BTCUSD,1"])
    assert "required column(s) size" in msg and "time, sym, price, size" in msg


def test_a_value_that_is_not_a_number_names_column_value_and_row(tmp_path: Path) -> None:
    lines = [GOOD] * 1000 + ["2026-11-20T10:00:00Z,BTCUSD,1,12abc"] + [GOOD] * 500
    msg = refused(tmp_path, "n.csv", "time,sym,price,size", lines)
    assert "column 'size'" in msg and "'12abc'" in msg and "row 1001" in msg and "float64" in msg


def test_a_bad_timestamp_names_column_value_and_row(tmp_path: Path) -> None:
    lines = [GOOD, GOOD, "2026-11-20 25:61:00,BTCUSD,1,2", "2026-11-20T10:00:00+01:00,BTCUSD,1,2"]
    msg = refused(tmp_path, "t.csv", "time,sym,price,size", lines)
    assert "column 'time'" in msg and "'2026-11-20 25:61:00'" in msg and "row 3" in msg
    assert "not a valid ISO-8601 timestamp" in msg


def test_nulls_in_required_columns_give_count_and_first_row(tmp_path: Path) -> None:
    lines = [GOOD, "2026-11-20T10:00:00Z,,1,2", GOOD, "2026-11-20T10:00:00Z,,1,2"]
    msg = refused(tmp_path, "z.csv", "time,sym,price,size", lines)
    assert "column 'sym'" in msg and "2 null value(s)" in msg and "row 2" in msg


def test_parquet_types_that_do_not_convert(tmp_path: Path) -> None:
    rows = source_rows(10)
    hdb = tmp_path / "hdb"
    cases = {
        "epoch.parquet": (rows.set_column(0, "time", rows.column("time").cast(pa.int64())), "column 'time' is int64"),
        "frac.parquet": (rows.set_column(5, "seq", pa.array([0.5] * 10)), "column 'seq'"),
        "big.parquet": (rows.set_column(4, "size", pa.array([2**60] * 10, pa.int64())), "column 'size'"),
    }
    for name, (table, text) in cases.items():
        pq.write_table(table, tmp_path / name)
        with pytest.raises(DataError, match=text) as info:
            load(hdb, "trade", DAY, tmp_path / name, REG)
        assert "row 1" in str(info.value) or "ISO-8601" in str(info.value)
    assert P.partitions(hdb, "trade") == []


def test_date_column_for_another_day_is_refused(tmp_path: Path) -> None:
    rows = source_rows(5).append_column("date", pa.array([DAY, DAY, DAY + dt.timedelta(days=1), DAY, DAY]))
    pq.write_table(rows, tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"'date' holds 2026-11-21 in row 3, not 2026-11-20"):
        load(tmp_path / "hdb", "trade", DAY, tmp_path / "d.parquet", REG)


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path, "trade", DAY, tmp_path / "nope.parquet", REG)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"use a \.parquet or \.csv"):
        load(tmp_path, "trade", DAY, tmp_path / "x.json", REG)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .* as Parquet"):
        load(tmp_path, "trade", DAY, tmp_path / "bad.parquet", REG)
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DataError, match="needs a header line"):
        load(tmp_path, "trade", DAY, tmp_path / "blank.csv", REG)
    write_csv(tmp_path / "ragged.csv", "time,sym,price,size", [GOOD, GOOD + ",extra"])
    with pytest.raises(DataError, match=r"cannot read .* as CSV"):
        load(tmp_path, "trade", DAY, tmp_path / "ragged.csv", REG)
    write_csv(tmp_path / "dup.csv", "time,sym,price,size,price", [GOOD + ",3"])
    with pytest.raises(DataError, match="price appear more than once"):
        load(tmp_path, "trade", DAY, tmp_path / "dup.csv", REG)
    with pytest.raises(DataError, match="unknown table 'trades'"):
        load(tmp_path, "trades", DAY, tmp_path / "dup.csv", REG)
