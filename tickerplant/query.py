"""The query client: SQL to an RDB or HDB query service, results back as Arrow.

::

    from tickerplant import connect
    db = connect("127.0.0.1:5011")
    db.sql("SELECT sym, count(*) FROM trade GROUP BY sym").df()

A query travels as one QUERY frame; the service answers with the result's SCHEMA, its
rows as UPD frames (Arrow record batches) and a RESULT frame with the totals, or with an
ERROR frame whose code says why it refused or stopped the query (the connection stays
open). See ``docs/protocol.md``.
"""

from __future__ import annotations

import collections
import contextlib
import socket
from typing import Any

import pyarrow as pa

from tickerplant import protocol
from tickerplant.exceptions import ConnectionClosed, ProtocolError, QueryError
from tickerplant.protocol import Frame, FrameType
from tickerplant.subscriber import parse_address


class Result:
    """A query's result: an Arrow table, with the conversions DuckDB's Python API offers."""

    def __init__(self, table: pa.Table, seconds: float) -> None:
        self.table = table
        self.seconds = seconds  # time the service spent running the query

    def __len__(self) -> int:
        rows: int = self.table.num_rows
        return rows

    def __repr__(self) -> str:
        return f"Result({self.table.num_rows} rows, {self.table.column_names}, {self.seconds:.3f}s)"

    def arrow(self) -> pa.Table:
        return self.table

    def df(self) -> Any:
        """The result as a pandas DataFrame."""
        return self.table.to_pandas()

    def pl(self) -> Any:
        """The result as a polars DataFrame (needs ``pip install polars``)."""
        try:
            import polars  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise ImportError("Result.pl() needs polars: pip install polars (or use .arrow() / .df())") from None
        return polars.from_arrow(self.table)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The rows as Python tuples (convenient for small results only)."""
        columns = [c.to_pylist() for c in self.table.columns]
        return list(zip(*columns, strict=True))


class QueryClient:
    """A blocking connection to a query service (``tick rdb`` or ``tick hdb``)."""

    def __init__(self, address: str | tuple[str, int], *, token: str | None = None, name: str = "query",
                 connect_timeout: float = 10.0) -> None:
        self.address = parse_address(address)
        self._sock = socket.create_connection(self.address, timeout=connect_timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._decoder = protocol.FrameDecoder(1 << 31)
        self._frames: collections.deque[Frame] = collections.deque()
        self._next_id = 0
        self._sock.sendall(protocol.encode_json(FrameType.HELLO, {"role": "query", "token": token, "name": name}))
        welcome = self._frame()
        if welcome.type == FrameType.ERROR:
            body = welcome.json()
            self.close()
            raise QueryError(str(body.get("code")), str(body.get("reason")))
        if welcome.type != FrameType.WELCOME:
            self.close()
            raise ProtocolError(f"expected WELCOME from the query service, got {FrameType(welcome.type).name}")
        self.info: dict[str, Any] = welcome.json()  # service kind, date, tables

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def sql(self, query: str, *, timeout: float | None = None, max_rows: int | None = None) -> Result:
        """Run one read-only statement; raises :class:`QueryError` if it is refused, stopped or fails.

        ``timeout`` (seconds) and ``max_rows`` may lower the service's limits, never raise them.
        """
        self._next_id += 1
        qid = self._next_id
        body = {"sql": query, "timeout": timeout, "max_rows": max_rows}
        self._sock.sendall(protocol.encode_json(FrameType.QUERY, body, seq=qid))
        schema: pa.Schema | None = None
        batches: list[pa.RecordBatch] = []
        while True:
            frame = self._frame()
            if frame.seq != qid and frame.type != FrameType.HEARTBEAT:
                raise ProtocolError(f"reply for query {frame.seq} while waiting for query {qid}")
            if frame.type == FrameType.UPD:
                if schema is None:
                    raise ProtocolError("result rows before the result's SCHEMA frame")
                batches.append(protocol.read_batch(protocol.split_name(frame.payload)[1], schema))
            elif frame.type == FrameType.SCHEMA:
                schema = protocol.decode_schema(frame)[1]
            elif frame.type == FrameType.RESULT:
                if schema is None:
                    raise ProtocolError("RESULT frame without the result's SCHEMA frame")
                done = frame.json()
                return Result(pa.Table.from_batches(batches, schema), float(done.get("seconds", 0.0)))
            elif frame.type == FrameType.ERROR:
                err = frame.json()
                raise QueryError(str(err.get("code")), str(err.get("reason")))

    def _frame(self) -> Frame:
        while not self._frames:
            data = self._sock.recv(1 << 20)
            if not data:
                host, port = self.address
                raise ConnectionClosed(f"the query service at {host}:{port} closed the connection")
            self._frames.extend(self._decoder.feed(data))
        return self._frames.popleft()


def connect(address: str | tuple[str, int], *, token: str | None = None) -> QueryClient:
    """Connect to an RDB or HDB query service: ``connect("127.0.0.1:5011").sql("SELECT ...")``."""
    return QueryClient(address, token=token)
