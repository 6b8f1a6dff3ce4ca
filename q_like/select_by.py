"""``last_by``: the last row per key, kdb+'s ``select by sym from t``.

q's ``select by sym from t`` (no aggregates) keeps, for each distinct ``sym``, the last row of
``t`` in row order, every column taking that row's value (a null included: it is ``last`` of
each column over the rows of the key, and ``last`` takes the last item whatever it is). The
result is keyed by ``sym`` and in key order. Here the result is a plain ``pyarrow.Table`` with
the table's columns in their order, sorted by the keys ascending with a null key first (q orders
null before every value). A null key is a key like any other: its rows form one group.

Computed in Arrow: ``Table.group_by(keys)`` finds the last row number of each key (a hash
aggregation), a ``take`` gathers those rows, a sort orders the few result rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from q_like._tables import RESERVED_PREFIX, as_names, as_table, require_columns
from tickerplant.exceptions import DataError

_ROW = f"{RESERVED_PREFIX}row"


def last_by(table: Any, keys: str | Sequence[str]) -> pa.Table:
    """The last row (in row order) of each distinct value of ``keys``, sorted by ``keys``: q's ``select by``."""
    t = as_table(table, "table")
    names = as_names(keys, "keys")
    if not names:
        raise DataError("keys must name at least one column, e.g. 'sym'")
    require_columns(t, names, "table")
    if t.num_rows == 0:
        return t
    rows = pa.array(np.arange(t.num_rows, dtype=np.int64))
    last = (t.select(names).append_column(_ROW, rows)
            .group_by(names, use_threads=False).aggregate([(_ROW, "max")]))
    picked = t.take(last.column(f"{_ROW}_max"))
    order = pc.sort_indices(picked, sort_keys=[(k, "ascending", "at_start") for k in names])
    return picked.take(order)
