"""The RDB as a process: replay then live, exactly once across kill -9, end of day, SQL over today and history."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from hdb import partition
from tests.conftest import ServiceFactory, TPFactory, TPProcess, trades, wait_until
from tickerplant import Publisher, QueryError, connect
from tickerplant import log as tplog
from tickerplant.schema import Registry

DIGEST = "SELECT count(*) AS n, sum(hash(sym, time, price, size, trade_id, tp_time)) AS h FROM trade"


def publish(address: str, n: int, start: int = 0, sizes: tuple[int, ...] = (1000,), t0: int | None = None) -> None:
    """Publish trades ``start .. start+n`` in batches cycling through ``sizes``; durable flush at the end."""
    with Publisher(address, name="test pub") as pub:
        i, k = start, 0
        while i < start + n:
            size = min(sizes[k % len(sizes)], start + n - i)
            pub.publish("trade", trades(size, i) if t0 is None else trades(size, i, t0=t0))
            i += size
            k += 1
        pub.flush(durable=True)


def log_digest(log: Path) -> tuple[int, int]:
    """The digest of the trade rows in a TP log, computed by DuckDB like the RDB's."""
    con = duckdb.connect()
    con.register("trade", tplog.read_table(log, "trade", Registry.default()))
    n, h = con.execute(DIGEST).fetchall()[0]
    return int(n), int(h or 0)


def rdb_digest(address: str, where: str = "") -> tuple[int, int]:
    with connect(address) as db:
        n, h = db.sql(f"{DIGEST} {where}").fetchall()[0]
    return int(n), int(h or 0)


def start_rdb(services: ServiceFactory, tp: TPProcess, hdb: Path, *args: str) -> Any:
    return services("rdb", "--tp", tp.address, "--hdb", str(hdb), "--port", "0", *args)


def test_replays_todays_log_then_goes_live(tp: TPProcess, services: ServiceFactory, tmp_path: Path) -> None:
    publish(tp.address, 5000, sizes=(1, 3, 250, 1000))
    rdb = start_rdb(services, tp, tmp_path / "hdb")
    publish(tp.address, 3000, start=5000, sizes=(7, 500))
    wait_until(lambda: rdb_digest(rdb.address)[0] == 8000, 20, "8000 rows in the RDB")
    assert rdb_digest(rdb.address) == log_digest(tp.log)
    with connect(rdb.address) as db:
        ids = db.sql("SELECT trade_id FROM trade ORDER BY price").arrow().column(0).to_pylist()
        assert ids == [f"t{i}" for i in range(8000)]
        today = db.info["date"]
        dates = db.sql("SELECT DISTINCT date::VARCHAR FROM trade").fetchall()
        assert dates == [(today,)]


def test_kill_9_the_rdb_ten_times_while_publishing(tp: TPProcess, services: ServiceFactory, tmp_path: Path) -> None:
    """2,000,000 rows; after every restart the RDB holds exactly the log's rows."""
    hdb = tmp_path / "hdb"
    rng = random.Random(7)
    rdb = start_rdb(services, tp, hdb)
    per_round = 200_000
    for r in range(10):
        pub = threading.Thread(target=publish, args=(tp.address, per_round, r * per_round, (1, 100, 1000, 5000, 250)))
        pub.start()
        time.sleep(rng.uniform(0.0, 1.0))
        rdb.kill()
        rdb = start_rdb(services, tp, hdb)
        pub.join(120)
        assert not pub.is_alive()
        want = log_digest(tp.log)
        assert want[0] == (r + 1) * per_round
        address, rows = rdb.address, want[0]
        wait_until(lambda: rdb_digest(address)[0] >= rows, 60, f"round {r}: {rows} rows in the RDB")  # noqa: B023
        assert rdb_digest(address) == want, f"round {r}"


