"""Tests of the query engine (``hdb/engine.py``): one relation per table over memory and the HDB, and query safety.

Partitions are written here with ``pyarrow.parquet.write_table`` into the HDB layout, so these
tests do not depend on the end-of-day writer.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdb.engine import MemoryTables, Query, QueryEngine, check_sql
from tickerplant.exceptions import QueryError, SchemaError
from tickerplant.schema import Registry

REGISTRY = Registry.default()
TRADE = REGISTRY["trade"].schema
D1, D2, D3, D4 = (dt.date(2026, 11, d) for d in (17, 18, 19, 20))
V2 = """
[tables.trade]
version = 2
columns = [
  { name = "time", type = "timestamp", nullable = false },
  { name = "sym", type = "string", nullable = false },
  { name = "price", type = "float64", nullable = false },
  { name = "size", type = "float64", nullable = false },
  { name = "venue", type = "string" },
]
"""


def trades(n: int, day: dt.date, *, seed: int = 0, schema: pa.Schema = TRADE) -> pa.Table:
    """``n`` trades on ``day`` with ``schema``'s columns; price i + 1000 * seed identifies the rows."""
    base = np.datetime64(day, "ns").astype(np.int64)
    time_ = pa.array(base + np.arange(n, dtype=np.int64) * 1_000_000_000, pa.timestamp("ns", tz="UTC"))
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(time=time_, sym=pa.array(np.array(["AAPL", "MSFT", "IBM"])[np.arange(n) % 3]),
                price=pa.array(np.arange(n, dtype=np.float64) + 1000 * seed), size=pa.array(np.ones(n)))
    if "tp_time" in cols:
        cols["tp_time"] = time_
    if "venue" in cols:
        cols["venue"] = pa.array(["XNAS"] * n)
    return pa.table({f.name: cols[f.name] for f in schema}, schema=schema)


def write_partition(hdb: Path, table: str, day: dt.date, rows: pa.Table, part: int = 0) -> Path:
    path = hdb / table / f"date={day.isoformat()}" / f"part-{part}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path, compression="zstd")
    return path


def bump(hdb: Path) -> None:
    """Bump <hdb>/.generation the way the writers do: a new file renamed over the old one."""
    gen = hdb / ".generation"
    n = int(gen.read_text()) + 1 if gen.exists() else 1
    tmp = hdb / ".generation.tmp"
    tmp.write_text(str(n))
    os.replace(tmp, gen)


@pytest.fixture
def hdb(tmp_path: Path) -> Path:
    root = tmp_path / "hdb"
    write_partition(root, "trade", D1, trades(10, D1, seed=1))
    write_partition(root, "trade", D2, trades(20, D2, seed=2))
    bump(root)
    return root


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., QueryEngine]]:
    engines: list[QueryEngine] = []

    def make(hdb: Path | None, registry: Registry = REGISTRY, **kw: object) -> QueryEngine:
        engine = QueryEngine(hdb, registry, **kw)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> QueryEngine:
    """HDB days D1 (10 rows) and D2 (20 rows); D3 (5 rows) in memory."""
    memory: MemoryTables = {"trade": [(D3, trades(5, D3, seed=3))]}
    return engine_factory(hdb, memory=lambda: memory, timeout=10.0)


def counts(engine: QueryEngine, table: str = "trade") -> dict[dt.date, int]:
    out = engine.execute(f"SELECT date, count(*) AS n FROM {table} GROUP BY date ORDER BY date").to_pylist()
    return {r["date"]: r["n"] for r in out}


def refused(engine: QueryEngine, sql: str, code: str, **kw: object) -> QueryError:
    with pytest.raises(QueryError) as info:
        engine.execute(sql, **kw)  # type: ignore[arg-type]
    assert info.value.code == code, info.value
    return info.value


def still_serving(engine: QueryEngine) -> None:
    assert counts(engine) == {D1: 10, D2: 20, D3: 5}


