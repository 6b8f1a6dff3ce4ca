"""Event-time windows: against pandas, against a row-by-row reference, out of order, late, idle, flushed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rte.windows import NO_WATERMARK, EventTimeWindows, Fired

S = 1_000_000_000  # one second in ns
T0 = 1_700_000_000 * S  # an epoch-aligned-enough day start


# -- an independent, deliberately naive reference: one row at a time, dicts, no numpy -----------

@dataclass
class _Window:
    open_t: int
    open_p: float
    close_t: int
    close_p: float
    high: float
    low: float
    volume: float = 0.0
    pv: float = 0.0
    count: int = 0
    emitted: int = 0
    dirty: bool = True


@dataclass
class Reference:
    size: int
    slide: int
    bound: int
    idle: int
    lateness: int
    wm: float = float("-inf")
    sym_max: dict[str, int] = field(default_factory=dict)
    sym_proc: dict[str, int] = field(default_factory=dict)
    windows: dict[tuple[str, int], _Window] = field(default_factory=dict)

    def row(self, t: int, sym: str, p: float, q: float, proc: int) -> tuple[list[tuple[Any, ...]], float | None]:
        """One row: the firings it causes, and the watermark it met if it is late (else None)."""
        met = self.wm
        last = (t // self.slide) * self.slide
        starts = [last - m * self.slide for m in range(self.size // self.slide)]
        live = [s for s in starts if s + self.size + self.lateness > met]
        for s in live:
            w = self.windows.get((sym, s))
            if w is None:
                w = self.windows[(sym, s)] = _Window(t, p, t, p, p, p)
            if t < w.open_t:
                w.open_t, w.open_p = t, p
            if t >= w.close_t:
                w.close_t, w.close_p = t, p
            w.high, w.low = max(w.high, p), min(w.low, p)
            w.volume += q
            w.pv += p * q
            w.count += 1
            w.dirty = True
        self.sym_max[sym] = max(self.sym_max.get(sym, t), t)
        self.sym_proc[sym] = proc
        active = [s for s, last_proc in self.sym_proc.items() if proc - last_proc <= self.idle]
        self.wm = max(self.wm, min(self.sym_max[s] for s in active) - self.bound)
        fired = self._fire(lambda end: end <= self.wm)
        for key in [k for k in self.windows if k[1] + self.size + self.lateness <= self.wm]:
            del self.windows[key]
        return fired, (None if live else met)

    def _fire(self, due: Any) -> list[tuple[Any, ...]]:
        codes = {s: i for i, s in enumerate(self.sym_proc)}  # first-appearance order
        ready = sorted((k for k, w in self.windows.items() if w.dirty and due(k[1] + self.size)),
                       key=lambda k: (k[1] + self.size, codes[k[0]]))
        out = []
        for sym, s in ready:
            w = self.windows[(sym, s)]
            out.append((sym, s, s + self.size, w.open_p, w.high, w.low, w.close_p, w.volume,
                        w.pv / w.volume, w.count, w.emitted))
            w.emitted += 1
            w.dirty = False
        return out

    def flush(self) -> list[tuple[Any, ...]]:
        out = self._fire(lambda end: True)
        self.windows.clear()
        return out


def fired_rows(f: Fired, row_offset: int = 0) -> list[tuple[Any, ...]]:
    syms = f.sym.to_pylist()
    return [(syms[i], int(f.start[i]), int(f.end[i]), float(f.open[i]), float(f.high[i]), float(f.low[i]),
             float(f.close[i]), float(f.volume[i]), float(f.vwap[i]), int(f.count[i]), int(f.revision[i]),
             int(f.row[i]) + (row_offset if f.row[i] >= 0 else 0)) for i in range(len(f))]


def same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    """Exact on everything but the float sums (volume, vwap), whose rounding depends on summation order."""
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert g[:7] == w[:7] and g[9:] == w[9:], (g, w)
        assert g[7] == pytest.approx(w[7], rel=1e-12) and g[8] == pytest.approx(w[8], rel=1e-12), (g, w)


# -- random streams -----------------------------------------------------------------------------

@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nsyms = draw(st.integers(1, 4))
    # event times wander forward with jitter up to 3 s either way, so some rows are late
    t = T0 + np.cumsum(rng.integers(0, S // 2, n)) + rng.integers(-3 * S, 3 * S, n)
    if draw(st.booleans()):  # coarse clock: equal event times (ties for open/close) and rows on window bounds
        t = t // (S // 4) * (S // 4)
    sym = [f"S{k}" for k in rng.integers(0, nsyms, n)]
    price = np.round(100 + rng.normal(0, 1, n), 2)
    size = rng.integers(1, 10, n).astype(float)
    cuts = sorted(set(rng.integers(1, n, draw(st.integers(0, 8))).tolist())) if n > 1 else []
    procs = T0 + np.cumsum(rng.integers(0, 7, len(cuts) + 1)) * S  # whole seconds: idleness hits its bound
    return {"t": t, "sym": sym, "price": price, "size": size, "cuts": [0, *cuts, n], "procs": procs}


params = st.fixed_dictionaries({
    "size": st.sampled_from([S, 2 * S, 3 * S]),
    "hops": st.sampled_from([1, 1, 2, 3]),
    "bound": st.sampled_from([0, S // 2, S, 2 * S]),
    "lateness": st.sampled_from([0, S, 4 * S]),
    "idle": st.sampled_from([S, 5 * S, 20 * S]),
})


def run_windows(w: EventTimeWindows, data: dict[str, Any], one_row: bool = False,
                paths: list[int] | None = None) -> dict[str, Any]:
    """Feed ``data`` in its cuts (or row by row); ``paths``: ``w.scalar_rows`` before each update, cycled."""
    choice = itertools.cycle(paths or [w.scalar_rows])
    fired: list[tuple[Any, ...]] = []
    late: list[tuple[int, int]] = []
    marks: list[int] = []
    held: list[int] = []
    cuts = data["cuts"]
    for m in range(len(cuts) - 1):
        spans = [(i, i + 1) for i in range(cuts[m], cuts[m + 1])] if one_row else [(cuts[m], cuts[m + 1])]
        for lo, hi in spans:
            w.scalar_rows = next(choice)
            res = w.update(data["t"][lo:hi], pa.array(data["sym"][lo:hi]), data["price"][lo:hi],
                           data["size"][lo:hi], int(data["procs"][m]))
            fired += fired_rows(res.fired, lo)
            late += [(int(r) + lo, int(wm)) for r, wm in zip(res.late.row, res.late.watermark, strict=True)]
            marks.append(w.watermark)
        held.append(w.open_windows)
    return {"fired": fired, "late": late, "marks": marks, "held": held, "flush": fired_rows(w.flush())}


def make(p: dict[str, int]) -> tuple[EventTimeWindows, Reference]:
    slide = p["size"] // p["hops"] if p["size"] % p["hops"] == 0 else p["size"]
    w = EventTimeWindows(p["size"], slide, bound_ns=p["bound"], idle_ns=p["idle"], lateness_ns=p["lateness"])
    return w, Reference(p["size"], slide, p["bound"], p["idle"], p["lateness"])


@settings(max_examples=60, deadline=None)
@given(data=streams(), p=params)
def test_matches_row_by_row_reference(data: dict[str, Any], p: dict[str, int]) -> None:
    w, ref = make(p)
    got = run_windows(w, data)
    fired: list[tuple[Any, ...]] = []
    late: list[tuple[int, int]] = []
    held: list[int] = []
    cuts = data["cuts"]
    for m in range(len(cuts) - 1):
        for i in range(cuts[m], cuts[m + 1]):
            out, met = ref.row(int(data["t"][i]), data["sym"][i], float(data["price"][i]),
                               float(data["size"][i]), int(data["procs"][m]))
            fired += [(*f, i) for f in out]
            if met is not None:
                late.append((i, int(met) if met != float("-inf") else NO_WATERMARK))
        held.append(len(ref.windows))
    same(got["fired"], fired)
    assert got["held"] == held  # state is dropped exactly when the watermark reaches end + lateness
    assert got["late"] == late
    assert w.late_count == len(late)
    same(got["flush"], [(*f, -1) for f in ref.flush()])


@settings(max_examples=40, deadline=None)
@given(data=streams(), p=params)
def test_batch_size_does_not_change_output(data: dict[str, Any], p: dict[str, int]) -> None:
    whole = run_windows(make(p)[0], data)
    single = run_windows(make(p)[0], data, one_row=True)
    same(single["fired"], whole["fired"])
    assert single["late"] == whole["late"]
    same(single["flush"], whole["flush"])
    # the watermark never goes backwards, whatever the batching
    assert all(a <= b for a, b in zip(single["marks"], single["marks"][1:], strict=False))
    assert single["marks"][-1] == whole["marks"][-1]


# -- oracles: pandas ----------------------------------------------------------------------------

def random_trades(n: int, seed: int, syms: tuple[str, ...] = ("BTC", "ETH", "SOL")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = T0 + np.sort(rng.integers(0, 120 * S, n))
    return pd.DataFrame({"time": t, "sym": rng.choice(list(syms), n), "price": np.round(rng.uniform(90, 110, n), 2),
                         "size": np.round(rng.uniform(0.1, 5, n), 3)})


def collect_all(w: EventTimeWindows, df: pd.DataFrame, chunk: int) -> pd.DataFrame:
    rows = []
    for lo in range(0, len(df), chunk):
        part = df.iloc[lo:lo + chunk]
        res = w.update(part["time"].to_numpy(), pa.array(part["sym"].tolist()), part["price"].to_numpy(),
                       part["size"].to_numpy(), int(part["time"].iloc[-1]))
        assert len(res.late) == 0
        rows += fired_rows(res.fired)
    rows += fired_rows(w.flush())
    cols = ["sym", "start", "end", "open", "high", "low", "close", "volume", "vwap", "count", "revision", "row"]
    return pd.DataFrame(rows, columns=cols).sort_values(["sym", "start"]).reset_index(drop=True)


def pandas_bars(df: pd.DataFrame) -> pd.DataFrame:
    g = df.assign(pv=df.price * df["size"]).groupby(["sym", "start"], sort=True)
    out = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                volume=("size", "sum"), pv=("pv", "sum"), count=("price", "size")).reset_index()
    out["vwap"] = out.pv / out.volume
    return out


def compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(zip(got.sym, got.start, strict=True)) == list(zip(want.sym, want.start, strict=True))
    for col in ("open", "high", "low", "close", "count"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    for col in ("volume", "vwap"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-12, err_msg=col)
    assert (got.revision == 0).all()  # in order: every window fires exactly once


@pytest.mark.parametrize("chunk", [1, 7, 5000])
def test_tumbling_matches_pandas(chunk: int) -> None:
    df = random_trades(3000, seed=1)
    got = collect_all(EventTimeWindows(5 * S, bound_ns=S), df, chunk)
    want = pandas_bars(df.assign(start=(df.time // (5 * S)) * (5 * S)))
    compare(got, want)
    assert (got.end - got.start == 5 * S).all()


@pytest.mark.parametrize("chunk", [1, 500])
def test_hopping_matches_pandas_enumeration(chunk: int) -> None:
    size, slide = 6 * S, 2 * S
    df = random_trades(2000, seed=2)
    got = collect_all(EventTimeWindows(size, slide, bound_ns=0), df, chunk)
    # explicit enumeration: every window [k*slide, k*slide + size) that holds the row
    parts = [df.assign(start=(df.time // slide) * slide - m * slide) for m in range(size // slide)]
    every = pd.concat(parts).sort_values(["time"], kind="stable")
    every = every[(every.start <= every.time) & (every.time < every.start + size)]
    want = pandas_bars(every)
    compare(got, want)


def test_size_must_be_a_multiple_of_the_slide() -> None:
    with pytest.raises(ValueError, match="W % S == 0"):
        EventTimeWindows(5 * S, 2 * S)


# -- out of order, late, lateness, idleness, flush ----------------------------------------------

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bound=st.sampled_from([S // 10, S, 3 * S]), hops=st.sampled_from([1, 2]))
def test_shuffled_within_the_bound_equals_in_order(seed: int, bound: int, hops: int) -> None:
    rng = np.random.default_rng(seed)
    df = random_trades(400, seed)
    df = df.drop_duplicates("time")  # equal event times would tie-break on arrival order
    # arrival order = event time + a delay in [0, bound]: no row arrives more than `bound` after a later one
    shuffled = df.iloc[np.argsort(df.time.to_numpy() + rng.integers(0, bound + 1, len(df)), kind="stable")]
    size = 4 * S
    in_order = collect_all(EventTimeWindows(size, size // hops, bound_ns=bound), df, 50)
    out_of_order = collect_all(EventTimeWindows(size, size // hops, bound_ns=bound), shuffled, 50)
    compare(out_of_order, in_order)


def upd(w: EventTimeWindows, t: list[int], sym: list[str], price: list[float], size: list[float],
        proc: int) -> Any:
    return w.update(np.array(t, np.int64), pa.array(sym), price, size, proc)


def test_beyond_the_bound_is_late_and_counted() -> None:
    w = EventTimeWindows(S, bound_ns=S)
    res = upd(w, [T0 + S // 2, T0 + 5 * S, T0 + S // 2 + 1], ["A"] * 3, [10.0, 11.0, 12.0], [1.0, 1.0, 1.0], T0)
    assert res.late.row.tolist() == [2]
    assert res.late.watermark.tolist() == [T0 + 4 * S]
    assert w.late_count == 1
    assert fired_rows(res.fired) == [("A", T0, T0 + S, 10.0, 10.0, 10.0, 10.0, 1.0, 10.0, 1, 0, 1)]


def test_within_lateness_refires_with_the_full_update() -> None:
    w = EventTimeWindows(S, bound_ns=S, lateness_ns=10 * S)
    first = upd(w, [T0 + S // 2, T0 + 5 * S], ["A", "A"], [10.0, 11.0], [2.0, 1.0], T0)
    assert [r[-2] for r in fired_rows(first.fired)] == [0]
    # later than the bound, within the lateness: revision 1, totals include both rows
    second = upd(w, [T0 + S // 4], ["A"], [13.0], [1.0], T0 + 1)
    assert len(second.late) == 0
    assert fired_rows(second.fired) == [("A", T0, T0 + S, 13.0, 13.0, 10.0, 10.0, 3.0, 33.0 / 3.0, 2, 1, 0)]
    third = upd(w, [T0 + 3 * S // 4], ["A"], [7.0], [1.0], T0 + 2)
    assert fired_rows(third.fired) == [("A", T0, T0 + S, 13.0, 13.0, 7.0, 7.0, 4.0, 10.0, 3, 2, 0)]
    # the watermark passes end + lateness: the state goes, and the next row for it is late
    upd(w, [T0 + 20 * S], ["A"], [11.0], [1.0], T0 + 3)
    assert w.watermark == T0 + 19 * S
    fourth = upd(w, [T0 + S // 2], ["A"], [1.0], [1.0], T0 + 4)
    assert len(fourth.fired) == 0 and fourth.late.row.tolist() == [0]


def test_an_idle_sym_stops_holding_the_watermark() -> None:
    w = EventTimeWindows(S, bound_ns=0, idle_ns=10 * S)
    upd(w, [T0], ["QUIET"], [1.0], [1.0], T0)
    upd(w, [T0 + 30 * S], ["BUSY"], [2.0], [1.0], T0 + S)
    assert w.watermark == T0  # QUIET is still active: min(T0, T0 + 30s)
    assert w.idle_syms(T0 + S) == []
    res = upd(w, [T0 + 31 * S], ["BUSY"], [2.0], [1.0], T0 + 11 * S)  # QUIET silent for 11 s of TP time
    assert w.idle_syms(T0 + 11 * S) == ["QUIET"]
    assert w.watermark == T0 + 31 * S
    assert [(r[0], r[1]) for r in fired_rows(res.fired)] == [("QUIET", T0), ("BUSY", T0 + 30 * S)]
    # QUIET comes back with old rows: the watermark does not go back, the rows are late
    back = upd(w, [T0 + 2 * S], ["QUIET"], [1.0], [1.0], T0 + 12 * S)
    assert w.watermark == T0 + 31 * S
    assert back.late.row.tolist() == [0]


def test_flush_fires_every_open_window_and_starts_clean() -> None:
    w = EventTimeWindows(2 * S, S, bound_ns=10 * S)
    upd(w, [T0, T0 + S, T0 + 3 * S], ["A", "B", "A"], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0], T0)
    assert w.open_windows == 6  # A: [-1,1) [0,2) [2,4) [3,5); B: [0,2) [1,3); none fired yet
    fired = fired_rows(w.flush())
    assert [(r[0], r[1] - T0) for r in fired] == [
        ("A", -S), ("A", 0), ("B", 0), ("B", S), ("A", 2 * S), ("A", 3 * S)]
    assert all(r[-2] == 0 and r[-1] == -1 for r in fired)
    assert w.open_windows == 0 and w.watermark == NO_WATERMARK
    res = upd(w, [T0 - 100 * S], ["A"], [1.0], [1.0], T0 + S)  # a new day: nothing is late yet
    assert len(res.late) == 0


def test_watermark_in_small_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows x syms running-max matrix is built in chunks to bound memory; chunking changes nothing."""
    rng = np.random.default_rng(11)
    n = 500
    data = {"t": T0 + np.cumsum(rng.integers(0, S, n)) + rng.integers(-8 * S, 8 * S, n),
            "sym": [f"S{k}" for k in rng.integers(0, 5, n)], "price": rng.uniform(90, 110, n),
            "size": rng.uniform(1, 5, n), "cuts": [0, 200, 201, 500], "procs": T0 + np.array([0, 3, 30]) * S}
    p = {"size": 2 * S, "hops": 2, "bound": S, "lateness": S, "idle": 5 * S}
    whole = run_windows(make(p)[0], data)
    monkeypatch.setattr("rte.windows._CELLS", 7)  # 1 row per chunk with 5 syms
    chunked = run_windows(make(p)[0], data)
    assert chunked == whole
    assert len(whole["late"]) > 0 and any(r[10] > 0 for r in whole["fired"])


