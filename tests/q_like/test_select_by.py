"""last_by: q's `select by sym from t` against pandas groupby(...).tail(1)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from q_like import last_by
from tickerplant.exceptions import DataError


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.one_of(st.none(), st.sampled_from("abc")), st.sampled_from([1, 2]),
                               st.one_of(st.none(), st.integers(0, 99))), max_size=30),
       two_keys=st.booleans())
def test_last_row_per_key_matches_pandas(rows: list[tuple[str | None, int, int | None]], two_keys: bool) -> None:
    t = pa.table({"sym": pa.array([r[0] for r in rows], pa.string()), "venue": pa.array([r[1] for r in rows],
                  pa.int64()), "x": pa.array([r[2] for r in rows], pa.int64())})
    keys = ["sym", "venue"] if two_keys else ["sym"]
    got = last_by(t, keys)
    df = t.to_pandas()
    want = (df.groupby(keys, dropna=False, sort=False).tail(1)
            .sort_values(keys, na_position="first", kind="stable"))
    assert got.column_names == t.column_names
    assert got.schema == t.schema
    assert got.to_pylist() == pa.Table.from_pandas(want, schema=t.schema, preserve_index=False).to_pylist()


def test_literal() -> None:
    t = pa.table({"sym": ["b", "a", None, "b", None], "x": [1, 2, 3, None, 5]})
    assert last_by(t, "sym").to_pydict() == {"sym": [None, "a", "b"], "x": [5, 2, None]}  # b's last x is null
    assert last_by(t.slice(0, 0), "sym").num_rows == 0
    with pytest.raises(DataError, match="no column 'venue'"):
        last_by(t, ["venue"])
