"""As-of join speed: ``q_like.aj`` of trades to quotes, against ``pandas.merge_asof`` in the same run.

What this measures (one process, everything in memory, random data from a fixed seed):

* the data: ``--rows`` trades (default 1,000,000) and ``--quotes`` quotes (default 10,000,000)
  over ``--syms`` symbols (default 100, named ``S000``...), times uniform over a 6.5-hour session
  and in time order, as a tickerplant writes them. Trades: ``time, sym, price, size``; quotes:
  ``time, sym, bid_price, bid_size, ask_price, ask_size`` (timestamp[ns, UTC], string, float64);
* the join: for each trade, the last quote of its sym at or before its time
  (``aj(["sym", "time"], trades, quotes)``; pandas: ``merge_asof(trades, quotes, on="time",
  by="sym", direction="backward", allow_exact_matches=True)``), every quote column brought over;
* three layouts of the tables:

  - ``rdb``: quotes in time order (an RDB's table), ``sym`` a string column. merge_asof needs
    nothing more: only the merge is timed on the pandas side;
  - ``rdb_dict``: the same rows with ``sym`` as ``dictionary<int32, string>`` over one shared
    list of syms (kdb+'s enumerated syms; Parquet read with ``read_dictionary``, DuckDB ENUMs);
    pandas gets it as a ``Categorical`` (what ``to_pandas`` makes of it);
  - ``hdb``: quotes sorted by sym then time, as end of day writes a partition, ``sym`` a string.
    merge_asof requires its ``on`` column sorted, so pandas' figure includes
    ``quotes.sort_values("time", kind="stable")``, which merge_asof cannot do without;

* timed for ours: ``aj`` from the two ``pyarrow.Table`` to the joined ``pyarrow.Table`` (key
  encoding, grouping, search, gathering the quote columns), with the default (numpy) engine;
  for pandas: the merge (plus the sort for ``hdb``) from two DataFrames made beforehand with
  ``Table.to_pandas()`` (that conversion is reported as ``to_pandas_seconds``, not timed in);
* a reference, ours too: the same join by DuckDB's ``ASOF JOIN`` (``engine="duckdb"``, the SQL
  of ``q_like.aj_sql``), on the ``rdb`` layout;
* checked, untimed: ours and pandas' quote columns are equal row for row (``agree``).

``ratio`` is pandas' seconds over ours (above 1: we are faster); the goal is ``>= 3``. Each
figure is the median of ``max(3, --repeats)`` runs. The machine is shared and has two cores:
read the load average printed with the figures.

Run ``python bench/bench_aj.py`` (``--quick`` for a smoke run, ``--json`` for JSON only,
``--no-baselines`` to skip pandas and the DuckDB reference).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``q_like`` / ``tickerplant`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from q_like import aj

TRADES = 1_000_000
QUOTES = 10_000_000
SYMS = 100
QUICK_TRADES = 20_000
QUICK_QUOTES = 200_000
GOAL_RATIO = 3.0
SESSION_NS = int(6.5 * 3600 * 1e9)
T0 = 1_763_973_000_000_000_000  # 2025-11-24 08:30 UTC
NS = pa.timestamp("ns", tz="UTC")
QUOTE_COLUMNS = ["bid_price", "bid_size", "ask_price", "ask_size"]


# --------------------------------------------------------------------------- data


def with_dictionary_sym(table: pa.Table, names: pa.Array) -> pa.Table:
    """``table`` with ``sym`` as dictionary<int32, string> over ``names`` (shared by every table)."""
    codes = pc.index_in(table.column("sym"), value_set=names).cast(pa.int32())
    chunks = [pa.DictionaryArray.from_arrays(c, names) for c in codes.chunks]
    return table.set_column(table.column_names.index("sym"), "sym", pa.chunked_array(chunks))


def make_tables(trades: int, quotes: int, syms: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Random trades and quotes in time order (see the module docstring)."""
    rng = np.random.default_rng(seed)
    names = np.array([f"S{i:03d}" for i in range(syms)])

    def times(n: int) -> pa.Array:
        return pa.array(np.sort(rng.integers(0, SESSION_NS, n)) + T0, NS)

    mid = 100.0 + rng.standard_normal(syms).cumsum()
    qsym = rng.integers(0, syms, quotes)
    bid = np.round(mid[qsym] - rng.random(quotes) * 0.05, 4)
    quote = pa.table({
        "time": times(quotes),
        "sym": pa.array(names[qsym]),
        "bid_price": bid,
        "bid_size": rng.integers(1, 100, quotes).astype(np.float64),
        "ask_price": np.round(bid + 0.01 + rng.random(quotes) * 0.05, 4),
        "ask_size": rng.integers(1, 100, quotes).astype(np.float64),
    })
    tsym = rng.integers(0, syms, trades)
    trade = pa.table({
        "time": times(trades),
        "sym": pa.array(names[tsym]),
        "price": np.round(mid[tsym] + rng.standard_normal(trades) * 0.02, 4),
        "size": rng.integers(1, 500, trades).astype(np.float64),
    })
    return trade, quote


