"""The tickerplant server: receive updates, log them, then fan them out.

Layered like uvicorn: :class:`Config` (all settings), :class:`Tickerplant`
(``start`` / ``serve`` / ``shutdown``), :func:`run` (signals, event loop). One asyncio
``Protocol`` per connection drives the sans-I/O codec; every complete frame of a
``data_received`` call is handled in one pass.

The state, in one place (kdb+ ``tick.q`` keeps it in a handful of globals):

- ``writer``: today's log; ``last_seq``: the last sequence number given out today.
- ``staged``: accepted updates waiting for the next group commit.
- ``pub_seen``: per publisher id, the highest pub seq accepted (re-sends at or below
  it are dropped, so a publisher that reconnects and re-sends creates no duplicates).
- ``subs``: live subscribers (:mod:`tickerplant.pubsub`), plus catch-up tasks.

A group commit (:meth:`Tickerplant.commit`) gives staged updates their sequence
numbers, writes them to the log as one chunk (invariant 1: the OS has the bytes before
any subscriber does), then publishes. In zero-latency mode a commit runs once per event
loop pass; with ``--batch-ms N`` at most every N ms. Fsync follows the policy chosen at
start; publishers are acknowledged only once their updates are fsynced (invariant 2).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from tickerplant import log as tplog
from tickerplant import protocol
from tickerplant.aio import install_uvloop
from tickerplant.clock import Calendar, Clock, SystemClock
from tickerplant.exceptions import DataError, FrameTooLarge, ProtocolError, TickError
from tickerplant.protocol import Frame, FrameType
from tickerplant.pubsub import Subscription, Topic
from tickerplant.schema import Conformer, Registry, check_wire, evolve

logger = logging.getLogger("tickerplant.server")


@dataclass
class Config:
    """Everything a tickerplant is started with; see ``tick tp --help``."""

    host: str = "127.0.0.1"
    port: int = 5010
    log_dir: Path = Path("tplogs")
    schema: Path | None = None
    batch_ms: float = 0.0  # 0 = zero-latency: publish every event-loop pass
    fsync: str = "group:5ms"  # always | group:<ms> | os
    compress: bool = False  # lz4 log chunks
    eod: str = "00:00"
    tz: str = "UTC"
    heartbeat: float = 1.0
    max_frame: int = protocol.DEFAULT_MAX_FRAME
    sub_buffer: int = 64 * 1024 * 1024  # bytes queued to one subscriber before it is cut off
    auth_file: Path | None = None
    clock: Clock = field(default_factory=SystemClock)


def parse_fsync(policy: str) -> float | None:
    """``always`` -> 0, ``group:<ms>`` -> seconds, ``os`` -> None (fsync on request only)."""
    if policy == "always":
        return 0.0
    if policy == "os":
        return None
    if policy.startswith("group:"):
        ms = policy.removeprefix("group:").removesuffix("ms")
        try:
            value = float(ms)
        except ValueError:
            value = -1.0
        if value > 0:
            return value / 1000
    raise ValueError(f"fsync policy {policy!r} is not one of: always, group:<ms> (e.g. group:5ms), os")


ROLES = frozenset({"pub", "sub", "admin", "query"})


def load_tokens(path: Path | None) -> dict[str, set[str]] | None:
    """Auth file: one ``<token> <role>[,<role>]`` per line (roles pub, sub, admin, query); # comments.

    ``query`` is for the RDB and HDB query services, which read the same file format.
    """
    if path is None:
        return None
    tokens: dict[str, set[str]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        roles = set(parts[1].split(",")) if len(parts) > 1 else set(ROLES)
        if len(parts) > 2 or not roles <= ROLES:
            raise ValueError(f"{path}:{n}: expected `<token> <role>[,<role>]` with roles pub, sub, admin, query")
        tokens[parts[0]] = roles
    return tokens


class Stats:
    """Counters reported by ``STATS`` and at shutdown."""

    def __init__(self) -> None:
        self.upd_in = 0
        self.rows_in = 0
        self.duplicates = 0
        self.rejected = 0
        self.commits = 0
        self.fsyncs = 0
        self.slow_disconnects = 0
        self.catchups = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Staged:
    """An accepted update waiting for its sequence number."""

    __slots__ = ("batch", "conn", "frame", "pub_seq", "table", "time")

    def __init__(self, conn: Connection, table: str, frame: Frame, batch: pa.RecordBatch, time: int) -> None:
        self.conn = conn
        self.table = table
        self.frame = frame
        self.batch = batch
        self.pub_seq = frame.seq
        self.time = time


class Syncer:
    """Runs fsyncs off the event loop, one at a time, and reports what became durable.

    A commit is identified by a generation number; ``durable`` is the highest generation
    whose bytes are fsynced. The policy (always / group / os) is fixed at start.
    """

    def __init__(self, tp: Tickerplant, interval: float | None) -> None:
        self.tp = tp
        self.interval = interval
        self.written = 0
        self.durable = 0
        self._running: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._again = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsync")

    def committed(self) -> None:
        self.written += 1
        if self.interval is None:
            return
        if self.interval == 0:
            self.request()
        elif self._timer is None and self._running is None:
            self._timer = self.tp.loop.call_later(self.interval, self.request)

    def request(self) -> None:
        """Start an fsync now (or right after the one in flight)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.durable >= self.written:
            return
        if self._running is not None:
            self._again = True
            return
        gen, writer = self.written, self.tp.writer
        self._running = self.tp.loop.run_in_executor(self._pool, writer.fsync)
        self._running.add_done_callback(lambda fut: self._done(fut, gen))

    def _done(self, fut: asyncio.Future[None], gen: int) -> None:
        self._running = None
        exc = fut.exception()
        if exc is not None:
            # Durability can no longer be promised: stop rather than ack what may be lost.
            logger.critical("fsync of %s failed: %s; shutting down", self.tp.writer.path, exc)
            self.tp.fatal(exc)
            return
        self.tp.stats.fsyncs += 1
        self.durable = gen
        self.tp.on_durable(gen)
        if self._again or (self.interval == 0 and self.durable < self.written):
            self._again = False
            self.request()
        elif self.interval and self.durable < self.written:
            self._timer = self.tp.loop.call_later(self.interval, self.request)

    async def drain(self) -> None:
        """Wait for any fsync in flight (before the log file is closed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)
            await asyncio.sleep(0)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Connection(asyncio.Protocol):
    """One client connection: its role, its tables' schemas, its flow state."""

    def __init__(self, tp: Tickerplant) -> None:
        self.tp = tp
        self.decoder = protocol.FrameDecoder(tp.config.max_frame)
        self.transport: asyncio.Transport | None = None
        self.role: str | None = None
        self.name = "?"
        self.peer = "?"
        self.pub_id = b""
        self.conformers: dict[str, Conformer] = {}
        self.sub: Subscription | None = None
        self.catchup: asyncio.Task[None] | None = None
        self.closed = False
        self.pending_acks: deque[tuple[int, int]] = deque()  # (commit generation, pub seq)
        self.logged = 0
        self.durable = 0
        self.flush_waiting = False
        self.drained = asyncio.Event()
        self.drained.set()

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.tp.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.tp.conns.discard(self)
        if self.sub is not None:
            self.tp.topic.remove(self.sub)
        if self.catchup is not None:
            self.catchup.cancel()
        self.drained.set()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            code = "too_large" if isinstance(exc, FrameTooLarge) else "protocol"
            self.reject(code, str(exc), fatal=True)
            return
        now = self.tp.clock.now_ns()
        for frame in frames:
            if self.closed:
                return
            try:
                self.handle(frame, now)
            except TickError as exc:
                # For a rejected UPD, seq names it, so the publisher drops it instead of re-sending.
                seq = frame.seq if frame.type == FrameType.UPD else 0
                self.reject(getattr(exc, "code", "bad_request"), str(exc), fatal=True, seq=seq)

    # -- frames ------------------------------------------------------------------------

    def handle(self, frame: Frame, now: int) -> None:
        ftype = frame.type
        if ftype == FrameType.UPD:
            self.on_upd(frame, now)
        elif ftype == FrameType.HEARTBEAT:
            pass
        elif self.role is None:
            if ftype != FrameType.HELLO:
                self.reject("bad_request", f"expected HELLO first, got {FrameType(ftype).name}", fatal=True)
                return
            self.on_hello(frame.json())
        elif ftype == FrameType.SCHEMA:
            self.on_schema(frame)
        elif ftype == FrameType.FLUSH:
            self.require("pub")
            self.flush_waiting = True
            self.tp.schedule_commit(urgent=True)
            if frame.aux:
                self.tp.flush_requested = True
        elif ftype == FrameType.SUB:
            self.require("sub")
            self.on_sub(frame.json())
        elif ftype == FrameType.EOD_REQUEST:
            self.require("admin")
            self.tp.loop.create_task(self.tp.end_of_day(reason=f"requested by {self.peer}", requester=self))
        elif ftype == FrameType.STATS_REQUEST:
            self.require("admin")
            self.send(protocol.encode_json(FrameType.STATS, self.tp.stats_dict(), seq=self.tp.last_seq))
        else:
            self.reject("bad_request", f"{FrameType(ftype).name} is not a request a client may send", fatal=True)

    def require(self, role: str) -> None:
        if role != self.role:
            raise _Rejected("role", f"a {self.role} connection may not do that; connect with role {role!r}")

    def on_hello(self, hello: Any) -> None:
        if not isinstance(hello, dict) or hello.get("role") not in ("pub", "sub", "admin"):
            self.reject("bad_request", "HELLO needs a role: pub, sub or admin", fatal=True)
            return
        role = hello["role"]
        tokens = self.tp.tokens
        if tokens is not None:
            allowed = tokens.get(str(hello.get("token")))
            if allowed is None or role not in allowed:
                self.reject("auth", f"token not accepted for role {role!r}; check the client's token "
                            f"against the TP's --auth-file", fatal=True)
                return
        self.role = role
        self.name = str(hello.get("name", "?"))
        body: dict[str, Any] = {
            "date": self.tp.date.isoformat(),
            "seq": self.tp.last_seq,
            "heartbeat": self.tp.config.heartbeat,
            "max_frame": self.tp.config.max_frame,
            "tables": {t.name: t.version for t in self.tp.registry},
            "log": str(self.tp.writer.path),
        }
        frames = []
        if role == "pub":
            try:
                self.pub_id = bytes.fromhex(str(hello.get("pub_id", "")))
            except ValueError:
                self.pub_id = b""
            if len(self.pub_id) != 16:
                self.reject("bad_request", "a publisher's HELLO needs pub_id: 32 hex characters", fatal=True)
                return
            body["pub_seq"] = self.tp.writer.pubs.get(self.pub_id, 0)
            frames = [protocol.encode_schema(t.name, t.wire, t.version) for t in self.tp.registry]
        self.send(protocol.encode_json(FrameType.WELCOME, body, seq=self.tp.last_seq, time=self.tp.clock.now_ns()))
        for f in frames:
            self.send(f)
        logged = body.get("pub_seq", 0)
        if logged:
            # Acknowledge what an earlier connection of this publisher got logged, once durable.
            self.logged = logged
            self.pending_acks.append((self.tp.syncer.written, logged))
            self.tp.syncer.request()
            if self.tp.syncer.durable >= self.tp.syncer.written:
                self.ack(self.tp.syncer.durable)
        logger.info("%s connected from %s as %s", self.name, self.peer, role)

    def on_schema(self, frame: Frame) -> None:
        self.require("pub")
        table, schema = protocol.decode_schema(frame)
        if table not in self.tp.registry:
            raise _Rejected("unknown_table", str(self.tp.registry.unknown(table)))
        try:
            self.conformers[table] = check_wire(schema, self.tp.registry[table])
        except DataError as exc:
            raise _Rejected("schema", str(exc)) from None

    def on_upd(self, frame: Frame, now: int) -> None:
        if self.role != "pub":
            raise _Rejected("role", "only a publisher (HELLO role pub) may send UPD")
        table, body = protocol.split_name(frame.payload)
        conform = self.conformers.get(table)
        if conform is None:
            if table not in self.tp.registry:
                raise _Rejected("unknown_table", str(self.tp.registry.unknown(table)))
            raise _Rejected("order", f"UPD for {table!r} before its SCHEMA frame; send the schema first")
        tp = self.tp
        if frame.seq <= tp.pub_seen.get(self.pub_id, 0):
            tp.stats.duplicates += 1
            return
        try:
            batch = protocol.read_batch(body, conform.source)
            batch.validate(full=True)
        except protocol.ARROW_ERRORS as exc:
            raise _Rejected("bad_batch", f"UPD {frame.seq} for {table!r}: Arrow batch is invalid: {exc}") from None
        if batch.num_rows != frame.aux:
            raise _Rejected("bad_batch", f"UPD {frame.seq} for {table!r}: header says {frame.aux} rows, "
                            f"batch has {batch.num_rows}")
        for name in conform.target.required:
            if batch.column(name).null_count:
                raise _Rejected("bad_batch", f"UPD {frame.seq} for {table!r}: column {name!r} may not be null")
        if not conform.identity:
            batch = conform(batch)
            raw = protocol.encode_upd(table, batch, seq=frame.seq)
            frame = protocol.FrameDecoder(len(raw)).feed(raw)[0]
        tp.pub_seen[self.pub_id] = frame.seq
        tp.stats.upd_in += 1
        tp.stats.rows_in += batch.num_rows
        tp.stage(Staged(self, table, frame, batch, now))

    def on_sub(self, req: Any) -> None:
        if not isinstance(req, dict):
            raise _Rejected("bad_request", "SUB payload must be a JSON object")
        tables = req.get("tables")
        registry = self.tp.registry
        if tables is None:
            tables = list(registry.tables)
        for t in tables:
            if t not in registry:
                raise _Rejected("unknown_table", str(registry.unknown(t)))
        syms = req.get("syms")
        if syms is not None and (not isinstance(syms, list) or not all(isinstance(s, str) for s in syms)):
            raise _Rejected("bad_request", "syms must be a list of strings or null")
        from_seq = req.get("from_seq")
        if from_seq is not None and (not isinstance(from_seq, int) or from_seq < 0):
            raise _Rejected("bad_request", "from_seq must be a non-negative integer or null")
        if self.sub is not None:
            self.tp.topic.remove(self.sub)
        self.sub = Subscription(self, frozenset(tables), frozenset(syms) if syms else None)
        for t in tables:
            ts = registry[t]
            self.send(protocol.encode_schema(t, ts.wire, ts.version))
        tp = self.tp
        body = {"date": tp.date.isoformat(), "seq": tp.last_seq, "from_seq": from_seq,
                "tables": {t: registry[t].version for t in tables}}
        self.send(protocol.encode_json(FrameType.SUBSCRIBED, body, seq=tp.last_seq, time=tp.clock.now_ns()))
        if from_seq is None or from_seq > tp.last_seq:
            tp.topic.add(self.sub)
        else:
            tp.stats.catchups += 1
            self.catchup = tp.loop.create_task(tp.catch_up(self, max(from_seq, 1)))

    # -- output ------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def send_many(self, buffers: list[bytes | memoryview]) -> None:
        if not self.closed and self.transport is not None:
            self.transport.writelines(buffers)

    @property
    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def reject(self, code: str, reason: str, fatal: bool = False, seq: int = 0) -> None:
        self.tp.stats.rejected += code not in ("slow_subscriber",)
        logger.warning("%s %s (%s): %s: %s", self.role or "client", self.name, self.peer, code, reason)
        self.send(protocol.encode_json(FrameType.ERROR, {"code": code, "reason": reason},
                                       seq=seq, time=self.tp.clock.now_ns(), aux=int(fatal)))
        if fatal:
            self.close()

    def close(self, grace: float = 1.0) -> None:
        """Stop reading, flush what is queued (at most ``grace`` seconds), then drop."""
        if self.closed or self.transport is None:
            return
        self.closed = True
        if self.sub is not None:
            self.tp.topic.remove(self.sub)
        if self.catchup is not None:
            self.catchup.cancel()
        transport = self.transport
        transport.close()
        self.tp.loop.call_later(grace, transport.abort)

    def ack(self, durable_gen: int) -> None:
        """Acknowledge pub seqs whose commit generation is fsynced."""
        acked = self.durable
        while self.pending_acks and self.pending_acks[0][0] <= durable_gen:
            acked = self.pending_acks.popleft()[1]
        if acked > self.durable:
            self.durable = acked
            self.send(protocol.encode_ack(self.logged, acked, self.tp.clock.now_ns()))