# -- the row path (small updates) against the batch path (big ones) ----------------------------

def run_paths(p: dict[str, int], data: dict[str, Any], scalar_rows: list[int]) -> dict[str, Any]:
    """``run_windows`` with ``scalar_rows`` cycled over the updates (0: the batch path, 10**9: the row path)."""
    return run_windows(make(p)[0], data, paths=scalar_rows)


def identical(got: dict[str, Any], want: dict[str, Any], same_updates: bool = True) -> None:
    """Everything equal, floats bit for bit, except the sums (volume, vwap): last bits, summation order."""
    same(got["fired"], want["fired"])
    same(got["flush"], want["flush"])
    strip = [(f[:7], f[9:]) for f in got["fired"] + got["flush"]]
    assert strip == [(f[:7], f[9:]) for f in want["fired"] + want["flush"]]  # open/high/low/close, count, ...: exact
    assert got["late"] == want["late"] and got["held"] == want["held"]
    if same_updates:  # the watermark after every update
        assert got["marks"] == want["marks"]
    assert got["marks"][-1] == want["marks"][-1]


@settings(max_examples=60, deadline=None)
@given(data=streams(), p=params)
def test_row_path_equals_batch_path(data: dict[str, Any], p: dict[str, int]) -> None:
    batch = run_paths(p, data, [0])
    rows = run_paths(p, data, [10**9])
    identical(rows, batch)
    one_row_batch_path = run_windows(make(p)[0], data, one_row=True, paths=[0])
    identical(one_row_batch_path, batch, same_updates=False)


