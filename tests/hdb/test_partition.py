"""hdb.partition: sorted zstd Parquet partitions written atomically, kill -9 at any moment, recover().

The oracles are independent of the writer's numpy radix sort: Arrow's ``sort_indices`` and
DuckDB's ``ORDER BY`` over (sym, time, arrival index).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdb import partition as P
from tickerplant.exceptions import DataError
from tickerplant.schema import TIMESTAMP, Registry

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)
SCHEMA: pa.Schema = Registry.default()["trade"].schema
T0 = 1_795_000_000_000_000_000
SYMS = np.array(["BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD", "ADAUSD", "A", "AB", "Zed", "éclair"])


def trades(n: int, seed: int = 0, chunk: int = 997, time_span: int = 5000, in_time_order: bool = False) -> pa.Table:
    """``n`` trade rows in arrival order, in chunks of ``chunk`` rows; ``seq`` is the arrival index.

    Times come from a small range so many rows tie on (sym, time): stability is visible.
    """
    rng = np.random.default_rng(seed)
    t = T0 + rng.integers(0, time_span, n)
    if in_time_order:
        t = np.sort(t)
    recv = pa.array(t + 5, pa.int64()).cast(TIMESTAMP)
    cols = {
        "time": pa.array(t, pa.int64()).cast(TIMESTAMP),
        "sym": pa.array(SYMS[rng.integers(0, len(SYMS), n)]),
        "exchange": pa.array(np.array(["SIMA", "SIMB", "SIMC"])[rng.integers(0, 3, n)]),
        "price": pa.array(rng.random(n) * 100),
        "size": pa.array(rng.integers(1, 100, n).astype(np.float64)),
        "side": pa.array(np.array(["buy", "sell"])[rng.integers(0, 2, n)], mask=rng.random(n) < 0.1),
        "trade_id": pa.array([f"id{i:09d}" for i in rng.permutation(n)]),
        "seq": pa.array(np.arange(n, dtype=np.int64)),
        "recv_time": pc.if_else(pa.array(rng.random(n) < 0.05), pa.scalar(None, TIMESTAMP), recv),
        "tp_time": pa.array(t + 10, pa.int64()).cast(TIMESTAMP),
    }
    # Columns this file does not care about (added by later schema versions) are null.
    table = pa.Table.from_arrays([cols.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA], schema=SCHEMA)
    return pa.Table.from_batches(table.to_batches(max_chunksize=chunk), SCHEMA)


def expected(data: pa.Table) -> pa.Table:
    """``data`` sorted by (sym, time) with ties in arrival order (``seq`` is the arrival index), by Arrow."""
    order = pc.sort_indices(data, [("sym", "ascending"), ("time", "ascending"), ("seq", "ascending")])
    return data.take(order).combine_chunks()


def read_partition(path: Path) -> pa.Table:
    """Every file of a partition, in name order (the order the partition is sorted in)."""
    files = sorted(path.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).combine_chunks()


def staged(hdb: Path) -> list[str]:
    """What is left under .staging besides the lock files."""
    staging = hdb / P.STAGING
    return sorted(p.name for p in staging.iterdir() if not p.name.startswith(".")) if staging.exists() else []


# --------------------------------------------------------------------------- round trip


def test_round_trip_pyarrow_and_duckdb(tmp_path: Path) -> None:
    hdb = tmp_path / "hdb"
    data = trades(12_345, seed=1)
    assert data.num_columns == len(SCHEMA) and len(data.column("sym").chunks) > 10
    seen: list[tuple[int, int, int]] = []
    res = P.write_partition(hdb, "trade", DAY, data, row_group_size=1000, threads=3,
                            progress=lambda done, total: seen.append((done, total, threading.get_ident())))

    assert res.path == hdb / "trade" / "date=2026-11-20" and res.rows == 12_345 and res.table == "trade"
    files = sorted(res.path.iterdir())
    assert [f.name for f in files] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert res.bytes == sum(f.stat().st_size for f in files) and res.seconds > 0

    back = read_partition(res.path)
    assert back.schema == SCHEMA  # plain strings, timestamp[ns, UTC], the not-null flags
    assert back.equals(expected(data))
    assert pq.read_table(res.path).combine_chunks().equals(back)  # pyarrow lists the directory in name order

    # Row groups: 13 of equal size (950), none above the limit; zstd everywhere; no date column inside.
    sizes = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            sizes.append(rg.num_rows)
            assert {rg.column(c).compression for c in range(rg.num_columns)} == {"ZSTD"}
            stats = {rg.column(c).path_in_schema: rg.column(c).is_stats_set for c in range(rg.num_columns)}
            assert stats["sym"] and stats["time"] and stats["price"]  # what prunes row groups
            assert [(c.column_index, c.descending) for c in rg.sorting_columns] == [(1, False), (0, False)]
        assert "date" not in pq.read_schema(f).names
    assert sizes == [950] * 12 + [12_345 - 950 * 12]

    # Progress: once per row group (in the order the threads finish them), up to the total.
    done = [0] + [d for d, _, _ in seen]
    assert sorted(np.diff(done).tolist()) == sorted(sizes) and done[-1] == 12_345
    assert {(t, who) for _, t, who in seen} == {(12_345, threading.get_ident())}

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = f"{hdb}/trade/*/*.parquet"
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                             f"read_parquet('{glob}', hive_partitioning = true))").fetchall())
    assert types == {"time": "TIMESTAMPTZ_NS", "sym": "VARCHAR", "exchange": "VARCHAR", "price": "DOUBLE",
                     "size": "DOUBLE", "side": "VARCHAR", "trade_id": "VARCHAR", "seq": "BIGINT",
                     "recv_time": "TIMESTAMPTZ_NS", "venue_sym": "VARCHAR", "tp_time": "TIMESTAMPTZ_NS", "date": "DATE"}
    rel = con.sql(f"SELECT * EXCLUDE (date), date FROM read_parquet('{glob}', hive_partitioning = true) "
                  f"ORDER BY sym, time, seq").to_arrow_table()
    assert pc.all(pc.equal(rel.column("date"), pa.scalar(DAY))).as_py()
    # Without ORDER BY, DuckDB reads the files in name order too: the partition comes back sorted.
    plain = con.sql(f"SELECT seq FROM read_parquet('{glob}', hive_partitioning = true)").to_arrow_table()
    assert plain.column("seq").to_pylist() == expected(data).column("seq").to_pylist()
    nullable = pa.schema([f.with_nullable(True) for f in SCHEMA])  # DuckDB's Arrow output has no not-null flags
    assert rel.drop_columns(["date"]).cast(nullable).equals(expected(data).cast(nullable))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["b", "a", "c", "ab", ""]) | st.none(),
                            st.integers(-3, 3) | st.none()), max_size=60),
)
def test_sort_order_is_stable_sym_then_time(rows: list[tuple[str | None, int | None]]) -> None:
    """The radix sort equals Arrow's sort by (sym, time, arrival), nulls last, for both branches."""
    sym = pa.array([s for s, _ in rows], pa.string())
    tim = pa.array([t for _, t in rows], pa.int64()).cast(TIMESTAMP)
    arrival = pa.array(np.arange(len(rows), dtype=np.int64))
    want = pc.sort_indices(pa.table({"s": sym, "t": tim, "i": arrival}),
                           [("s", "ascending"), ("t", "ascending"), ("i", "ascending")]).to_pylist()
    assert P.sort_order(tim, pc.dictionary_encode(sym)).tolist() == want
    # Already in time order (the path that skips the time sort) gives the same answer.
    by_time = pc.sort_indices(pa.table({"t": tim, "i": arrival}), [("t", "ascending"), ("i", "ascending")])
    sym2, tim2 = sym.take(by_time), tim.take(by_time)
    want2 = pc.sort_indices(pa.table({"s": sym2, "t": tim2, "i": arrival}),
                            [("s", "ascending"), ("t", "ascending"), ("i", "ascending")]).to_pylist()
    assert P.sort_order(tim2, pc.dictionary_encode(sym2)).tolist() == want2