def test_end_of_day_over_three_days(tp: TPProcess, services: ServiceFactory, tmp_path: Path) -> None:
    hdb = tmp_path / "hdb"
    rdb = start_rdb(services, tp, hdb)
    day0 = dt.date.fromisoformat(tp.info["log"].rsplit("/", 1)[1][:10])
    days = [day0 + dt.timedelta(days=i) for i in range(3)]
    from tickerplant import admin

    expected = {}
    for i, day in enumerate(days):
        n = 3000 + 1000 * i
        start = 100_000 * i
        publish(tp.address, n, start=start, sizes=(1, 500, 64))
        expected[day] = log_digest(tplog.log_path(tp.log_dir, day))
        assert expected[day][0] == n
        admin.end_of_day(tp.address)
    wait_until(lambda: all(partition.day_done(hdb, d) for d in days), 30, "three days written")
    for day in days:
        files = sorted((hdb / "trade" / f"date={day}").glob("*.parquet"))
        table = pq.ParquetDataset(files).read().to_pandas()
        assert len(table) == expected[day][0]
        keys = list(zip(table["sym"], table["time"], strict=True))
        assert keys == sorted(keys), f"{day} not sorted by (sym, time)"
        assert rdb_digest(rdb.address, f"WHERE date = DATE '{day}'") == expected[day]
    # Nothing of those days is left in memory: today is empty.
    today = days[-1] + dt.timedelta(days=1)
    assert rdb_digest(rdb.address, f"WHERE date = DATE '{today}'")[0] == 0


def test_kill_9_during_end_of_day_then_restart(tp: TPProcess, services: ServiceFactory, tmp_path: Path) -> None:
    from tickerplant import admin

    hdb = tmp_path / "hdb"
    rdb = start_rdb(services, tp, hdb, "--verbose")
    publish(tp.address, 1_500_000, sizes=(50_000,))
    wait_until(lambda: rdb_digest(rdb.address)[0] == 1_500_000, 60, "rows in the RDB")
    closed = admin.end_of_day(tp.address)
    day = dt.date.fromisoformat(closed["closed"])
    wait_until(lambda: "end of day" in rdb.stderr(), 20, "the RDB to start its end of day")
    rdb.kill()
    # Whatever the moment: no partial partition; a whole one or none.
    partition.recover(hdb)
    part = hdb / "trade" / f"date={day}"
    if part.exists():
        assert pq.ParquetDataset(sorted(part.glob("*.parquet"))).read().num_rows == 1_500_000
    rdb = start_rdb(services, tp, hdb)
    wait_until(lambda: partition.day_done(hdb, day), 60, "the missed day written on restart")
    assert rdb_digest(rdb.address, f"WHERE date = DATE '{day}'") == log_digest(tplog.log_path(tp.log_dir, day))


def test_query_spans_history_and_today_and_vwap_bars_match_pandas(
    tp: TPProcess, services: ServiceFactory, tmp_path: Path
) -> None:
    from tickerplant import admin

    hdb = tmp_path / "hdb"
    rdb = start_rdb(services, tp, hdb)
    rng = np.random.default_rng(3)
    t0 = 1_763_942_400_000_000_000  # 2025-11-24 00:00 UTC: event times span an hour
    n = 20_000
    with Publisher(tp.address) as pub:
        for part in range(2):
            idx = np.arange(part * n, (part + 1) * n)
            pub.publish("trade", {
                "time": t0 + np.sort(rng.integers(0, 3_600_000_000_000, n)),
                "sym": rng.choice(["BTCUSD", "ETHUSD", "SOLUSD"], n).tolist(),
                "price": rng.uniform(90, 110, n), "size": rng.uniform(0.1, 5, n),
                "trade_id": [f"t{i}" for i in idx],
            })
            pub.flush(durable=True)
            if part == 0:
                admin.end_of_day(tp.address)
    wait_until(lambda: rdb_digest(rdb.address)[0] == 2 * n, 30, "both days queryable")
    with connect(rdb.address) as db:
        by_date = db.sql("SELECT date, count(*) AS n FROM trade GROUP BY date ORDER BY date").df()
        assert by_date["n"].tolist() == [n, n]
        got = db.sql("""
            SELECT sym, time_bucket(INTERVAL '5 minutes', time) AS bar, sum(price * size) / sum(size) AS vwap
            FROM trade GROUP BY ALL ORDER BY sym, bar""").df()
        everything = db.sql("SELECT sym, time, price, size FROM trade").df()
    everything["bar"] = everything["time"].dt.floor("5min")
    everything["pv"] = everything["price"] * everything["size"]
    g = everything.groupby(["sym", "bar"], as_index=False)[["pv", "size"]].sum()
    g["vwap"] = g["pv"] / g["size"]
    assert got["sym"].tolist() == g["sym"].tolist()
    assert (got["bar"] == g["bar"]).all()
    np.testing.assert_allclose(got["vwap"].to_numpy(), g["vwap"].to_numpy(), rtol=1e-12)


