"""Event-time windows: assignment, the watermark, firing, allowed lateness and late rows.

Sans-I/O and vectorized over a batch of rows (event times in int64 ns, syms, prices,
sizes); the engines in ``rte.bars`` wrap it. The semantics, in full, are in
docs/streaming.md; in short:

- Windows are epoch-aligned and half-open, ``[k*slide, k*slide + size)``; a tumbling
  window has ``slide == size``, a hopping one puts each row in ``size // slide`` windows.
- Watermark: per sym, the max event time seen; the engine's watermark is the min over
  the *active* syms of ``max - bound``, never going backwards. A sym is idle (left out)
  when ``idle`` ns of processing time passed without a row for it; processing time is
  the TP's receive time of the update (``tp_time``), so replay is deterministic.
- A window fires (revision 0) when the watermark reaches its end. A row for a window
  that already fired but whose ``end + lateness`` is still ahead of the watermark updates
  it and re-fires it (revision n+1, the whole updated aggregate). A row all of whose
  windows are past ``end + lateness`` is late: returned as such and counted, never
  silently dropped. A window's state is dropped once the watermark reaches end + lateness.

The semantics are defined row by row (the watermark moves after every row). Two
implementations compute exactly that, so the output does not depend on how rows were
grouped into updates: a batch of more than ``scalar_rows`` rows goes through whole-batch
numpy operations (throughput), a smaller one row by row in plain Python on the same
state (latency: a 1-row update would otherwise pay ~100 us of numpy call overhead). The
two agree exactly except for the last bits of ``volume`` and ``vwap`` (summation order).

Window state lives in slot arrays (one slot per held (sym, window), with spare capacity
and a free list) so the row path updates it in place and fires a whole watermark step
with a few vectorized selections; the batch path reads and rewrites it compactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

NO_WATERMARK = np.iinfo(np.int64).min  # before the first row: nothing is late yet
_MAX = np.iinfo(np.int64).max
DEFAULT_BOUND_NS = 1_000_000_000  # 1 s of out-of-orderness
DEFAULT_IDLE_NS = 10_000_000_000  # a sym quiet for 10 s of TP time stops holding the watermark
_CELLS = 1 << 20  # rows x syms per chunk of the watermark computation (8 MB of int64)
SCALAR_ROWS = 32  # batches of at most this many rows take the row-by-row path (measured crossover: 35-60)
_MIN_SLOTS = 64

_STATE_INT = ("code", "start", "open_t", "close_t", "count", "emitted")
_STATE_FLOAT = ("open_p", "close_p", "high", "low", "volume", "pv")


@dataclass(frozen=True)
class Fired:
    """Windows that fired or re-fired, one row each, in firing order; the full aggregate each time."""

    sym: pa.Array  # string
    start: I64
    end: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64  # NaN when volume is 0
    count: I64
    revision: npt.NDArray[np.int32]  # 0 = first firing; n = n-th update by rows within the lateness
    row: I64  # the input row after which it fired (-1: end-of-day flush)

    def __len__(self) -> int:
        return len(self.start)


@dataclass(frozen=True)
class Late:
    """Rows of the input batch too late for every window they belong to."""

    row: I64  # indices into the batch
    watermark: I64  # the watermark when each arrived

    def __len__(self) -> int:
        return len(self.row)


@dataclass(frozen=True)
class Result:
    fired: Fired
    late: Late


def _frozen(dtype: type) -> npt.NDArray[Any]:
    a: npt.NDArray[Any] = np.empty(0, dtype)
    a.flags.writeable = False
    return a


# Most small updates fire nothing: they share these (read-only) empty results.
_F = _frozen(np.float64)
_NO_FIRED = Fired(pa.array([], pa.string()), _frozen(np.int64), _frozen(np.int64), _F, _F, _F, _F, _F, _F,
                  _frozen(np.int64), _frozen(np.int32), _frozen(np.int64))
_NO_LATE = Late(_frozen(np.int64), _frozen(np.int64))


def _empty_fired() -> Fired:
    return _NO_FIRED


def _empty_late() -> Late:
    return _NO_LATE


class EventTimeWindows:
    """Per-sym OHLCV/VWAP aggregates over tumbling or hopping event-time windows."""

    def __init__(self, size_ns: int, slide_ns: int | None = None, *, bound_ns: int = DEFAULT_BOUND_NS,
                 idle_ns: int = DEFAULT_IDLE_NS, lateness_ns: int = 0, scalar_rows: int = SCALAR_ROWS) -> None:
        slide_ns = size_ns if slide_ns is None else slide_ns
        if size_ns <= 0 or slide_ns <= 0:
            raise ValueError(f"window size and slide must be positive, got size={size_ns}ns slide={slide_ns}ns")
        if size_ns % slide_ns:
            raise ValueError(
                f"window size {size_ns}ns is not a multiple of the slide {slide_ns}ns: W % S == 0 is required, "
                f"so that every row falls in exactly W/S windows; pick a slide that divides the size"
            )
        if bound_ns < 0 or lateness_ns < 0 or idle_ns <= 0:
            raise ValueError(f"bound and lateness must be >= 0 and idle > 0, got bound={bound_ns}ns "
                             f"lateness={lateness_ns}ns idle={idle_ns}ns")
        self.size = size_ns
        self.slide = slide_ns
        self.bound = bound_ns
        self.idle = idle_ns
        self.lateness = lateness_ns
        self.scalar_rows = scalar_rows  # batches up to this size take the row path (0: never; tests force either)
        self.late_count = 0  # rows returned as late since construction (not reset at end of day)
        self._reset()

    def _reset(self) -> None:
        self._watermark = int(NO_WATERMARK)
        self._names: list[str] = []  # sym code -> name, codes given in order of first appearance
        self._code: dict[str, int] = {}
        self._names_arr = pa.array([], pa.string())
        self._max = np.empty(0, np.int64)  # per sym code: max event time seen
        self._proc = np.empty(0, np.int64)  # per sym code: tp_time of its latest row
        # One slot per held (sym, window): integer and float columns, in no particular order. Slots
        # where ``_live`` is False are free (listed in ``_free``). The batch path leaves the arrays
        # compact (all live) and ``_slot`` None; the row path builds ``_slot`` ((code, start) -> slot)
        # and its bounds when it next runs.
        self._si: dict[str, I64] = {k: np.empty(0, np.int64) for k in _STATE_INT}
        self._sf: dict[str, F64] = {k: np.empty(0, np.float64) for k in _STATE_FLOAT}
        self._live = np.empty(0, bool)
        self._free: list[int] = []
        self._slot: dict[tuple[int, int], int] | None = None
        self._next_end = int(_MAX)  # least end among held windows the watermark has not reached
        self._next_drop = int(_MAX)  # least end + lateness among held windows

    @property
    def watermark(self) -> int:
        """The current watermark (``NO_WATERMARK`` before the first row of the day)."""
        return self._watermark

    @property
    def open_windows(self) -> int:
        """How many (sym, window) states are held: not yet fired, or fired and still within the lateness."""
        return int(np.count_nonzero(self._live))

    def idle_syms(self, proc_time: int) -> list[str]:
        """Syms that would not hold the watermark at processing time ``proc_time``."""
        idle = proc_time - self._proc > self.idle
        return [self._names[i] for i in np.flatnonzero(idle)]

    # -- one batch ---------------------------------------------------------------------------

    def update(self, time: npt.ArrayLike, sym: pa.Array | pa.ChunkedArray, price: npt.ArrayLike,
               size: npt.ArrayLike, proc_time: int) -> Result:
        """Rows in arrival order, all received by the TP at ``proc_time``; the windows they fire and the late rows."""
        t = np.asarray(time, dtype=np.int64)
        p = np.asarray(price, dtype=np.float64)
        q = np.asarray(size, dtype=np.float64)
        n = len(t)
        if not (len(p) == len(q) == len(sym) == n):
            raise ValueError(f"columns differ in length: time {n}, sym {len(sym)}, price {len(p)}, size {len(q)}")
        if n == 0:
            return Result(_empty_fired(), _empty_late())
        if n <= self.scalar_rows:
            return self._update_rows(t.tolist(), sym.to_pylist(), p.tolist(), q.tolist(), proc_time)
        self._compact()
        codes = self._encode(sym)
        w_start = self._watermark
        w_after = self._advance(t, codes, proc_time)
        w_before = np.empty(n, np.int64)
        w_before[0] = w_start
        w_before[1:] = w_after[:-1]

        # Window assignment: the latest window holding t starts at floor(t / slide) * slide; the others
        # are the size/slide - 1 before it. A window is still open to a row while end + lateness is
        # ahead of the watermark the row met; a row with no open window left is late.
        per_row = self.size // self.slide
        last_start = (t // self.slide) * self.slide
        late = last_start + self.size + self.lateness <= w_before
        rows = np.repeat(np.arange(n, dtype=np.int64), per_row)
        starts = np.repeat(last_start, per_row) - np.tile(np.arange(per_row, dtype=np.int64) * self.slide, n)
        live = starts + self.size + self.lateness > w_before[rows]
        rows, starts = rows[live], starts[live]

        fired = self._aggregate(rows, starts, codes, t, p, q, w_start, w_after)
        late_rows = np.flatnonzero(late).astype(np.int64)
        self.late_count += len(late_rows)
        return Result(fired, Late(late_rows, w_before[late_rows]))

    def _encode(self, sym: pa.Array | pa.ChunkedArray) -> I64:
        """Global sym codes, one per row; new syms get the next codes in order of first appearance."""
        arr = sym.combine_chunks() if isinstance(sym, pa.ChunkedArray) else sym
        enc = arr.dictionary_encode()
        names: list[str] = enc.dictionary.to_pylist()  # one per distinct sym, in order of appearance
        mapping = np.empty(len(names), np.int64)
        for i, name in enumerate(names):
            code = self._code.get(name)
            if code is None:
                code = self._code[name] = len(self._names)
                self._names.append(name)
            mapping[i] = code
        self._grow_syms()
        local = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        result: I64 = mapping[local]
        return result

    def _grow_syms(self) -> None:
        grow = len(self._names) - len(self._max)
        if grow:
            self._max = np.concatenate([self._max, np.full(grow, NO_WATERMARK, np.int64)])
            self._proc = np.concatenate([self._proc, np.full(grow, NO_WATERMARK, np.int64)])

    def _advance(self, t: I64, codes: I64, proc_time: int) -> I64:
        """The watermark after each row (and the per-sym state after the batch).

        After row i, the active syms are those active when the batch arrived plus those seen in
        rows 0..i; each contributes its running max. Syms not in the batch contribute a constant.
        The row-by-syms matrix of running maxima is built in chunks to bound memory.
        """
        n = len(t)
        active_start = (self._proc != NO_WATERMARK) & (proc_time - self._proc <= self.idle)
        batch_syms, first, local = np.unique(codes, return_index=True, return_inverse=True)
        k = len(batch_syms)
        others = active_start.copy()
        others[batch_syms] = False
        floor_max = int(self._max[others].min()) if others.any() else int(_MAX)
        running = self._max[batch_syms].copy()  # NO_WATERMARK for a new sym: it is inactive until its row
        active0 = active_start[batch_syms]
        cand = np.empty(n, np.int64)
        chunk = max(1, _CELLS // k)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            m = hi - lo
            seen = np.full((m, k), NO_WATERMARK, np.int64)
            seen[np.arange(m), local[lo:hi]] = t[lo:hi]
            seen[0] = np.maximum(seen[0], running)
            np.maximum.accumulate(seen, axis=0, out=seen)
            active = active0[None, :] | (first[None, :] <= np.arange(lo, hi)[:, None])
            cand[lo:hi] = np.minimum(np.where(active, seen, _MAX).min(axis=1), floor_max)
            running = seen[-1]
        cand -= self.bound
        w_after: I64 = np.maximum.accumulate(np.maximum(cand, self._watermark))
        self._max[batch_syms] = running
        self._proc[batch_syms] = proc_time
        self._watermark = int(w_after[-1])
        return w_after

    def _aggregate(self, rows: I64, starts: I64, codes: I64, t: I64, p: F64, q: F64, w_start: int,
                   w_after: I64) -> Fired:
        """Fold assigned rows into the window states; the firings, in the order a row-by-row run makes them.

        Layout: per (sym, window) group, the stored state first (as one pseudo-row) and then the
        batch's rows in arrival order. The aggregate a firing publishes is a reduction over a
        prefix of its group (up to the row it fired at), done for all firings at once with
        ``ufunc.reduceat``.
        """
        n = len(w_after)
        si, sf = self._si, self._sf
        ns = len(si["start"])
        key_row = np.concatenate([np.full(ns, -1, np.int64), rows])
        code = np.concatenate([si["code"], codes[rows]])
        start = np.concatenate([si["start"], starts])
        order = np.lexsort((key_row, start, code))
        key_row, code, start = key_row[order], code[order], start[order]
        tr, pr, qr = t[rows], p[rows], q[rows]
        # Layout columns, each with one padding element at the end so that reduceat can take
        # "one past the last position" as a bound.
        padded = np.append(order, order[:1])
        col: dict[str, npt.NDArray[Any]] = {
            "open_t": np.concatenate([si["open_t"], tr])[padded],
            "close_t": np.concatenate([si["close_t"], tr])[padded],
            "open_p": np.concatenate([sf["open_p"], pr])[padded],
            "close_p": np.concatenate([sf["close_p"], pr])[padded],
            "high": np.concatenate([sf["high"], pr])[padded],
            "low": np.concatenate([sf["low"], pr])[padded],
            "volume": np.concatenate([sf["volume"], qr])[padded],
            "pv": np.concatenate([sf["pv"], pr * qr])[padded],
            "count": np.concatenate([si["count"], np.ones(len(rows), np.int64)])[padded],
        }
        emitted_in = np.concatenate([si["emitted"], np.zeros(len(rows), np.int64)])[order]
        total = len(order)
        head = np.ones(total, bool)
        head[1:] = (code[1:] != code[:-1]) | (start[1:] != start[:-1])
        gid = np.cumsum(head) - 1
        heads = np.flatnonzero(head)
        ngroups = len(heads)
        tails = np.append(heads[1:], total) - 1

        g_code, g_start = code[heads], start[heads]
        g_end = g_start + self.size
        g_emitted = emitted_in[heads]  # a group's stored state, if any, is its head
        # The row after which each window first reaches the watermark: -1 if it already had
        # before this batch, n if it does not in this batch.
        cross = np.searchsorted(w_after, g_end, side="left").astype(np.int64)
        cross[g_end <= w_start] = -1

        # Firings (1): a batch row for a window the watermark has passed re-fires it at that row.
        row_fire = (key_row >= 0) & (key_row > cross[gid])
        # Firings (2): the first crossing fires what the window holds by then (if anything).
        stride = n + 1
        composite = gid * stride + (key_row + 1)
        g_idx = np.flatnonzero((cross >= 0) & (cross < n))
        at = np.searchsorted(composite, g_idx * stride + cross[g_idx] + 1, side="right") - 1
        ok = at >= heads[g_idx]
        g_idx, at = g_idx[ok], at[ok]

        fire_pos = np.concatenate([np.flatnonzero(row_fire), at])
        fire_row = np.concatenate([key_row[row_fire], cross[g_idx]])
        fire_gid = gid[fire_pos]
        # Revision = firings before this batch + rank among this batch's firings of the window.
        by_group = np.lexsort((fire_row, fire_gid))
        sorted_gid = fire_gid[by_group]
        first_of = np.searchsorted(sorted_gid, sorted_gid, side="left")
        rank = np.empty(len(by_group), np.int64)
        rank[by_group] = np.arange(len(by_group)) - first_of
        revision = g_emitted[fire_gid] + rank
        fired_count = np.bincount(fire_gid, minlength=ngroups)
        keep = g_end + self.lateness > self._watermark

        # Aggregates over [group head, end] for every firing and for every group's new state.
        out = np.lexsort((g_code[fire_gid], g_end[fire_gid], fire_row))
        ends = np.concatenate([fire_pos[out], tails[keep]])
        agg = self._prefix_aggregates(col, heads[gid[ends]], ends)
        nf = len(out)
        fg = fire_gid[out]
        fired = self._fired(g_code[fg], g_start[fg], agg["open_p"][:nf], agg["high"][:nf], agg["low"][:nf],
                            agg["close_p"][:nf], agg["volume"][:nf], agg["pv"][:nf], agg["count"][:nf],
                            revision[out], fire_row[out])
        self._si = {"code": g_code[keep], "start": g_start[keep], "open_t": agg["open_t"][nf:],
                    "close_t": agg["close_t"][nf:], "count": agg["count"][nf:],
                    "emitted": (g_emitted + fired_count)[keep]}
        self._sf = {k: agg[k][nf:] for k in _STATE_FLOAT}
        self._live = np.ones(len(self._si["start"]), bool)
        return fired

    @staticmethod
    def _prefix_aggregates(col: dict[str, npt.NDArray[Any]], lo: I64, hi: I64) -> dict[str, npt.NDArray[Any]]:
        """Each aggregate over positions ``lo[i]..hi[i]`` (inclusive) of the grouped layout.

        open = the least (event time, position): the earliest row, ties to the first to arrive;
        close = the greatest (event time, position): the latest row, ties to the last to arrive.
        """
        m = len(lo)
        if m == 0:
            return {k: v[:0] for k, v in col.items()}
        idx = np.empty(2 * m, np.int64)
        idx[0::2] = lo
        idx[1::2] = hi + 1  # at most len(layout) - 1: the layout carries one padding element at its end

        def reduce(ufunc: np.ufunc, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
            result: npt.NDArray[Any] = ufunc.reduceat(values, idx)[0::2]
            return result

        pos = np.arange(len(col["open_t"]), dtype=np.int64)  # the padding is in no reduced segment
        by_open = np.lexsort((pos, col["open_t"]))  # position -> rank in (time, position) order
        open_rank = np.empty_like(by_open)
        open_rank[by_open] = pos
        by_close = np.lexsort((pos, col["close_t"]))
        close_rank = np.empty_like(by_close)
        close_rank[by_close] = pos
        first = by_open[reduce(np.minimum, open_rank)]
        last = by_close[reduce(np.maximum, close_rank)]
        return {
            "open_t": col["open_t"][first], "open_p": col["open_p"][first],
            "close_t": col["close_t"][last], "close_p": col["close_p"][last],
            "high": reduce(np.maximum, col["high"]), "low": reduce(np.minimum, col["low"]),
            "volume": reduce(np.add, col["volume"]), "pv": reduce(np.add, col["pv"]),
            "count": reduce(np.add, col["count"]),
        }

    def _fired(self, code: I64, start: I64, open_: F64, high: F64, low: F64, close: F64, volume: F64, pv: F64,
               count: I64, revision: I64, row: I64) -> Fired:
        if len(code) == 0:
            return _empty_fired()
        # (np.errstate would cost ~5 us per call: division only where the volume is not 0)
        vwap = np.divide(pv, volume, out=np.full(len(pv), np.nan), where=volume != 0)
        if len(self._names_arr) != len(self._names):  # the names table only grows within a day
            self._names_arr = pa.array(self._names, pa.string())
        names = self._names_arr.take(pa.array(code, pa.int64()))
        return Fired(names, start, start + self.size, open_, high, low, close, volume, vwap, count,
                     revision.astype(np.int32), row)

    # -- small batches: row by row on the slot arrays ----------------------------------------

    def _compact(self) -> None:
        """Leave only live slots, packed (what the batch path and the flush read)."""
        if self._slot is None and len(self._free) == 0:
            return
        idx = np.flatnonzero(self._live)
        self._si = {k: v[idx] for k, v in self._si.items()}
        self._sf = {k: v[idx] for k, v in self._sf.items()}
        self._live = np.ones(len(idx), bool)
        self._free = []
        self._slot = None

    def _index(self) -> dict[tuple[int, int], int]:
        """The row path's view of compact state: the slot of each (sym code, window start), and its bounds."""
        si = self._si
        m = len(si["start"])
        slot = dict(zip(zip(si["code"].tolist(), si["start"].tolist(), strict=True), range(m), strict=True))
        self._slot = slot
        end = si["start"] + self.size
        pending = end[end > self._watermark]
        self._next_end = int(pending.min()) if len(pending) else int(_MAX)
        self._next_drop = int(end.min()) + self.lateness if m else int(_MAX)
        return slot

    def _grow_slots(self) -> None:
        cap = len(self._live)
        new = max(_MIN_SLOTS, 2 * cap)
        self._si = {k: np.concatenate([v, np.zeros(new - cap, np.int64)]) for k, v in self._si.items()}
        self._sf = {k: np.concatenate([v, np.zeros(new - cap, np.float64)]) for k, v in self._sf.items()}
        self._live = np.concatenate([self._live, np.zeros(new - cap, bool)])
        self._free = list(range(new - 1, cap - 1, -1))  # pop() hands out the lowest first

    def _update_rows(self, ts: list[int], names: list[str], ps: list[float], qs: list[float],
                     proc_time: int) -> Result:
        """``update`` for a few rows: the same semantics, one row at a time, in place; no per-batch numpy setup.

        Per row: assign it to its open windows (a dict lookup each), fold it in with scalar writes,
        move the watermark (one masked min over the syms), and only when the watermark passes the
        least pending window end, select and fire the windows it passed, vectorized. Sums are folded
        row by row, so ``volume`` and ``pv`` may differ from the batch path's pairwise sums in the
        last bits; everything else is identical.
        """
        slot = self._slot if self._slot is not None else self._index()
        codes: list[int] = []
        for name in names:
            code = self._code.get(name)
            if code is None:
                code = self._code[name] = len(self._names)
                self._names.append(name)
            codes.append(code)
        self._grow_syms()
        mx, last_proc = self._max, self._proc
        active = (last_proc != NO_WATERMARK) & (proc_time - last_proc <= self.idle)
        size, slide, bound, lateness = self.size, self.slide, self.bound, self.lateness
        per_row = size // slide
        wm = self._watermark
        fired: list[dict[str, npt.NDArray[Any]]] = []
        late_rows: list[int] = []
        late_marks: list[int] = []
        for i, (t, code, p, q) in enumerate(zip(ts, codes, ps, qs, strict=True)):
            met = wm
            last_start = (t // slide) * slide
            refire: list[int] = []
            if last_start + size + lateness <= met:
                late_rows.append(i)
                late_marks.append(met)
            else:
                si, sf = self._si, self._sf
                for m in range(per_row):
                    start = last_start - m * slide
                    end = start + size
                    if end + lateness <= met:  # older windows of the row close earlier: none left open
                        break
                    k = slot.get((code, start))
                    if k is None:
                        if not self._free:
                            self._grow_slots()
                            si, sf = self._si, self._sf
                        k = self._free.pop()
                        slot[(code, start)] = k
                        self._live[k] = True
                        si["code"][k], si["start"][k], si["open_t"][k], si["close_t"][k] = code, start, t, t
                        si["count"][k], si["emitted"][k] = 1, 0
                        sf["open_p"][k] = sf["close_p"][k] = sf["high"][k] = sf["low"][k] = p
                        sf["volume"][k], sf["pv"][k] = q, p * q
                        if end > met:
                            self._next_end = min(self._next_end, end)
                        self._next_drop = min(self._next_drop, end + lateness)
                    else:
                        if t < si["open_t"][k]:  # ties: the first to arrive stays the open
                            si["open_t"][k], sf["open_p"][k] = t, p
                        if t >= si["close_t"][k]:  # ties: the last to arrive becomes the close
                            si["close_t"][k], sf["close_p"][k] = t, p
                        if p > sf["high"][k] or p != p:  # NaN wins, as np.maximum makes it
                            sf["high"][k] = p
                        if p < sf["low"][k] or p != p:
                            sf["low"][k] = p
                        sf["volume"][k] += q
                        sf["pv"][k] += p * q
                        si["count"][k] += 1
                    if end <= met:  # the watermark had passed it: re-fire now with the update
                        refire.append(k)
            # The watermark after this row: its sym is active now, with its max (late rows count too).
            if t > mx[code]:
                mx[code] = t
            last_proc[code] = proc_time
            active[code] = True
            wm = max(wm, int(mx.min(where=active, initial=_MAX)) - bound)
            if refire or wm >= self._next_end:
                fired.append(self._fire_rows(refire, met, wm, i))
            if wm >= self._next_drop:
                self._drop(slot, wm)
        self._watermark = wm
        self.late_count += len(late_rows)
        late = Late(np.array(late_rows, np.int64), np.array(late_marks, np.int64)) if late_rows else _empty_late()
        if not fired:
            return Result(_empty_fired(), late)
        cols = fired[0] if len(fired) == 1 else {k: np.concatenate([f[k] for f in fired]) for k in fired[0]}
        return Result(self._fired(cols["code"], cols["start"], cols["open_p"], cols["high"], cols["low"],
                                  cols["close_p"], cols["volume"], cols["pv"], cols["count"], cols["revision"],
                                  cols["row"]), late)

    def _fire_rows(self, refire: list[int], met: int, wm: int, row: int) -> dict[str, npt.NDArray[Any]]:
        """The firings after one row: its re-fired windows and those the watermark passed, by (end, sym)."""
        si, sf = self._si, self._sf
        slots = np.array(refire, np.int64)
        if wm >= self._next_end:
            end = si["start"] + self.size
            pending = self._live & (end > met)
            crossed = np.flatnonzero(pending & (end <= wm))
            slots = np.concatenate([slots, crossed]) if len(refire) else crossed
            rest = end[pending & (end > wm)]
            self._next_end = int(rest.min()) if len(rest) else int(_MAX)
        slots = slots[np.lexsort((si["code"][slots], si["start"][slots]))]
        snap: dict[str, npt.NDArray[Any]] = {k: si[k][slots] for k in ("code", "start", "count")}
        snap.update({k: sf[k][slots] for k in ("open_p", "close_p", "high", "low", "volume", "pv")})
        snap["revision"] = si["emitted"][slots]
        snap["row"] = np.full(len(slots), row, np.int64)
        si["emitted"][slots] += 1
        return snap

    def _drop(self, slot: dict[tuple[int, int], int], wm: int) -> None:
        """Free the slots of windows the watermark took past end + lateness."""
        si = self._si
        closes = si["start"] + (self.size + self.lateness)
        gone = np.flatnonzero(self._live & (closes <= wm))
        self._live[gone] = False
        for key in zip(si["code"][gone].tolist(), si["start"][gone].tolist(), strict=True):
            del slot[key]
        self._free.extend(gone.tolist())
        rest = closes[self._live]
        self._next_drop = int(rest.min()) if len(rest) else int(_MAX)

    # -- end of day --------------------------------------------------------------------------

    def flush(self) -> Fired:
        """Fire every window not yet fired (as if the watermark went to +inf), then forget the day."""
        self._compact()
        si, sf = self._si, self._sf
        end = si["start"] + self.size
        pending = np.flatnonzero(end > self._watermark)  # the others already fired and hold no new rows
        order = pending[np.lexsort((si["code"][pending], end[pending]))]
        fired = self._fired(si["code"][order], si["start"][order], sf["open_p"][order], sf["high"][order],
                            sf["low"][order], sf["close_p"][order], sf["volume"][order], sf["pv"][order],
                            si["count"][order], si["emitted"][order], np.full(len(order), -1, np.int64))
        self._reset()
        return fired
