"""Publishers: ``AsyncPublisher`` (asyncio) and ``Publisher`` (blocking, any thread).

A publisher converts what it is given to Arrow with the TP's schemas (sent on connect,
so bad data fails in ``publish`` with a message naming the column), coalesces small
publishes into batches (at most ``max_delay`` seconds or ``max_rows`` rows), and
numbers each UPD it sends with its own *pub seq*. Every sent UPD stays in a re-send
buffer until the TP acknowledges it as fsynced. After a dropped connection the
publisher reconnects with backoff, learns from WELCOME the last pub seq the TP logged
for its ``pub_id``, and re-sends the rest: the TP drops anything it already has, so
nothing is lost and nothing is logged twice.

Coalescing keeps the order of updates within a table; across tables, one window's
updates go out table by table.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any, cast

import pyarrow as pa

from tickerplant import protocol
from tickerplant.aio import new_event_loop
from tickerplant.convert import is_row, rows_to_batch, to_batch
from tickerplant.exceptions import ConnectionClosed, DataError, ProtocolError, RejectedError, TickError
from tickerplant.protocol import Frame, FrameType
from tickerplant.schema import TP_TIME, TableSchema
from tickerplant.subscriber import FINAL_ERRORS, Backoff, parse_address

logger = logging.getLogger("tickerplant.publisher")


class AsyncPublisher:
    """Publish to a tickerplant from asyncio code.

    ``async with AsyncPublisher("127.0.0.1:5010") as pub: await pub.publish("trade", data)``
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        *,
        token: str | None = None,
        name: str = "publisher",
        max_delay: float = 0.002,
        max_rows: int = 10_000,
        max_unacked: int = 256 << 20,
        reconnect: bool = True,
        connect_timeout: float = 10.0,
        pub_id: bytes | None = None,
    ) -> None:
        self.address = parse_address(address)
        self.token = token
        self.name = name
        self.max_delay = max_delay
        self.max_rows = max_rows
        self.max_unacked = max_unacked
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.pub_id = pub_id or uuid.uuid4().bytes
        self.tables: dict[str, TableSchema] = {}
        self._columns: dict[str, frozenset[str]] = {}  # per table: column names a row may have
        self._required: dict[str, frozenset[str]] = {}  # and the ones it must have
        self.max_frame = protocol.DEFAULT_MAX_FRAME
        self.pub_seq = 0
        self.logged = 0  # highest pub seq the TP has written
        self.durable = 0  # highest pub seq the TP has fsynced
        self.reconnects = 0
        # Coalescing buffer; a lock because the blocking Publisher fills it from its thread.
        self._lock = threading.Lock()
        self._pending: dict[str, list[pa.RecordBatch | list[Mapping[str, Any]]]] = {}
        self._pending_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        # (pub seq, table, frame as header and body) for every UPD not yet acked as durable
        # Kept as record batches, not frames: a frame is serialised when sent (again after a
        # reconnect) and freed at once, so its memory is reused instead of page-faulted in
        # fresh for every batch while hundreds of MB await their ack.
        self._unacked: collections.deque[tuple[int, str, pa.RecordBatch]] = collections.deque()
        self.unacked_bytes = 0
        self._conn: _PubProtocol | None = None
        self._error: TickError | None = None  # raised by the next publish or flush
        self._progress = asyncio.Event()
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> AsyncPublisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, say HELLO, receive the schemas; re-send what the TP does not have."""
        self.loop = asyncio.get_running_loop()
        welcome: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        _, proto = await asyncio.wait_for(
            self.loop.create_connection(lambda: _PubProtocol(self, welcome), *self.address), self.connect_timeout
        )
        body = await asyncio.wait_for(welcome, self.connect_timeout)
        self.max_frame = int(body.get("max_frame", self.max_frame))
        logged = int(body.get("pub_seq", 0))
        if self.pub_seq == 0 and logged:
            # A new instance re-using a pub_id: carry on numbering after what the TP has.
            self.pub_seq = logged
        self._on_ack(logged, 0)
        self._conn = proto
        proto.last_sent = self.logged  # the TP would drop anything up to it as a duplicate
        self._pump(proto)
        self._progress.set()

    def _pump(self, proto: _PubProtocol) -> None:
        """Send unacked updates this connection has not had yet, until its buffer is full."""
        for pub_seq, table, batch in self._unacked:
            if proto.paused:
                return
            if pub_seq > proto.last_sent:
                proto.send_upd(table, pub_seq, batch)

    def _lost(self, proto: _PubProtocol, exc: BaseException | None) -> None:
        if self._conn is proto:
            self._conn = None
        self._progress.set()
        if self._closing or (isinstance(self._error, RejectedError) and self._error.code in FINAL_ERRORS):
            return
        if not self.reconnect:
            self._error = self._error or RejectedError("disconnected", f"connection to the TP lost: {exc}")
            return
        if self._reconnect_task is None and self.loop is not None:
            logger.warning("%s: connection lost (%s); reconnecting", self.name, exc)
            self._reconnect_task = self.loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        backoff = Backoff()
        try:
            while not self._closing:
                await asyncio.sleep(backoff.next())
                try:
                    await self.connect()
                    self.reconnects += 1
                    return
                except (OSError, TimeoutError, ConnectionClosed, ProtocolError) as exc:
                    logger.info("%s: reconnect failed: %s", self.name, exc)
                except RejectedError as exc:
                    self._error = exc
                    return
        finally:
            self._reconnect_task = None

    # -- publishing --------------------------------------------------------------------

    def table(self, name: str) -> TableSchema:
        try:
            return self.tables[name]
        except KeyError:
            raise DataError(f"unknown table {name!r}; the TP has: {', '.join(sorted(self.tables))}") from None

    def add(self, table: str, data: Any) -> tuple[int, int]:
        """Convert and queue ``data`` (thread-safe); returns rows pending before and after.

        A single row (a dict of scalars) is only appended here; rows are converted to
        Arrow a window at a time, column by column, by :meth:`send_pending`.
        """
        self._raise_error()
        if table not in self.tables:
            self.table(table)  # raises DataError naming the known tables
        if type(data) is dict and is_row(data):
            if not data.keys() <= self._columns[table] or not self._required[table] <= data.keys():
                to_batch(data, self.tables[table])  # raises DataError naming the column
            with self._lock:
                before = self._pending_rows
                entries = self._pending.get(table)
                if entries is None:
                    self._pending[table] = [[data]]
                elif type(entries[-1]) is list:
                    entries[-1].append(data)
                else:
                    entries.append([data])
                self._pending_rows = before + 1
                return before, before + 1
        batch = to_batch(data, self.tables[table])
        with self._lock:
            before = self._pending_rows
            self._pending.setdefault(table, []).append(batch)
            self._pending_rows += batch.num_rows
            return before, self._pending_rows

    async def publish(self, table: str, data: Any) -> None:
        """Queue ``data`` for ``table``; waits only when the re-send buffer is full."""
        self.kick(self.add(table, data)[1])
        if self.unacked_bytes > self.max_unacked:
            await self.wait_for_room()

    def kick(self, pending: int) -> None:
        """Send now if enough rows are pending, else make sure a send is scheduled."""
        if pending >= self.max_rows:
            self.send_pending()
        elif self._timer is None and self.loop is not None:
            self._timer = self.loop.call_later(self.max_delay, self.send_pending)

    def send_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, {}, 0
        for table, entries in pending.items():
            ts = self.tables[table]
            for entry in entries:
                batch = self._rows_to_batch(entry, ts) if isinstance(entry, list) else entry
                self._send_batch(table, batch)

    def _rows_to_batch(self, rows: list[Mapping[str, Any]], ts: TableSchema) -> pa.RecordBatch:
        """Convert a window's rows; a row whose values do not convert is dropped and reported.

        Column names were checked in :meth:`add`, so only a bad value can fail here: the
        other rows still go out, and the error is raised by the next ``publish``/``flush``.
        """
        try:
            return rows_to_batch(rows, ts)
        except DataError:
            good: list[Mapping[str, Any]] = []
            for row in rows:
                try:
                    rows_to_batch([row], ts)
                    good.append(row)
                except DataError as exc:
                    logger.error("%s: dropped a row for %r: %s (%r)", self.name, ts.name, exc, row)
                    self._error = DataError(f"a row for {ts.name!r} was not published: {exc}")
            return rows_to_batch(good, ts)

    def _send_batch(self, table: str, batch: pa.RecordBatch) -> None:
        # Keep frames well under the TP's limit: split big batches by rows.
        limit = self.max_frame // 2
        if batch.nbytes > limit and batch.num_rows > 1:
            step = max(1, batch.num_rows * limit // batch.nbytes)
            for start in range(0, batch.num_rows, step):
                self._send_batch(table, batch.slice(start, step))
            return
        self.pub_seq += 1
        self._unacked.append((self.pub_seq, table, batch))
        self.unacked_bytes += batch.nbytes
        conn = self._conn
        if conn is not None and not conn.paused and conn.last_sent == self.pub_seq - 1:
            conn.send_upd(table, self.pub_seq, batch)  # otherwise resume_writing sends it

    async def wait_for_room(self) -> None:
        """Block while the re-send buffer is over ``max_unacked`` (asks the TP to fsync)."""
        while self.unacked_bytes > self.max_unacked // 2:
            self._raise_error()
            if self._conn is not None:
                self._conn.send(protocol.encode(FrameType.FLUSH, seq=self.pub_seq, aux=1))
            self._progress.clear()
            await self._progress.wait()

    async def flush(self, durable: bool = True, timeout: float | None = None) -> None:
        """Return when every row published so far is written (``durable``: fsynced) by the TP."""
        self.send_pending()
        target = self.pub_seq
        await asyncio.wait_for(self._await_acked(target, durable), timeout)

    async def _await_acked(self, target: int, durable: bool) -> None:
        asked: _PubProtocol | None = None
        while (self.durable if durable else self.logged) < target:
            self._raise_error()
            conn = self._conn
            if conn is not None and conn is not asked:
                conn.send(protocol.encode(FrameType.FLUSH, seq=target, aux=int(durable)))
                asked = conn
            self._progress.clear()
            await self._progress.wait()
        self._raise_error()

    def _raise_error(self) -> None:
        """Raise a pending error once; one that reconnecting cannot cure stays raised."""
        error = self._error
        if error is not None:
            if not (isinstance(error, RejectedError) and error.code in FINAL_ERRORS):
                self._error = None
            raise error

    def _on_ack(self, logged: int, durable: int) -> None:
        self.logged = max(self.logged, logged)
        if durable > self.durable:
            self.durable = durable
            while self._unacked and self._unacked[0][0] <= durable:
                self.unacked_bytes -= self._unacked.popleft()[2].nbytes
        self._progress.set()

    def _on_error(self, frame: Frame) -> None:
        body = frame.json()
        error = RejectedError(str(body.get("code")), str(body.get("reason")))
        logger.error("%s: the TP rejected %s: %s", self.name, f"pub seq {frame.seq}" if frame.seq else "", error)
        if frame.seq:  # that update will never be accepted: do not re-send it
            kept = [u for u in self._unacked if u[0] != frame.seq]
            self.unacked_bytes = sum(u[2].nbytes for u in kept)
            self._unacked = collections.deque(kept)
        self._error = error
        self._progress.set()

    async def close(self) -> None:
        """Send what is pending, wait (briefly) for it to be durable, disconnect."""
        if self._closing:
            return
        try:
            if self._conn is not None and self._error is None:
                await self.flush(durable=True, timeout=self.connect_timeout)
        finally:
            self._closing = True
            if self._reconnect_task is not None:
                self._reconnect_task.cancel()
            if self._conn is not None and self._conn.transport is not None:
                self._conn.transport.close()


class _PubProtocol(asyncio.Protocol):
    def __init__(self, owner: AsyncPublisher, welcome: asyncio.Future[dict[str, Any]]) -> None:
        self.owner = owner
        self.welcome = welcome
        self.welcome_body: dict[str, Any] | None = None
        self.decoder = protocol.FrameDecoder(1 << 31)
        self.transport: asyncio.Transport | None = None
        self.schemas_sent: set[str] = set()
        self.tables: dict[str, TableSchema] = {}
        self.paused = False  # the socket's buffer is full: hold frames back (they stay unacked)
        self.last_sent = 0  # the pub seq of the last UPD written to this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=4 << 20)
        hello = {"role": "pub", "token": self.owner.token, "name": self.owner.name, "pub_id": self.owner.pub_id.hex()}
        self.transport.write(protocol.encode_json(FrameType.HELLO, hello))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.owner._pump(self)

    def send_upd(self, table: str, pub_seq: int, batch: pa.RecordBatch) -> None:
        self.last_sent = pub_seq
        if table not in self.schemas_sent:
            ts = self.owner.tables[table]
            self.send(protocol.encode_schema(table, ts.wire, ts.version))
            self.schemas_sent.add(table)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(protocol.upd_parts(table, batch, seq=pub_seq))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        for frame in frames:
            ftype = frame.type
            if ftype == FrameType.ACK:
                self.owner._on_ack(*protocol.decode_ack(frame))
            elif ftype == FrameType.WELCOME:
                self.welcome_body = frame.json()
                self._check_welcome()
            elif ftype == FrameType.SCHEMA:
                table, schema = protocol.decode_schema(frame)
                self.tables[table] = TableSchema(table, frame.seq, schema)
                self._check_welcome()
            elif ftype == FrameType.ERROR:
                if not self.welcome.done():
                    body = frame.json()
                    self.welcome.set_exception(RejectedError(str(body.get("code")), str(body.get("reason"))))
                self.owner._on_error(frame)

    def _check_welcome(self) -> None:
        body = self.welcome_body
        if body is None or self.welcome.done() or set(body.get("tables", {})) - set(self.tables):
            return
        owner = self.owner
        owner.tables.update(self.tables)
        for name, ts in self.tables.items():
            owner._columns[name] = frozenset([*ts.wire.names, TP_TIME])
            owner._required[name] = frozenset(ts.required)
        self.welcome.set_result(body)

    def _fail(self, exc: BaseException) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionClosed(f"the TP closed the connection during HELLO: {exc}"))
        self.owner._lost(self, exc)


class Publisher:
    """Blocking publisher for ordinary (threaded) code.

    ``with Publisher("127.0.0.1:5010") as pub: pub.publish("trade", rows); pub.flush()``

    The connection lives on an event loop in a background thread; ``publish`` only
    converts and queues under a lock, waking that thread once per coalescing window.
    """

    def __init__(self, address: str | tuple[str, int], **options: Any) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tickerplant-publisher", daemon=True)
        self._thread.start()
        self._async = AsyncPublisher(address, **options)
        self._kicked = False
        try:
            self._call(self._async.connect(), self._async.connect_timeout + 1)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def pub_id(self) -> bytes:
        return self._async.pub_id

    @property
    def stats(self) -> dict[str, int]:
        a = self._async
        return {"pub_seq": a.pub_seq, "logged": a.logged, "durable": a.durable, "reconnects": a.reconnects,
                "unacked_bytes": a.unacked_bytes}

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, table: str, data: Any) -> None:
        """Queue ``data`` (see :mod:`tickerplant.convert` for the accepted forms)."""
        a = self._async
        before, after = a.add(table, data)
        # Wake the I/O thread once per coalescing window, and when the window is full.
        if before == 0 or (after >= a.max_rows > before):
            self._loop.call_soon_threadsafe(a.kick, after)
        if a.unacked_bytes > a.max_unacked:
            self._call(a.wait_for_room())

    def flush(self, durable: bool = True, timeout: float | None = None) -> None:
        """Return when every row published so far is fsynced (or only written, ``durable=False``)."""
        self._call(self._async.flush(durable, timeout))

    def close(self) -> None:
        try:
            if self._thread.is_alive():
                self._call(self._async.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()
