"""The venue half of a feed adapter: sans I/O, raw messages in, normalized rows out.

Each exchange adapter is a :class:`Venue`: it says what to send after connecting, turns
every raw WebSocket message (and REST snapshot answer) into rows of an
:class:`~feedhandlers.normalize.Out`, keeps its order books and sequence state, and asks
the I/O shell for what it needs next (a REST snapshot, a message to send, a reconnect) through
:meth:`Venue.actions`. It never touches a socket or a clock: the shell stamps each
message's receive time, so a capture replayed through the same Venue gives the same rows.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from feedhandlers.normalize import Out

CHANNELS = frozenset({"trade", "quote", "l2"})


@dataclass(frozen=True, slots=True)
class Rest:
    """Fetch ``rest_url + path`` (GET) and hand the body to :meth:`Venue.on_snapshot` for ``venue_sym``."""

    venue_sym: str
    path: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``text`` on the WebSocket (a subscription, a resubscription after a bad book, a pong),
    ``after`` seconds from now (on the same connection only: a reconnect forgets it)."""

    text: str
    after: float = 0.0


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close the connection and connect again (the venue announced maintenance or asked for it)."""

    reason: str


Action = Rest | Send | Reconnect


class ResyncBackoff:
    """How long to wait before resubscribing a book that was lost, per book.

    The first loss after ``quiet`` seconds without one resubscribes at once; each further loss
    within ``quiet`` seconds of the previous one waits twice as long (``first``, 2x, 4x ... up
    to ``maximum``). So a book the venue keeps breaking, or that we keep misreading, costs one
    subscription a minute rather than one per message: venues rate-limit subscriptions and
    disconnect clients that flood them. Timed by receive times, so it stays sans I/O.
    """

    __slots__ = ("_losses", "first", "maximum", "quiet_ns")

    def __init__(self, first: float = 1.0, maximum: float = 60.0, quiet: float = 60.0) -> None:
        self.first = first
        self.maximum = maximum
        self.quiet_ns = int(quiet * 1e9)
        self._losses: dict[str, tuple[int, int]] = {}  # book -> (receive time of its last loss, losses in a row)

    def delay(self, book: str, recv_ns: int) -> float:
        """Seconds to wait before resubscribing ``book``, lost at ``recv_ns``."""
        last = self._losses.get(book)
        streak = 0 if last is None or recv_ns - last[0] > self.quiet_ns else last[1] + 1
        self._losses[book] = (recv_ns, streak)
        return 0.0 if streak == 0 else min(self.first * 2 ** (streak - 1), self.maximum)


class Venue(abc.ABC):
    """One exchange's message formats and book rules; one instance per connection's lifetime of state."""

    name: str  # the `exchange` column, e.g. "binance"
    ws_url: str  # default endpoints; the shell's --ws-url / --rest-url override them
    rest_url: str
    # Application-level keepalive: venues that close a connection with no traffic from the
    # client (OKX after 30 s, Bybit after 10 min without a ping) set ``keepalive`` to the
    # seconds of quiet after which the shell sends :meth:`ping`. None: the venue needs none.
    keepalive: float | None = None

    def __init__(self, symbols: Sequence[str], channels: Collection[str] = CHANNELS) -> None:
        unknown = set(channels) - CHANNELS
        if unknown:
            raise ValueError(f"unknown channel(s) {sorted(unknown)}; channels are {sorted(CHANNELS)}")
        if not symbols:
            raise ValueError(f"{self.name}: give at least one symbol, e.g. --symbols BTCUSDT,ETHUSDT")
        self.symbols = list(symbols)
        self.channels = frozenset(channels)
        self._actions: list[Action] = []

    def options(self) -> dict[str, Any]:
        """Constructor keywords beyond symbols and channels (e.g. a book depth): a capture's header
        records them, so a replay builds the venue that made the capture."""
        return {}

    def url(self, ws_url: str) -> str:
        """The URL to connect to (venues that subscribe by URL path override this)."""
        return ws_url

    def ping(self) -> str:
        """The keepalive message the shell sends every :attr:`keepalive` seconds of quiet."""
        raise TypeError(f"{self.name} sets no keepalive, so it has no ping message")

    @abc.abstractmethod
    def subscribe(self) -> list[str]:
        """Messages to send once connected."""

    @abc.abstractmethod
    def on_message(self, raw: str | bytes, recv_ns: int, out: Out) -> None:
        """Parse one message; append its rows and any feed events to ``out``. Never raises on bad input:
        a message that cannot be parsed becomes a ``bad_message`` event and no row."""

    def on_snapshot(self, venue_sym: str, body: bytes, recv_ns: int, out: Out) -> None:
        """The answer to a :class:`Rest` action (venues that take REST snapshots override this)."""
        raise TypeError(f"{self.name} asks for no REST snapshots, so none can be answered")

    @abc.abstractmethod
    def on_disconnect(self, recv_ns: int, out: Out) -> None:
        """The connection dropped: reset per-connection state; every book is stale until snapshotted again."""

    def actions(self) -> list[Action]:
        """What the shell should do now, in order; each action is returned once."""
        taken, self._actions = self._actions, []
        return taken

    def _request(self, action: Action) -> None:
        if action not in self._actions:
            self._actions.append(action)