def test_queries_never_stall_ingestion(tp: TPProcess, services: ServiceFactory, tmp_path: Path) -> None:
    """A ~5 s query runs while updates stream in: the RDB keeps applying them and is never cut off."""
    from tickerplant import admin

    rdb = start_rdb(services, tp, tmp_path / "hdb", "--query-timeout", "120")
    slow: dict[str, Any] = {}

    def long_query() -> None:
        start = time.monotonic()
        with connect(rdb.address) as db:
            slow["result"] = db.sql("SELECT count(*) FROM range(900000000) t(x) WHERE hash(x) % 7 = 0").fetchall()
        slow["seconds"] = time.monotonic() - start

    q = threading.Thread(target=long_query)
    q.start()
    seen = []
    with Publisher(tp.address) as pub, connect(rdb.address) as db:
        for i in range(40):
            pub.publish("trade", trades(1000, i * 1000))
            pub.flush()
            time.sleep(0.1)
            if q.is_alive():
                seen.append(db.sql("SELECT count(*) FROM trade").fetchall()[0][0])
    q.join(120)
    assert slow["seconds"] >= 2.0, f"the long query took only {slow['seconds']:.1f}s: make it longer"
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] > seen[0], seen
    wait_until(lambda: rdb_digest(rdb.address)[0] == 40_000, 20, "every row applied")
    assert admin.stats(tp.address)["slow_disconnects"] == 0


def test_ten_concurrent_clients_and_refusals_over_the_wire(
    tp: TPProcess, services: ServiceFactory, tmp_path: Path
) -> None:
    rdb = start_rdb(services, tp, tmp_path / "hdb", "--query-timeout", "2")
    publish(tp.address, 10_000)
    wait_until(lambda: rdb_digest(rdb.address)[0] == 10_000, 20, "rows")
    results: list[Any] = []

    def client(k: int) -> None:
        with connect(rdb.address) as db:
            for _ in range(5):
                results.append(db.sql(f"SELECT count(*) FROM trade WHERE price >= {k * 1000}").fetchall()[0][0])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    with connect(rdb.address) as db:
        for bad, code in [
            (f"COPY trade TO '{tmp_path}/x.csv'", "query_refused"),
            ("SELECT * FROM read_csv('/etc/passwd')", "query_failed"),
            ("SELECT 1; SELECT 2", "query_refused"),
            ("SELECT count(*) FROM range(100000000) a, range(100000000) b", "query_timeout"),
        ]:
            with pytest.raises(QueryError) as err:
                db.sql(bad)
            assert err.value.code == code, (bad, err.value)
        assert db.sql("SELECT count(*) FROM trade").fetchall() == [(10_000,)]
    for t in threads:
        t.join(60)
    assert sorted(results) == sorted(10_000 - k * 1000 for k in range(10) for _ in range(5))
    assert not (tmp_path / "x.csv").exists()


def test_hdb_service_serves_history_and_sees_new_days(
    tp_process: TPFactory, services: ServiceFactory, tmp_path: Path
) -> None:
    from tickerplant import admin

    tp = tp_process()
    hdb = tmp_path / "hdb"
    hdb.mkdir()
    history = services("hdb", "--dir", str(hdb), "--port", "0")
    with connect(history.address) as db:
        assert db.sql("SELECT count(*) FROM trade").fetchall() == [(0,)]
    start_rdb(services, tp, hdb)
    publish(tp.address, 2500)
    day = admin.end_of_day(tp.address)["closed"]
    wait_until(lambda: partition.day_done(hdb, dt.date.fromisoformat(day)), 30, "end of day written")
    with connect(history.address) as db:
        got = db.sql("SELECT date::VARCHAR AS d, count(*) AS n FROM trade GROUP BY ALL").fetchall()
        assert got == [(day, 2500)]
        assert db.info["service"] == "hdb"
