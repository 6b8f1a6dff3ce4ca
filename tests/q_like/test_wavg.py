"""wavg / wsum: SQL aggregates run by DuckDB and the array forms, against pandas and q's examples."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import wavg, wavg_array, wsum, wsum_array

cell = st.one_of(st.none(), st.floats(0, 1000))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from("ab"), cell, cell), max_size=30))
def test_sql_and_arrays_match_pandas_per_group(rows: list[tuple[str, float | None, float | None]]) -> None:
    t = pa.table({"sym": pa.array([r[0] for r in rows], pa.string()), "size": pa.array([r[1] for r in rows],
                  pa.float64()), "price": pa.array([r[2] for r in rows], pa.float64())})
    con = duckdb.connect()
    con.register("t", t)
    sql = con.sql(f"SELECT sym, {wavg('size', 'price')} AS vwap, {wsum('size', 'price')} AS ws FROM t GROUP BY sym")
    got = {r[0]: (r[1], r[2]) for r in sql.fetchall()}
    df = t.to_pandas()
    for sym, g in df.groupby("sym"):
        pair = g["size"].notna() & g["price"].notna()
        num = (g["size"][pair] * g["price"][pair]).sum()
        den = g["size"][pair].sum()
        want_avg = None if not pair.any() else (math.nan if den == 0 else num / den)
        sql_avg, sql_sum = got[sym]
        arr_avg = wavg_array(g["size"].to_numpy(), g["price"].to_numpy())
        for value in (sql_avg, arr_avg):
            if want_avg is None or (isinstance(want_avg, float) and math.isnan(want_avg)):
                assert value is None or math.isnan(value) if want_avg is not None else value is None
            else:
                assert value is not None and math.isclose(value, want_avg, rel_tol=1e-12)
        assert math.isclose(sql_sum, num, rel_tol=1e-12, abs_tol=1e-9)
        assert math.isclose(wsum_array(pa.array(g["size"]), pa.array(g["price"])), num, rel_tol=1e-12, abs_tol=1e-9)


def test_q_reference_examples() -> None:
    """code.kx.com/q/ref/avg and sum: nulls in either argument are ignored."""
    assert math.isclose(wavg_array([2, 3, 4], [1, 2, 4]), 8 / 3)  # type: ignore[arg-type]
    assert wavg_array([2, None, 4, 5], [1, 2, None, 8]) == 6.0
    assert wsum_array([2, 3, 4], [1, 2, 4]) == 24 and isinstance(wsum_array([2, 3, 4], [1, 2, 4]), int)
    assert wsum_array([], []) == 0 and wavg_array([], []) is None
    assert math.isnan(wavg_array([0, 0], [1, 2]))  # type: ignore[arg-type]
    assert wavg_array(np.array([1.0, np.nan]), np.array([5.0, 7.0])) == 5.0  # NaN is null, as q's 0n
    con = duckdb.connect()
    assert con.sql(f"SELECT {wavg('w', 'v')}, {wsum('w', 'v')} FROM (VALUES (2, 1), (NULL, 2), (4, NULL), (5, 8)) "
                   "t(w, v)").fetchall()[0] == (6.0, 42)
    assert con.sql(f"SELECT {wsum('w', 'v')} FROM (VALUES (NULL::INT, 1)) t(w, v)").fetchall()[0] == (0,)
    doubled = con.sql(f"SELECT {wavg('size * 2', 'price')} FROM (VALUES (1.0, 3.0)) t(size, price)")
    assert doubled.fetchall()[0] == (3.0,)
    assert pd.isna(con.sql(f"SELECT {wavg('w', 'v')} FROM (VALUES (NULL::INT, 1)) t(w, v)").fetchall()[0][0])
