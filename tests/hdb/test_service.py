"""The query service as a process (`tick hdb`): auth, bad requests, big results, clients that leave."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hdb import partition
from tests.conftest import ServiceFactory
from tickerplant import QueryError, connect, protocol
from tickerplant.protocol import FrameType
from tickerplant.schema import Registry

DAY = dt.date(2026, 11, 20)


def write_day(hdb: Path, rows: int) -> None:
    schema = Registry.default()["trade"].schema
    idx = np.arange(rows)
    ts = pa.array(1_763_596_800_000_000_000 + idx, pa.timestamp("ns", tz="UTC"))
    cols = {f.name: pa.nulls(rows, f.type) for f in schema}
    cols.update(time=ts, tp_time=ts, sym=pa.array(np.array(["A", "B"])[idx % 2]),
                price=pa.array(idx.astype(np.float64)), size=pa.array(np.ones(rows)))
    partition.write_partition(hdb, "trade", DAY, pa.table([cols[f.name] for f in schema], schema=schema))


def test_tokens_are_checked(services: ServiceFactory, tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("secret query\nfeeder pub\n")
    hdb = tmp_path / "hdb"
    svc = services("hdb", "--dir", str(hdb), "--port", "0", "--auth-file", str(tmp_path / "tokens"))
    for token in (None, "feeder", "wrong"):
        with pytest.raises(QueryError) as err:
            connect(svc.address, token=token)
        assert err.value.code == "auth"
    with connect(svc.address, token="secret") as db:
        assert db.sql("SELECT 42 AS x").fetchall() == [(42,)]


def test_bad_requests_answered_and_big_results_streamed(services: ServiceFactory, tmp_path: Path) -> None:
    hdb = tmp_path / "hdb"
    write_day(hdb, 300_000)
    svc = services("hdb", "--dir", str(hdb), "--port", "0", "--max-rows", "250000")
    host, port = svc.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(protocol.encode_json(FrameType.HELLO, {"role": "query"}))
        raw.sendall(protocol.encode_json(FrameType.QUERY, {"no_sql": 1}, seq=7))
        decoder = protocol.FrameDecoder(1 << 30)
        frames: list[protocol.Frame] = []
        while len(frames) < 2:
            frames += decoder.feed(raw.recv(65536))
        assert frames[0].type == FrameType.WELCOME
        assert frames[1].type == FrameType.ERROR and frames[1].seq == 7
        assert frames[1].json()["code"] == "bad_request" and "sql" in frames[1].json()["reason"]
    with connect(svc.address) as db:
        got = db.sql("SELECT * FROM trade WHERE price < 200000 ORDER BY price").arrow()
        assert got.num_rows == 200_000 and got.column("price").to_pylist()[-1] == 199_999
        with pytest.raises(QueryError) as err:
            db.sql("SELECT * FROM trade")
        assert err.value.code == "result_too_large"
        with pytest.raises(QueryError) as err:
            db.sql("SELECT * FROM trade", max_rows=10)
        assert err.value.code == "result_too_large"
        with pytest.raises(QueryError) as err:  # asking for more than the service allows gets the service's cap
            db.sql("SELECT * FROM trade", max_rows=10_000_000)
        assert err.value.code == "result_too_large"
        assert db.sql("SELECT count(*) FROM trade").fetchall() == [(300_000,)]


def test_a_client_that_leaves_mid_result_does_not_hurt_others(services: ServiceFactory, tmp_path: Path) -> None:
    hdb = tmp_path / "hdb"
    write_day(hdb, 300_000)
    svc = services("hdb", "--dir", str(hdb), "--port", "0")
    host, port = svc.address.rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(protocol.encode_json(FrameType.HELLO, {"role": "query"}))
            raw.sendall(protocol.encode_json(FrameType.QUERY, {"sql": "SELECT * FROM trade"}, seq=1))
            raw.recv(1000)  # then leave without reading the result
    with connect(svc.address) as db:
        assert db.sql("SELECT count(*) FROM trade").fetchall() == [(300_000,)]
    assert svc.alive
