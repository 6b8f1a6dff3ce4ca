"""The strategy engine: a :class:`Strategy` base class, simulated matching and P&L accounting.

A strategy is an :class:`~rte.engine.Engine`: it subscribes to ``trade`` and ``quote`` (and
to a bar table if it overrides :meth:`Strategy.on_bar`), and publishes its ``orders``, the
``fill`` rows the simulated matching gives them, and its ``position`` per sym. Run it with
:func:`rte.engine.run_forever` (``tick strategy run FILE``): after a crash the runner replays
today's log, the strategy rebuilds exactly the same state, and only what was not yet logged
is published. Its own logged orders and fills are compared with the replayed ones; a
difference means the strategy is not deterministic and is reported loudly.

Simulated matching (one fill per order, for its whole quantity; displayed sizes are not
consumed):

* a **market** order fills at once at the best price across venues' latest quotes (a buy
  at the lowest ask, a sell at the highest bid; ties go to the venue quoted first today).
  With no quote on that side yet, it waits and fills on the first quote row that has one;
* a **limit** order that is marketable when placed fills at once at the best quote price
  (which is at least as good as the limit). Otherwise it rests, and fills on the first
  later quote row (in log order) whose ask is at or below a buy limit (bid at or above a
  sell limit), *at that quote's price*: what a resting order would get when a venue's
  quote crosses it, and never worse than the limit.

Accounting, per sym, average-cost method: buying into a long (or selling into a short)
moves the average cost to the quantity-weighted mean; a fill against the position
realizes ``closed qty x (fill price - average cost)`` (sign-adjusted for shorts); a fill
that flips the position opens the remainder at the fill price. Unrealized P&L is
``position x (mark - average cost)``, marked at the mid of the best bid and best ask
across venues. A ``position`` row goes out after each fill and whenever a quote update
moves the mark of a sym held, at most one row per sym per input update.

Determinism: "now" (:attr:`Strategy.now`) is the latest event time of the update in hand;
order ids are 1, 2, ... per strategy and day. At end of day the state rolls: orders,
positions and quotes start again from nothing (the runner replays only the current day, so
carrying a position over would make a restarted strategy differ from one that ran on);
override :meth:`Strategy.on_new_day` to clear a subclass's own state too.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rte.engine import Engine, EngineError, Output
from tickerplant.message import Message

TS = pa.timestamp("ns", tz="UTC")
_ZERO_TOL = 1e-9  # a position this small (relative to the fill) is flat: float residue of e.g. 0.1 + 0.2 - 0.3


@dataclass
class Position:
    """One sym's position and P&L (average-cost method)."""

    qty: float = 0.0  # signed: > 0 long, < 0 short
    avg_cost: float = 0.0  # average price of the open quantity; 0 when flat
    realized: float = 0.0
    mark: float = math.nan  # the mid it is marked to (NaN until a two-sided quote)

    @property
    def unrealized(self) -> float:
        if self.qty == 0.0 or math.isnan(self.mark):
            return 0.0
        return self.qty * (self.mark - self.avg_cost)

    @property
    def pnl(self) -> float:
        return self.realized + self.unrealized

    def fill(self, qty: float, price: float) -> None:
        """Apply a fill of signed ``qty`` (> 0 bought, < 0 sold) at ``price``."""
        old = self.qty
        new = old + qty
        if abs(new) <= _ZERO_TOL * max(abs(old), abs(qty)):
            new = 0.0
        if old == 0.0 or (old > 0) == (qty > 0):  # opening or adding
            self.avg_cost = (abs(old) * self.avg_cost + abs(qty) * price) / abs(new)
        else:  # reducing, closing or flipping
            closed = min(abs(old), abs(qty))
            self.realized += closed * (price - self.avg_cost) * (1.0 if old > 0 else -1.0)
            if new == 0.0:
                self.avg_cost = 0.0
            elif (new > 0) != (old > 0):  # flipped: the remainder opened at this price
                self.avg_cost = price
        self.qty = new