# --------------------------------------------------------------------------- timing


def _timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    samples: list[float] = []
    result: Any = None
    for _ in range(runs):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return samples, result


def _agree(ours: pa.Table, theirs: pd.DataFrame) -> bool:
    """The quote columns of both answers are equal, null for null."""
    for col in QUOTE_COLUMNS:
        a = ours.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        b = theirs[col].to_numpy(dtype=np.float64)
        if not np.array_equal(a, b, equal_nan=True):
            return False
    return True


def measure(trade: pa.Table, quote: pa.Table, layout: str, runs: int, baselines: bool,
            trade_df: pd.DataFrame | None, quote_df: pd.DataFrame | None) -> dict[str, Any]:
    """One layout: ours, and (with baselines) pandas and our DuckDB engine."""
    samples, ours = _timed(lambda: aj(["sym", "time"], trade, quote), runs)
    out: dict[str, Any] = {
        "ours_seconds": statistics.median(samples),
        "ours_rows_per_s": trade.num_rows / statistics.median(samples),
        "samples_seconds": {"ours": samples},
        "matched": ours.num_rows - ours.column("bid_price").null_count,
    }
    print(f"[aj] {layout}: ours {out['ours_seconds']:.3f} s", file=sys.stderr)
    if baselines and trade_df is not None and quote_df is not None:
        if layout == "hdb":
            def pandas_join() -> pd.DataFrame:  # merge_asof refuses an unsorted `on`: the sort is part of it
                return pd.merge_asof(trade_df, quote_df.sort_values("time", kind="stable"), on="time", by="sym",
                                     direction="backward", allow_exact_matches=True)
        else:
            def pandas_join() -> pd.DataFrame:
                return pd.merge_asof(trade_df, quote_df, on="time", by="sym", direction="backward",
                                     allow_exact_matches=True)
        psamples, theirs = _timed(pandas_join, runs)
        out["pandas_seconds"] = statistics.median(psamples)
        out["samples_seconds"]["pandas"] = psamples
        out["ratio"] = out["pandas_seconds"] / out["ours_seconds"]
        out["agree"] = _agree(ours, theirs)
        out["goal_met"] = out["ratio"] >= GOAL_RATIO
        print(f"[aj] {layout}: pandas {out['pandas_seconds']:.3f} s", file=sys.stderr)
        del theirs
        if layout == "rdb":  # the DuckDB reference once, on the plain layout
            dsamples, dres = _timed(lambda: aj(["sym", "time"], trade, quote, engine="duckdb"), runs)
            out["duckdb_engine_seconds"] = statistics.median(dsamples)
            out["samples_seconds"]["duckdb_engine"] = dsamples
            out["duckdb_engine_agrees"] = dres.equals(ours)
            print(f"[aj] {layout}: duckdb engine {out['duckdb_engine_seconds']:.3f} s", file=sys.stderr)
    return out