class _Rejected(TickError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Tickerplant:
    """The server. ``await start()``, then ``await serve()`` until ``shutdown()``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = config.clock
        self.registry = Registry.load(config.schema)
        self.calendar = Calendar(config.eod, config.tz)
        self.tokens = load_tokens(config.auth_file)
        self.stats = Stats()
        self.topic = Topic()
        self.conns: set[Connection] = set()
        self.staged: list[Staged] = []
        self.pub_seen: dict[bytes, int] = {}
        self.flush_requested = False
        self._commit_handle: asyncio.Handle | None = None
        self._commit_timed = False
        self._eod_timer: asyncio.TimerHandle | None = None
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._fatal: BaseException | None = None
        self.port = config.port
        self.writer = self._open_log(self.calendar.date(self.clock.now_ns()))
        self.last_seq = self.writer.last_seq
        self.pub_seen = dict(self.writer.pubs)
        self.syncer: Syncer
        self.loop: asyncio.AbstractEventLoop

    # -- log files ---------------------------------------------------------------------

    def _open_log(self, date: dt.date) -> tplog.LogWriter:
        """Open (or recover) the day's log and make sure it declares the current schemas."""
        while True:
            path = tplog.log_path(self.config.log_dir, date)
            writer = tplog.LogWriter(path, date, compress=self.config.compress, created_ns=self.clock.now_ns())
            if not writer.ended:
                break
            # That day was closed early (`tick eod`): carry on with the next one.
            writer.close()
            logger.info("%s is closed by an end of day; opening the next day's log", path)
            date += dt.timedelta(days=1)
        self.date = date
        control: list[bytes] = []
        for ts in self.registry:
            logged = writer.schemas.get(ts.name)
            if logged is not None:
                version, old_schema = logged
                if version == ts.version and old_schema.equals(ts.wire):
                    continue
                evolve(old_schema, version, ts)  # raises SchemaError if incompatible
            control.append(protocol.encode_schema(ts.name, ts.wire, ts.version))
        # Carry publisher marks across days so a re-send after end of day is still idempotent.
        if not writer.pubs:
            control += [protocol.encode(FrameType.PUBMARK, pid, seq=s) for pid, s in self.pub_seen.items()]
        if control:
            writer.append(control)
            writer.fsync()
        return writer

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.syncer = Syncer(self, parse_fsync(self.config.fsync))
        self._stopped = asyncio.Event()
        self._server = await self.loop.create_server(
            lambda: Connection(self), self.config.host, self.config.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._arm_eod()
        self._heartbeat_timer = self.loop.call_later(self.config.heartbeat, self._heartbeat)
        logger.info("tickerplant listening on %s:%d, log %s (seq %d), fsync %s, %s",
                    self.config.host, self.port, self.writer.path, self.last_seq, self.config.fsync,
                    f"batch {self.config.batch_ms} ms" if self.config.batch_ms else "zero-latency")

    async def serve(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    def fatal(self, exc: BaseException) -> None:
        self._fatal = exc
        self.loop.create_task(self.shutdown())

    async def shutdown(self) -> None:
        """Stop accepting, commit what is staged, fsync and close the log, drop clients."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for timer in (self._eod_timer, self._heartbeat_timer):
            if timer is not None:
                timer.cancel()
        self.commit()
        await self.syncer.drain()
        self.writer.close()
        self.syncer.close()
        for conn in list(self.conns):
            conn.close(grace=0.2)
        await asyncio.sleep(0.05)
        logger.info("tickerplant stopped at seq %d; stats %s", self.last_seq, self.stats.as_dict())
        assert self._stopped is not None
        self._stopped.set()

    # -- commit: sequence, log, publish ------------------------------------------------

    def stage(self, item: Staged) -> None:
        self.staged.append(item)
        self.schedule_commit()

    def schedule_commit(self, urgent: bool = False) -> None:
        if self._commit_handle is not None:
            if not (urgent and self._commit_timed):
                return
            self._commit_handle.cancel()
        self._commit_timed = bool(self.config.batch_ms) and not urgent
        if self._commit_timed:
            self._commit_handle = self.loop.call_later(self.config.batch_ms / 1000, self.commit)
        else:
            self._commit_handle = self.loop.call_soon(self.commit)

    def commit(self) -> None:
        """Sequence the staged updates, log them as one chunk, then publish them."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        staged, self.staged = self.staged, []
        if staged:
            first = self.last_seq + 1
            pieces: list[bytes | memoryview] = []
            marks: dict[bytes, int] = {}
            seq = self.last_seq
            for item in staged:
                seq += 1
                f = item.frame
                f.seq, f.time = seq, item.time
                pieces.append(f.header())
                pieces.append(f.payload)
                marks[item.conn.pub_id] = item.pub_seq
            control = [protocol.encode(FrameType.PUBMARK, pid, seq=s) for pid, s in marks.items()]
            self.writer.append(control, pieces, len(staged), first, seq)
            self.last_seq = seq
            self.stats.commits += 1
            self.syncer.committed()
            gen = self.syncer.written
            for item in staged:
                conn = item.conn
                conn.logged = item.pub_seq
                if conn.pending_acks and conn.pending_acks[-1][0] == gen:
                    conn.pending_acks[-1] = (gen, item.pub_seq)
                else:
                    conn.pending_acks.append((gen, item.pub_seq))
            self.publish(staged, pieces)
        for conn in self.conns:
            if conn.flush_waiting:
                conn.flush_waiting = False
                conn.send(protocol.encode_ack(conn.logged, conn.durable, self.clock.now_ns()))
        if self.flush_requested:
            self.flush_requested = False
            self.syncer.request()

    def publish(self, staged: list[Staged], pieces: list[bytes | memoryview]) -> None:
        limit = self.config.sub_buffer
        for conn, buffers in self.topic.fan_out(staged, pieces):
            conn.send_many(buffers)
            # Cut only a subscriber that has not drained what was queued *before* this commit:
            # one large commit (a burst) can exceed the limit on its own while it keeps up.
            if conn.buffered > limit and conn.buffered - sum(len(b) for b in buffers) > limit:
                self.cut_slow(conn)

    def cut_slow(self, conn: Connection) -> None:
        self.stats.slow_disconnects += 1
        conn.reject("slow_subscriber",
                    f"more than {self.config.sub_buffer} bytes queued for this subscriber; it was disconnected "
                    f"so that it does not slow the tickerplant. Reconnect with from_seq to catch up",
                    fatal=True, seq=self.last_seq)

    def on_durable(self, gen: int) -> None:
        for conn in self.conns:
            if conn.pending_acks:
                conn.ack(gen)

    # -- catch-up: log, then live ------------------------------------------------------

    async def catch_up(self, conn: Connection, from_seq: int) -> None:
        """Send a subscriber every update from ``from_seq`` out of the log, then make it live.

        Runs while updates keep arriving: each pass reads the log up to the last chunk
        written; when a pass ends at ``last_seq`` the subscriber joins the live fan-out
        in the same loop step, so nothing is missed or sent twice at the switch.
        """
        sub = conn.sub
        assert sub is not None
        writer, next_seq = self.writer, from_seq
        limit = self.config.sub_buffer // 2
        try:
            while True:
                offset = writer.offset_for(next_seq)
                reader = self.topic.catchup_reader(self.registry, writer.schemas_at(offset))
                for frame in tplog.iter_frames(writer.path, offset, strict=False):
                    if frame.type == FrameType.SCHEMA:
                        reader.on_schema(frame)
                        continue
                    if frame.type == FrameType.EOD:
                        conn.send(frame.to_bytes())
                        continue
                    if frame.type != FrameType.UPD or frame.seq < next_seq:
                        continue
                    data = reader.frame_for(sub, frame)
                    next_seq = frame.seq + 1
                    if data is not None:
                        conn.send(data)
                    if conn.buffered > limit:
                        await conn.drained.wait()
                        if conn.closed:
                            return
                        await asyncio.sleep(0)
                if conn.closed:
                    return
                if writer is not self.writer:  # the day rolled while catching up: on to the new log
                    writer, next_seq = self.writer, 1
                    continue
                if next_seq > self.last_seq:
                    self.topic.add(sub)
                    return
                await asyncio.sleep(0)
        except TickError as exc:
            conn.reject("log", f"catch-up from the log failed: {exc}", fatal=True)
        finally:
            conn.catchup = None

    # -- heartbeats and end of day -----------------------------------------------------

    def _heartbeat(self) -> None:
        now = self.clock.now_ns()
        beat = protocol.encode(FrameType.HEARTBEAT, seq=self.last_seq, time=now)
        # A subscriber still catching up from the log has not been sent everything up to
        # last_seq: its heartbeat must not claim that position, or a filtered subscriber
        # would move its position past the catch-up frames still to come and drop them.
        catching_up = protocol.encode(FrameType.HEARTBEAT, seq=0, time=now)
        for conn in self.conns:
            conn.send(catching_up if conn.catchup is not None else beat)
        self._heartbeat_timer = self.loop.call_later(self.config.heartbeat, self._heartbeat)

    def _arm_eod(self) -> None:
        delay = (self.calendar.end_ns(self.date) - self.clock.now_ns()) / 1e9
        self._eod_timer = self.loop.call_later(max(delay, 0.0), self._eod_due)

    def _eod_due(self) -> None:
        if self.calendar.date(self.clock.now_ns()) == self.date:
            self._arm_eod()  # woke a little early
            return
        self.loop.create_task(self.end_of_day(reason="scheduled"))

    async def end_of_day(self, reason: str = "", requester: Connection | None = None) -> None:
        """Close today's log with an EOD frame, tell subscribers, start the next day at seq 1."""
        if self._eod_timer is not None:
            self._eod_timer.cancel()
        old = self.date
        new = max(self.calendar.date(self.clock.now_ns()), old + dt.timedelta(days=1))
        self.commit()
        await self.syncer.drain()
        eod = protocol.encode_json(FrameType.EOD, {"date": old.isoformat(), "next": new.isoformat()},
                                   seq=self.last_seq, time=self.clock.now_ns())
        self.writer.append([eod])
        self.writer.close()
        self.syncer.written = self.syncer.durable = 0
        for conn in self.conns:
            conn.pending_acks.clear()
        # The old log is fsynced and closed: every publisher's updates so far are durable.
        for conn in self.conns:
            if conn.role == "pub" and conn.logged > conn.durable:
                conn.pending_acks.append((0, conn.logged))
                conn.ack(0)
        for sub in self.topic.subs:
            sub.conn.send(eod)
        logger.info("end of day %s (%s) at seq %d; next log %s", old, reason, self.last_seq,
                    tplog.log_path(self.config.log_dir, new))
        self.writer = self._open_log(new)
        self.last_seq = self.writer.last_seq
        self._arm_eod()
        if requester is not None:  # `tick eod` waits for this: the day has rolled
            requester.send(eod)

    def stats_dict(self) -> dict[str, Any]:
        return {
            **self.stats.as_dict(),
            "date": self.date.isoformat(),
            "seq": self.last_seq,
            "log": str(self.writer.path),
            "log_bytes": self.writer.offset,
            "subscribers": len(self.topic.subs),
            "connections": len(self.conns),
            "publishers": sum(1 for c in self.conns if c.role == "pub"),
        }


def run(config: Config, ready: Callable[[Tickerplant], None] | None = None) -> None:
    """Run a tickerplant until SIGTERM or SIGINT; both shut it down gracefully."""
    install_uvloop()

    async def main() -> None:
        tp = Tickerplant(config)
        await tp.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(tp.shutdown()))
        if ready is not None:
            ready(tp)
        await tp.serve()

    asyncio.run(main())