def test_time_ordered_input_many_syms_and_one_thread(tmp_path: Path) -> None:
    """Arrival already in time order (as from the TP): only the sym sort runs; 300 syms need 16-bit codes."""
    n = 20_000
    rng = np.random.default_rng(7)
    data = trades(n, seed=7, in_time_order=True)
    data = data.set_column(1, "sym", pa.array([f"S{i:03d}" for i in rng.integers(0, 300, n)]))
    res = P.write_partition(tmp_path, "trade", DAY, data, row_group_size=100_000, threads=1)
    assert [f.name for f in res.path.iterdir()] == ["part-0.parquet"]
    assert pq.ParquetFile(res.path / "part-0.parquet").metadata.num_row_groups == 1
    assert read_partition(res.path).equals(expected(data))


def test_date_column_dropped_and_empty_data_writes_nothing(tmp_path: Path) -> None:
    data = trades(100, seed=2)
    with_date = data.append_column("date", pa.array([DAY] * 100, pa.date32()))
    res = P.write_partition(tmp_path, "trade", DAY, with_date)
    assert read_partition(res.path).schema == SCHEMA
    assert P.generation(tmp_path) == 1

    empty = P.write_partition(tmp_path, "trade", DAY + dt.timedelta(days=1), data.slice(0, 0))
    assert empty.rows == 0 and empty.bytes == 0 and not empty.path.exists()
    assert empty.path == P.partition_dir(tmp_path, "trade", DAY + dt.timedelta(days=1))
    assert P.generation(tmp_path) == 1 and P.partitions(tmp_path, "trade") == [DAY]


