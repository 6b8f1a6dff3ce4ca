"""A simulated multi-venue market: trades, quotes and L2 books, with injectable faults, fully vectorized.

The model, per symbol ``s`` and venue ``v`` (a *pair* ``(s, v)``):

* a common log-mid follows a geometric random walk: every event on ``s`` (trade or quote,
  any venue) adds a log-return drawn from N(0, ``sigma``);
* a quote on ``v`` re-prices the venue's book around the venue mid
  ``mid * (1 + offset[s, v] + noise)``: a small persistent per-venue offset (a few basis
  points) plus tiny per-quote noise, rounded to the symbol's tick with a spread of 1-4
  ticks, so ``bid < ask`` always; sizes are random, positive and rounded to a lot;
* a trade executes against the venue's standing book (its last published quote): at the
  ask when the aggressor ``side`` is "buy", at the bid when it is "sell";
* ``time`` is the venue event time, spread evenly up to the requested end time and
  non-decreasing across calls; ``recv_time = time +`` a positive per-venue latency
  (a fixed base plus exponential jitter).

Which pair an event belongs to is drawn uniformly, except that the first
``len(syms) * len(venues)`` events ever are one quote per pair (the opening, so every trade
has a quote to execute against) and after that every ``HEARTBEAT_EVERY``-th event visits
the pairs round-robin. So on a clean run **two consecutive events (trade or quote) of one
pair are never more than** ``max_normal_gap_events = HEARTBEAT_EVERY * pairs`` **events
apart** (mean: ``pairs``): 96 events for 4 syms x 3 venues, i.e. 4.8 ms at 20,000 events/s
(``step`` spreads its events evenly, so in time it is that many times the step's spacing;
``run`` keeps the spacing near ``1 / rate`` unless ``publish`` stalls for over 100 ms).

**L2 books** (``l2_depth > 0``). Each pair's book has ``l2_depth`` levels a side: the top
is the quote (same price, same size) and the other levels sit on a per-symbol grid of
``L2_LEVEL_REL`` (0.5 bp) of the starting price strictly behind it, with sizes that are a
fixed hash of (pair, side, price), so a level keeps its size while it stays in the book.
The pair's first quote publishes the whole book (``is_snapshot`` true); every later quote
publishes one update: the rows for levels removed (size 0), added or re-sized, bids then
asks, the top of each side always included; a level whose size did not change is not sent
again (the old top that becomes the level behind the new one keeps its price, and its size
if its grid size happens to be the size it had as the top). So the top of a book rebuilt from the ``l2``
rows (:class:`feedhandlers.book.Book`) is the quote published at the same time, and with
L2 on the quotes are marked ``derived`` true (top of the L2 book); without it, false (the
venue's ticker). Bid levels that would fall at or below zero are left out.

**Sequence numbers.** ``trade.seq`` is the venue's trade number, per venue across its
symbols, gap-free from 1 (``trade_id`` is the same number as a 12-digit zero-padded
string, so string order is numeric order). ``l2.seq_first == l2.seq_last`` is the book's
update id, per pair, gap-free from 1 (the opening snapshot); every row of one update
carries it. Quotes carry no sequence number. ``venue_sym`` is left null: the simulated
venues use the normalized symbol.

**Injected faults**, all off by default, drawn from a second random stream (so gaps and
outliers overlay the clean run of the same seed: same quotes, same trades, minus the
dropped rows and with the outlier prices), deterministic for a seed and sequence of steps:

* ``gaps``: probability, per trade and per L2 update, that a gap starts there; it drops
  1-``GAP_MAX_LEN`` consecutive trades of one venue (seq numbers skipped) or updates of
  one book (update ids skipped). The next update of that book after a gap is a full
  snapshot, as a venue re-sends a book after a resync, so a rebuilt book is right again
  from there. A gap never drops a venue's or book's first row, a heartbeat event, the
  last event before a stale period, or the last row of a step (so every gap is visible
  within the step that made it), and so never lengthens a pair's silence. With
  ``gap_events`` the simulator also publishes what a feed handler would: ``feed_event``
  ``gap`` rows (and ``resync`` for books) at the time the gap is seen.
* ``stale``: probability, per event, that its pair then goes silent (no trade, quote or
  L2 row) for ``stale_ns`` while the others go on. Silenced trades take no seq numbers.
* ``outliers``: probability, per trade, of a bad print ``OUTLIER_MIN``-``OUTLIER_MAX``
  (5-20%) away from the venue's mid, up or down, on the tick (it keeps its seq).

Everything injected is recorded in :attr:`Simulator.injected` (a pyarrow Table,
:data:`INJECTED_SCHEMA`; :meth:`Simulator.take_injected` hands it over and clears it), one
row per fault: ``kind`` gap | stale | outlier; ``table`` trade | l2 (null for stale);
``exchange``; ``sym`` (null for a trade gap: trade seq is per venue); ``start``/``end``:
gap: time of the first dropped row / of the row that carries ``got``, stale: time of the
pair's last event before the silence / ``start + stale_ns`` (no row of the pair after the
``start`` event has a time <= ``end``), outlier: the trade's time (both); ``expected``/
``got``: gap: the first missing and the next published seq or update id; ``seq``: the
outlier trade's seq; ``price``/``mid``: the outlier price and the venue's quote mid then.

A clean run injects nothing: no seq or update id is ever skipped, no pair is silent
longer than ``max_normal_gap_events``, and every trade is at its venue's bid or ask
(spreads are 1-4 ticks; an outlier is at least 5% away from the venue's mid).

:meth:`Simulator.step` draws every random number for a batch in a handful of numpy calls
and builds the Arrow columns from numpy buffers; there is no Python loop per row (only
per venue, and per injected stale period). Measured on the 2-core development VM (4 syms
x 3 venues, 30% trades, Arrow batches included, best of 5), everything off: about 5.6M
events/s for ``step(1_000_000)``, 4.3M/s for steps of 10k-100k events, 3.1M/s for steps
of 1k (a fixed cost of ~0.2 ms per step), as before L2 and faults existed. With
``l2_depth=10`` (6.8 ``l2`` rows per event: the top of both sides, the old tops and ~2 grid
levels a side moving per quote) 0.9-1.0M events/s for steps of 10k-100k (1.25M/s for 1M),
i.e. ~6-7M ``l2`` rows/s; ``l2_depth=20`` 0.8-0.9M/s; faults cost next to nothing.

:meth:`Simulator.run` paces ``step`` calls in real time for ``make demo`` and benchmarks::

    sim = Simulator(seed=1, l2_depth=10, gaps=1e-4, outliers=1e-4)
    sim.run(publisher.publish, rate=50_000, duration=10)
    truth = sim.take_injected()
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickerplant.exceptions import SchemaError
from tickerplant.schema import TIMESTAMP, Registry

__all__ = ["DEFAULT_SYMS", "DEFAULT_VENUES", "INJECTED_SCHEMA", "Instrument", "Simulator"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Instrument:
    """Starting price, tick size ``1 / ticks_per_unit`` and lot size ``1 / lots_per_unit``."""

    price: float
    ticks_per_unit: int
    lots_per_unit: int


# Known names get sensible prices; ticks are fine enough that one tick is < ~2e-5 of the
# price, so rounding barely disturbs the random walk.
_KNOWN: dict[str, Instrument] = {
    "BTCUSD": Instrument(60_000.0, 10, 10_000),
    "ETHUSD": Instrument(3_000.0, 100, 1_000),
    "SOLUSD": Instrument(150.0, 1_000, 100),
    "XRPUSD": Instrument(0.6, 100_000, 1),
    "ADAUSD": Instrument(0.45, 100_000, 1),
    "DOGEUSD": Instrument(0.15, 1_000_000, 1),
    "LTCUSD": Instrument(80.0, 1_000, 100),
    "AVAXUSD": Instrument(35.0, 10_000, 100),
}
_OTHER = Instrument(100.0, 1_000, 100)
DEFAULT_SYMS: tuple[str, ...] = tuple(_KNOWN)
DEFAULT_VENUES: tuple[str, ...] = tuple(f"SIM{chr(ord('A') + i)}" for i in range(26))

_TRADE_COLS = ("time", "sym", "exchange", "price", "size", "side", "trade_id", "seq", "recv_time")
_QUOTE_COLS = (
    "time", "sym", "exchange", "bid_price", "bid_size", "ask_price", "ask_size", "recv_time", "derived",
)
_L2_COLS = (
    "time", "sym", "exchange", "side", "price", "size", "is_snapshot", "seq_first", "seq_last", "recv_time",
)
_EVENT_COLS = ("time", "sym", "exchange", "kind", "detail", "expected", "got")
_ID_DIGITS = 12
# L2 candidate-row code (Simulator._l2_codes) -> 0 removal, 1 top, 2 grid level.
_L2_KIND = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)

# The ground truth of injected faults: one row per gap, stale period or outlier print.
INJECTED_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),  # gap | stale | outlier
    pa.field("table", pa.string()),  # gap: trade | l2; outlier: trade; stale: null (every table)
    pa.field("exchange", pa.string(), nullable=False),
    pa.field("sym", pa.string()),  # null for a trade gap (trade seq is per venue)
    pa.field("start", TIMESTAMP, nullable=False),
    pa.field("end", TIMESTAMP, nullable=False),
    pa.field("expected", pa.int64()),  # gap: first missing seq / update id
    pa.field("got", pa.int64()),  # gap: the next one published
    pa.field("seq", pa.int64()),  # outlier: the trade's seq
    pa.field("price", pa.float64()),  # outlier: the printed price
    pa.field("mid", pa.float64()),  # outlier: the venue's quote mid at the time
])


def _names(arg: Sequence[str] | int, defaults: Sequence[str], fallback: str, what: str) -> list[str]:
    if isinstance(arg, int):
        if arg < 1:
            raise ValueError(f"need at least one {what}, got {arg}")
        return [defaults[i] if i < len(defaults) else f"{fallback}{i + 1}" for i in range(arg)]
    names = list(arg)
    if not names:
        raise ValueError(f"need at least one {what}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique, got {names}")
    return names


def _probability(value: float, what: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a probability within [0, 1], got {value}")
    return float(value)


def _timestamps(values: I64) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(TIMESTAMP, len(values), [None, pa.py_buffer(values)])


def _take_strings(dictionary: pa.Array, indices: npt.NDArray[np.integer]) -> pa.Array:
    return dictionary.take(pa.array(indices))


# The 4-byte ASCII text of 0000..9999, to build ids four digits at a time.
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)


def _fixed_width_ids(numbers: I64) -> pa.Array:
    """Ints in [0, 10**12) as 12-digit zero-padded strings, built straight into Arrow buffers."""
    n = len(numbers)
    chunks = [_DIGITS4[(numbers // 10**k) % 10_000] for k in (8, 4, 0)]
    data = np.concatenate(chunks, axis=1)
    offsets = np.arange(0, (n + 1) * _ID_DIGITS, _ID_DIGITS, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _group_starts(groups: npt.NDArray[np.integer], count: int) -> tuple[I64, I64]:
    counts = np.bincount(groups, minlength=count).astype(np.int64)
    return counts, np.cumsum(counts) - counts


class Simulator:
    """A seeded simulated feed of ``trade``, ``quote`` (and ``l2``) batches in the registry's wire schemas.

    ``syms``/``venues`` are names or a count (default names BTCUSD, ETHUSD, SOLUSD, XRPUSD,
    ... then SYM9, SYM10...; venues SIMA, SIMB, SIMC, ...). ``start_ns`` is the event time
    the clock starts from (default: now, at construction). ``trade_share`` is the
    probability that an event is a trade. ``sigma`` is the standard deviation of the
    per-event log-return of a symbol's mid. ``l2_depth`` > 0 adds ``l2`` rows (that many
    levels a side). ``gaps``, ``stale`` (with ``stale_ns``) and ``outliers`` inject faults
    and ``gap_events`` publishes the feed handler's ``feed_event`` rows for gaps; see the
    module docstring for what each means and :attr:`injected` for the ground truth.
    """

    VENUE_OFFSET = 1.5e-4  # sd of each venue's persistent relative offset (clipped at 3 sd)
    VENUE_NOISE = 1.0e-5  # sd of the per-quote relative noise around the venue mid
    LATENCY_BASE_NS = 150_000  # venue i's base feed latency is (i + 1) x this
    LATENCY_JITTER_NS = 50_000.0  # mean of the exponential jitter on top
    QUOTE_NOTIONAL = 25_000.0  # typical quote size, in quote currency
    TRADE_NOTIONAL = 2_000.0  # typical trade size, in quote currency
    MAX_SPREAD_TICKS = 4
    HEARTBEAT_EVERY = 8  # every 8th event (after the opening) visits the pairs round-robin
    L2_LEVEL_REL = 5e-5  # L2 grid spacing behind the top, relative to the starting price
    MAX_L2_DEPTH = 1_000
    GAP_MAX_LEN = 3  # a gap drops 1..3 consecutive trades of a venue or updates of a book
    OUTLIER_MIN = 0.05  # an outlier print is 5-20% away from the venue's mid
    OUTLIER_MAX = 0.20

    def __init__(
        self,
        syms: Sequence[str] | int = 4,
        venues: Sequence[str] | int = 3,
        seed: int = 0,
        start_ns: int | None = None,
        trade_share: float = 0.3,
        *,
        sigma: float = 5e-5,
        registry: Registry | None = None,
        l2_depth: int = 0,
        gaps: float = 0.0,
        stale: float = 0.0,
        stale_ns: int = 1_000_000_000,
        outliers: float = 0.0,
        gap_events: bool = False,
    ) -> None:
        self.syms = _names(syms, DEFAULT_SYMS, "SYM", "symbol")
        self.venues = _names(venues, DEFAULT_VENUES, "SIM", "venue")
        if not 0.0 <= trade_share <= 1.0:
            raise ValueError(f"trade_share must be within [0, 1], got {trade_share}")
        if not sigma >= 0.0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if len(self.syms) * len(self.venues) > 32_767:
            raise ValueError("at most 32767 (sym, venue) pairs")
        if not 0 <= l2_depth <= self.MAX_L2_DEPTH:
            raise ValueError(f"l2_depth must be 0 (no L2 books) to {self.MAX_L2_DEPTH} levels a side, got {l2_depth}")
        if not stale_ns > 0:
            raise ValueError(f"stale_ns must be a positive duration in nanoseconds, got {stale_ns}")
        self.seed = seed
        self.trade_share = float(trade_share)
        self.sigma = float(sigma)
        self.l2_depth = int(l2_depth)
        self.gaps = _probability(gaps, "gaps")
        self.stale = _probability(stale, "stale")
        self.stale_ns = int(stale_ns)
        self.outliers = _probability(outliers, "outliers")
        self.gap_events = bool(gap_events)
        self.registry = registry if registry is not None else Registry.default()
        self.trade_schema = self._check("trade", _TRADE_COLS)
        self.quote_schema = self._check("quote", _QUOTE_COLS)
        self.l2_schema = self._check("l2", _L2_COLS) if self.l2_depth else None
        self.event_schema = self._check("feed_event", _EVENT_COLS) if self.gap_events else None

        n_s, n_v = len(self.syms), len(self.venues)
        n_g = n_s * n_v
        inst = [_KNOWN.get(s, _OTHER) for s in self.syms]
        price0 = np.array([i.price for i in inst])
        self._ticks = np.array([i.ticks_per_unit for i in inst], dtype=np.float64)
        self._lots = np.array([i.lots_per_unit for i in inst], dtype=np.float64)
        self._quote_lots = np.log(self.QUOTE_NOTIONAL / price0 * self._lots)
        self._trade_lots = np.log(self.TRADE_NOTIONAL / price0 * self._lots)
        self._l2_step = np.maximum(np.rint(price0 * self._ticks * self.L2_LEVEL_REL), 1).astype(np.int64)
        self._sym_dict = pa.array(self.syms, pa.string())
        self._venue_dict = pa.array(self.venues, pa.string())
        self._side_dict = pa.array(["sell", "buy"], pa.string())
        self._book_side_dict = pa.array(["bid", "ask"], pa.string())
        # What each L2 candidate row is, per (block, column) of Simulator._l2's mask: side * 3 +
        # (0 removal, 1 top, 2 grid level); blocks are bid removals, bid sets, ask removals, ask sets.
        codes = np.full((4, max(self.l2_depth, 1)), 2, dtype=np.uint8)
        codes[:, 0] = 1
        codes[0::2] = 0
        codes[2:] += 3
        self._l2_codes = codes

        self._rng = np.random.default_rng(seed)
        # Faults come from their own stream: turning them on leaves the market's draws alone.
        self._inj = np.random.default_rng([seed, 0x1A7EC7])
        self._salt = np.uint64(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
        off = self._rng.normal(0.0, self.VENUE_OFFSET, (n_s, n_v))
        self._offset = np.clip(off, -3 * self.VENUE_OFFSET, 3 * self.VENUE_OFFSET).ravel()
        self._latency = (np.arange(n_v, dtype=np.int64) + 1) * self.LATENCY_BASE_NS

        # State carried between steps.
        self._log_mid = np.log(price0)  # per sym
        self._bid_t = np.zeros(n_g, dtype=np.int64)  # standing book, in ticks (0: none yet)
        self._ask_t = np.zeros(n_g, dtype=np.int64)
        self._top_size = np.zeros((2, n_g))  # L2: size of each book's top (bid, ask) after its last update
        self._trade_no = np.zeros(n_v, dtype=np.int64)  # last trade number per venue
        self._l2_seq = np.zeros(n_g, dtype=np.int64)  # last L2 update id per pair
        self._stale_until = np.full(n_g, np.iinfo(np.int64).min, dtype=np.int64)  # silent while time <= this
        self._injected: list[pa.Table] = []
        self._explicit_start = start_ns is not None
        self._t = int(start_ns) if start_ns is not None else time.time_ns()
        self.events = 0  # events generated so far (including those an injected stale period silenced)

    def _check(self, table: str, produced: Sequence[str]) -> pa.Schema:
        if table not in self.registry:
            raise SchemaError(f"the simulator publishes table {table!r}, which the registry does not declare")
        wire: pa.Schema = self.registry[table].wire
        missing = [f.name for f in wire if not f.nullable and f.name not in produced]
        if missing:
            raise SchemaError(
                f"table {table!r} requires columns {missing} that the simulator cannot fill"
            )
        return wire

    @property
    def last_time_ns(self) -> int:
        """Event time of the last event generated (or the start time)."""
        return self._t

    @property
    def pairs(self) -> int:
        """Number of (sym, venue) pairs."""
        return len(self.syms) * len(self.venues)

    @property
    def max_normal_gap_events(self) -> int:
        """On a clean run, two consecutive events of one pair are at most this many events apart."""
        return self.HEARTBEAT_EVERY * self.pairs

    @property
    def injected(self) -> pa.Table:
        """Every fault injected so far (:data:`INJECTED_SCHEMA`), in ``start`` order within each step."""
        return pa.Table.from_batches([b for t in self._injected for b in t.to_batches()], schema=INJECTED_SCHEMA)

    def take_injected(self) -> pa.Table:
        """The faults injected since the last call, and forget them."""
        out = self.injected
        self._injected = []
        return out

    # ------------------------------------------------------------------ generation

    def step(self, n: int, end_ns: int | None = None) -> dict[str, pa.RecordBatch]:
        """The next ``n`` events, with times spread evenly up to ``end_ns`` (default: now).

        Returns ``{"trade": batch, "quote": batch, "l2": batch, "feed_event": batch}`` in
        the registry's wire schemas, rows in event-time order, leaving out a table with no
        rows. Without faults, trade + quote rows number ``n``; injected gaps and stale
        periods remove some (recorded in :attr:`injected`).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return {}
        if end_ns is None:
            end_ns = time.time_ns()
        rng = self._rng
        n_s, n_v = len(self.syms), len(self.venues)
        n_g = n_s * n_v

        # --- what happens at each event
        sym = rng.integers(0, n_s, n, dtype=np.int16)
        venue = rng.integers(0, n_v, n, dtype=np.int16)
        is_trade = rng.random(n, dtype=np.float32) < self.trade_share
        ret = rng.standard_normal(n)
        ret *= self.sigma
        # Heartbeat: global events n_g, n_g + K, n_g + 2K... visit the pairs round-robin, so no
        # pair waits more than K * n_g events (the opening covers the first n_g).
        k_hb = self.HEARTBEAT_EVERY
        first_hb = max(n_g - self.events, (k_hb - (self.events - n_g) % k_hb) % k_hb)
        hb = np.arange(first_hb, n, k_hb)
        if len(hb):
            pair = ((self.events + hb - n_g) // k_hb) % n_g
            sym[hb] = pair // n_v
            venue[hb] = pair % n_v
        k_open = 0
        if self.events < n_g:  # the opening snapshot: one quote per (sym, venue)
            k_open = min(n, n_g - self.events)
            first = np.arange(self.events, self.events + k_open)
            sym[:k_open] = first // n_v
            venue[:k_open] = first % n_v
            is_trade[:k_open] = False

        # --- event times: evenly spread over (last, end], never going back
        span = max(int(end_ns) - self._t, 0)
        offs = np.floor(np.arange(1, n + 1, dtype=np.float64) * (span / n)).astype(np.int64)
        np.minimum(offs, span, out=offs)
        offs[-1] = span
        times = offs + self._t
        self._t += span
        g = sym * np.int16(n_v) + venue
        # Events a gap must not drop: heartbeats (they bound every pair's silence) and the last
        # event before a stale period (the recorded start).
        pinned: Bool | None = None
        if self.gaps > 0:
            pinned = np.zeros(n, dtype=np.bool_)
            pinned[hb] = True
            pinned[:k_open] = True
        self.events += n
        truth: list[pa.RecordBatch] = []

        # --- stale periods: a silenced pair's events are never generated
        if self.stale > 0:
            keep = self._stale(g, times, truth, pinned)
            if keep is not None:
                sym, venue, g = sym[keep], venue[keep], g[keep]
                is_trade, ret, times = is_trade[keep], ret[keep], times[keep]
                if pinned is not None:
                    pinned = pinned[keep]
                n = len(times)
                if n == 0:
                    self._keep_truth(truth)
                    return {}

        # --- the common mid: per-sym cumulative sum of the returns
        order_s = np.argsort(sym, kind="stable")
        sym_sorted = sym[order_s]
        counts_s, start_s = _group_starts(sym, n_s)
        cum = np.cumsum(ret[order_s])
        before = np.where(start_s > 0, cum[np.maximum(start_s - 1, 0)], 0.0)
        lm_sorted = cum - before[sym_sorted] + self._log_mid[sym_sorted]
        has_s = counts_s > 0
        self._log_mid[has_s] = lm_sorted[(start_s + counts_s - 1)[has_s]]

        # --- quotes: re-price the venue book around the venue mid
        q_idx = np.flatnonzero(~is_trade)
        nq = len(q_idx)
        pos_s = np.empty(n, dtype=np.int64)  # position of each event in sym order
        pos_s[order_s] = np.arange(n)
        sq, gq = sym[q_idx], g[q_idx]
        rel = rng.standard_normal(nq)
        rel *= self.VENUE_NOISE
        rel += 1.0
        rel += self._offset[gq]
        vmid_t = np.exp(lm_sorted[pos_s[q_idx]]) * rel * self._ticks[sq]
        spread = rng.integers(1, self.MAX_SPREAD_TICKS + 1, nq)
        bid_t = np.maximum(np.floor(vmid_t - 0.5 * spread).astype(np.int64), 1)
        ask_t = bid_t + spread
        q_size = rng.lognormal(self._quote_lots[sq], 0.8, (2, nq))
        q_size = np.maximum(np.rint(q_size), 1.0) / self._lots[sq]

        # --- trades: execute against the venue's last quote (forward fill per (sym, venue))
        if self.l2_depth:
            prev_bid, prev_ask = self._bid_t.copy(), self._ask_t.copy()
        t_idx = np.flatnonzero(is_trade)
        nt = len(t_idx)
        bid_all = np.zeros(n, dtype=np.int64)
        ask_all = np.zeros(n, dtype=np.int64)
        bid_all[q_idx] = bid_t
        ask_all[q_idx] = ask_t
        order_g = np.argsort(g, kind="stable")
        g_sorted = g[order_g]
        counts_g, start_g = _group_starts(g, n_g)
        last_q = np.where(is_trade[order_g], -1, np.arange(n))
        np.maximum.accumulate(last_q, out=last_q)
        fresh = last_q >= start_g[g_sorted]
        src = order_g[np.maximum(last_q, 0)]
        book_bid = np.where(fresh, bid_all[src], self._bid_t[g_sorted])
        book_ask = np.where(fresh, ask_all[src], self._ask_t[g_sorted])
        has_g = counts_g > 0
        last_of_g = (start_g + counts_g - 1)[has_g]
        self._bid_t[has_g] = book_bid[last_of_g]
        self._ask_t[has_g] = book_ask[last_of_g]
        inv = np.empty(n, dtype=np.int64)
        inv[order_g] = np.arange(n)
        t_sorted_pos = inv[t_idx]

        st, vt = sym[t_idx], venue[t_idx]
        buy = rng.random(nt) < 0.5
        t_bid, t_ask = book_bid[t_sorted_pos], book_ask[t_sorted_pos]
        t_price = np.where(buy, t_ask, t_bid) / self._ticks[st]
        t_size = rng.lognormal(self._trade_lots[st], 1.0)
        t_size = np.maximum(np.rint(t_size), 1.0) / self._lots[st]
        trade_no = np.empty(nt, dtype=np.int64)
        for v in range(n_v):  # a loop per venue, not per row
            mask = vt == v
            c = int(np.count_nonzero(mask))
            trade_no[mask] = np.arange(self._trade_no[v] + 1, self._trade_no[v] + 1 + c)
            self._trade_no[v] += c

        # --- feed latency
        recv = times + self._latency[venue]
        jitter = rng.standard_exponential(n, dtype=np.float32)
        jitter *= np.float32(self.LATENCY_JITTER_NS)
        recv += jitter.astype(np.int64) + 1

        # --- injected trade faults (their own random stream)
        t_times = times[t_idx]
        t_keep: Bool | None = None
        if self.gaps > 0 and nt:
            assert pinned is not None
            t_keep = self._trade_gaps(vt, trade_no, t_times, pinned[t_idx], truth)
        if self.outliers > 0 and nt:
            self._outliers(st, vt, trade_no, t_times, t_bid, t_ask, t_price, t_keep, truth)

        out: dict[str, pa.RecordBatch] = {}
        if nt:
            sel: slice | I64 = slice(None) if t_keep is None else np.flatnonzero(t_keep)
            nt_out = nt if t_keep is None else int(np.count_nonzero(t_keep))
            if nt_out:
                out["trade"] = self._batch(
                    self.trade_schema,
                    nt_out,
                    {
                        "time": _timestamps(t_times[sel]),
                        "sym": _take_strings(self._sym_dict, st[sel]),
                        "exchange": _take_strings(self._venue_dict, vt[sel]),
                        "price": pa.array(t_price[sel], pa.float64()),
                        "size": pa.array(t_size[sel], pa.float64()),
                        "side": _take_strings(self._side_dict, buy[sel].view(np.int8)),
                        "trade_id": _fixed_width_ids(trade_no[sel]),
                        "seq": pa.array(trade_no[sel], pa.int64()),
                        "recv_time": _timestamps(recv[t_idx][sel]),
                    },
                )
        if nq:
            ticks_q = self._ticks[sq]
            out["quote"] = self._batch(
                self.quote_schema,
                nq,
                {
                    "time": _timestamps(times[q_idx]),
                    "sym": _take_strings(self._sym_dict, sq),
                    "exchange": _take_strings(self._venue_dict, venue[q_idx]),
                    "bid_price": pa.array(bid_t / ticks_q, pa.float64()),
                    "bid_size": pa.array(q_size[0], pa.float64()),
                    "ask_price": pa.array(ask_t / ticks_q, pa.float64()),
                    "ask_size": pa.array(q_size[1], pa.float64()),
                    "recv_time": _timestamps(recv[q_idx]),
                    "derived": pa.array(np.full(nq, self.l2_depth > 0), pa.bool_()),
                },
            )
            if self.l2_depth:
                l2 = self._l2(gq, sq, bid_t, ask_t, q_size, times[q_idx], recv[q_idx], prev_bid, prev_ask,
                              None if pinned is None else pinned[q_idx], truth)
                if l2 is not None:
                    out["l2"] = l2
        if self.gap_events and truth:
            events = self._gap_events(truth)
            if events is not None:
                out["feed_event"] = events
        self._keep_truth(truth)
        return out

    @staticmethod
    def _batch(schema: pa.Schema, n: int, cols: dict[str, pa.Array]) -> pa.RecordBatch:
        arrays = []
        for f in schema:
            col = cols.get(f.name)
            if col is None:
                arrays.append(pa.nulls(n, f.type))
            else:
                arrays.append(col if col.type == f.type else col.cast(f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    # ------------------------------------------------------------------ L2 books

    def _l2(
        self, gq: npt.NDArray[np.int16], sq: npt.NDArray[np.int16], bid_t: I64, ask_t: I64, q_size: F64,
        times: I64, recv: I64, prev_bid: I64, prev_ask: I64, pinned: Bool | None, truth: list[pa.RecordBatch],
    ) -> pa.RecordBatch | None:
        """One book update per quote, as ``l2`` rows; ``prev_*`` are the tops before this step."""
        nq = len(gq)
        depth = self.l2_depth
        n_v = len(self.venues)
        # Update ids and the previous update of each book: group the quotes by pair.
        order = np.argsort(gq, kind="stable")
        gs = gq[order]
        first = np.empty(nq, dtype=np.bool_)
        first[0] = True
        np.not_equal(gs[1:], gs[:-1], out=first[1:])
        rank = np.arange(nq) - np.maximum.accumulate(np.where(first, np.arange(nq), 0))
        ids_sorted = self._l2_seq[gs] + rank + 1
        prev_sorted = np.where(first, -1, np.roll(order, 1))
        counts = np.bincount(gs, minlength=self.pairs)
        self._l2_seq += counts
        ids = np.empty(nq, dtype=np.int64)
        ids[order] = ids_sorted
        prev = np.empty(nq, dtype=np.int64)
        prev[order] = prev_sorted

        # A snapshot opens each book and follows each gap; gaps drop whole updates.
        snap_sorted = ids_sorted == 1
        keep: Bool | None = None
        if self.gaps > 0:
            assert pinned is not None
            drop_sorted, run_first, run_got = self._gap_runs(gs, snap_sorted | pinned[order])
            if len(run_first):
                snap_sorted[run_got] = True
                g_run = gs[run_got]
                truth.append(self._record(
                    "gap", "l2", g_run % n_v, g_run // n_v, times[order[run_first]], times[order[run_got]],
                    expected=ids_sorted[run_first], got=ids_sorted[run_got],
                ))
                keep = np.empty(nq, dtype=np.bool_)
                keep[order] = ~drop_sorted
        snap = np.empty(nq, dtype=np.bool_)
        snap[order] = snap_sorted
        has_old = ~snap

        # Per quote, 4 blocks of `depth` candidate rows: bid removals, bid sets, ask removals,
        # ask sets; column 0 is the top (old or new), column c >= 1 the grid level c - 1 behind
        # it. Each side is done in "key" space, where better is larger (bid: ticks, ask:
        # -ticks), so one piece of arithmetic serves both: grid level j is at grid index
        # i - j, key (i - j) * step, where i is the grid index just behind the top.
        step = self._l2_step[sq][:, None]
        has_prev = prev >= 0
        prev_i = np.maximum(prev, 0)
        j = np.arange(depth - 1)[None, :]
        old = has_old[:, None]
        mask = np.empty((nq, 4, depth), dtype=np.bool_)
        price = np.empty((nq, 4, depth), dtype=np.int64)
        # The size of each quote's old top: its book's previous quote in this step, or the last one before.
        old_size = np.where(has_prev, q_size[:, prev_i], self._top_size[:, gq])
        last = np.empty(nq, dtype=np.bool_)
        last[-1] = True
        np.not_equal(gs[1:], gs[:-1], out=last[:-1])
        self._top_size[:, gs[last]] = q_size[:, order[last]]
        for side, (top_new, top_carry) in enumerate(((bid_t, prev_bid), (-ask_t, -prev_ask))):
            rm_b, set_b = 2 * side, 2 * side + 1
            sign = 1 - 2 * side  # key -> ticks
            t1 = top_new[:, None]
            t0 = np.where(has_prev, top_new[prev_i], top_carry[gq])[:, None]
            i1 = (t1 - 1) // step
            i0 = (t0 - 1) // step
            d = i0 - i1  # old grid level j is in the new grid iff d <= j <= d + depth - 2
            t1_on_old = np.where(t1 % step == 0, i0 - t1 // step, -1)  # the old grid level at the new top
            t0_on_new = np.where(t0 % step == 0, i1 - t0 // step, -1)  # the new grid level at the old top
            # (An old top on the grid is at index i0 + 1, outside the old grid: `new` below sends it.)
            # Removed: the old top unless it is still a level; old grid levels out of the new book.
            mask[:, rm_b, :1] = old & (t0 != t1) & ((t0_on_new < 0) | (t0_on_new > depth - 2))
            rm = mask[:, rm_b, 1:]
            np.less(j, d, out=rm)
            rm |= j > d + (depth - 2)
            rm &= j != t1_on_old
            rm &= old
            # Set: the new top always; new grid levels the old book did not have at that size.
            mask[:, set_b, 0] = True
            new = mask[:, set_b, 1:]
            np.less(j, -d, out=new)
            new |= j > (depth - 2) - d
            new |= ~old
            # The old top becoming a level behind the new one keeps its price; if the level's size
            # (a hash of its price) happens to be the size it had as the top, nothing changed there
            # and a delta does not re-send it (the top is the only level an update always sends).
            moved = np.flatnonzero(old[:, 0] & (t0_on_new[:, 0] >= 0) & (t0_on_new[:, 0] <= depth - 2))
            if len(moved):
                same = self._level_sizes(gq[moved], np.full(len(moved), side, dtype=np.int8),
                                         sign * t0[moved, 0], sq[moved]) == old_size[side, moved]
                hit = moved[same]
                new[hit, t0_on_new[hit, 0]] = False
            if side == 0:  # bid levels exist down to one tick
                rm &= j < i0
                new &= j < i1
            price[:, rm_b, :1] = sign * t0
            price[:, set_b, :1] = sign * t1
            np.subtract(i0, j, out=price[:, rm_b, 1:])
            price[:, rm_b, 1:] *= sign * step
            np.subtract(i1, j, out=price[:, set_b, 1:])
            price[:, set_b, 1:] *= sign * step
        if keep is not None:
            mask[~keep] = False

        per_quote = np.count_nonzero(mask.reshape(nq, 4 * depth), axis=1)
        nrows = int(per_quote.sum())
        if not nrows:
            return None
        qi = np.repeat(np.arange(nq), per_quote)
        price_t = price[mask]
        code = np.broadcast_to(self._l2_codes, mask.shape)[mask]
        is_ask = code >= 3
        kind = _L2_KIND[code]
        rows_sym = sq[qi]
        size = np.zeros(nrows)
        top = np.flatnonzero(kind == 1)
        size[top] = q_size.ravel()[is_ask[top] * nq + qi[top]]
        grid = np.flatnonzero(kind == 2)
        size[grid] = self._level_sizes(gq[qi[grid]], is_ask[grid].view(np.int8), price_t[grid], rows_sym[grid])
        seq = ids[qi]
        assert self.l2_schema is not None
        return self._batch(
            self.l2_schema,
            nrows,
            {
                "time": _timestamps(times[qi]),
                "sym": _take_strings(self._sym_dict, rows_sym),
                "exchange": _take_strings(self._venue_dict, gq[qi] % np.int16(n_v)),
                "side": _take_strings(self._book_side_dict, is_ask.view(np.int8)),
                "price": pa.array(price_t / self._ticks[rows_sym], pa.float64()),
                "size": pa.array(size, pa.float64()),
                "is_snapshot": pa.array(snap[qi], pa.bool_()),
                "seq_first": pa.array(seq, pa.int64()),
                "seq_last": pa.array(seq, pa.int64()),
                "recv_time": _timestamps(recv[qi]),
            },
        )

    def _level_sizes(self, g: npt.NDArray[np.integer], side: npt.NDArray[np.integer], price_t: I64,
                     sym: npt.NDArray[np.integer]) -> F64:
        """The size behind the top: a fixed hash of (seed, pair, side, price), lognormal-ish around a quote's."""
        x = price_t.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= (g.astype(np.uint64) * np.uint64(2) + side.astype(np.uint64) + self._salt) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
        u = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
        lots = np.maximum(np.rint(np.exp(self._quote_lots[sym] + 2.0 * u - 1.0)), 1.0)
        return lots / self._lots[sym]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ injected faults

    def _gap_runs(self, groups: npt.NDArray[np.integer], protect: Bool) -> tuple[Bool, I64, I64]:
        """Gaps in streams sorted by group: (drop mask, first dropped row and ``got`` row of each run).

        A gap starts at a row with probability ``gaps`` and drops 1..GAP_MAX_LEN rows, cut
        at the group's last row in this step (never dropped, so every gap is seen now);
        ``protect``\\ ed rows are never dropped (a run over one becomes two gaps).
        """
        m = len(groups)
        starts = np.flatnonzero(self._inj.random(m) < self.gaps)
        lengths = self._inj.integers(1, self.GAP_MAX_LEN + 1, len(starts))
        last = np.empty(m, dtype=np.bool_)
        last[-1] = True
        np.not_equal(groups[1:], groups[:-1], out=last[:-1])
        last_pos = np.flatnonzero(last)
        group_last = last_pos[np.searchsorted(last_pos, starts)]
        ends = np.minimum(starts + lengths, group_last)
        ok = ends > starts
        delta = np.bincount(starts[ok], minlength=m + 1) - np.bincount(ends[ok], minlength=m + 1)
        drop = np.cumsum(delta[:m]) > 0
        drop &= ~protect
        before = np.zeros(m, dtype=np.bool_)
        before[1:] = drop[:-1]
        after = np.zeros(m, dtype=np.bool_)
        after[:-1] = drop[1:]
        run_first = np.flatnonzero(drop & ~before)
        run_got = np.flatnonzero(drop & ~after) + 1
        return drop, run_first, run_got

    def _trade_gaps(self, vt: npt.NDArray[np.int16], trade_no: I64, t_times: I64, pinned: Bool,
                    truth: list[pa.RecordBatch]) -> Bool:
        """Drop runs of a venue's trades (seq numbers skipped); the rows to keep."""
        order = np.argsort(vt, kind="stable")
        seq_sorted = trade_no[order]
        drop_sorted, run_first, run_got = self._gap_runs(vt[order], pinned[order] | (seq_sorted == 1))
        keep = np.empty(len(vt), dtype=np.bool_)
        keep[order] = ~drop_sorted
        if len(run_first):
            truth.append(self._record(
                "gap", "trade", vt[order[run_got]], None, t_times[order[run_first]], t_times[order[run_got]],
                expected=seq_sorted[run_first], got=seq_sorted[run_got],
            ))
        return keep

    def _outliers(self, st: npt.NDArray[np.int16], vt: npt.NDArray[np.int16], trade_no: I64, t_times: I64,
                  t_bid: I64, t_ask: I64, t_price: F64, t_keep: Bool | None, truth: list[pa.RecordBatch]) -> None:
        """Re-price some published trades 5-20% away from the venue's mid, in place."""
        hit = self._inj.random(len(st)) < self.outliers
        if t_keep is not None:
            hit &= t_keep
        idx = np.flatnonzero(hit)
        if not len(idx):
            return
        dev = self._inj.uniform(self.OUTLIER_MIN, self.OUTLIER_MAX, len(idx))
        up = self._inj.random(len(idx)) < 0.5
        bid, ask = t_bid[idx], t_ask[idx]
        mid_t = 0.5 * (bid + ask)
        high = np.maximum(np.rint(mid_t * (1.0 + dev)).astype(np.int64), ask + 1)
        low = np.minimum(np.rint(mid_t * (1.0 - dev)).astype(np.int64), bid - 1)
        up |= low < 1  # no room below a one-tick bid: print above
        ticks = self._ticks[st[idx]]
        price = np.where(up, high, low) / ticks
        t_price[idx] = price
        when = t_times[idx]
        truth.append(self._record(
            "outlier", "trade", vt[idx], st[idx], when, when, seq=trade_no[idx], price=price, mid=mid_t / ticks,
        ))

    def _stale(self, g: npt.NDArray[np.int16], times: I64, truth: list[pa.RecordBatch],
               pinned: Bool | None) -> Bool | None:
        """Silence pairs for ``stale_ns``: the events to keep, or None to keep them all; pins each start."""
        until = self._stale_until
        keep = times > until[g]  # periods begun in earlier steps
        cand = np.flatnonzero(self._inj.random(len(g)) < self.stale)
        starts: list[int] = []
        for i in cand.tolist():  # a loop per candidate start: rare by construction
            gi = g[i]
            if times[i] <= until[gi]:  # already silent
                continue
            until[gi] = times[i] + self.stale_ns
            starts.append(i)
        if starts:
            s = np.array(starts, dtype=np.int64)
            if pinned is not None:
                pinned[s] = True
            n_v = len(self.venues)
            truth.append(self._record("stale", None, g[s] % n_v, g[s] // n_v, times[s], times[s] + self.stale_ns))
            # The pair's events after each start with a time <= its end, found in pair order.
            order = np.argsort(g, kind="stable")
            gs, ts = g[order], times[order]
            pos = np.empty(len(g), dtype=np.int64)
            pos[order] = np.arange(len(g))
            lo = pos[s] + 1
            hi = np.searchsorted(gs, g[s], side="right")
            ends = np.array([a + np.searchsorted(ts[a:b], e, side="right")
                             for a, b, e in zip(lo.tolist(), hi.tolist(), (times[s] + self.stale_ns).tolist(),
                                                strict=True)], dtype=np.int64)
            m = len(g)
            silent = np.cumsum(np.bincount(lo, minlength=m + 1) - np.bincount(ends, minlength=m + 1))[:m] > 0
            keep[order[silent]] = False
        return None if keep.all() else keep

    def _record(
        self, kind: str, table: str | None, venue: npt.NDArray[np.integer], sym: npt.NDArray[np.integer] | None,
        start: I64, end: I64, *, expected: I64 | None = None, got: I64 | None = None, seq: I64 | None = None,
        price: F64 | None = None, mid: F64 | None = None,
    ) -> pa.RecordBatch:
        n = len(start)

        def opt(values: npt.NDArray[np.generic] | None, typ: pa.DataType) -> pa.Array:
            return pa.nulls(n, typ) if values is None else pa.array(values, typ)

        return pa.RecordBatch.from_arrays([
            pa.repeat(kind, n),
            pa.nulls(n, pa.string()) if table is None else pa.repeat(table, n),
            _take_strings(self._venue_dict, venue),
            pa.nulls(n, pa.string()) if sym is None else _take_strings(self._sym_dict, sym),
            _timestamps(start),
            _timestamps(end),
            opt(expected, pa.int64()),
            opt(got, pa.int64()),
            opt(seq, pa.int64()),
            opt(price, pa.float64()),
            opt(mid, pa.float64()),
        ], schema=INJECTED_SCHEMA)

    def _keep_truth(self, truth: list[pa.RecordBatch]) -> None:
        if truth:
            table = pa.Table.from_batches(truth, schema=INJECTED_SCHEMA).sort_by([("start", "ascending")])
            self._injected.append(table.combine_chunks())

    def _gap_events(self, truth: list[pa.RecordBatch]) -> pa.RecordBatch | None:
        """What a feed handler publishes on seeing each gap: ``gap`` (and ``resync`` for a book)."""
        assert self.event_schema is not None
        table = pa.Table.from_batches(truth, schema=INJECTED_SCHEMA)
        table = table.filter(pc.field("kind") == "gap")
        if not table.num_rows:
            return None
        gap = {name: table[name].combine_chunks() for name in table.column_names}
        book = pc.equal(gap["table"], "l2")
        where = pc.if_else(book, pc.binary_join_element_wise(gap["exchange"], gap["sym"], " "), gap["exchange"])
        detail = pc.binary_join_element_wise(
            where, pc.if_else(book, " l2 update id", " trade seq"), " gap: expected ",
            gap["expected"].cast(pa.string()), ", got ", gap["got"].cast(pa.string()), "",
        )
        # A book gap is followed by the book re-sent whole: the handler's resync, at the same time.
        resync = pc.binary_join_element_wise(
            where, " book rebuilt from the snapshot at update id ", gap["got"].cast(pa.string()), ""
        ).filter(book)
        r = len(resync)
        events = pa.table({
            "time": pa.concat_arrays([gap["end"], gap["end"].filter(book)]),
            "sym": pa.concat_arrays([gap["sym"], gap["sym"].filter(book)]),
            "exchange": pa.concat_arrays([gap["exchange"], gap["exchange"].filter(book)]),
            "kind": pa.concat_arrays([pa.repeat("gap", table.num_rows), pa.repeat("resync", r)]),
            "detail": pa.concat_arrays([detail, resync]),
            "expected": pa.concat_arrays([gap["expected"], pa.nulls(r, pa.int64())]),
            "got": pa.concat_arrays([gap["got"], pa.nulls(r, pa.int64())]),
        }).sort_by([("time", "ascending")])  # stable: each resync right after its gap
        return self._batch(
            self.event_schema, events.num_rows, {name: events[name].combine_chunks() for name in events.column_names}
        )

    # ------------------------------------------------------------------ pacing

    def run(
        self,
        publish: Callable[[str, pa.RecordBatch], None],
        rate: float,
        duration: float | None = None,
        batch_ms: float = 10.0,
        stop: threading.Event | None = None,
    ) -> dict[str, int]:
        """Publish ``rate`` events/s in real time, one :meth:`step` every ``batch_ms``.

        Calls ``publish(table, batch)`` for each non-empty table of each step. When behind
        (slow ``publish``), it catches up with back-to-back steps of at most 100 ms of
        events each; otherwise it sleeps until the next tick (never busy-spins). Stops
        after ``duration`` seconds (having emitted ``rate * duration`` events) or once
        ``stop`` is set. Returns rows published per table.
        """
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of events/s, got {rate}")
        if not batch_ms > 0:
            raise ValueError(f"batch_ms must be > 0, got {batch_ms}")
        if duration is not None and duration < 0:
            raise ValueError(f"duration must be >= 0, got {duration}")
        counts = {"trade": 0, "quote": 0}
        interval = batch_ms / 1000.0
        max_batch = max(1, int(rate * 0.1))
        if self.events == 0 and not self._explicit_start:
            self._t = time.time_ns()
        emitted = 0
        t0 = time.monotonic()
        next_tick = t0
        while stop is None or not stop.is_set():
            elapsed = time.monotonic() - t0
            final = duration is not None and elapsed >= duration
            if final:
                assert duration is not None
                elapsed = duration
            due = min(int(rate * elapsed) - emitted, max_batch)
            if due > 0:
                for table, batch in self.step(due, time.time_ns()).items():
                    publish(table, batch)
                    counts[table] = counts.get(table, 0) + batch.num_rows
                emitted += due
                if int(rate * elapsed) > emitted:  # behind: catch up without sleeping
                    continue
            if final:
                break
            next_tick += interval
            wake = next_tick if duration is None else min(next_tick, t0 + duration)
            pause = wake - time.monotonic()
            if pause <= 0:
                next_tick = time.monotonic()  # fell behind the tick grid: restart it
                continue
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
        return counts
