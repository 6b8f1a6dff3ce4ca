"""The I/O shell of a feed adapter: a :class:`~feedhandlers.venue.Venue` on a real WebSocket, publishing to a TP.

:class:`Feed` owns everything a venue parser must not touch: the socket, the clock, REST
requests, reconnects, the capture file and the tickerplant connection. It runs three tasks:

* the **read loop**: connect (``websockets``), send ``venue.subscribe()``, then per frame
  stamp ``recv_ns = time.time_ns()``, capture it, ``venue.on_message(raw, recv_ns, out)``
  and carry out ``venue.actions()`` (``Send`` on the socket, ``Rest`` as a GET in a thread
  whose answer goes to ``venue.on_snapshot`` back on the loop, retried with backoff,
  ``Reconnect`` as a clean close followed by a new connection). A
  dropped connection calls ``venue.on_disconnect`` and reconnects with exponential backoff
  (reset once the new connection delivers a frame after subscribing);
* the **watchdog**: turns parsed rows into Arrow batches (``normalize.to_batches``) at
  least every ``flush_ms``, sends ``venue.ping()`` after ``venue.keepalive`` seconds without a
  frame (for venues that want an application-level ping), declares the connection dead after
  ``idle_timeout`` without a frame (and reconnects), and reports a subscribed symbol silent for ``stale_after`` as a
  ``stale`` feed event without touching the connection (a quiet symbol is not a dead feed);
* the **publisher**: takes batches from a bounded queue and publishes them with
  :class:`~tickerplant.publisher.AsyncPublisher`, which reconnects to a restarted TP by itself.

The read loop never awaits the publisher: when the queue is full, the batch is dropped,
counted (``stats["overflow"]``) and an ``overflow`` feed event says how many rows were lost.

Connection health is published in ``feed_event`` rows next to the data: ``connect``,
``disconnect`` (with the reason), ``reconnect``, ``stale``, ``overflow``, and ``rest_error``
rows for failed snapshot requests (retried with backoff). Everything that decides a row (frames, REST answers,
opens and closes with their reasons) is captured with its receive time, so :func:`replay`
of a capture through the same venue yields the same rows, events included (``stale`` and
``overflow`` excepted: they are about the live process, not the data).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, WebSocketException

from feedhandlers import capture as cap
from feedhandlers.capture import CaptureWriter, areplay, parse_close, parse_rest
from feedhandlers.normalize import Out, normalize_symbol, to_batches
from feedhandlers.venue import Action, Reconnect, Rest, Send, Venue
from tickerplant.exceptions import DataError, RejectedError, TickError
from tickerplant.publisher import AsyncPublisher
from tickerplant.schema import Registry
from tickerplant.subscriber import FINAL_ERRORS, Backoff

__all__ = ["Feed", "FeedConfig", "replay"]

log = logging.getLogger("feedhandlers.shell")

_REST_TIMEOUT: Final = 10.0  # seconds for one snapshot GET
_DRAIN_TIMEOUT: Final = 10.0  # seconds to publish what is queued at stop()
_DETAIL: Final = 200  # characters of an HTTP error body quoted in a feed event
Batches = dict[str, pa.RecordBatch]


@dataclass
class FeedConfig:
    """How to run a feed; endpoints default to the venue's own."""

    tp: str | None  # TP HOST:PORT; None = parse (and capture) without publishing
    ws_url: str | None = None  # default: venue.ws_url
    rest_url: str | None = None  # default: venue.rest_url
    capture: Path | None = None  # also record every raw frame (feedhandlers.capture.CaptureWriter); appended to
    token: str | None = None
    queue_batches: int = 1000  # bounded queue between parsing and publishing
    flush_ms: float = 20.0  # parsed rows are turned into Arrow batches at least this often
    idle_timeout: float = 30.0  # no frame at all for this long -> the connection is dead: reconnect
    stale_after: float = 60.0  # a subscribed symbol silent this long -> a "stale" feed_event (no reconnect)

    def __post_init__(self) -> None:
        for name in ("queue_batches", "flush_ms", "idle_timeout", "stale_after"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FeedConfig.{name} must be > 0, got {getattr(self, name)!r}")


class Feed:
    """Run ``venue`` against its WebSocket (or a capture) and publish its rows to ``config.tp``.

    ``stats = await Feed(BinanceSpot(["BTCUSDT"]), FeedConfig(tp="127.0.0.1:5010")).run()``
    """

    def __init__(self, venue: Venue, config: FeedConfig, registry: Registry | None = None) -> None:
        self.venue = venue
        self.config = config
        self.registry = registry or Registry.default()
        self.ws_url = config.ws_url or venue.ws_url
        self.rest_url = (config.rest_url or venue.rest_url).rstrip("/")
        self.out = Out(venue.name)
        self.stats: dict[str, Any] = {
            "messages": 0, "bytes": 0, "rows": Counter(), "events": Counter(), "connects": 0, "reconnects": 0,
            "overflow": 0, "overflow_batches": 0, "queue_max": 0, "batches": 0, "published_batches": 0,
            "rest_requests": 0, "rest_errors": 0, "publish_errors": 0, "convert_errors": 0,
        }
        self._queue: asyncio.Queue[Batches | None] | None = None
        self._stopped: asyncio.Event | None = None
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capture: CaptureWriter | None = None
        self._ws: ClientConnection | None = None
        self._stream = 0  # capture stream id of the current connection attempt
        self._opened = 0  # connections that opened (the first is "connect", later ones "reconnect")
        self._close_reason: str | None = None
        self._last_frame = time.monotonic()
        self._last_ping = 0.0  # monotonic time of the last keepalive sent
        self._last_flush = time.monotonic()
        self._lost_rows = 0  # dropped on overflow and not yet reported in a feed event
        self._rest_tasks: dict[str, asyncio.Task[None]] = {}
        self._rest_answered: dict[str, float] = {}  # venue symbol -> monotonic time of its last 200 answer
        self._rest_backoff: dict[str, Backoff] = {}  # symbols asked for again soon after an answer
        self._later: set[asyncio.Task[None]] = set()  # delayed sends (Send.after) of the current connection
        # Stale watchdog: the venue's symbols (upper case, as rows may spell them) -> last row, monotonic.
        self._watched = {s.upper(): s for s in venue.symbols}
        self._last_row: dict[str, float] = {}
        self._stale: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, duration: float | None = None) -> dict[str, Any]:
        """Read the venue until :meth:`stop` (or ``duration`` seconds); returns :attr:`stats`."""
        return await self._run(self._read_forever(), duration, live=True)

    async def replay(self, path: Path, speed: float | None = None) -> dict[str, Any]:
        """Run a capture's records through the venue (paced at ``speed``, None = max) and publish the rows."""
        return await self._run(self._read_capture(path, speed), None, live=False)

    def stop(self) -> None:
        """Stop reading, publish what is parsed and queued, close; safe from any thread, and before run()."""
        self._stop_requested = True
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def _run(self, source: Any, duration: float | None, live: bool) -> dict[str, Any]:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self._stop_requested:
            self._stopped.set()
        self._queue = asyncio.Queue(self.config.queue_batches)
        if self.config.capture is not None and live:
            # A restarted handler continues its capture (a torn tail from the kill is cut off first).
            self._capture = CaptureWriter(self.config.capture, self.venue.name, {
                "ws_url": self.ws_url, "rest_url": self.rest_url, "symbols": self.venue.symbols,
                "channels": sorted(self.venue.channels), "options": self.venue.options()}, append=True)
        publisher = asyncio.create_task(self._publish(), name="feed-publisher")
        watchdog = asyncio.create_task(self._watchdog(live), name="feed-watchdog")
        reader: asyncio.Task[None] = asyncio.create_task(source, name="feed-reader")
        timer = self._loop.call_later(duration, self.stop) if duration is not None else None
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            try:
                await asyncio.wait([reader, stopped, publisher], return_when=asyncio.FIRST_COMPLETED)
            finally:  # stop reading first: what is parsed by now is what gets published
                if timer is not None:
                    timer.cancel()
                for task in (reader, watchdog, stopped, *self._rest_tasks.values(), *self._later):
                    task.cancel()
                await asyncio.gather(reader, watchdog, stopped, return_exceptions=True)
            if publisher.done():
                publisher.result()  # a publisher that cannot go on (a refused token) raises here
            if not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]  # a bug in the venue's parser: never hidden
            self._flush()
            await self._drain(publisher)
        finally:
            if not publisher.done():
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
            if self._capture is not None:
                self._capture.close()
        return self.stats

    async def _drain(self, publisher: asyncio.Task[None]) -> None:
        """Hand the publisher the end marker and wait for it to publish (and the TP to log) what is queued."""
        if publisher.done():
            return
        assert self._queue is not None
        try:
            await asyncio.wait_for(self._queue.put(None), _DRAIN_TIMEOUT)
            await asyncio.wait_for(asyncio.shield(publisher), _DRAIN_TIMEOUT + 2)
        except TimeoutError:
            log.error("%s feed: the publisher did not finish within %.0f s of stop(); %d batches were not "
                      "published (is the TP at %s up?)", self.venue.name, _DRAIN_TIMEOUT, self._queue.qsize(),
                      self.config.tp)

    # -- the live read loop ----------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = Backoff()
        url = self.venue.url(self.ws_url)
        while True:
            self._stream = (self._stream + 1) & 0xFFFF
            opened = False
            try:
                async with connect(url, max_size=None, close_timeout=1, open_timeout=10) as ws:
                    opened = True
                    await self._session(ws, url, backoff)
                reason = f"closed by {self.venue.name}: the connection ended without an error"
            except ConnectionClosed as exc:
                reason = self._close_reason or f"connection to {url} closed: {exc}"
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, WebSocketException) as exc:
                what = f"connection to {url} lost" if opened else f"cannot connect to {url}"
                reason = f"{what}: {type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                for task in (*self._rest_tasks.values(), *self._later):
                    task.cancel()
                self._rest_tasks.clear()
            recv_ns = time.time_ns()
            if self._capture is not None:
                self._capture.write_close(recv_ns, self._stream, None, reason)
            self._on_close(recv_ns, opened, reason)
            delay = backoff.next()
            log.warning("%s feed: %s; reconnecting in %.2f s", self.venue.name, reason, delay)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection, url: str, backoff: Backoff) -> None:
        self._ws = ws
        self._close_reason = None
        recv_ns = time.time_ns()
        if self._capture is not None:
            self._capture.write_open(recv_ns, self._stream, url)
        self._on_open(recv_ns, url)
        for text in self.venue.subscribe():
            if self._capture is not None:
                self._capture.write(recv_ns, self._stream, text, cap.SENT)
            await ws.send(text)
        first = True
        capture = self._capture
        stream = self._stream
        while True:
            raw = await ws.recv()
            recv_ns = time.time_ns()
            if capture is not None:
                capture.write(recv_ns, stream, raw)
            if first:  # the new connection delivers: the next drop starts from the shortest delay
                backoff.reset()
                first = False
            self._on_frame(raw, recv_ns)
            await self._carry_out(self.venue.actions(), ws, recv_ns, stream)

    async def _carry_out(self, actions: list[Action], ws: ClientConnection | None, recv_ns: int, stream: int) -> None:
        """Do what the venue asked for: send on ``ws`` (if still open), fetch snapshots, reconnect."""
        for action in actions:
            if isinstance(action, Rest):
                self._request(action)
            elif ws is None:
                continue  # the connection is gone: sends and reconnects are for a socket that no longer exists
            elif isinstance(action, Send):
                if action.after > 0:
                    task = asyncio.create_task(self._send_later(ws, action, stream), name="feed-send-later")
                    self._later.add(task)
                    task.add_done_callback(self._later.discard)
                    continue
                if self._capture is not None:
                    self._capture.write(recv_ns, stream, action.text, cap.SENT)
                with contextlib.suppress(ConnectionClosed):  # the read loop reports the close
                    await ws.send(action.text)
            elif isinstance(action, Reconnect):
                self._close_reason = f"{self.venue.name} asked for a reconnect: {action.reason}"
                await ws.close(1000, "reconnecting")

    async def _send_later(self, ws: ClientConnection, action: Send, stream: int) -> None:
        await asyncio.sleep(action.after)
        if self._ws is ws:  # still the connection the venue meant
            if self._capture is not None:
                self._capture.write(time.time_ns(), stream, action.text, cap.SENT)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(action.text)

    def _request(self, action: Rest) -> None:
        """Start fetching a snapshot unless one for that symbol is already on its way.

        A symbol asked for again within 10 s of its last answer (a snapshot the venue found too
        old, or unusable) waits 0.1, 0.2, 0.4 ... 10 s first: a venue whose REST cache lags, or
        answers something we cannot use, is not polled in a tight loop into its rate limit."""
        sym = action.venue_sym
        task = self._rest_tasks.get(sym)
        if task is not None and not task.done():
            return
        answered = self._rest_answered.get(sym)
        if answered is None or time.monotonic() - answered > 10.0:
            self._rest_backoff.pop(sym, None)
            delay = 0.0
        else:
            delay = self._rest_backoff.setdefault(sym, Backoff(first=0.1, maximum=10.0)).next()
        task = asyncio.create_task(self._fetch(action, self._stream, delay), name=f"snapshot-{sym}")
        task.add_done_callback(self._fetched)
        self._rest_tasks[action.venue_sym] = task

    def _fetched(self, task: asyncio.Task[None]) -> None:
        """A snapshot task that failed unexpectedly (a bug in on_snapshot) is logged, not lost in the task."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s feed: %s failed: %r", self.venue.name, task.get_name(), exc, exc_info=exc)

    async def _fetch(self, action: Rest, stream: int, delay: float = 0.0) -> None:
        url = self.rest_url + action.path
        backoff = Backoff(first=0.1, maximum=10.0)
        if delay:
            await asyncio.sleep(delay)
        while True:
            self.stats["rest_requests"] += 1
            status, body = await asyncio.to_thread(_get, url)
            recv_ns = time.time_ns()
            if self._capture is not None:
                self._capture.write_rest(recv_ns, stream, url, status, body)
            if status == 200:
                self._rest_tasks.pop(action.venue_sym, None)  # the venue may ask again from on_snapshot
                self._rest_answered[action.venue_sym] = time.monotonic()
                self._on_rest(action.venue_sym, url, status, body, recv_ns)
                await self._carry_out(self.venue.actions(), self._ws, recv_ns, stream)
                return
            self._on_rest(action.venue_sym, url, status, body, recv_ns)
            await asyncio.sleep(backoff.next())

    # -- replay ----------------------------------------------------------------------

    async def _read_capture(self, path: Path, speed: float | None) -> None:
        pending: dict[str, str] = {}  # snapshot path asked for -> venue symbol
        opened: set[int] = set()
        pristine = copy.deepcopy(self.venue)  # the venue as a restarted handler would build it
        async for rec in areplay(path, speed):
            kind = rec.kind
            if kind == cap.TEXT or kind == cap.BINARY:
                self._on_frame(rec.payload.decode() if kind == cap.TEXT else rec.payload, rec.recv_ns)
            elif kind == cap.REST:
                url, status, body = parse_rest(rec.payload)
                for rest_path, venue_sym in list(pending.items()):
                    if url.endswith(rest_path):
                        if status == 200:
                            del pending[rest_path]
                        self._on_rest(venue_sym, url, status, body, rec.recv_ns)
                        break
            elif kind == cap.OPEN:
                if opened:
                    # The connection before has no CLOSE record: that handler was stopped or killed,
                    # and a new one appended to its capture. Replay what the new process did: a
                    # fresh venue and a first "connect", exactly as live.
                    self._flush()
                    self.venue = copy.deepcopy(pristine)
                    self._opened = 0
                    opened.clear()
                    pending.clear()
                opened.add(rec.stream)
                self._on_open(rec.recv_ns, rec.payload.decode())
            elif kind == cap.CLOSE:
                pending.clear()
                self._on_close(rec.recv_ns, rec.stream in opened, parse_close(rec.payload)[1])
                opened.discard(rec.stream)
            else:
                continue  # SENT and kinds newer than this reader: nothing to parse
            for action in self.venue.actions():
                if isinstance(action, Rest):  # answered by a later REST record; sends go nowhere
                    pending[action.path] = action.venue_sym
        if pending:
            log.warning("%s replay of %s: snapshots asked for and never answered in the capture: %s",
                        self.venue.name, path, ", ".join(sorted(pending.values())))

    # -- what live and replay share: the same calls with the same times give the same rows ---

    def _on_open(self, recv_ns: int, url: str) -> None:
        self._opened += 1
        self.stats["connects"] += 1
        if self._opened == 1:
            self.out.event(time=recv_ns, kind="connect", detail=f"connected to {url}")
        else:
            self.stats["reconnects"] += 1
            self.out.event(time=recv_ns, kind="reconnect", detail=f"reconnected to {url} (connection {self._opened})")
        self._last_frame = time.monotonic()
        now = time.monotonic()
        for key in self._watched:  # a new connection gets the full stale_after to deliver each symbol
            self._last_row[key] = now

    def _on_close(self, recv_ns: int, opened: bool, reason: str) -> None:
        if opened:
            self.venue.on_disconnect(recv_ns, self.out)
        self.out.event(time=recv_ns, kind="disconnect", detail=reason)
        self._flush()

    def _on_frame(self, raw: str | bytes, recv_ns: int) -> None:
        stats = self.stats
        stats["messages"] += 1
        stats["bytes"] += len(raw)
        self.venue.on_message(raw, recv_ns, self.out)
        now = time.monotonic()
        self._last_frame = now
        if now - self._last_flush >= self.config.flush_ms / 1000:
            self._flush(now)

    def _on_rest(self, venue_sym: str, url: str, status: int, body: bytes, recv_ns: int) -> None:
        if status == 200:
            try:
                self.venue.on_snapshot(venue_sym, body, recv_ns, self.out)
            except ValueError as exc:  # a symbol the venue does not know: a bug worth seeing, not a crash
                self.out.event(time=recv_ns, kind="bad_message", venue_sym=venue_sym,
                               sym=normalize_symbol(venue_sym), detail=f"snapshot from {url} refused: {exc}")
            return
        self.stats["rest_errors"] += 1
        what = f"HTTP {status}: {body[:_DETAIL].decode(errors='replace')}" if status else body.decode(errors="replace")
        self.out.event(time=recv_ns, kind="rest_error", venue_sym=venue_sym, sym=normalize_symbol(venue_sym),
                       detail=f"snapshot request GET {url} failed ({what}); retrying with backoff")

    # -- batches and the queue -------------------------------------------------------

    def _flush(self, now: float | None = None) -> None:
        """Turn the parsed rows into batches and queue them; never waits."""
        self._last_flush = time.monotonic() if now is None else now
        queue = self._queue
        if queue is None:
            return
        if self._lost_rows and not queue.full():
            lost, self._lost_rows = self._lost_rows, 0
            self.out.event(time=time.time_ns(), kind="overflow",
                           detail=f"{lost} rows dropped: the publish queue ({self.config.queue_batches} batches) "
                                  f"was full because the TP at {self.config.tp} did not keep up or was unreachable")
        columns = self.out.take()
        if not columns:
            return
        rows = {table: len(cols["time"]) for table, cols in columns.items()}
        try:
            batches = to_batches(columns, self.registry)
        except DataError as exc:  # a parser bug: say so loudly, publish nothing bad
            self.stats["convert_errors"] += 1
            log.error("%s feed: parsed rows do not convert, %d rows dropped: %s", self.venue.name,
                      sum(rows.values()), exc)
            self.out.event(time=time.time_ns(), kind="bad_message",
                           detail=f"{sum(rows.values())} parsed rows dropped: {exc}")
            return
        stats = self.stats
        if "feed_event" in batches:
            stats["events"].update(columns["feed_event"]["kind"])
        self._seen(columns)
        try:
            queue.put_nowait(batches)
        except asyncio.QueueFull:
            lost = sum(rows.values())
            self._lost_rows += lost
            stats["overflow"] += lost
            stats["overflow_batches"] += 1
            log.warning("%s feed: publish queue full, %d rows dropped", self.venue.name, lost)
            return
        stats["rows"].update(rows)
        stats["batches"] += 1
        stats["queue_max"] = max(stats["queue_max"], queue.qsize())

    def _seen(self, columns: dict[str, dict[str, list[Any]]]) -> None:
        """Note which watched symbols delivered data rows (for the stale watchdog)."""
        now = time.monotonic()
        for table in ("trade", "quote", "l2"):
            cols = columns.get(table)
            if cols is None:
                continue
            for venue_sym in set(cols["venue_sym"]):
                key = str(venue_sym).upper()
                if key in self._watched:
                    self._last_row[key] = now
                    self._stale.discard(key)

    async def _publish(self) -> None:
        queue = self._queue
        assert queue is not None
        if self.config.tp is None:
            while await queue.get() is not None:
                pass
            return
        pub = AsyncPublisher(self.config.tp, token=self.config.token, name=f"feed-{self.venue.name}")
        backoff = Backoff()
        while True:
            try:
                await pub.connect()
                break
            except (OSError, TimeoutError, TickError) as exc:
                if isinstance(exc, RejectedError) and exc.code in FINAL_ERRORS:
                    raise  # a wrong token or role: retrying cannot help
                delay = backoff.next()
                log.warning("%s feed: cannot connect to the TP at %s (%s); retrying in %.2f s", self.venue.name,
                            self.config.tp, exc, delay)
                await asyncio.sleep(delay)
        try:
            while (batches := await queue.get()) is not None:
                for table, batch in batches.items():
                    try:
                        await pub.publish(table, batch)
                        self.stats["published_batches"] += 1
                    except TickError as exc:
                        if isinstance(exc, RejectedError) and exc.code in FINAL_ERRORS:
                            raise
                        # A table or column this TP does not have, an update it refused: the rest still goes.
                        self.stats["publish_errors"] += 1
                        log.error("%s feed: the TP at %s did not take %d %s rows: %s", self.venue.name,
                                  self.config.tp, batch.num_rows, table, exc)
        finally:
            try:
                await pub.close()
            except (TickError, TimeoutError, OSError) as exc:
                log.error("%s feed: the TP at %s did not confirm the last updates as written: %s",
                          self.venue.name, self.config.tp, exc)

    # -- watchdog --------------------------------------------------------------------

    async def _watchdog(self, live: bool) -> None:
        cfg = self.config
        tick = min(cfg.flush_ms / 1000, cfg.idle_timeout / 4, cfg.stale_after / 4, (self.venue.keepalive or 1) / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - self._last_flush >= cfg.flush_ms / 1000:
                self._flush(now)
            if not live:
                continue
            if self._capture is not None:
                self._capture.poll()
            ws = self._ws
            keepalive = self.venue.keepalive
            if ws is not None and keepalive is not None and now - max(self._last_frame, self._last_ping) > keepalive:
                self._last_ping = now
                text = self.venue.ping()
                if self._capture is not None:
                    self._capture.write(time.time_ns(), self._stream, text, cap.SENT)
                with contextlib.suppress(ConnectionClosed):  # the read loop reports the close
                    await ws.send(text)
            if ws is not None and now - self._last_frame > cfg.idle_timeout and self._close_reason is None:
                self._close_reason = (f"idle: no frame from {self.venue.name} for {cfg.idle_timeout:g} s "
                                     f"(idle_timeout); the connection is presumed dead")
                ws.transport.abort()
            if ws is not None:
                self._check_stale(now)

    def _check_stale(self, now: float) -> None:
        after = self.config.stale_after
        for key, venue_sym in self._watched.items():
            last = self._last_row.get(key, now)
            if key not in self._stale and now - last > after:
                self._stale.add(key)
                self.out.event(time=time.time_ns(), kind="stale", venue_sym=venue_sym,
                               sym=normalize_symbol(venue_sym),
                               detail=f"no trade, quote or l2 row for {venue_sym} in {after:g} s (stale_after) "
                                      f"while the connection is alive; the symbol is quiet or its channel stalled")


def _get(url: str) -> tuple[int, bytes]:
    """GET ``url`` (in a worker thread): (status, body), or (0, why) when there was no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=_REST_TIMEOUT) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, a malformed URL
        return 0, f"no answer: {type(exc).__name__}: {getattr(exc, 'reason', exc)}".encode()


async def replay(path: Path, venue: Venue, config: FeedConfig, speed: float | None = None) -> dict[str, Any]:
    """Run a capture's frames through ``venue`` to ``config.tp``, paced at ``speed`` times real time (None: max)."""
    return await Feed(venue, config).replay(path, speed)