def test_bad_arguments(tmp_path: Path) -> None:
    data = trades(10)
    with pytest.raises(DataError, match="table name"):
        P.write_partition(tmp_path, "../evil", DAY, data)
    with pytest.raises(DataError, match="'sym' column"):
        P.write_partition(tmp_path, "trade", DAY, data.drop_columns(["sym"]))
    with pytest.raises(DataError, match="row_group_size"):
        P.write_partition(tmp_path, "trade", DAY, data, row_group_size=0)
    nulls = data.set_column(3, SCHEMA.field("price"), pa.array([None] * 10, pa.float64()))
    with pytest.raises(DataError, match="'price' is declared not null but holds 10 null"):
        P.write_partition(tmp_path, "trade", DAY, nulls)
    assert P.tables(tmp_path) == []


def test_listing_tables_and_partitions(tmp_path: Path) -> None:
    data = trades(50)
    for d in (DAY, DAY - dt.timedelta(days=3), DAY + dt.timedelta(days=1)):
        P.write_partition(tmp_path, "trade", d, data)
    P.write_partition(tmp_path, "quote_like", DAY, data)
    (tmp_path / "trade" / "date=garbage").mkdir()
    (tmp_path / "trade" / "date=2026-13-45").mkdir()
    (tmp_path / "notes.txt").write_text("not a table")
    assert P.tables(tmp_path) == ["quote_like", "trade"]
    assert P.partitions(tmp_path, "trade") == [DAY - dt.timedelta(days=3), DAY, DAY + dt.timedelta(days=1)]
    assert P.partitions(tmp_path, "nope") == [] and P.tables(tmp_path / "missing") == []
    assert P.generation(tmp_path) == 4 and staged(tmp_path) == []


# --------------------------------------------------------------------------- replace, recover


def test_replace_keeps_one_whole_partition(tmp_path: Path) -> None:
    old, new = trades(3000, seed=3), trades(2000, seed=4)
    P.write_partition(tmp_path, "trade", DAY, old)
    res = P.write_partition(tmp_path, "trade", DAY, new, row_group_size=500)
    assert read_partition(res.path).equals(expected(new))
    assert staged(tmp_path) == [] and P.generation(tmp_path) == 2
    # Fewer part files than before: none of the old ones is left behind.
    P.write_partition(tmp_path, "trade", DAY, old, row_group_size=10_000, threads=1)
    assert [f.name for f in res.path.iterdir()] == ["part-0.parquet"]


def _crash_between_renames(hdb: Path, old: pa.Table, new_rows: pa.Table | None) -> Path:
    """Leave the state of a replace killed after moving the old partition aside (and maybe part of the new)."""
    P.write_partition(hdb, "trade", DAY, old)
    final = P.partition_dir(hdb, "trade", DAY)
    aside = hdb / P.STAGING / "old.trade.2026-11-20.00ff"
    os.rename(final, aside)
    unfinished = hdb / P.STAGING / "new.trade.2026-11-20.00ff"
    unfinished.mkdir()
    if new_rows is not None:
        pq.write_table(new_rows, unfinished / "part-0.parquet")
    (unfinished / "part-1.parquet").write_bytes(b"PAR1 torn")
    return final


