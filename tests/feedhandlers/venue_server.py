"""A local stand-in for an exchange: a WebSocket server playing scripted frames, and a REST server.

:class:`VenueServer` listens on an ephemeral port (``ws://127.0.0.1:PORT``, any path). Each
client connection gets the next script of ``scripts`` (the last one again once they run
out); a script starts after the client's first message (its subscription) and is a list of
steps: a ``str``/``bytes`` frame to send, :class:`Drop` (cut the TCP connection, no close
frame), :class:`Close` (a clean close frame), :class:`Sleep` (pause) or :class:`Until`
(wait for a condition, e.g. that a REST snapshot was served). After its script a
connection stays open and silent. Everything each client sent is kept in ``received``.

:class:`RestServer` serves ``routes``: path (with query) -> a list of ``(status, body)``
answers given in turn (the last one again once they run out); unknown paths get 404.
Requests are kept in ``requests``. It runs ``http.server`` in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@dataclass(frozen=True)
class Drop:
    """Cut the connection without a close frame (as a crashed venue or a broken network would)."""


@dataclass(frozen=True)
class Close:
    code: int = 1001
    reason: str = "going away"


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Until:
    """Wait (polling, at most ``timeout`` s) until ``condition()`` holds."""

    condition: Callable[[], Any]
    timeout: float = 10.0


Step = str | bytes | Drop | Close | Sleep | Until


class VenueServer:
    """``async with VenueServer([[frame, ...], [frame, Drop()], ...]) as ws: ws.url``"""

    def __init__(self, scripts: Sequence[Sequence[Step]]) -> None:
        if not scripts:
            raise ValueError("give at least one script (a list of steps) for the first connection")
        self.scripts = [list(s) for s in scripts]
        self.received: list[list[str | bytes]] = []  # per connection, in order
        self.connections = 0
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> VenueServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        n = self.connections
        self.connections += 1
        got: list[str | bytes] = []
        self.received.append(got)
        script = self.scripts[min(n, len(self.scripts) - 1)]
        reader = asyncio.create_task(self._record(ws, got))
        try:
            while not got:  # the script starts after the subscription
                if reader.done():
                    return
                await asyncio.sleep(0.005)
            for step in script:
                if isinstance(step, str | bytes):
                    await ws.send(step)
                elif isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Until):
                    deadline = time.monotonic() + step.timeout
                    while not step.condition():
                        if time.monotonic() > deadline:
                            raise AssertionError(f"venue server: timed out waiting for {step.condition}")
                        await asyncio.sleep(0.005)
                elif isinstance(step, Drop):
                    ws.transport.abort()
                    return
                elif isinstance(step, Close):
                    await ws.close(step.code, step.reason)
                    return
            await reader  # stay open (silent) until the client goes
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()

    @staticmethod
    async def _record(ws: ServerConnection, got: list[str | bytes]) -> None:
        try:
            async for message in ws:
                got.append(message)
        except ConnectionClosed:
            pass


class RestServer:
    """``with RestServer({"/api/v3/depth?symbol=X&limit=1000": [(200, body)]}) as rest: rest.url``"""

    def __init__(self, routes: dict[str, list[tuple[int, bytes]]]) -> None:
        self.routes = {path: list(answers) for path, answers in routes.items()}
        self.requests: list[str] = []
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = owner._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest-server", daemon=True)

    def _answer(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(path)
            answers = self.routes.get(path)
            if not answers:
                return 404, b'{"code": -1121, "msg": "Invalid symbol."}'
            i = self._served.get(path, 0)
            self._served[path] = i + 1
            return answers[min(i, len(answers) - 1)]

    def served(self, path: str | None = None) -> int:
        """Requests answered so far (for ``path``, or all)."""
        with self._lock:
            return len(self.requests) if path is None else self.requests.count(path)

    def __enter__(self) -> RestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