# -- one relation over today and history ------------------------------------------------------


def test_today_and_history_in_one_query(engine: QueryEngine) -> None:
    assert counts(engine) == {D1: 10, D2: 20, D3: 5}
    got = engine.execute("SELECT date, sum(price) AS s FROM trade WHERE date >= DATE '2026-11-18' "
                         "GROUP BY date ORDER BY date").to_pylist()
    assert got == [{"date": D2, "s": sum(range(20)) + 2000.0 * 20}, {"date": D3, "s": sum(range(5)) + 3000.0 * 5}]


def test_relation_has_the_declared_columns_then_date(engine: QueryEngine) -> None:
    result = engine.execute("SELECT * FROM trade WHERE date = DATE '2026-11-19' ORDER BY time")
    assert result.column_names == [*TRADE.names, "date"]
    assert result.schema.field("time").type == pa.timestamp("ns")  # nanoseconds kept; UTC, no zone attached
    assert result.drop_columns(["date"]).cast(TRADE).equals(trades(5, D3, seed=3))
    describe = engine.execute("DESCRIBE trade").to_pylist()
    assert [r["column_name"] for r in describe] == [*TRADE.names, "date"]
    assert describe[-1]["column_type"] == "DATE"


def test_memory_wins_when_a_date_is_both_in_memory_and_on_disk(hdb: Path,
                                                               engine_factory: Callable[..., QueryEngine]) -> None:
    # During end of day D2 is written (20 rows on disk) while the RDB still holds it (3 rows here).
    memory: MemoryTables = {"trade": [(D2, trades(3, D2, seed=9)), (D3, trades(5, D3, seed=3))]}
    engine = engine_factory(hdb, memory=lambda: memory)
    assert counts(engine) == {D1: 10, D2: 3, D3: 5}
    assert engine.execute("SELECT min(price) AS p FROM trade WHERE date = DATE '2026-11-18'")["p"][0].as_py() == 9000
    # hdb.trade is the disk alone.
    assert counts(engine, "hdb.trade") == {D1: 10, D2: 20}


def test_an_empty_memory_table_still_hides_its_date_on_disk(hdb: Path,
                                                            engine_factory: Callable[..., QueryEngine]) -> None:
    memory: MemoryTables = {"trade": [(D2, trades(0, D2))]}
    assert counts(engine_factory(hdb, memory=lambda: memory)) == {D1: 10}