def test_recover_restores_the_old_partition_after_a_crash_between_renames(tmp_path: Path) -> None:
    old = trades(1500, seed=5)
    final = _crash_between_renames(tmp_path, old, trades(100, seed=6))
    assert P.partitions(tmp_path, "trade") == []  # what a reader sees at that moment: no partition
    msgs = P.recover(tmp_path)
    assert any("restored" in m and "2026-11-20" in m for m in msgs)
    assert any("unfinished write" in m for m in msgs)
    assert read_partition(final).equals(expected(old))
    assert staged(tmp_path) == [] and P.recover(tmp_path) == []


def test_recover_deletes_the_replaced_partition_when_the_new_one_is_in_place(tmp_path: Path) -> None:
    old, new = trades(1000, seed=8), trades(700, seed=9)
    final = _crash_between_renames(tmp_path, old, None)
    P.write_partition(tmp_path, "trade", DAY, new)  # the redo, before any recover()
    (tmp_path / P.STAGING / "stray-file").write_text("x")
    msgs = P.recover(tmp_path)
    assert any("removed the replaced partition" in m for m in msgs) and any("stray-file" in m for m in msgs)
    assert read_partition(final).equals(expected(new)) and staged(tmp_path) == []


def test_recover_waits_for_a_running_writer(tmp_path: Path) -> None:
    (tmp_path / P.STAGING / "new.trade.2026-11-20.abcd").mkdir(parents=True)
    with P._flock(tmp_path / P.STAGING / P._WRITERS_LOCK, P.fcntl.LOCK_SH):  # a writer at work
        msgs = P.recover(tmp_path)
    assert len(msgs) == 1 and "in progress" in msgs[0]
    assert staged(tmp_path) == ["new.trade.2026-11-20.abcd"]
    assert P.recover(tmp_path) == ["removed unfinished write of trade 2026-11-20 (new.trade.2026-11-20.abcd)"]
    assert P.recover(tmp_path / "no-hdb-here") == []


def test_failed_write_leaves_nothing_staged(tmp_path: Path) -> None:
    P.write_partition(tmp_path, "trade", DAY, trades(300, seed=10))

    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        P.write_partition(tmp_path, "trade", DAY, trades(5000, seed=11), row_group_size=100, progress=boom)
    assert staged(tmp_path) == [] and P.generation(tmp_path) == 1
    assert read_partition(P.partition_dir(tmp_path, "trade", DAY)).equals(expected(trades(300, seed=10)))


# --------------------------------------------------------------------------- generation, day markers


