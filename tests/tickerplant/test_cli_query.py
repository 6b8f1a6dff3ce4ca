"""`tick hdb load` and `tick query`: backfill a day from CSV, then query it in every output format."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import TICK

CSV = """time,sym,exchange,price,size,side
2026-11-20T10:00:00.000000001Z,ETHUSD,kraken,3000.5,2,buy
2026-11-20T10:00:00Z,BTCUSD,binance,97000.0,0.5,sell
2026-11-20T10:00:01Z,BTCUSD,coinbase,97001.25,0.25,buy
"""


def tick(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TICK, *args], capture_output=True, text=True, timeout=60, check=False)


def loaded(tmp_path: Path) -> Path:
    src = tmp_path / "trades.csv"
    src.write_text(CSV)
    hdb = tmp_path / "hdb"
    r = tick("hdb", "load", "--dir", str(hdb), "--table", "trade", "--date", "2026-11-20", str(src))
    assert r.returncode == 0, r.stderr
    assert "loaded 3 rows" in r.stdout
    return hdb


def test_load_csv_then_query_each_format(tmp_path: Path) -> None:
    hdb = loaded(tmp_path)
    sql = "SELECT date, sym, price, time FROM trade ORDER BY sym, time"
    table = tick("query", "--hdb", str(hdb), sql)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["date", "sym", "price", "time"]
    assert "BTCUSD" in lines[1] and "97000.0" in lines[1] and "(3 rows)" in lines[-1]
    assert "10:00:00.000000001" in table.stdout  # nanoseconds survive CSV -> Parquet -> SQL

    csv = tick("query", "--hdb", str(hdb), sql, "--format", "csv")
    assert csv.stdout.splitlines()[0] == '"date","sym","price","time"'
    assert len(csv.stdout.splitlines()) == 4

    js = tick("query", "--hdb", str(hdb), sql, "--format", "json")
    rows = [json.loads(line) for line in js.stdout.splitlines()]
    assert [r["sym"] for r in rows] == ["BTCUSD", "BTCUSD", "ETHUSD"]

    out = tmp_path / "out.parquet"
    pqr = tick("query", "--hdb", str(hdb), sql, "--format", "parquet", "--out", str(out))
    assert pqr.returncode == 0, pqr.stderr
    assert pq.read_table(out).column("price").to_pylist() == [97000.0, 97001.25, 3000.5]


def test_load_refuses_bad_input_and_existing_partition(tmp_path: Path) -> None:
    hdb = loaded(tmp_path)
    src = tmp_path / "trades.csv"
    again = tick("hdb", "load", "--dir", str(hdb), "--table", "trade", "--date", "2026-11-20", str(src))
    assert again.returncode == 2 and "--replace" in again.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("time,sym,price,size,colour\n2026-11-21T00:00:00Z,BTCUSD,1,1,red\n")
    r = tick("hdb", "load", "--dir", str(hdb), "--table", "trade", "--date", "2026-11-21", str(bad))
    assert r.returncode == 2 and "colour" in r.stderr
    assert not (hdb / "trade" / "date=2026-11-21").exists()


def test_query_refusals_and_usage_errors(tmp_path: Path) -> None:
    hdb = loaded(tmp_path)
    r = tick("query", "--hdb", str(hdb), f"COPY trade TO '{tmp_path}/leak.csv'")
    assert r.returncode == 2 and "query_refused" in r.stderr
    assert not (tmp_path / "leak.csv").exists()
    r = tick("query", "SELECT 1")
    assert r.returncode == 2 and "--connect" in r.stderr
    r = tick("query", "--hdb", str(hdb), "SELECT 1", "--format", "parquet")
    assert r.returncode == 2 and "--out" in r.stderr