def run(*, trades: int | None = None, quotes: int | None = None, syms: int = SYMS, quick: bool = False,
        repeats: int = 1, baselines: bool = True) -> dict[str, Any]:
    """Build the tables, measure every layout; returns the figures as a dict."""
    trades = trades if trades is not None else (QUICK_TRADES if quick else TRADES)
    quotes = quotes if quotes is not None else (QUICK_QUOTES if quick else QUOTES)
    runs = max(3, repeats)
    t0 = time.perf_counter()
    trade, quote = make_tables(trades, quotes, syms)
    hdb_quote = quote.sort_by([("sym", "ascending"), ("time", "ascending")])
    out: dict[str, Any] = {
        "trades": trades, "quotes": quotes, "syms": syms, "runs_per_figure": runs, "goal_ratio": GOAL_RATIO,
        "data_build_seconds": time.perf_counter() - t0,
        "timed": {
            "ours": "q_like.aj(['sym', 'time'], trades, quotes) on pyarrow Tables -> pyarrow Table (numpy engine)",
            "pandas_rdb": "pd.merge_asof(trades, quotes, on='time', by='sym') on DataFrames already in time order",
            "pandas_rdb_dict": "the same merge_asof, sym a Categorical on both sides",
            "pandas_hdb": "quotes.sort_values('time', kind='stable') + the same merge_asof (it needs `on` sorted)",
            "duckdb_engine": "q_like.aj(..., engine='duckdb'): DuckDB ASOF LEFT JOIN, rdb layout",
            "not_timed": "data generation, Table.to_pandas() (see to_pandas_seconds), the agreement check",
        },
    }
    names = pa.array([f"S{i:03d}" for i in range(syms)])
    layouts = {
        "rdb": (trade, quote),
        "rdb_dict": (with_dictionary_sym(trade, names), with_dictionary_sym(quote, names)),
        "hdb": (trade, hdb_quote),
    }
    del quote, hdb_quote
    for layout, (left, right) in layouts.items():
        trade_df = quote_df = None
        if baselines:
            t1 = time.perf_counter()
            trade_df, quote_df = left.to_pandas(), right.to_pandas()
            out.setdefault("to_pandas_seconds", {})[layout] = time.perf_counter() - t1
        out[layout] = measure(left, right, layout, runs, baselines, trade_df, quote_df)
        del trade_df, quote_df
        gc.collect()
    if baselines:
        out["ratio"] = out["rdb"]["ratio"]
        out["goal_met"] = bool(out["rdb"]["goal_met"])
    return out


# --------------------------------------------------------------------------- output


def format_table(res: dict[str, Any]) -> str:
    lines = [f"aj of {res['trades']:,} trades to {res['quotes']:,} quotes, {res['syms']} syms "
             f"(median of {res['runs_per_figure']} runs)",
             f"{'layout':<8} {'ours s':>8} {'pandas s':>9} {'ratio':>7} {'duckdb s':>9} {'agree':>6}"]
    for layout in ("rdb", "rdb_dict", "hdb"):
        r = res[layout]
        pandas_s = f"{r['pandas_seconds']:.3f}" if "pandas_seconds" in r else "-"
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        duck = f"{r['duckdb_engine_seconds']:.3f}" if "duckdb_engine_seconds" in r else "-"
        agree = str(r.get("agree", "-"))
        lines.append(f"{layout:<8} {r['ours_seconds']:>8.3f} {pandas_s:>9} {ratio:>7} {duck:>9} {agree:>6}")
    if "ratio" in res:
        met = ", ".join(f"{k} {'met' if res[k]['goal_met'] else 'NOT met'}" for k in ("rdb", "rdb_dict", "hdb"))
        lines.append(f"goal ratio >= {GOAL_RATIO:.0f}x: {met} (headline `ratio`: rdb)")
        conv = ", ".join(f"{k} {v:.3f} s" for k, v in res["to_pandas_seconds"].items())
        lines.append(f"(to_pandas of both tables, not timed above: {conv})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=None, help=f"trades (default {TRADES:,}; --quick {QUICK_TRADES:,})")
    ap.add_argument("--quotes", type=int, default=None,
                    help=f"quotes (default {QUOTES:,}; --quick {QUICK_QUOTES:,})")
    ap.add_argument("--syms", type=int, default=SYMS, help=f"distinct syms (default {SYMS})")
    ap.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per figure is max(3, N); median reported")
    ap.add_argument("--no-baselines", action="store_true", help="skip pandas and the DuckDB engine")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    res = run(trades=args.rows, quotes=args.quotes, syms=args.syms, quick=args.quick, repeats=args.repeats,
              baselines=not args.no_baselines)
    res["nproc"] = os.cpu_count()
    res["loadavg"] = list(os.getloadavg())
    res["versions"] = {"python": sys.version.split()[0], "pyarrow": pa.__version__, "pandas": pd.__version__,
                       "numpy": np.__version__, "duckdb": duckdb.__version__}
    print(json.dumps(res, indent=2, sort_keys=True))
    if not args.json:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