def test_generation_bumps_are_atomic_and_serialized(tmp_path: Path) -> None:
    assert P.generation(tmp_path) == 0
    assert P.bump_generation(tmp_path) == 1 and (tmp_path / ".generation").read_text() == "1\n"
    threads = [threading.Thread(target=lambda: [P.bump_generation(tmp_path) for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert P.generation(tmp_path) == 101
    assert sorted(p.name for p in tmp_path.iterdir()) == [".generation", ".staging"]  # no temporary files left
    (tmp_path / ".generation").write_text("banana")
    with pytest.raises(DataError, match="not an integer"):
        P.generation(tmp_path)


def test_day_markers(tmp_path: Path) -> None:
    assert not P.day_done(tmp_path, DAY)
    P.mark_day_done(tmp_path, DAY)
    assert P.day_done(tmp_path, DAY) and not P.day_done(tmp_path, DAY + dt.timedelta(days=1))
    assert (tmp_path / ".eod" / "2026-11-20.done").is_file()
    P.mark_day_done(tmp_path, DAY)  # idempotent
    assert sorted(p.name for p in (tmp_path / ".eod").iterdir()) == ["2026-11-20.done"]


# --------------------------------------------------------------------------- kill -9


# The child reads its input from an Arrow file and writes the partition. It can SIGKILL itself at the
# k-th progress call, or at the k-th directory fsync (those separate every step of the commit: staged
# files durable, old partition moved aside, new one renamed in, old one deleted, generation bumped).
CHILD = r"""
import json, os, signal, sys
import pyarrow as pa
from hdb import partition as P
args = json.loads(sys.argv[1])
with pa.memory_map(args["input"]) as src:
    data = pa.ipc.open_file(src).read_all()
calls = {"progress": 0, "fsync_dir": 0}
def die(kind):
    calls[kind] += 1
    if args.get("kill_on") == kind and calls[kind] == args["at"]:
        os.kill(os.getpid(), signal.SIGKILL)
real_fsync_dir = P._fsync_dir
def fsync_dir(path):
    real_fsync_dir(path)
    die("fsync_dir")
P._fsync_dir = fsync_dir
import datetime as dt
print("ready", flush=True)
P.write_partition(args["hdb"], "trade", dt.date.fromisoformat(args["date"]), data,
                  row_group_size=args["rgs"], progress=lambda d, t: die("progress"))
print(json.dumps(calls), flush=True)
"""


def _save(table: pa.Table, path: Path) -> Path:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return path


def _child(hdb: Path, source: Path, **kw: Any) -> subprocess.Popen[str]:
    args = {"hdb": str(hdb), "input": str(source), "date": DAY.isoformat(), "rgs": 20_000, **kw}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _check_after_crash(hdb: Path, allowed: list[pa.Table]) -> int:
    """recover(), then the partition is absent or equal to one of ``allowed`` (whole); returns which (-1: none)."""
    P.recover(hdb)
    assert staged(hdb) == []
    final = P.partition_dir(hdb, "trade", DAY)
    if not final.exists():
        return -1
    back = read_partition(final)
    for i, want in enumerate(allowed):
        if back.num_rows == want.num_rows and back.equals(want):
            return i
    raise AssertionError(f"partial or wrong partition after a kill: {back.num_rows} rows")


@pytest.mark.parametrize("replace", [False, True], ids=["first-write", "replace"])
def test_kill_at_every_step(tmp_path: Path, replace: bool) -> None:
    """SIGKILL at each progress call and at each directory fsync; recover; redo: the rows exactly once."""
    hdb = tmp_path / "hdb"
    old, new = trades(30_000, seed=12), trades(100_000, seed=13)
    want_old, want_new = expected(old), expected(new)
    source = _save(new, tmp_path / "new.arrow")

    def reset() -> None:
        if hdb.exists():
            shutil.rmtree(hdb)
        if replace:
            P.write_partition(hdb, "trade", DAY, old)

    reset()
    clean = _child(hdb, source)  # a run without a kill counts the steps
    out, err = clean.communicate(timeout=60)
    assert clean.returncode == 0, err
    counts = json.loads(out.splitlines()[-1])
    assert counts["progress"] == 5 and counts["fsync_dir"] >= (6 if replace else 4)

    outcomes = []
    for kind in ("progress", "fsync_dir"):
        for at in range(1, counts[kind] + 1):
            reset()
            proc = _child(hdb, source, kill_on=kind, at=at)
            proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL, (kind, at, proc.returncode)
            outcome = _check_after_crash(hdb, [want_new, want_old] if replace else [want_new])
            outcomes.append(outcome)
            # Redo the day: the new rows, exactly once.
            P.write_partition(hdb, "trade", DAY, new)
            assert read_partition(P.partition_dir(hdb, "trade", DAY)).equals(want_new)
    # Early kills leave the old state (or none), the late ones (after the rename) the new partition.
    assert outcomes[0] == (1 if replace else -1) and outcomes[-1] == 0


def test_kill_at_random_moments(tmp_path: Path) -> None:
    """SIGKILL from outside at moments spread over a write (timed on a clean child run); recover; redo."""
    hdb = tmp_path / "hdb"
    new = trades(300_000, seed=14, chunk=1000)
    want = expected(new)
    source = _save(new, tmp_path / "new.arrow")

    def start() -> subprocess.Popen[str]:
        proc = _child(hdb, source)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    clean = start()
    t0 = time.perf_counter()
    assert clean.stdout is not None and clean.stdout.readline().startswith("{")  # printed once written
    duration = time.perf_counter() - t0
    clean.communicate(timeout=60)
    shutil.rmtree(hdb)
    rng = random.Random(15)
    outcomes = []
    for frac in (0.05, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1):
        proc = start()
        time.sleep(duration * frac * rng.uniform(0.9, 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        outcomes.append(_check_after_crash(hdb, [want]))
        if outcomes[-1] == 0:
            shutil.rmtree(P.partition_dir(hdb, "trade", DAY))
    P.write_partition(hdb, "trade", DAY, new, row_group_size=20_000)
    assert read_partition(P.partition_dir(hdb, "trade", DAY)).equals(want)