@settings(max_examples=40, deadline=None)
@given(data=streams(), p=params, pattern=st.lists(st.sampled_from([0, 10**9]), min_size=2, max_size=5))
def test_switching_paths_between_updates_changes_nothing(data: dict[str, Any], p: dict[str, int],
                                                         pattern: list[int]) -> None:
    """State written by one path and read by the other (slots <-> compact arrays) stays the same state."""
    identical(run_paths(p, data, pattern), run_paths(p, data, [0]))


@pytest.mark.parametrize("hops", [1, 3])
def test_row_path_with_many_syms_matches_pandas(hops: int) -> None:
    """150 syms: the slot arrays grow past their first capacity and reuse freed slots."""
    size = 3 * S
    syms = tuple(f"S{i:03d}" for i in range(150))
    df = random_trades(6000, seed=3, syms=syms)
    got = collect_all(EventTimeWindows(size, size // hops, bound_ns=S), df, 3)
    parts = [df.assign(start=(df.time // (size // hops)) * (size // hops) - m * (size // hops)) for m in range(hops)]
    every = pd.concat(parts).sort_values(["time"], kind="stable")
    compare(got, pandas_bars(every))


@pytest.mark.parametrize("scalar_rows", [0, 10**9])
def test_a_nan_price_makes_high_and_low_nan_on_both_paths(scalar_rows: int) -> None:
    """As ``np.maximum`` does: whichever the arrival order, a NaN price propagates to high and low."""
    for prices in ([10.0, np.nan, 12.0], [np.nan, 10.0, 12.0], [10.0, 12.0, np.nan]):
        w = EventTimeWindows(S, bound_ns=0, scalar_rows=scalar_rows)
        for i, price in enumerate(prices):
            upd(w, [T0 + i], ["A"], [price], [1.0], T0)
        res = upd(w, [T0 + 2 * S], ["A"], [1.0], [1.0], T0)
        assert len(res.fired) == 1
        assert np.isnan(res.fired.high[0]) and np.isnan(res.fired.low[0]), prices
