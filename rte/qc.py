"""Quality control of the market-data stream: the ``qc_alert`` table (``tick rte qc``).

:class:`QcEngine` watches ``trade``, ``quote``, ``l2`` and ``feed_event`` and publishes one
``qc_alert`` row each time a check fires (``state`` raised) and, for the checks where
recovery means something, one more when it recovers (``state`` cleared). ``value`` and
``threshold`` are in the check's unit (below); ``detail`` says the same in words.

======================  ========  ==========  =====================================================
check_name              severity  clears?     fires when (value / threshold unit)
======================  ========  ==========  =====================================================
``gap``                 warning   one-off     a ``feed_event`` row of kind gap, or a jump in a
                                              gap-free venue's trade ``seq`` / l2 update ids
                                              (numbers missing / 0)
``heartbeat``           critical  yes         a venue sent no row at all (any table) for longer
                                              than ``heartbeat_ns`` (seconds silent / seconds)
``connection``          critical  yes         a ``feed_event`` disconnect (the handler lost its
                                              connection, e.g. its heartbeat watchdog fired);
                                              cleared by its reconnect (no value / threshold)
``checksum``            warning   one-off     a ``feed_event`` checksum: a book failed its
                                              venue's checksum and is being rebuilt (none)
``stale``               warning   yes         a (venue, sym) had no row of one table for longer
                                              than that table's threshold (seconds / seconds)
``crossed``             critical  yes         a quote with bid > ask ((bid - ask) / mid, bps / 0)
``locked``              info      yes         a quote with bid == ask (0 / 0)
``xsource``             warning   yes         a venue's mid is more than ``xsource_bps`` away from
                                              the median of the other fresh venues' mids for
                                              ``xsource_raise_after`` quotes in a row; cleared after
                                              ``xsource_clear_after`` quotes in a row within
                                              ``xsource_clear_bps`` (bps / bps)
``price``               critical  one-off     a price <= 0 or NaN (the price / 0)
``size``                critical  one-off     a trade size <= 0 or NaN, a quote or l2 size < 0
``jump``                warning   one-off     a trade price moved more than ``jump_k`` x the
                                              recent volatility (bps moved / bps allowed)
``time_back``           warning   one-off     event ``time`` earlier than an earlier row of the
                                              same (table, venue, sym) (seconds back / seconds)
``time_future``         warning   one-off     event ``time`` later than the row's ``tp_time`` by
                                              more than ``future_ns`` (seconds ahead / seconds)
======================  ========  ==========  =====================================================

"Now" is the largest ``tp_time`` seen (the TP's receive time, logged, so a replay yields the
same alerts); the wall clock is never read. So a silence is noticed when some other update
arrives: ``stale`` and ``heartbeat`` are raised at the first update whose ``tp_time`` is past
the threshold (their row's ``time`` is that ``tp_time``), and when the silent key speaks again
before anything else arrived, the alert is raised and cleared at once. Rows of the data checks
carry the event ``time`` of the row that fired them.

Sequence checks on the data need a venue whose numbers are gap-free: ``trade_seq`` maps venue
patterns (``fnmatch``) to the scope of trade ``seq`` (``"venue"``: one sequence across the
venue's symbols, as the simulator's; ``"sym"``: one per symbol), and ``l2_seq`` lists the
venues whose book update ids run on by one through snapshots too (the simulator's: a snapshot
after a lost update carries the next id, so the jump shows the loss). A gap reported both by a
``feed_event`` and by the data (same venue, sym, expected, got) gives one alert.

``jump``: per (venue, sym), ``x`` = |log-return| / sqrt(seconds since the reference trade,
at least ``jump_dt_floor_ns``), taken against both the previous trade and the last trade that
was not a jump; a trade is a jump when the smaller ``x`` exceeds ``jump_k`` x the EWMA of
``x`` (span ``jump_span`` trades, over non-jump trades only) and the smaller move exceeds
``jump_min_bps``, once ``jump_warmup`` returns have been seen. So a bad print is one alert
(the trade after it is measured against the last good one), and a real level shift is one
alert too (the next trade is close to the shifted price). When a (venue, sym) comes back from
a stale period its reference restarts, and its trades are not judged while its quotes are
stale, nor until they resume, nor those stamped before the resuming quote (a venue's first
trades after a freeze print against a book we have not seen, and may be logged after that
quote).

The jump rule is sequential (whether a trade is a jump depends on which earlier ones were);
per update it is found by iterating "flags -> references, EWMA -> flags" from no flags. The
rule is causal, so each round makes at least one more leading row exact and a fixed point is
the row-by-row answer; it takes 2-3 rounds in practice (``JUMP_ITERATIONS`` at most, after
which the last round's flags stand).

Vectorized per batch with numpy and per-(venue, sym) state; Python loops run per group of a
batch (venue, sym or pair) and per alert, never per input row.
"""

from __future__ import annotations

import fnmatch
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from rte.engine import Engine, Output
from rte.units import parse_duration
from tickerplant.message import Message
from tickerplant.schema import Registry