def test_schema_versions_query_together(tmp_path: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    v1, v2 = Registry.parse(V2.replace("version = 2", "version = 1").replace(
        '  { name = "venue", type = "string" },\n', "")), Registry.parse(V2)
    hdb = tmp_path / "hdb"
    write_partition(hdb, "trade", D1, trades(4, D1, schema=v1["trade"].schema))  # written before `venue` existed
    write_partition(hdb, "trade", D2, trades(6, D2, schema=v2["trade"].schema))
    memory: MemoryTables = {"trade": [(D3, trades(2, D3, schema=v2["trade"].schema))]}
    engine = engine_factory(hdb, v2, memory=lambda: memory)
    got = engine.execute("SELECT date, count(*) AS n, count(venue) AS venues FROM trade GROUP BY date ORDER BY date")
    assert got.to_pylist() == [{"date": D1, "n": 4, "venues": 0}, {"date": D2, "n": 6, "venues": 6},
                               {"date": D3, "n": 2, "venues": 2}]
    assert engine.execute("SELECT * FROM trade LIMIT 0").column_names == [*v2["trade"].schema.names, "date"]


def test_declared_columns_exist_before_any_partition_has_them(tmp_path: Path,
                                                              engine_factory: Callable[..., QueryEngine]) -> None:
    v1 = Registry.parse(V2.replace('  { name = "venue", type = "string" },\n', ""))
    hdb = tmp_path / "hdb"
    write_partition(hdb, "trade", D1, trades(4, D1, schema=v1["trade"].schema))
    engine = engine_factory(hdb, Registry.parse(V2))
    assert engine.execute("SELECT count(*) AS n, count(venue) AS v FROM trade").to_pylist() == [{"n": 4, "v": 0}]
    # A table with no partition at all and nothing in memory: zero rows, every column.
    assert engine.execute("SELECT * FROM trade WHERE false").column_names == [
        "time", "sym", "price", "size", "venue", "tp_time", "date"]


def test_tables_only_on_disk_are_queryable(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    bars = pa.table({"sym": ["AAPL", "MSFT"], "close": [1.0, 2.0]})
    write_partition(hdb, "bars_5m", D1, bars)
    engine = engine_factory(hdb)
    got = engine.execute("SELECT sym, close, date FROM bars_5m ORDER BY sym").to_pylist()
    assert got == [{"sym": "AAPL", "close": 1.0, "date": D1}, {"sym": "MSFT", "close": 2.0, "date": D1}]
    assert {"bars_5m", "trade", "quote", "l2"} <= set(engine.execute("SHOW TABLES")["name"].to_pylist())


def test_memory_only_engine(engine_factory: Callable[..., QueryEngine]) -> None:
    memory: MemoryTables = {"trade": [(D3, trades(5, D3))]}
    engine = engine_factory(None, memory=lambda: memory)
    assert counts(engine) == {D3: 5}
    assert engine.execute("SELECT count(*) AS n FROM quote").to_pylist() == [{"n": 0}]
    assert not engine.refresh()


def test_an_hdb_directory_that_does_not_exist_yet(tmp_path: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    # An RDB starts before its first end of day: the directory appears later.
    hdb = tmp_path / "later"
    memory: MemoryTables = {"trade": [(D3, trades(5, D3))]}
    engine = engine_factory(hdb, memory=lambda: memory)
    assert counts(engine) == {D3: 5}
    write_partition(hdb, "trade", D2, trades(20, D2))
    bump(hdb)
    assert counts(engine) == {D2: 20, D3: 5}


def test_memory_tables_outside_the_registry(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    # A derived table an RTE publishes: in memory today, on disk from yesterday.
    write_partition(hdb, "vwap_1m", D2, pa.table({"sym": ["AAPL"], "vwap": [1.5]}))
    memory: MemoryTables = {"vwap_1m": [(D3, pa.table({"sym": ["AAPL", "IBM"], "vwap": [2.5, 3.5]}))]}
    engine = engine_factory(hdb, memory=lambda: memory)
    assert counts(engine, "vwap_1m") == {D2: 1, D3: 2}
    assert counts(engine, "trade") == {D1: 10, D2: 20}


def test_a_declared_date_column_is_refused(engine_factory: Callable[..., QueryEngine]) -> None:
    registry = Registry.parse(V2.replace('name = "venue"', 'name = "date"'))
    with pytest.raises(SchemaError, match=r"column named 'date'.*rename it"):
        engine_factory(None, registry)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(on_disk=st.sets(st.sampled_from([D1, D2, D3, D4])), in_memory=st.sets(st.sampled_from([D3, D4]), max_size=2),
       sizes=st.lists(st.integers(0, 40), min_size=8, max_size=8))
def test_every_day_once_memory_first(tmp_path_factory: pytest.TempPathFactory, on_disk: set[dt.date],
                                     in_memory: set[dt.date], sizes: list[int]) -> None:
    """Oracle: the rows of each day, from memory if held there, else from disk -- counted and summed by pandas."""
    hdb = tmp_path_factory.mktemp("hdb")
    days = [D1, D2, D3, D4]
    disk = {d: trades(sizes[i], d, seed=i) for i, d in enumerate(days) if d in on_disk}
    mem = {d: trades(sizes[4 + i], d, seed=10 + i) for i, d in enumerate(days) if d in in_memory}
    for d, rows in disk.items():
        write_partition(hdb, "trade", d, rows)
    memory: MemoryTables = {"trade": sorted(mem.items())}
    frames = [t.to_pandas().assign(date=d) for d, t in {**disk, **mem}.items()]
    expected = pd.concat(frames).groupby("date")["price"].agg(["count", "sum"]) if frames else None
    with QueryEngine(hdb, REGISTRY, memory=lambda: memory) as engine:
        got = engine.execute("SELECT date, count(price) AS count, sum(price) AS sum FROM trade GROUP BY date")
    got_by_day = {r["date"]: (r["count"], r["sum"]) for r in got.to_pylist() if r["count"]}
    want = {} if expected is None else {d: (int(r["count"]), float(r["sum"])) for d, r in expected.iterrows()
                                        if r["count"]}
    assert got_by_day == want


# -- the HDB directory --------------------------------------------------------------------------


def test_a_generation_bump_shows_a_new_partition_without_restart(hdb: Path, engine: QueryEngine) -> None:
    write_partition(hdb, "trade", D4, trades(7, D4))
    assert D4 not in counts(engine)  # the partition directory is read when .generation changes
    bump(hdb)
    assert counts(engine) == {D1: 10, D2: 20, D3: 5, D4: 7}
    assert not engine.refresh()


def test_refresh_rescans_without_a_bump(hdb: Path, engine: QueryEngine) -> None:
    write_partition(hdb, "trade", D4, trades(7, D4))
    assert engine.refresh()
    assert counts(engine)[D4] == 7
    assert not engine.refresh()
    # A partition replaced (a day written again) is read again.
    write_partition(hdb, "trade", D4, trades(3, D4))
    bump(hdb)
    assert counts(engine)[D4] == 3


def test_staging_hidden_files_and_bad_directories_are_never_read(hdb: Path,
                                                                 engine_factory: Callable[..., QueryEngine]) -> None:
    write_partition(hdb / ".staging", "trade", D4, trades(7, D4))
    (hdb / "trade" / f"date={D1}" / ".part-1.parquet.tmp").write_bytes(b"half written")
    (hdb / "trade" / f"date={D1}" / ".part-2.parquet").write_bytes(b"half written")
    write_partition(hdb, "trade", D4, trades(7, D4)).rename(hdb / "trade" / f"date={D4}" / "part-0.tmp")
    (hdb / "trade" / "date=2026-13-45").mkdir()
    write_partition(hdb / "trade", "date=2026-13-45", D1, trades(1, D1))  # trade/date=2026-13-45/x/date=...
    (hdb / "trade" / "extra").mkdir()
    (hdb / "trade" / "extra" / "part-0.parquet").write_bytes(b"x")
    engine = engine_factory(hdb)
    assert counts(engine) == {D1: 10, D2: 20}


def test_pruning_on_date_skips_an_unreadable_partition(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    bad = hdb / "trade" / f"date={D3}" / "part-0.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"not parquet" * 100)
    bump(hdb)
    engine = engine_factory(hdb)
    assert engine.execute("SELECT count(*) AS n FROM trade WHERE date = DATE '2026-11-17'").to_pylist() == [{"n": 10}]
    assert counts(engine, "trade WHERE date <= DATE '2026-11-18'") == {D1: 10, D2: 20}
    error = refused(engine, "SELECT count(*) FROM trade", "query_failed")
    assert str(bad) in error.reason
    plan = engine.execute("EXPLAIN ANALYZE SELECT sum(price) FROM trade WHERE date = DATE '2026-11-18'")
    assert "Scanning Files: 1/3" in "\n".join(plan["explain_value"].to_pylist())


# -- query safety --------------------------------------------------------------------------------

REFUSED = {
    "COPY (SELECT 1) TO '/tmp/x.csv'": "COPY statements are not allowed",
    "ATTACH ':memory:' AS other": "ATTACH statements are not allowed",
    "DETACH other": "DETACH statements are not allowed",
    "INSTALL httpfs": "LOAD statements are not allowed",
    "LOAD httpfs": "LOAD statements are not allowed",
    "SET threads = 1": "SET statements are not allowed",
    "RESET threads": "SET statements are not allowed",
    "SET VARIABLE x = 1": "SET statements are not allowed",
    "USE system": "SET statements are not allowed",
    "PRAGMA version": "PRAGMA statements are not allowed",
    "IMPORT DATABASE '/tmp/db'": "PRAGMA statements are not allowed",
    "CALL pragma_version()": "CALL statements are not allowed",
    "CHECKPOINT": "CALL statements are not allowed",
    "CREATE TABLE t AS SELECT 1 AS x": "CREATE statements are not allowed",
    "CREATE MACRO m(x) AS x": "CREATE statements are not allowed",
    "CREATE SECRET (TYPE s3)": "CREATE statements are not allowed",
    "INSERT INTO trade SELECT * FROM trade": "INSERT statements are not allowed",
    "DELETE FROM trade": "DELETE statements are not allowed",
    "UPDATE trade SET price = 0": "UPDATE statements are not allowed",
    "DROP VIEW trade": "DROP statements are not allowed",
    "ALTER VIEW trade RENAME TO t2": "ALTER statements are not allowed",
    "EXPORT DATABASE '/tmp/export'": "EXPORT statements are not allowed",
    "VACUUM": "VACUUM statements are not allowed",
    "BEGIN TRANSACTION": "TRANSACTION statements are not allowed",
    "PREPARE p AS SELECT 1": "PREPARE statements are not allowed",
    "UPDATE EXTENSIONS": "UNKNOWN statements are not allowed",
    "PIVOT trade ON sym": "PIVOT without an IN list",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'": "EXPLAIN of COPY statement is not allowed",
    "EXPLAIN (ANALYZE) COPY trade TO '/tmp/x.csv'": "EXPLAIN of COPY statement is not allowed",
    "EXPLAIN /* c */ ANALYZE COPY trade TO '/tmp/x.csv'": "EXPLAIN of this statement is not allowed",
    "EXPLAIN INSERT INTO trade SELECT * FROM trade": "EXPLAIN of INSERT statement is not allowed",
    "SELECT 1; DROP VIEW trade": "one statement per query: got 2 (SELECT, DROP)",
    "SELECT 1; SELECT 2": "one statement per query",
    "": "empty query",
    " ; -- nothing": "empty query",
}


@pytest.mark.parametrize("sql", list(REFUSED))
def test_statements_that_are_not_reads_are_refused(engine: QueryEngine, sql: str) -> None:
    error = refused(engine, sql, "query_refused")
    assert REFUSED[sql] in error.reason
    with pytest.raises(QueryError, match=re.escape(REFUSED[sql])):
        check_sql(sql)
    still_serving(engine)


def test_copy_into_the_hdb_writes_nothing(hdb: Path, engine: QueryEngine) -> None:
    target = hdb / "x.csv"
    # DuckDB itself would write here: the HDB is an allowed directory (DESIGN.md, measured facts).
    refused(engine, f"COPY trade TO '{target}'", "query_refused")
    refused(engine, f"COPY (SELECT 1) TO '{target}'", "query_refused")
    refused(engine, f"EXPLAIN ANALYZE COPY trade TO '{target}'", "query_refused")
    assert not target.exists()
    assert sorted(p.name for p in hdb.iterdir()) == [".generation", "trade"]
    still_serving(engine)


@pytest.mark.parametrize("sql", [
    "SELECT 1", "select 1;", "WITH t AS (SELECT 1 AS x) SELECT * FROM t", "FROM trade LIMIT 1", "VALUES (1), (2)",
    "DESCRIBE trade", "SHOW trade", "SHOW TABLES", "SHOW ALL TABLES", "SUMMARIZE SELECT sym, price FROM trade",
    "EXPLAIN SELECT * FROM trade", "EXPLAIN ANALYZE SELECT count(*) FROM trade",
    "EXPLAIN (FORMAT json) SELECT 1", "PIVOT trade ON sym IN ('AAPL') USING count(*)",
    "SELECT * FROM query_table('trade') LIMIT 1", "-- a comment\nSELECT 1",
])
def test_reads_are_accepted(engine: QueryEngine, sql: str) -> None:
    check_sql(sql)
    assert engine.execute(sql).num_columns >= 1


def test_configuration_is_locked(hdb: Path, engine: QueryEngine) -> None:
    settings_ = {r["name"]: r["value"] for r in engine.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration', "
        "'python_enable_replacements', 'allowed_directories', 'autoload_known_extensions', "
        "'autoinstall_known_extensions')").to_pylist()}
    assert settings_["enable_external_access"] == "false"
    assert settings_["lock_configuration"] == "true"
    assert settings_["python_enable_replacements"] == "false"
    assert settings_["autoload_known_extensions"] == settings_["autoinstall_known_extensions"] == "false"
    assert f"{hdb.resolve()}{os.sep}" in settings_["allowed_directories"]


def test_threads_and_memory_limit_are_applied(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    engine = engine_factory(hdb, threads=1, memory_limit="512MB")
    got = engine.execute("SELECT current_setting('threads') AS t, current_setting('memory_limit') AS m").to_pylist()
    assert got == [{"t": 1, "m": "488.2 MiB"}]


def test_files_outside_the_hdb_cannot_be_read(tmp_path: Path, hdb: Path, engine: QueryEngine) -> None:
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": [1]}), outside)
    (hdb / "link.parquet").symlink_to(outside)
    for sql in [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM read_parquet('{outside}')",
        f"SELECT * FROM '{outside}'",
        f"SELECT * FROM read_parquet('{hdb}/../outside.parquet')",
        f"SELECT * FROM read_parquet('{hdb}/link.parquet')",
        f"SELECT * FROM parquet_metadata('{outside}')",
    ]:
        error = refused(engine, sql, "query_failed")
        assert "access outside the HDB is not allowed" in error.reason, sql
    # The same reads inside the HDB work: the refusals above are the directory limit, not an error.
    inside = next((hdb / "trade").glob("date=*/part-0.parquet"))
    assert engine.execute(f"SELECT count(*) AS n FROM read_parquet('{inside}')").to_pylist() == [{"n": 10}]
    assert pq.read_table(outside).num_rows == 1
    still_serving(engine)


def test_python_variables_are_not_scanned(engine: QueryEngine) -> None:
    secret_rows = pa.table({"password": ["hunter2"]})
    # A DuckDB connection with default settings would read the variable by its name:
    assert duckdb.connect().sql("SELECT * FROM secret_rows").fetchall() == [("hunter2",)]
    error = refused(engine, "SELECT * FROM secret_rows", "query_failed")
    assert "secret_rows does not exist" in error.reason
    assert secret_rows.num_rows == 1
    still_serving(engine)


def test_a_runaway_cross_join_times_out_while_other_queries_are_served(engine: QueryEngine) -> None:
    errors: list[QueryError] = []
    seconds: list[float] = []

    def runaway() -> None:
        started = time.perf_counter()
        try:
            engine.execute("SELECT count(*) FROM range(100000000) a, range(100000000) b", timeout=1.0)
        except QueryError as exc:
            errors.append(exc)
        seconds.append(time.perf_counter() - started)

    thread = threading.Thread(target=runaway)
    thread.start()
    served = 0
    while thread.is_alive():
        still_serving(engine)
        served += 1
        thread.join(0.05)
    assert served >= 3
    assert [e.code for e in errors] == ["query_timeout"]
    assert "1 s limit" in errors[0].reason and "--query-timeout" in errors[0].reason
    assert seconds[0] < 5.0
    still_serving(engine)


@pytest.mark.parametrize("timeout", [0.0, 0.02, 0.2])
def test_short_timeouts_stop_queries_at_any_step(engine: QueryEngine, timeout: float) -> None:
    # The watchdog may fire before DuckDB runs the query (an interrupt DuckDB forgets): it interrupts again.
    started = time.perf_counter()
    refused(engine, "SELECT count(*) FROM trade, range(100000000) a, range(100000000) b", "query_timeout",
            timeout=timeout)
    assert time.perf_counter() - started < 5.0
    still_serving(engine)


def test_the_timeout_covers_fetching(engine: QueryEngine) -> None:
    with engine.query("SELECT * FROM range(10000000)", timeout=0.3, max_rows=10**8) as q:
        next(q)
        time.sleep(0.5)  # a slow client
        with pytest.raises(QueryError) as info:
            for _ in q:
                pass
    assert info.value.code == "query_timeout"
    still_serving(engine)


def test_result_row_cap(engine: QueryEngine) -> None:
    assert engine.execute("SELECT * FROM range(1000)", max_rows=1000).num_rows == 1000
    error = refused(engine, "SELECT * FROM range(1001)", "result_too_large", max_rows=1000)
    assert "1,000 rows" in error.reason and "LIMIT" in error.reason and "--max-rows" in error.reason
    # Stopped while streaming a large result, without reading it all.
    started = time.perf_counter()
    with engine.query("SELECT * FROM range(10000000000)", max_rows=500_000) as q:
        with pytest.raises(QueryError, match="500,000 rows"):
            for _ in q:
                pass
        assert q.rows <= 500_000
    assert time.perf_counter() - started < 5.0
    still_serving(engine)


def test_result_byte_cap(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    engine = engine_factory(hdb, max_bytes=100_000)
    assert engine.execute("SELECT * FROM range(10000)").num_rows == 10_000  # 80 kB
    error = refused(engine, "SELECT * FROM range(20000)", "result_too_large")
    assert "100,000 bytes" in error.reason and "--max-bytes" in error.reason


def test_query_reports_rows_bytes_and_seconds(engine: QueryEngine) -> None:
    q = engine.query("SELECT * FROM trade ORDER BY time")
    assert q.schema.names == [*TRADE.names, "date"]
    batches = list(q)
    assert q.rows == sum(b.num_rows for b in batches) == 35
    assert q.bytes == sum(b.nbytes for b in batches) > 0
    assert 0 < q.seconds < 10


def test_close_from_another_thread_cancels_a_running_query(engine: QueryEngine) -> None:
    outcome: list[BaseException | str] = []
    ready = threading.Event()
    holder: list[Query] = []

    def consume() -> None:
        # A batch every ~0.1-0.5 s: the consumer is mostly inside DuckDB when close() comes.
        query = engine.query("SELECT range FROM range(10000000000) WHERE hash(range) % 1000 = 0", max_rows=10**12)
        holder.append(query)
        ready.set()
        try:
            for _ in query:
                pass
            outcome.append("finished")
        except QueryError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(10)
    time.sleep(0.2)
    started = time.perf_counter()
    holder[0].close()
    thread.join(5)
    assert not thread.is_alive() and time.perf_counter() - started < 5
    # Inside DuckDB when closed (almost always): interrupted there; between two batches: the iteration ends.
    assert outcome == ["finished"] or (isinstance(outcome[0], QueryError) and "cancelled" in outcome[0].reason)
    still_serving(engine)


def test_failures_name_the_problem(engine: QueryEngine) -> None:
    assert "Parser Error" in refused(engine, "SELEC 1", "query_failed").reason
    assert "nope" in refused(engine, "SELECT nope FROM trade", "query_failed").reason
    assert "no_such_table" in refused(engine, "SELECT * FROM no_such_table", "query_failed").reason
    still_serving(engine)


# -- concurrency and cost ------------------------------------------------------------------------


def test_ten_concurrent_query_threads(hdb: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    calls = 0
    lock = threading.Lock()
    today = trades(5, D3, seed=3)

    def memory() -> MemoryTables:
        nonlocal calls
        with lock:
            calls += 1
        return {"trade": [(D3, today)]}

    engine = engine_factory(hdb, memory=memory)
    results: list[dict[dt.date, int]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                results.append(counts(engine))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert results == [{D1: 10, D2: 20, D3: 5}] * 100
    assert calls == 100  # memory() once per query


def test_end_of_day_while_queries_run_never_loses_or_doubles_a_day(
        tmp_path: Path, engine_factory: Callable[..., QueryEngine]) -> None:
    """The RDB's end-of-day order: write the partition, bump .generation, then drop the day from memory.

    Queries running meanwhile see every day exactly once: from memory or from disk, never both, never neither.
    """
    hdb = tmp_path / "hdb"
    days = [D1 + dt.timedelta(i) for i in range(16)]
    memory: dict[str, list[tuple[dt.date, pa.Table]]] = {"trade": [(days[0], trades(5, days[0]))]}
    engine = engine_factory(hdb, memory=lambda: memory)
    done = threading.Event()
    bad: list[object] = []

    def end_of_day() -> None:
        for today, tomorrow in itertools.pairwise(days):
            write_partition(hdb, "trade", today, trades(5, today))
            bump(hdb)
            time.sleep(0.01)
            memory["trade"] = [(tomorrow, trades(5, tomorrow))]  # one assignment: what memory() returns
            time.sleep(0.01)
        done.set()

    def query() -> None:
        while not done.is_set():
            try:
                seen = counts(engine)
            except QueryError as exc:
                bad.append(exc)
                return
            n = len(seen)
            if set(seen.values()) != {5} or list(seen) != days[:n]:
                bad.append(seen)

    threads = [threading.Thread(target=query) for _ in range(4)]
    for t in threads:
        t.start()
    end_of_day()
    for t in threads:
        t.join(30)
    assert not bad
    assert counts(engine) == dict.fromkeys(days, 5)


def test_a_python_thread_keeps_running_while_a_query_executes(engine: QueryEngine) -> None:
    """DuckDB runs without the GIL: ingestion (a Python thread) is not stalled by a long query."""
    stop = threading.Event()
    ticks: list[float] = []

    def ingest() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        started = time.perf_counter()
        refused(engine, "SELECT count(*) FROM range(100000000) a, range(100000000) b", "query_timeout", timeout=1.0)
        during = [t for t in ticks if t > started + 0.1]
    finally:
        stop.set()
        thread.join()
    gaps = np.diff(during)
    assert len(during) > 50 and gaps.max() < 0.5, (len(during), gaps.max())  # the GIL held: one ~1 s gap


def test_show_tables_lists_tables_not_internal_names(engine: QueryEngine) -> None:
    assert sorted(engine.execute("SHOW TABLES")["name"].to_pylist()) == sorted(t.name for t in Registry.default())
    assert engine.execute("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'trade'"
                          ).to_pylist()[0]["n"] >= 1


def test_time_functions_work_on_nanosecond_utc_columns(engine: QueryEngine) -> None:
    """DuckDB's TIMESTAMPTZ_NS rejects time_bucket, date_trunc, extract, intervals and avg; the views avoid it."""
    got = engine.execute("""
        SELECT time_bucket(INTERVAL '5 minutes', time) AS bar, date_trunc('hour', time) AS hour,
               extract(hour FROM time) AS h, max(time) - INTERVAL 1 SECOND AS before, avg(time) AS mid
        FROM trade WHERE date = DATE '2026-11-19' GROUP BY ALL""")
    assert got.num_rows >= 1
    assert pa.types.is_timestamp(got.schema.field("bar").type) and got.schema.field("bar").type.tz is None
