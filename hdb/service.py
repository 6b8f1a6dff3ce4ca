"""The query service: SQL over the tickerplant frame protocol, for ``tick hdb`` and ``tick rdb``.

A client says HELLO with role ``query``, then sends QUERY frames; each query runs on a
worker thread of a pool (DuckDB releases the GIL while it executes), so a long query
never blocks the event loop that, in the RDB, keeps applying the TP's updates. Result
batches stream back as the result's SCHEMA, UPD frames and a RESULT frame; a refused or
stopped query gets an ERROR frame (the connection stays open). Queries on one
connection run one after another; connections run concurrently, up to ``workers``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from hdb.engine import QueryEngine
from tickerplant import protocol
from tickerplant.aio import install_uvloop
from tickerplant.exceptions import ConnectionClosed, ProtocolError, QueryError
from tickerplant.protocol import Frame, FrameType

logger = logging.getLogger("hdb.service")

RESULT_NAME = "result"  # table name carried by result SCHEMA/UPD frames


class QueryService:
    """Serves ``engine`` to clients; ``info()`` adds to the WELCOME (date, position, ...)."""

    def __init__(
        self,
        engine: QueryEngine,
        *,
        kind: str,
        info: Callable[[], dict[str, Any]] | None = None,
        workers: int = 10,
        tokens: dict[str, set[str]] | None = None,
        max_frame: int = 1 << 20,
    ) -> None:
        self.engine = engine
        self.kind = kind
        self.info = info or dict
        self.tokens = tokens
        self.max_frame = max_frame
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="query")
        self.conns: set[_QueryConnection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _QueryConnection(self), host, port)
        sockname = self.server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            conn.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class _QueryConnection(asyncio.Protocol):
    def __init__(self, service: QueryService) -> None:
        self.service = service
        self.decoder = protocol.FrameDecoder(service.max_frame)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.hello = False
        self.closed = False
        self.peer = "?"
        self.queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.drained = asyncio.Event()
        self.drained.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.service.conns.add(self)
        self.worker = self.loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.service.conns.discard(self)
        self.drained.set()
        if self.worker is not None:
            self.worker.cancel()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def error(self, code: str, reason: str, seq: int = 0, fatal: bool = False) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(protocol.encode_error(code, reason, fatal) if seq == 0 else
                                 protocol.encode_json(FrameType.ERROR, {"code": code, "reason": reason},
                                                      seq=seq, aux=int(fatal)))
        if fatal:
            self.close()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            self.error("protocol", str(exc), fatal=True)
            return
        for frame in frames:
            if self.closed:
                return
            self.handle(frame)

    def handle(self, frame: Frame) -> None:
        if frame.type == FrameType.HEARTBEAT:
            return
        if not self.hello:
            if frame.type != FrameType.HELLO:
                self.error("bad_request", f"expected HELLO first, got {FrameType(frame.type).name}", fatal=True)
                return
            self.on_hello(frame)
            return
        if frame.type != FrameType.QUERY:
            self.error("bad_request", f"a query connection may send QUERY frames, not {FrameType(frame.type).name}",
                       fatal=True)
            return
        try:
            body = frame.json()
        except ProtocolError as exc:
            self.error("bad_request", str(exc), seq=frame.seq)
            return
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            self.error("bad_request", 'QUERY payload must be a JSON object with "sql": "<one SELECT statement>"',
                       seq=frame.seq)
            return
        self.queue.put_nowait((frame.seq, body))

    def on_hello(self, frame: Frame) -> None:
        hello = frame.json()
        if not isinstance(hello, dict) or hello.get("role") != "query":
            self.error("role", f"this is a {self.service.kind} query service: connect with role 'query'", fatal=True)
            return
        tokens = self.service.tokens
        if tokens is not None and "query" not in tokens.get(str(hello.get("token")), set()):
            self.error("auth", "token not accepted for role 'query'; check the client's token against --auth-file",
                       fatal=True)
            return
        self.hello = True
        body = {"service": self.service.kind, **self.service.info()}
        assert self.transport is not None
        self.transport.write(protocol.encode_json(FrameType.WELCOME, body))

    async def _serve(self) -> None:
        """Run this connection's queries one after another on the service's pool."""
        while not self.closed:
            qid, body = await self.queue.get()
            fut = self.loop.run_in_executor(self.service.pool, self._run, qid, body)
            try:
                await fut
            except asyncio.CancelledError:
                raise
            except ConnectionClosed:
                pass  # the client left while its query ran
            except Exception as exc:  # the worker reports query errors itself: this is a bug, but answer
                logger.exception("query %d from %s failed", qid, self.peer)
                self.error("query_failed", f"internal error in the query service: {exc!r}", seq=qid)

    def _run(self, qid: int, body: dict[str, Any]) -> None:
        """On a worker thread: run one query and stream its result."""
        service = self.service
        started = time.perf_counter()
        try:
            # A client may lower the service's limits, never raise them.
            engine = service.engine
            timeout, max_rows = _positive(body.get("timeout")), _positive_int(body.get("max_rows"))
            query = engine.query(body["sql"], timeout=min(timeout or engine.timeout, engine.timeout),
                                 max_rows=min(max_rows or engine.max_rows, engine.max_rows))
        except QueryError as exc:
            self._send([_error(qid, exc)])
            logger.info("query %d from %s: %s", qid, self.peer, exc)
            return
        try:
            self._send([protocol.encode_schema(RESULT_NAME, query.schema, qid)])
            for batch in query:
                head, data = protocol.upd_parts(RESULT_NAME, batch, seq=qid)
                self._send([head, memoryview(data)])
            done = {"rows": query.rows, "bytes": query.bytes, "seconds": round(time.perf_counter() - started, 6)}
            self._send([protocol.encode_json(FrameType.RESULT, done, seq=qid)])
        except QueryError as exc:  # stopped while streaming: timeout or result too large
            with contextlib.suppress(ConnectionClosed):
                self._send([_error(qid, exc)])
        except ConnectionClosed:
            pass  # the client left; closing the query below cancels it
        finally:
            query.close()

    def _send(self, buffers: list[bytes | memoryview]) -> None:
        """From a worker thread: write on the loop, waiting while the client's buffer is full."""
        asyncio.run_coroutine_threadsafe(self._write(buffers), self.loop).result()

    async def _write(self, buffers: list[bytes | memoryview]) -> None:
        await self.drained.wait()
        if self.closed or self.transport is None:
            raise ConnectionClosed(f"query client {self.peer} went away")
        self.transport.writelines(buffers)


def _error(qid: int, exc: QueryError) -> bytes:
    return protocol.encode_json(FrameType.ERROR, {"code": exc.code, "reason": exc.reason}, seq=qid)


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _positive_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


def run(
    hdb: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5012,
    schema: str | Path | None = None,
    timeout: float = 30.0,
    max_rows: int = 1_000_000,
    max_bytes: int = 256 << 20,
    workers: int = 10,
    tokens: dict[str, set[str]] | None = None,
    ready: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """``tick hdb``: serve the HDB's history until SIGTERM or SIGINT."""
    from hdb import partition
    from tickerplant.schema import Registry

    install_uvloop()
    registry = Registry.load(schema)
    hdb = Path(hdb)
    for line in partition.recover(hdb):
        logger.warning("%s", line)

    async def main() -> None:
        engine = QueryEngine(hdb, registry, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes)
        service = QueryService(engine, kind="hdb", workers=workers, tokens=tokens,
                               info=lambda: {"hdb": str(hdb), "tables": {t.name: t.version for t in registry}})
        address = await service.start(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(address)
        await stop.wait()
        service.close()
        engine.close()

    asyncio.run(main())