__all__ = ["QcConfig", "QcEngine", "parse_stale"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

SEC = 1_000_000_000
DATA_TABLES = ("trade", "quote", "l2")
JUMP_ITERATIONS = 64
_GAPS_REMEMBERED = 4096
# feed_event kinds that become alerts (the others describe a healthy feed, or one the data checks already watch)
_FEED_KINDS = ("gap", "checksum", "disconnect", "reconnect", "connect")


def parse_stale(text: str, base: Mapping[str, int] | None = None) -> dict[str, int]:
    """``--stale``: ``"5s"`` sets every table; ``"quote=2s,trade=30s"`` sets those over ``base``."""
    out = dict(QcConfig().stale if base is None else base)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        table, eq, dur = part.partition("=")
        if eq:
            if table.strip() not in DATA_TABLES:
                raise ValueError(f"--stale {text!r}: unknown table {table.strip()!r} (one of {', '.join(DATA_TABLES)})")
            out[table.strip()] = parse_duration(dur)
        else:
            out = dict.fromkeys(DATA_TABLES, parse_duration(part))
    return out


@dataclass(frozen=True)
class QcConfig:
    """Thresholds of every check; durations in ns, distances in bps (see the module docstring)."""

    stale: Mapping[str, int] = field(
        default_factory=lambda: {"quote": 2 * SEC, "l2": 2 * SEC, "trade": 30 * SEC})
    heartbeat_ns: int = 5 * SEC
    xsource_bps: float = 50.0
    xsource_clear_bps: float | None = None  # default: half of xsource_bps
    xsource_raise_after: int = 3
    xsource_clear_after: int = 5
    xsource_min_others: int = 2
    jump_k: float = 10.0
    jump_min_bps: float = 20.0
    jump_span: int = 50
    jump_warmup: int = 20
    jump_dt_floor_ns: int = 1_000_000
    back_ns: int = 0
    future_ns: int = 1 * SEC
    trade_seq: Mapping[str, str] = field(default_factory=lambda: {"SIM*": "venue"})
    l2_seq: Sequence[str] = ("SIM*",)

    def __post_init__(self) -> None:
        for table, ns in self.stale.items():
            if table not in DATA_TABLES or ns <= 0:
                raise ValueError(f"stale threshold {table}={ns}ns: tables are {', '.join(DATA_TABLES)}, ns > 0")
        for scope in self.trade_seq.values():
            if scope not in ("venue", "sym"):
                raise ValueError(f"trade_seq scope must be 'venue' or 'sym', got {scope!r}")
        if not 0 < self.clear_bps <= self.xsource_bps:
            raise ValueError(f"xsource clear threshold {self.clear_bps} must be within (0, {self.xsource_bps}]")
        if min(self.xsource_raise_after, self.xsource_clear_after, self.xsource_min_others) < 1:
            raise ValueError("xsource_raise_after, xsource_clear_after and xsource_min_others must be >= 1")
        if self.jump_span < 2:
            raise ValueError(f"jump_span must be >= 2 trades, got {self.jump_span}")

    @property
    def clear_bps(self) -> float:
        return self.xsource_bps / 2 if self.xsource_clear_bps is None else self.xsource_clear_bps


def _f64(batch: pa.RecordBatch, name: str) -> F64:
    return np.asarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _i64(batch: pa.RecordBatch, name: str) -> I64:
    col = batch.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return np.asarray(col.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _first_in_group(sorted_groups: I64) -> Bool:
    first = np.ones(len(sorted_groups), dtype=np.bool_)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return first


def _groups(sorted_groups: I64) -> tuple[I64, I64, I64]:
    """For keys sorted by group: (group number of each row 0..G-1, first row of each group, its last row)."""
    first = _first_in_group(sorted_groups)
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(sorted_groups)) - 1
    return np.cumsum(first) - 1, starts, ends


def _exclusive_cummax(gid: I64, starts: I64, values: I64, init: I64) -> I64:
    """Per row of rows sorted by group ``gid``: the max of ``init[gid]`` and the group's earlier ``values``.

    One pass for every group: values are replaced by their rank and offset by group, so a
    running max over the whole batch never carries one group's values into the next.
    """
    uniq, rank = np.unique(values, return_inverse=True)
    width = len(uniq)
    keyed = np.maximum.accumulate(gid * width + rank.reshape(-1))
    inclusive = uniq[keyed - gid * width]
    before = np.empty_like(values)
    before[1:] = inclusive[:-1]
    before[starts] = np.iinfo(np.int64).min
    return np.maximum(before, init[gid])


def _runs(flags: Bool, carry: int) -> I64:
    """Length of the run of True ending at each row (0 where False); ``carry`` continues a run."""
    idx = np.arange(len(flags))
    last_false = np.maximum.accumulate(np.where(flags, -1, idx))
    run = idx - last_false
    run[last_false < 0] += carry
    return run


class _Alerts:
    """The ``qc_alert`` rows of one update, gathered per check (alerts are rare: lists are fine)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def add(self, time: int, sym: str | None, exchange: str | None, check: str, severity: str, state: str,
            value: float | None, threshold: float | None, detail: str) -> None:
        self.rows.append((time, sym, exchange, check, severity, state, value, threshold, detail))

    def batch(self, schema: pa.Schema) -> pa.RecordBatch:
        """The rows in time order (stable: a raise before its clear at the same time)."""
        cols = list(zip(*sorted(self.rows, key=lambda r: r[0]), strict=True))
        arrays = [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _Silence:
    """Raised/cleared state of a "no update for too long" check over keys that grow (stale, heartbeat)."""

    def __init__(self) -> None:
        self.last = np.full(0, -1, dtype=np.int64)  # tp_time of the key's last row; -1: never seen
        self.raised = np.zeros(0, dtype=np.bool_)

    def grow(self, n: int) -> None:
        if n > len(self.last):
            extra = n - len(self.last)
            self.last = np.concatenate([self.last, np.full(extra, -1, dtype=np.int64)])
            self.raised = np.concatenate([self.raised, np.zeros(extra, dtype=np.bool_)])

    def heard(self, keys: I64, now: int, limit: int) -> tuple[I64, Bool, I64]:
        """Keys that spoke at ``now`` and had an alert to clear: (keys, raised before?, their silences).

        A key not raised before but silent past ``limit`` (nothing else arrived meanwhile) is
        returned too, to be raised and cleared at once.
        """
        silent = now - self.last[keys]
        was = self.raised[keys]
        hit = was | ((self.last[keys] >= 0) & (silent > limit))
        self.last[keys] = now
        self.raised[keys] = False
        return keys[hit], was[hit], silent[hit]

    def overdue(self, now: int, limit: int) -> I64:
        keys = np.flatnonzero((self.last >= 0) & ~self.raised & (now - self.last > limit))
        self.raised[keys] = True
        return keys


class QcEngine(Engine):
    """Feed quality checks over trade, quote, l2 and feed_event; publishes ``qc_alert``."""

    name = "qc"
    outputs = ("qc_alert",)

    def __init__(self, config: QcConfig | None = None, *, inputs: Sequence[str] = (*DATA_TABLES, "feed_event"),
                 registry: Registry | None = None) -> None:
        self.config = config or QcConfig()
        self.inputs = tuple(inputs)
        reg = registry or Registry.default()
        wire = reg["qc_alert"].wire
        self.schema = pa.schema([f for f in wire if f.name != "src_seq"])
        self._reset()

    def _reset(self) -> None:
        """All state: what ``on_eod`` forgets."""
        self.now = -1
        # Interned names: venue ids, sym ids, (venue, sym) pair ids.
        self._venue_id: dict[str, int] = {}
        self.venues: list[str] = []
        self._sym_id: dict[str, int] = {}
        self.syms: list[str] = []
        self._pair_id: dict[tuple[int, int], int] = {}
        self._pair_venue: list[int] = []
        self._pair_sym: list[int] = []
        self._heartbeat = _Silence()
        self._stale = {t: _Silence() for t in self.config.stale}
        self._gaps_seen: OrderedDict[tuple[str | None, str | None, int, int], None] = OrderedDict()
        self._seq_scope: dict[str, str | None] = {}  # venue -> "venue" | "sym" | None (not gap-free)
        self._l2_gapless: dict[str, bool] = {}
        self._trade_last: dict[tuple[int, int], int] = {}  # (venue, sym or -1) -> highest trade seq
        self._l2_last: dict[int, int] = {}  # pair -> highest update id
        self._time_max: dict[str, dict[int, int]] = {t: {} for t in DATA_TABLES}  # table -> pair -> max time
        self._book_state: dict[int, int] = {}  # pair -> 0 normal, 1 locked, 2 crossed
        self._mids: dict[int, tuple[F64, I64]] = {}  # sym -> (mid per venue, tp_time of that quote per venue)
        self._xs: dict[int, tuple[bool, int, int]] = {}  # pair -> (raised, breach run, calm run)
        self._jump: dict[int, tuple[float, int, float, int, float, int]] = {}  # see _jump_slice
        self._resync: set[int] = set()  # pairs back from a silence whose quotes have not resumed yet
        # pair -> event time of the quote that resumed it: its trades stamped earlier printed at the
        # frozen book (a TP logs one window's trades and quotes table by table, so they can follow
        # that quote in the log); they are not judged, nor taken as the new reference price.
        self._resumed_at: dict[int, int] = {}
        self._disconnected: set[str | None] = set()  # venues whose feed handler reported a lost connection

    # ------------------------------------------------------------------ names

    def _intern(self, col: pa.Array, ids: dict[str, int], names: list[str]) -> I64:
        enc = col.fill_null("").dictionary_encode()
        local = np.empty(len(enc.dictionary), dtype=np.int64)
        for i, name in enumerate(enc.dictionary.to_pylist()):
            gid = ids.get(name)
            if gid is None:
                gid = ids[name] = len(names)
                names.append(name)
            local[i] = gid
        return local[np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]

    def _keys(self, batch: pa.RecordBatch) -> tuple[I64, I64, I64]:
        """(venue id, sym id, pair id) per row."""
        venue = self._intern(batch.column("exchange"), self._venue_id, self.venues)
        sym = self._intern(batch.column("sym"), self._sym_id, self.syms)
        combo = venue * (len(self.syms) + 1) + sym
        uniq, inv = np.unique(combo, return_inverse=True)
        gmap = np.empty(len(uniq), dtype=np.int64)
        for i, c in enumerate(uniq.tolist()):
            key = (c // (len(self.syms) + 1), c % (len(self.syms) + 1))
            pid = self._pair_id.get(key)
            if pid is None:
                pid = self._pair_id[key] = len(self._pair_venue)
                self._pair_venue.append(key[0])
                self._pair_sym.append(key[1])
            gmap[i] = pid
        return venue, sym, gmap[inv.reshape(-1)]

    def _vs(self, pair: int) -> tuple[str | None, str | None]:
        """(exchange, sym) of a pair, None for an empty name."""
        return self.venues[self._pair_venue[pair]] or None, self.syms[self._pair_sym[pair]] or None

    # ------------------------------------------------------------------ the engine

    def on_upd(self, msg: Message) -> list[Output]:
        out = _Alerts()
        self.now = max(self.now, msg.time)
        batch = msg.data
        if msg.table in self.inputs and batch.num_rows:
            venue, sym, pair = self._keys(batch)
            self._heartbeat.grow(len(self.venues))
            self._heard(self._heartbeat, np.unique(venue), self.config.heartbeat_ns, out, None)
            if msg.table in self._stale:
                silence = self._stale[msg.table]
                silence.grow(len(self._pair_venue))
                self._heard(silence, np.unique(pair), self.config.stale[msg.table], out, msg.table)
            if msg.table == "feed_event":
                self._feed_events(batch, out)
            elif msg.table in DATA_TABLES:
                times = _i64(batch, "time")
                self._times(msg.table, pair, times, _i64(batch, "tp_time"), out)
                if msg.table == "trade":
                    self._trades(batch, venue, sym, pair, times, out)
                elif msg.table == "quote":
                    self._quotes(batch, sym, venue, pair, times, out)
                else:
                    self._l2(batch, pair, times, out)
        self._overdue(out)
        return [("qc_alert", out.batch(self.schema))] if out.rows else []

    def on_eod(self, date: str) -> list[Output]:
        """A new day starts clean (sequence numbers and silences restart with the day's log)."""
        self._reset()
        return []

    # ------------------------------------------------------------------ silences

    def _heard(self, silence: _Silence, keys: I64, limit: int, out: _Alerts, table: str | None) -> None:
        hit, was, silent = silence.heard(keys, self.now, limit)
        for k, w, s in zip(hit.tolist(), was.tolist(), silent.tolist(), strict=True):
            if not w:  # silent past the limit, but nothing else arrived to notice it before
                self._silence_alert(out, k, table, "raised", s, limit)
            self._silence_alert(out, k, table, "cleared", s, limit)
            if table is not None:
                self._restart_jump(k)
                if k in self._book_state:
                    # The venue's book may have been frozen too: trades may still print at its old
                    # prices until its quotes resume, so they are not judged until then.
                    self._resync.add(k)

    def _overdue(self, out: _Alerts) -> None:
        for k in self._heartbeat.overdue(self.now, self.config.heartbeat_ns).tolist():
            self._silence_alert(out, k, None, "raised", self.now - self._heartbeat.last[k], self.config.heartbeat_ns)
        for table, silence in self._stale.items():
            limit = self.config.stale[table]
            for k in silence.overdue(self.now, limit).tolist():
                self._silence_alert(out, k, table, "raised", self.now - silence.last[k], limit)
                if table == "quote" and k in self._book_state:
                    # Its quotes are stale: its trades may execute against a book we no longer see,
                    # so they are not judged (nor become the reference) until the quotes resume.
                    self._resync.add(k)

    def _silence_alert(self, out: _Alerts, key: int, table: str | None, state: str, silent: int, limit: int) -> None:
        if table is None:  # heartbeat: key is a venue
            exchange, sym = self.venues[key] or None, None
            what = f"{exchange}: no row of any table"
            check, severity = "heartbeat", "critical"
        else:
            exchange, sym = self._vs(key)
            what = f"{exchange} {sym}: no {table} row"
            check, severity = "stale", "warning"
        text = f"{what} for {silent / SEC:.3f}s (threshold {limit / SEC:g}s)"
        if state == "cleared":
            text += ", updated again"
        out.add(self.now, sym, exchange, check, severity, state, silent / SEC, limit / SEC, text)

    # ------------------------------------------------------------------ gaps

    def _gap(self, out: _Alerts, time: int, exchange: str | None, sym: str | None, expected: int | None,
             got: int | None, detail: str) -> None:
        if expected is not None and got is not None:
            key = (exchange, sym, expected, got)
            if key in self._gaps_seen:  # already raised from the other source (data or feed_event)
                return
            self._gaps_seen[key] = None
            if len(self._gaps_seen) > _GAPS_REMEMBERED:
                self._gaps_seen.popitem(last=False)
        missing = None if expected is None or got is None else float(got - expected)
        out.add(time, sym, exchange, "gap", "warning", "raised", missing, 0.0, detail)

    def _feed_events(self, batch: pa.RecordBatch, out: _Alerts) -> None:
        """What a feed handler reports about itself: gaps, lost connections (its heartbeat watchdog), bad checksums."""
        wanted = batch.filter(pc.is_in(batch.column("kind"), pa.array(_FEED_KINDS)))
        if not wanted.num_rows:
            return
        cols = wanted.select(["kind", "exchange", "sym", "expected", "got", "detail"]).to_pydict()
        for i, t in enumerate(_i64(wanted, "time").tolist()):
            kind, exchange, sym, detail = cols["kind"][i], cols["exchange"][i], cols["sym"][i], cols["detail"][i]
            if kind == "gap":
                self._gap(out, t, exchange, sym, cols["expected"][i], cols["got"][i], f"feed_event: {detail or 'gap'}")
            elif kind == "checksum":
                out.add(t, sym, exchange, "checksum", "warning", "raised", None, None,
                        f"feed_event: {detail or 'book checksum mismatch'}")
            elif kind == "disconnect":
                if exchange not in self._disconnected:  # one alert while the feed is down, however often it retries
                    self._disconnected.add(exchange)
                    out.add(t, None, exchange, "connection", "critical", "raised", None, None,
                            f"feed_event: {detail or 'disconnected'}")
            elif exchange in self._disconnected:  # reconnect | connect
                self._disconnected.discard(exchange)
                out.add(t, None, exchange, "connection", "critical", "cleared", None, None,
                        f"feed_event: {detail or kind}")

    def _scope(self, venue: str) -> str | None:
        if venue not in self._seq_scope:
            scopes = [s for pat, s in self.config.trade_seq.items() if fnmatch.fnmatchcase(venue, pat)]
            self._seq_scope[venue] = scopes[0] if scopes else None
            self._l2_gapless[venue] = any(fnmatch.fnmatchcase(venue, p) for p in self.config.l2_seq)
        return self._seq_scope[venue]

    @staticmethod
    def _seq_gaps(group: I64, first: I64, last: I64, state: Mapping[int, int]) -> tuple[I64, I64, I64]:
        """Rows sorted by ``group`` whose ``first`` skips past the highest ``last`` before them.

        ``state`` is the highest ``last`` of each group before this batch (-1: none). Returns
        (positions, expected, got). A number at or below the highest seen (a repeat) is no gap.
        """
        gid, starts, _ = _groups(group)
        init = np.array([state.get(g, -1) for g in group[starts].tolist()], dtype=np.int64)
        before = _exclusive_cummax(gid, starts, last, init)
        hit = np.flatnonzero((before >= 0) & (first > before + 1))
        return hit, before[hit] + 1, first[hit]

    # ------------------------------------------------------------------ per table

    def _times(self, table: str, pair: I64, times: I64, tp_time: I64, out: _Alerts) -> None:
        """time_back per (table, venue, sym) and time_future against tp_time; one alert per (pair, time)."""
        cfg = self.config
        ahead = times - tp_time
        for i in np.flatnonzero(ahead > cfg.future_ns).tolist():
            if i and pair[i] == pair[i - 1] and times[i] == times[i - 1]:
                continue
            ex, sym = self._vs(int(pair[i]))
            out.add(int(times[i]), sym, ex, "time_future", "warning", "raised", ahead[i] / SEC, cfg.future_ns / SEC,
                    f"{ex} {sym} {table} event time {ahead[i] / SEC:.3f}s after its tp_time")
        order = np.argsort(pair, kind="stable")
        ps, ts = pair[order], times[order]
        state = self._time_max[table]
        gid, starts, ends = _groups(ps)
        groups = ps[starts].tolist()
        init = np.array([state.get(p, int(t)) for p, t in zip(groups, ts[starts].tolist(), strict=True)],
                        dtype=np.int64)
        seen = _exclusive_cummax(gid, starts, ts, init)
        back = seen - ts
        hit = back > cfg.back_ns
        repeat = np.zeros(len(ts), dtype=np.bool_)
        repeat[1:] = hit[:-1] & (ts[1:] == ts[:-1]) & (ps[1:] == ps[:-1])
        hit &= ~repeat  # one alert per update of l2 rows
        for p, hi in zip(groups, np.maximum(seen[ends], ts[ends]).tolist(), strict=True):
            state[p] = hi
        for j in np.flatnonzero(hit).tolist():
            ex, sym = self._vs(int(ps[j]))
            out.add(int(ts[j]), sym, ex, "time_back", "warning", "raised", back[j] / SEC, cfg.back_ns / SEC,
                    f"{ex} {sym} {table} event time went back {back[j] / SEC:.6f}s")

    def _bad_values(self, table: str, pair: I64, times: I64, values: F64, check: str, bad: Bool,
                    out: _Alerts) -> None:
        for i in np.flatnonzero(bad).tolist():
            ex, sym = self._vs(int(pair[i]))
            out.add(int(times[i]), sym, ex, check, "critical", "raised", float(values[i]), 0.0,
                    f"{ex} {sym} {table} {check} {float(values[i])!r}")

    def _trades(self, batch: pa.RecordBatch, venue: I64, sym: I64, pair: I64, times: I64, out: _Alerts) -> None:
        price, size = _f64(batch, "price"), _f64(batch, "size")
        with np.errstate(invalid="ignore"):
            bad_price = ~(price > 0)
            self._bad_values("trade", pair, times, price, "price", bad_price, out)
            self._bad_values("trade", pair, times, size, "size", ~(size > 0), out)
        # Sequence gaps, for venues whose trade seq is gap-free.
        seq = _i64(batch, "seq")
        scope = np.array([self._scope(v) or "" for v in self.venues])[venue]
        use = (scope != "") & (seq >= 0)
        if use.any():
            rows = np.flatnonzero(use)
            width = len(self.syms) + 1  # group = venue * width + (sym + 1 for a per-sym seq, else 0)
            group = venue[rows] * width + np.where(scope[rows] == "sym", sym[rows] + 1, 0)
            sort = np.argsort(group, kind="stable")
            order, gs = rows[sort], group[sort]
            groups = np.unique(gs).tolist()
            keys = {g: (g // width, g % width - 1) for g in groups}
            state = {g: self._trade_last.get(k, -1) for g, k in keys.items()}
            hit, expected, got = self._seq_gaps(gs, seq[order], seq[order], state)
            for j, e, g in zip(hit.tolist(), expected.tolist(), got.tolist(), strict=True):
                i = int(order[j])
                ex = self.venues[int(venue[i])]
                s = self.syms[int(sym[i])] if scope[i] == "sym" else None
                where = f"{ex} {s}" if s else ex
                self._gap(out, int(times[i]), ex, s, e, g, f"{where} trade seq gap: expected {e}, got {g}")
            starts = np.flatnonzero(_first_in_group(gs))
            for g, hi in zip(gs[starts].tolist(), np.maximum.reduceat(seq[order], starts).tolist(), strict=True):
                self._trade_last[keys[g]] = max(state[g], hi)
        ok = np.flatnonzero(~bad_price)
        if len(ok):
            self._jumps(pair[ok], times[ok], price[ok], out)

    def _l2(self, batch: pa.RecordBatch, pair: I64, times: I64, out: _Alerts) -> None:
        price, size = _f64(batch, "price"), _f64(batch, "size")
        with np.errstate(invalid="ignore"):
            self._bad_values("l2", pair, times, price, "price", ~(price > 0), out)
            self._bad_values("l2", pair, times, size, "size", ~(size >= 0), out)
        first, last = _i64(batch, "seq_first"), _i64(batch, "seq_last")
        for v in {self._pair_venue[p] for p in np.unique(pair).tolist()}:
            self._scope(self.venues[v])
        gapless = np.array([self._l2_gapless.get(self.venues[v], False) for v in self._pair_venue])[pair]
        rows = np.flatnonzero(gapless & (first >= 0) & (last >= 0))
        if not len(rows):
            return
        order = rows[np.argsort(pair[rows], kind="stable")]
        gs = pair[order]
        hit, expected, got = self._seq_gaps(gs, first[order], last[order], self._l2_last)
        for j, e, g in zip(hit.tolist(), expected.tolist(), got.tolist(), strict=True):
            i = int(order[j])
            ex, sym = self._vs(int(pair[i]))
            self._gap(out, int(times[i]), ex, sym, e, g, f"{ex} {sym} l2 update id gap: expected {e}, got {g}")
        starts = np.flatnonzero(_first_in_group(gs))
        for p, hi in zip(gs[starts].tolist(), np.maximum.reduceat(last[order], starts).tolist(), strict=True):
            self._l2_last[p] = max(self._l2_last.get(p, -1), hi)

    def _quotes(self, batch: pa.RecordBatch, sym: I64, venue: I64, pair: I64, times: I64, out: _Alerts) -> None:
        bid, ask = _f64(batch, "bid_price"), _f64(batch, "ask_price")
        with np.errstate(invalid="ignore"):
            for values in (bid, ask):
                self._bad_values("quote", pair, times, values, "price", values <= 0, out)
            for name in ("bid_size", "ask_size"):
                sizes = _f64(batch, name)
                self._bad_values("quote", pair, times, sizes, "size", sizes < 0, out)
            valid = (bid > 0) & (ask > 0)
        rows = np.flatnonzero(valid)
        if not len(rows):
            return
        if self._resync:
            for p in np.unique(pair[rows]).tolist():
                if p in self._resync:
                    self._resync.discard(p)
                    self._restart_jump(p)
                    self._resumed_at[p] = int(times[rows][pair[rows] == p].min())
        self._books(pair[rows], times[rows], bid[rows], ask[rows], out)
        self._xsource(sym[rows], venue[rows], pair[rows], times[rows], 0.5 * (bid[rows] + ask[rows]), out)

    # ------------------------------------------------------------------ crossed / locked books

    def _books(self, pair: I64, times: I64, bid: F64, ask: F64, out: _Alerts) -> None:
        code = np.where(bid > ask, 2, np.where(bid == ask, 1, 0))
        order = np.argsort(pair, kind="stable")
        ps, cs = pair[order], code[order]
        first = _first_in_group(ps)
        prev = np.empty_like(cs)
        prev[1:] = cs[:-1]
        prev[first] = [self._book_state.get(int(p), 0) for p in ps[first].tolist()]
        names = {1: ("locked", "info"), 2: ("crossed", "critical")}
        for j in np.flatnonzero(cs != prev).tolist():
            i = int(order[j])
            ex, sym = self._vs(int(pair[i]))
            mid = 0.5 * (bid[i] + ask[i])
            bps = (bid[i] - ask[i]) / mid * 1e4
            for c, state in ((int(prev[j]), "cleared"), (int(cs[j]), "raised")):
                if c:
                    check, severity = names[c]
                    out.add(int(times[i]), sym, ex, check, severity, state, bps, 0.0,
                            f"{ex} {sym} bid {float(bid[i])!r} ask {float(ask[i])!r}")
        last = np.append(np.flatnonzero(first)[1:], len(ps)) - 1
        for p, c in zip(ps[last].tolist(), cs[last].tolist(), strict=True):
            self._book_state[p] = c

    # ------------------------------------------------------------------ cross-source

    def _xsource(self, sym: I64, venue: I64, pair: I64, times: I64, mid: F64, out: _Alerts) -> None:
        cfg = self.config
        n_v = len(self.venues)
        fresh_ns = cfg.stale.get("quote", 2 * SEC)
        dev = np.full(len(sym), np.nan)
        med_all = np.full(len(sym), np.nan)
        n_all = np.zeros(len(sym), dtype=np.int64)
        for s in np.unique(sym).tolist():
            rows = np.flatnonzero(sym == s)
            mids, seen = self._mids.get(s, (np.zeros(0), np.zeros(0, dtype=np.int64)))
            if len(mids) < n_v:
                mids = np.concatenate([mids, np.full(n_v - len(mids), np.nan)])
                seen = np.concatenate([seen, np.full(n_v - len(seen), -1, dtype=np.int64)])
            m = len(rows)
            # The venues' mids as of each row: row 0 is the state, row r + 1 after quote r.
            grid = np.full((m + 1, n_v), np.nan)
            grid[0] = mids
            v = venue[rows]
            grid[np.arange(1, m + 1), v] = mid[rows]
            filled = np.where(np.isnan(grid), -1, np.arange(m + 1)[:, None])
            np.maximum.accumulate(filled, axis=0, out=filled)
            cur = grid[np.maximum(filled, 0), np.arange(n_v)[None, :]]
            cur[filled < 0] = np.nan
            stale = (self.now - seen) > fresh_ns  # venues quoted in this update are fresh (tp_time = now)
            touched = (filled > 0)
            others = cur[:-1].copy()  # as of just before each row
            others[~touched[:-1] & stale[None, :]] = np.nan
            others[np.arange(m), v] = np.nan
            count = np.count_nonzero(~np.isnan(others), axis=1)
            ok = count >= cfg.xsource_min_others
            if ok.any():
                # The median of each row's non-NaN values: NaN sorts last.
                ranked = np.sort(others, axis=1)
                r = np.arange(m)
                c = np.maximum(count, 1)
                med = 0.5 * (ranked[r, (c - 1) // 2] + ranked[r, c // 2])
                med[~ok] = np.nan
                dev[rows] = (mid[rows] / med - 1.0) * 1e4
                med_all[rows] = med
                n_all[rows] = count
            seen = seen.copy()
            seen[np.unique(v)] = self.now
            self._mids[s] = (cur[-1], seen)
        readings = np.flatnonzero(~np.isnan(dev))
        if not len(readings):
            return
        order = readings[np.argsort(pair[readings], kind="stable")]
        ps = pair[order]
        starts = np.flatnonzero(_first_in_group(ps))
        ends = np.append(starts[1:], len(ps))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            p = int(ps[a])
            rows = order[a:b]
            absdev = np.abs(dev[rows])
            raised, breach0, calm0 = self._xs.get(p, (False, 0, 0))
            breach = _runs(absdev > cfg.xsource_bps, breach0)
            calm = _runs(absdev < cfg.clear_bps, calm0)
            pos = 0
            while pos < len(rows):
                hits = np.flatnonzero((calm if raised else breach)[pos:] >= (
                    cfg.xsource_clear_after if raised else cfg.xsource_raise_after))
                if not len(hits):
                    break
                j = pos + int(hits[0])
                i = int(rows[j])
                raised = not raised
                ex, sym_name = self._vs(p)
                limit = cfg.xsource_bps if raised else cfg.clear_bps
                runs = cfg.xsource_raise_after if raised else cfg.xsource_clear_after
                out.add(int(times[i]), sym_name, ex, "xsource", "warning", "raised" if raised else "cleared",
                        float(dev[i]), limit,
                        f"{ex} {sym_name} mid {mid[i]:.10g} vs median {med_all[i]:.10g} of {n_all[i]} other venues: "
                        f"{dev[i]:+.1f}bps, {runs} quotes in a row {'beyond' if raised else 'within'} {limit:g}bps")
                pos = j + 1
            self._xs[p] = (raised, int(breach[-1]), int(calm[-1]))

    # ------------------------------------------------------------------ jumps

    def _restart_jump(self, p: int) -> None:
        """Forget a pair's reference prices (back from a silence, the price has moved on); keep its volatility."""
        if p in self._jump:
            _, _, _, _, vol, n = self._jump[p]
            self._jump[p] = (np.nan, 0, np.nan, 0, vol, n)

    def _jumps(self, pair: I64, times: I64, price: F64, out: _Alerts) -> None:
        """The jump rule over every (venue, sym) of the update at once (in slices of a few thousand trades)."""
        if self._resync:
            keep = ~np.isin(pair, np.fromiter(self._resync, dtype=np.int64))
            pair, times, price = pair[keep], times[keep], price[keep]
        if self._resumed_at:
            early = np.zeros(len(pair), dtype=np.bool_)
            for p, since in list(self._resumed_at.items()):
                mine = pair == p
                early |= mine & (times < since)
                if (mine & (times >= since)).any():  # a trade on the live book: the pair is judged again
                    del self._resumed_at[p]
            pair, times, price = pair[~early], times[~early], price[~early]
        # The EWMA's closed form takes d ** -c for up to `size` x of a pair: keep it far from overflow.
        size = max(1, int(600 / -math.log(1.0 - 2.0 / (self.config.jump_span + 1))))
        for a in range(0, len(pair), size):
            self._jump_slice(pair[a:a + size], times[a:a + size], price[a:a + size], out)

    def _jump_slice(self, pair: I64, times: I64, prices: F64, out: _Alerts) -> None:
        """State per pair: last and last good (price, time), the EWMA of x and how many x it has seen."""
        cfg = self.config
        if not len(pair):
            return
        order = np.argsort(pair, kind="stable")
        ps, t, price = pair[order], times[order], prices[order]
        gid, starts, ends = _groups(ps)
        groups = ps[starts].tolist()
        blank = (np.nan, 0, np.nan, 0, np.nan, 0)
        last_p, last_t, good_p, good_t, vol0, n0 = (np.array(c) for c in zip(
            *(self._jump.get(p, blank) for p in groups), strict=True))
        m = len(price)
        idx = np.arange(m)
        first = np.zeros(m, dtype=np.bool_)
        first[starts] = True
        prev_p = np.where(first, last_p[gid], np.roll(price, 1))
        prev_t = np.where(first, last_t[gid], np.roll(t, 1))
        floor = cfg.jump_dt_floor_ns / SEC
        with np.errstate(invalid="ignore", divide="ignore"):
            r_prev = np.abs(np.log(price / prev_p))
            x_prev = r_prev / np.sqrt(np.maximum((t - prev_t) / SEC, floor))
        d = 1.0 - 2.0 / (cfg.jump_span + 1)
        flags = np.zeros(m, dtype=np.bool_)
        bounds = list(zip(starts.tolist(), (ends + 1).tolist(), strict=True))
        good: I64
        ref_p: F64
        ref_t: I64
        x: F64
        move: F64
        y: F64
        c: I64
        vol_before: F64
        for _ in range(JUMP_ITERATIONS):
            # The last good row at or before each row, within its group (-1: none in this update).
            good = np.maximum.accumulate(np.where(flags, -1, idx))
            good[good < starts[gid]] = -1
            before = np.where(first, -1, np.roll(good, 1))
            ref_p = np.where(before >= 0, price[np.maximum(before, 0)], good_p[gid])
            ref_t = np.where(before >= 0, t[np.maximum(before, 0)], good_t[gid])
            with np.errstate(invalid="ignore", divide="ignore"):
                r_good = np.abs(np.log(price / ref_p))
                x_good = r_good / np.sqrt(np.maximum((t - ref_t) / SEC, floor))
            x = np.fmin(x_prev, x_good)  # NaN only where neither reference exists
            move = np.fmin(r_prev, r_good)
            use = ~flags & ~np.isnan(x)
            # EWMA over the used x of each group, started from its state (or from its first x):
            # y after the c-th used x is d**c * (y0 + (1 - d) * sum_j x_j * d**-c_j).
            c = np.cumsum(use)
            c = c - np.where(starts > 0, c[np.maximum(starts - 1, 0)], 0)[gid]
            x0 = np.full(len(groups), np.nan)
            used = np.flatnonzero(use)
            x0[gid[used[::-1]]] = x[used[::-1]]  # the first used x of each group wins
            y0 = np.where(np.isnan(vol0), x0, vol0)
            terms = np.where(use, x * d ** -c.astype(np.float64), 0.0)
            acc = np.empty(m)
            for a, b in bounds:  # per group: one running sum over all would cancel a small group out
                np.cumsum(terms[a:b], out=acc[a:b])
            y = d ** c * (y0[gid] + (1.0 - d) * acc)
            y[(c == 0) & np.isnan(vol0[gid])] = np.nan
            vol_before = np.where(first, vol0[gid], np.roll(y, 1))
            n_before = n0[gid] + np.where(first, 0, np.roll(c, 1))
            with np.errstate(invalid="ignore"):
                new = (n_before >= cfg.jump_warmup) & (x > cfg.jump_k * vol_before) & (move * 1e4 > cfg.jump_min_bps)
            if np.array_equal(new, flags):
                break
            flags = new
        for j in np.flatnonzero(flags).tolist():
            ex, sym = self._vs(int(ps[j]))
            dt = max((t[j] - ref_t[j]) / SEC, floor)
            allowed = max(cfg.jump_k * vol_before[j] * np.sqrt(dt) * 1e4, cfg.jump_min_bps)
            out.add(int(t[j]), sym, ex, "jump", "warning", "raised", float(move[j] * 1e4), float(allowed),
                    f"{ex} {sym} trade at {float(price[j])!r}: {move[j] * 1e4:.1f}bps from {float(ref_p[j])!r} "
                    f"({x[j] / vol_before[j]:.1f}x the recent volatility, limit {cfg.jump_k:g}x)")
        g_end = good[ends]
        for k, p in enumerate(groups):
            e = int(ends[k])
            gp, gt = (float(price[g_end[k]]), int(t[g_end[k]])) if g_end[k] >= 0 else (good_p[k], good_t[k])
            self._jump[p] = (float(price[e]), int(t[e]), gp, gt, float(y[e]), int(n0[k] + c[e]))
