"""aj / aj0: kdb+ as-of join, checked against pandas.merge_asof on random tables and on literal cases.

Both engines (numpy binary search, DuckDB ASOF JOIN) and both right-table layouts (time order as
the RDB holds it; sym-then-time order as end of day writes it) must give the same answer.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import aj, aj0, aj_sql
from tickerplant.exceptions import DataError, QueryError

NS = pa.timestamp("ns", tz="UTC")
T0 = 1_700_000_000_000_000_000
ENGINES = ["numpy", "duckdb"]


def ts(*seconds: float) -> pa.Array:
    return pa.array([T0 + int(s * 1e9) for s in seconds], NS)


# --------------------------------------------------------------------------- the oracle


def oracle(left: pa.Table, right: pa.Table, keys: list[str]) -> pd.DataFrame:
    """pandas.merge_asof (backward, exact matches allowed) with the left order restored.

    merge_asof needs both sides sorted on time; a stable sort keeps row order among equal times,
    so the last right row at a time is the last in row order, as in q.
    """
    ld = left.to_pandas()
    rd = right.to_pandas().sort_values("time", kind="stable")
    extra = [c for c in rd.columns if c not in ld.columns]
    if not len(ld) or not len(rd):  # pandas cannot merge_asof an empty arrow-backed string column
        return ld.assign(**{c: np.nan for c in extra})
    ld["__pos"] = np.arange(len(ld))
    merged = pd.merge_asof(ld.sort_values("time", kind="stable"), rd, on="time", by=keys or None,
                           allow_exact_matches=True, direction="backward")
    return merged.sort_values("__pos").drop(columns="__pos").reset_index(drop=True)


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, pa.Table, str]:
    syms = st.sampled_from(["a", "b", "c"])
    n_left = draw(st.integers(0, 25))
    n_right = draw(st.integers(0, 40))
    left = pa.table({
        "time": pa.array([T0 + t for t in draw(st.lists(st.integers(0, 30), min_size=n_left, max_size=n_left))], NS),
        "sym": pa.array(draw(st.lists(syms, min_size=n_left, max_size=n_left)), pa.string()),
        "price": pa.array(draw(st.lists(st.floats(1, 100), min_size=n_left, max_size=n_left)), pa.float64()),
    })
    right = pa.table({
        "time": pa.array([T0 + t for t in draw(st.lists(st.integers(0, 30), min_size=n_right, max_size=n_right))],
                         NS),
        "sym": pa.array(draw(st.lists(syms, min_size=n_right, max_size=n_right)), pa.string()),
        "bid": pa.array(np.arange(n_right, dtype=np.float64)),  # the row number: shows which row matched
    })
    layout = draw(st.sampled_from(["as drawn", "time", "sym, time"]))
    if layout == "time":
        right = right.take(pa.array(np.argsort(right.column("time").to_numpy(), kind="stable")))
    elif layout == "sym, time":
        right = right.sort_by([("sym", "ascending"), ("time", "ascending")])
    return left, right, layout


def dictionary_sym(t: pa.Table) -> pa.Table:
    """``sym`` as dictionary<int32, string>: how Parquet (read_dictionary), DuckDB ENUMs and polars hand it over."""
    return t.set_column(t.column_names.index("sym"), "sym", pc.dictionary_encode(t.column("sym")))


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None)
@given(data=tables(), encode=st.sampled_from(["", "left", "right", "both"]))
def test_aj_matches_merge_asof(engine: str, data: tuple[pa.Table, pa.Table, str], encode: str) -> None:
    left, right, _ = data
    want = oracle(left, right, ["sym"])
    if encode in ("left", "both"):
        left = dictionary_sym(left)
    if encode in ("right", "both"):
        right = dictionary_sym(right)
    got = aj(["sym", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column_names == ["time", "sym", "price", "bid"]
    assert got.num_rows == left.num_rows
    assert got.column("time").equals(left.column("time"))
    assert got.column("price").equals(left.column("price"))
    assert got.column("sym").type == left.schema.field("sym").type
    np.testing.assert_array_equal(got.column("bid").to_numpy(zero_copy_only=False), want["bid"].to_numpy())


@settings(max_examples=40, deadline=None)
@given(data=tables())
def test_aj_on_time_only_and_aj0_times(data: tuple[pa.Table, pa.Table, str]) -> None:
    left, right, _ = data
    right = right.drop_columns(["sym"]).append_column("rtime", right.column("time"))
    got = aj("time", left, right)
    want = oracle(left, right, [])
    np.testing.assert_array_equal(got.column("bid").to_numpy(zero_copy_only=False), want["bid"].to_numpy())
    zero = aj0("time", left, right)
    matched = ~want["bid"].isna().to_numpy()
    rtime = np.array([pd.Timestamp(x).value if pd.notna(x) else 0 for x in want["rtime"]], dtype=np.int64)
    expect_time = np.where(matched, rtime, left.column("time").cast(pa.int64()).to_numpy())
    np.testing.assert_array_equal(zero.column("time").cast(pa.int64()).to_numpy(), expect_time)
    assert zero.equals(aj0("time", left, right, engine="duckdb"))


# --------------------------------------------------------------------------- literal cases


def q_doc_tables() -> tuple[pa.Table, pa.Table]:
    """The example of code.kx.com/q/ref/aj: trades at 10:01:01/03/04, quotes at 10:01:00 (x3) and 10:01:02."""
    def at(*hms: str) -> pa.Array:
        return pa.array([dt.datetime.fromisoformat(f"2024-01-02T{x}+00:00") for x in hms], NS)

    t = pa.table({"time": at("10:01:01", "10:01:03", "10:01:04"), "sym": ["msft", "ibm", "ge"], "qty": [100, 200, 150]})
    q = pa.table({"time": at("10:01:00", "10:01:00", "10:01:00", "10:01:02"), "sym": ["ibm", "msft", "msft", "ibm"],
                  "px": [100, 99, 101, 98]})
    return t, q


@pytest.mark.parametrize("engine", ENGINES)
def test_q_reference_example(engine: str) -> None:
    t, q = q_doc_tables()
    got = aj(["sym", "time"], t, q, engine=engine)  # type: ignore[arg-type]
    assert got.column_names == ["time", "sym", "qty", "px"]
    assert got.column("px").to_pylist() == [101, 98, None]  # msft: the last of two quotes at 10:01:00
    assert got.column("time").equals(t.column("time"))
    assert got.schema.field("time").type == NS and got.schema.field("px").type == pa.int64()
    zero = aj0(["sym", "time"], t, q, engine=engine)  # type: ignore[arg-type]
    assert [x.strftime("%H:%M:%S") for x in zero.column("time").to_pylist()] == ["10:01:00", "10:01:02", "10:01:04"]


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_tables(engine: str) -> None:
    left = pa.table({"time": ts(1, 2), "sym": ["a", "b"]})
    right = pa.table({"time": ts(), "sym": pa.array([], pa.string()), "bid": pa.array([], pa.float64())})
    got = aj(["sym", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column("bid").to_pylist() == [None, None]
    none = aj(["sym", "time"], left.slice(0, 0), right.append_column("x", pa.array([], pa.int8())), engine=engine)  # type: ignore[arg-type]
    assert none.num_rows == 0 and none.column_names == ["time", "sym", "bid", "x"]


@pytest.mark.parametrize("engine", ENGINES)
def test_exact_time_matches_and_ties_take_the_last_row(engine: str) -> None:
    left = pa.table({"time": ts(5, 4.999, 10), "sym": ["a", "a", "a"]})
    right = pa.table({"time": ts(5, 5, 5, 1), "sym": ["a", "a", "a", "a"], "bid": [1.0, 2.0, 3.0, 0.5]})
    got = aj(["sym", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column("bid").to_pylist() == [3.0, 0.5, 3.0]  # right unsorted: sorted by time, ties by row


@pytest.mark.parametrize("engine", ENGINES)
def test_unsorted_left_keeps_left_order(engine: str) -> None:
    left = pa.table({"time": ts(9, 1, 5, 3), "sym": ["a", "a", "b", "a"], "id": [0, 1, 2, 3]})
    right = pa.table({"time": ts(0, 2, 4, 6, 8), "sym": ["a", "a", "b", "a", "a"], "bid": [0.0, 2.0, 4.0, 6.0, 8.0]})
    got = aj(["sym", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column("id").to_pylist() == [0, 1, 2, 3]
    assert got.column("bid").to_pylist() == [8.0, 0.0, 4.0, 2.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_common_column_takes_right_value_when_matched_and_left_value_otherwise(engine: str) -> None:
    left = pa.table({"time": ts(1, 5, 6), "sym": ["a", "a", "z"], "exchange": ["L1", "L2", "L3"], "n": [1, 2, 3]})
    right = pa.table({"time": ts(2, 4), "sym": ["a", "a"], "exchange": ["R1", None], "bid": [1.5, 2.5]})
    got = aj(["sym", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column_names == ["time", "sym", "exchange", "n", "bid"]
    # Row 0: no quote yet -> left's value; row 1: matched a null -> null (aj, not ajf); row 2: no sym z.
    assert got.column("exchange").to_pylist() == ["L1", None, "L3"]
    assert got.column("bid").to_pylist() == [None, 2.5, None]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("encode", [False, True])
def test_null_times_never_match_and_null_keys_match_each_other(engine: str, encode: bool) -> None:
    left = pa.table({"time": pa.array([T0 + 5, None, T0 + 5], NS), "sym": [None, "a", "a"]})
    right = pa.table({"time": pa.array([T0 + 1, None, T0 + 2], NS), "sym": [None, "a", "a"], "bid": [1.0, 2.0, 3.0]})
    if encode:
        right = dictionary_sym(right)
    got = aj(["sym", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column("bid").to_pylist() == [1.0, None, 3.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_several_keys_and_different_time_units(engine: str) -> None:
    left = pa.table({"time": pa.array([T0 // 1000 + 5, T0 // 1000 + 5], pa.timestamp("us", tz="UTC")),
                     "sym": ["a", "a"], "venue": ["x", "y"]})
    right = pa.table({"time": pa.array([T0 + 1000, T0 + 2000, T0 + 6000], NS), "sym": ["a", "a", "a"],
                      "venue": ["y", "x", "x"], "bid": [1.0, 2.0, 3.0]})
    got = aj(["sym", "venue", "time"], left, right, engine=engine)  # type: ignore[arg-type]
    assert got.column("bid").to_pylist() == [2.0, 1.0]
    assert got.schema.field("time").type == pa.timestamp("us", tz="UTC")


def test_many_keys_use_the_wide_radix_sort() -> None:
    n = 70_000  # more than 65,536 distinct keys: two 16-bit radix passes
    rng = np.random.default_rng(1)
    keys = rng.permutation(n)
    right = pa.table({"time": pa.array(np.sort(rng.integers(0, 10**6, 2 * n)), pa.int64()),
                      "k": np.concatenate([keys, keys]), "v": np.arange(2 * n)})
    left = pa.table({"time": pa.array(rng.integers(0, 10**6, 5000), pa.int64()), "k": rng.integers(0, n, 5000)})
    got = aj(["k", "time"], left, right)
    want = oracle(left.rename_columns(["time", "k"]), right, ["k"])
    np.testing.assert_array_equal(got.column("v").to_numpy(zero_copy_only=False), want["v"].to_numpy())


def test_relation_names_on_a_connection_and_the_sql() -> None:
    t, q = q_doc_tables()
    con = duckdb.connect()
    con.register("trade_v", t)
    con.register("q_arrow", q)
    con.execute("CREATE TABLE quote AS SELECT * FROM q_arrow")
    con.unregister("q_arrow")
    got = aj(["sym", "time"], "trade_v", "quote", con=con)
    assert got.column("px").to_pylist() == [101, 98, None]
    sql = aj_sql(["sym", "time"], "trade_v", "quote", left_columns=t.column_names, right_columns=q.column_names)
    assert con.sql(sql).to_arrow_table().cast(got.schema).equals(got)
    mixed = aj(["sym", "time"], t, "quote", con=con)  # an Arrow table joined with a relation
    assert mixed.column("px").to_pylist() == [101, 98, None]
    assert "__q_like" not in " ".join(n for (n,) in con.sql("SHOW TABLES").fetchall())  # temporaries are gone


def test_errors_name_the_problem() -> None:
    t, q = q_doc_tables()
    with pytest.raises(DataError, match="no column 'venue'"):
        aj(["venue", "time"], t, q)
    with pytest.raises(DataError, match="pass con="):
        aj(["sym", "time"], "trade", q)
    with pytest.raises(DataError, match="numpy engine"):
        aj(["sym", "time"], "trade", q, con=duckdb.connect(), engine="numpy")
    with pytest.raises(DataError, match="time zone on one side only"):
        aj(["sym", "time"], t, q.set_column(0, "time", q.column("time").cast(pa.timestamp("ns"))))
    with pytest.raises(DataError, match=r"pyarrow\.Table"):
        aj(["sym", "time"], [1, 2], q)
    with pytest.raises(DataError, match="'no_such_table' is not a relation"):
        aj(["sym", "time"], "no_such_table", q, con=duckdb.connect())
    con = duckdb.connect()
    con.execute("CREATE TABLE quote AS SELECT 'not a time' AS time, 'ibm' AS sym, 1.0 AS px")
    with pytest.raises(QueryError, match="query_failed"):  # DuckDB refuses the join itself
        aj(["sym", "time"], t, "quote", con=con)


def test_dictionary_keys_with_repeated_or_differing_dictionaries() -> None:
    """Codes are only trusted when every chunk shares one dictionary of distinct values; else values are compared."""
    repeated = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2], pa.int32()), pa.array(["a", "a", "b"]))
    right = pa.table({"time": pa.array([T0 + 1, T0 + 2, T0 + 3], NS), "sym": repeated, "bid": [1.0, 2.0, 3.0]})
    left = pa.table({"time": pa.array([T0 + 9, T0 + 9], NS), "sym": ["a", "b"]})
    assert aj(["sym", "time"], left, right).column("bid").to_pylist() == [2.0, 3.0]
    chunks = pa.chunked_array([pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array(["b"])),
                               pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int8()), pa.array(["a", "b"]))])
    right2 = pa.table({"time": pa.chunked_array([pa.array([T0 + 3], NS), pa.array([T0 + 1, T0 + 2], NS)]),
                       "sym": chunks, "bid": pa.chunked_array([[3.0], [1.0, 2.0]])})
    assert aj(["sym", "time"], left, right2).column("bid").to_pylist() == [1.0, 3.0]