@dataclass
class Order:
    """An order the strategy placed; ``limit`` None = market."""

    order_id: int
    sym: str
    side: str  # buy | sell
    qty: float
    limit: float | None
    time: int  # event time placed, ns


@dataclass
class _Book:
    """Latest quote per venue for one sym, in the order venues were first quoted today."""

    bid: dict[str, float] = field(default_factory=dict)
    ask: dict[str, float] = field(default_factory=dict)

    def best(self, side: str) -> tuple[float, str] | None:
        """The best price a ``side`` order gets (buy: lowest ask) and its venue."""
        quotes = self.ask if side == "buy" else self.bid
        best: tuple[float, str] | None = None
        for venue, price in quotes.items():
            if math.isnan(price):
                continue
            if best is None or (price < best[0] if side == "buy" else price > best[0]):
                best = (price, venue)
        return best

    def mid(self) -> float:
        bid, ask = self.best("sell"), self.best("buy")
        return (bid[0] + ask[0]) / 2 if bid is not None and ask is not None else math.nan


def _crosses(side: str, price: float, limit: float | None) -> bool:
    return limit is None or (price <= limit if side == "buy" else price >= limit)


class Strategy(Engine):
    """Subclass it and override ``on_trade``, ``on_quote`` and/or ``on_bar``; trade with ``buy``/``sell``.

    Class attributes set the defaults; keyword arguments to the constructor override any of
    them (``VwapReversion(threshold_bps=20)``). ``name`` defaults to the class name.
    """

    bars = "bar_1m"  # the bar table on_bar reads
    outputs = ("orders", "fill", "position")
    verify_outputs = ("orders", "fill")  # the runner checks the replay regenerates them exactly

    def __init__(self, name: str | None = None, **params: Any) -> None:
        for key, value in params.items():
            if key.startswith("_") or not hasattr(type(self), key) or callable(getattr(type(self), key)):
                raise TypeError(f"{type(self).__name__} has no parameter {key!r}")
            setattr(self, key, value)
        self.name = name or getattr(type(self), "name", None) or type(self).__name__
        # Rows of this strategy only: several strategies may share the orders/fill/position tables.
        self.output_key = ("strategy", self.name)
        self.inputs = ("trade", "quote", self.bars) if type(self).on_bar is not Strategy.on_bar else ("trade", "quote")
        self.now = 0  # event time (ns) of the latest row of the update in hand
        self._reset()

    # -- what a subclass overrides --------------------------------------------------------

    def on_trade(self, batch: pa.RecordBatch) -> None:
        """New trades (an Arrow batch of the ``trade`` table)."""

    def on_quote(self, batch: pa.RecordBatch) -> None:
        """New quotes; the book, marks and resting orders have already been updated with them."""

    def on_bar(self, bar: pa.RecordBatch) -> None:
        """New rows of the bar table (``bars``)."""

    def on_new_day(self, date: str) -> None:
        """The day ``date`` closed and the base state was cleared; clear your own state here."""

    # -- trading --------------------------------------------------------------------------

    def buy(self, sym: str, qty: float, limit: float | None = None) -> int:
        """Place a buy order; returns its order id. It may fill at once (see the module docstring)."""
        return self._place(sym, "buy", qty, limit)

    def sell(self, sym: str, qty: float, limit: float | None = None) -> int:
        return self._place(sym, "sell", qty, limit)

    def position(self, sym: str) -> float:
        """Signed quantity held in ``sym``."""
        pos = self.positions.get(sym)
        return pos.qty if pos is not None else 0.0

    def pnl(self, sym: str | None = None) -> float:
        """Realized + unrealized P&L of ``sym``, or of every sym."""
        if sym is not None:
            pos = self.positions.get(sym)
            return pos.pnl if pos is not None else 0.0
        return sum(pos.pnl for pos in self.positions.values())

    def open_orders(self, sym: str | None = None) -> list[Order]:
        return [o for o in self.resting if sym is None or o.sym == sym]

    def mid(self, sym: str) -> float:
        """Mid of the best bid and ask across venues (NaN until both sides are quoted)."""
        book = self.books.get(sym)
        return book.mid() if book is not None else math.nan

    # -- the engine -----------------------------------------------------------------------

    def on_upd(self, msg: Message) -> list[Output]:
        batch = msg.data
        if batch.num_rows == 0:
            return []
        self.now = int(pc.max(batch.column("time")).cast(pa.int64()).as_py())
        if msg.table == "quote":
            self._on_quotes(batch)
            self.on_quote(batch)
        elif msg.table == "trade":
            self.on_trade(batch)
        elif msg.table == self.bars:
            self.on_bar(batch)
        return self._emit()

    def on_eod(self, date: str) -> list[Output]:
        self._reset()
        self.on_new_day(date)
        return []

    # -- internals ------------------------------------------------------------------------

    def _reset(self) -> None:
        self.positions: dict[str, Position] = {}
        self.books: dict[str, _Book] = {}
        self.resting: list[Order] = []
        self.next_order_id = 1
        self._orders: list[Order] = []
        self._fills: list[tuple[Order, float, str, int]] = []  # order, price, venue, time
        self._dirty: dict[str, None] = {}  # syms whose position row is due (insertion-ordered)

    def _place(self, sym: str, side: str, qty: float, limit: float | None) -> int:
        if not (qty > 0 and math.isfinite(qty)):
            raise ValueError(f"{self.name}: order quantity must be a positive number, got {qty!r}")
        if limit is not None and not (limit > 0 and math.isfinite(limit)):
            raise ValueError(f"{self.name}: limit price must be a positive number or None, got {limit!r}")
        order = Order(self.next_order_id, sym, side, float(qty), None if limit is None else float(limit), self.now)
        self.next_order_id += 1
        self._orders.append(order)
        book = self.books.get(sym)
        best = book.best(side) if book is not None else None
        if best is not None and _crosses(side, best[0], order.limit):
            self._fill(order, best[0], best[1], self.now)
        else:
            self.resting.append(order)
        return order.order_id

    def _fill(self, order: Order, price: float, venue: str, time: int) -> None:
        pos = self.positions.setdefault(order.sym, Position(mark=self.mid(order.sym)))
        pos.fill(order.qty if order.side == "buy" else -order.qty, price)
        self._fills.append((order, price, venue, time))
        self._dirty[order.sym] = None

    def _on_quotes(self, batch: pa.RecordBatch) -> None:
        codes = pc.dictionary_encode(batch.column("sym"))
        sym_idx = codes.indices.to_numpy(zero_copy_only=False)
        syms: list[str] = codes.dictionary.to_pylist()
        venues_enc = pc.dictionary_encode(pc.fill_null(batch.column("exchange"), ""))
        venue_idx = venues_enc.indices.to_numpy(zero_copy_only=False)
        venues: list[str] = venues_enc.dictionary.to_pylist()
        bid = batch.column("bid_price").to_numpy(zero_copy_only=False).astype(np.float64)
        ask = batch.column("ask_price").to_numpy(zero_copy_only=False).astype(np.float64)
        times = batch.column("time").cast(pa.int64()).to_numpy()
        if self.resting:
            self._match(syms, sym_idx, venues, venue_idx, bid, ask, times)
        # The latest quote per (sym, venue) of this batch updates the book.
        key = sym_idx.astype(np.int64) * len(venues) + venue_idx
        _, first_from_end = np.unique(key[::-1], return_index=True)
        last = len(key) - 1 - first_from_end
        for i in last[np.argsort(last)]:  # in log order, so venues enter the book deterministically
            book = self.books.setdefault(syms[sym_idx[i]], _Book())
            venue = venues[venue_idx[i]]
            book.bid[venue], book.ask[venue] = float(bid[i]), float(ask[i])
        for sym in syms:
            pos = self.positions.get(sym)
            if pos is None:
                continue
            mark = self.books[sym].mid()
            if not (mark == pos.mark or (math.isnan(mark) and math.isnan(pos.mark))):
                pos.mark = mark
                if pos.qty != 0.0:
                    self._dirty[sym] = None

    def _match(self, syms: list[str], sym_idx: np.ndarray[Any, Any], venues: list[str],
               venue_idx: np.ndarray[Any, Any], bid: np.ndarray[Any, Any], ask: np.ndarray[Any, Any],
               times: np.ndarray[Any, Any]) -> None:
        """Fill resting orders on the first quote row of this batch that crosses them."""
        code = {s: i for i, s in enumerate(syms)}
        still: list[Order] = []
        for order in self.resting:
            c = code.get(order.sym)
            if c is None:
                still.append(order)
                continue
            price = ask if order.side == "buy" else bid
            hits = (sym_idx == c) & ~np.isnan(price)
            if order.limit is not None:
                hits &= (price <= order.limit) if order.side == "buy" else (price >= order.limit)
            rows = np.flatnonzero(hits)
            if len(rows) == 0:
                still.append(order)
                continue
            i = rows[0]
            self._fill(order, float(price[i]), venues[venue_idx[i]], int(times[i]))
        self.resting = still

    def _emit(self) -> list[Output]:
        out: list[Output] = []
        if self._orders:
            orders = self._orders
            out.append(("orders", pa.RecordBatch.from_pydict({
                "time": pa.array([o.time for o in orders], pa.int64()).cast(TS),
                "sym": pa.array([o.sym for o in orders], pa.string()),
                "strategy": pa.array([self.name] * len(orders), pa.string()),
                "order_id": pa.array([o.order_id for o in orders], pa.int64()),
                "side": pa.array([o.side for o in orders], pa.string()),
                "qty": pa.array([o.qty for o in orders], pa.float64()),
                "limit_price": pa.array([o.limit for o in orders], pa.float64()),
            })))
            self._orders = []
        if self._fills:
            fills = self._fills
            out.append(("fill", pa.RecordBatch.from_pydict({
                "time": pa.array([f[3] for f in fills], pa.int64()).cast(TS),
                "sym": pa.array([f[0].sym for f in fills], pa.string()),
                "strategy": pa.array([self.name] * len(fills), pa.string()),
                "order_id": pa.array([f[0].order_id for f in fills], pa.int64()),
                "side": pa.array([f[0].side for f in fills], pa.string()),
                "qty": pa.array([f[0].qty for f in fills], pa.float64()),
                "price": pa.array([f[1] for f in fills], pa.float64()),
                "exchange": pa.array([f[2] for f in fills], pa.string()),
            })))
            self._fills = []
        if self._dirty:
            syms = list(self._dirty)
            pos = [self.positions[s] for s in syms]
            out.append(("position", pa.RecordBatch.from_pydict({
                "time": pa.array([self.now] * len(syms), pa.int64()).cast(TS),
                "sym": pa.array(syms, pa.string()),
                "strategy": pa.array([self.name] * len(syms), pa.string()),
                "position": pa.array([p.qty for p in pos], pa.float64()),
                "avg_cost": pa.array([p.avg_cost for p in pos], pa.float64()),
                "realized_pnl": pa.array([p.realized for p in pos], pa.float64()),
                "unrealized_pnl": pa.array([p.unrealized for p in pos], pa.float64()),
                "mark": pa.array([None if math.isnan(p.mark) else p.mark for p in pos], pa.float64()),
            })))
            self._dirty = {}
        return out


def load(path: str | Path) -> type[Strategy]:
    """The one :class:`Strategy` subclass defined in the Python file ``path``."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"strategy file {str(path)!r} not found")
    module_name = f"_strategy_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise EngineError(f"{path} is not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    found = [obj for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, Strategy) and obj.__module__ == module_name
             and not inspect.isabstract(obj)]
    if not found:
        raise EngineError(f"{path} defines no Strategy subclass: write `class MyStrategy(Strategy): ...` "
                          f"(from rte import Strategy)")
    if len(found) > 1:
        raise EngineError(f"{path} defines {len(found)} Strategy subclasses ({', '.join(c.__name__ for c in found)}); "
                          f"keep one per file")
    return found[0]


__all__ = ["Order", "Position", "Strategy", "load"]
