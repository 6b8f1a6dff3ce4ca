"""``wavg`` and ``wsum``: kdb+'s weighted average and weighted sum, as SQL aggregates and on arrays.

q's ``x wavg y`` is ``(sum x*y) % sum x``: the average of ``y`` weighted by ``x``, weights first
(``size wavg price`` is the VWAP). ``x wsum y`` is ``sum x*y``. As in q:

* a pair where either the weight or the value is null is left out of both sums
  (``2 0N 4 5 wavg 1 2 0N 8`` is ``6f``);
* ``wavg`` of no pairs (empty, or every pair has a null) is null; ``wsum`` of no pairs is 0;
* weights summing to 0 give ``value / 0``: NaN (q's float null) for ``0 / 0``, an infinity otherwise,
  in SQL (DuckDB divides doubles as IEEE does) and on arrays alike.

:func:`wavg`/:func:`wsum` build DuckDB aggregate expressions for ``SELECT ... GROUP BY``;
:func:`wavg_array`/:func:`wsum_array` compute on pyarrow/numpy arrays. On arrays a floating NaN
counts as null (q's float null is NaN); in SQL only NULL is null, as DuckDB keeps NaN a value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from q_like._tables import numeric_values, sql_expr, to_array
from tickerplant.exceptions import DataError


def wavg(weight: str, value: str) -> str:
    """SQL aggregate for q's ``weight wavg value``, e.g. ``wavg("size", "price")`` for VWAP.

    Arguments are column names (quoted for you) or SQL expressions. The result is DOUBLE.
    """
    w, v = sql_expr(weight), sql_expr(value)
    return (f"(sum(({w}) * ({v}))::DOUBLE / "
            f"sum(CASE WHEN ({v}) IS NOT NULL THEN ({w}) END)::DOUBLE)")


def wsum(weight: str, value: str) -> str:
    """SQL aggregate for q's ``weight wsum value``: ``sum(weight * value)``, 0 when no pair is complete."""
    w, v = sql_expr(weight), sql_expr(value)
    return f"coalesce(sum(({w}) * ({v})), 0)"


def _pairs(weight: Any, value: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    w = to_array(weight, "weight")
    v = to_array(value, "value")
    if len(w) != len(v):
        raise DataError(f"weight and value must have the same length, not {len(w)} and {len(v)}")
    wv, wnull = numeric_values(w, "weight")
    vv, vnull = numeric_values(v, "value")
    keep = ~(wnull | vnull)
    if not keep.all():
        wv, vv = wv[keep], vv[keep]
    return wv, vv


def wsum_array(weight: Any, value: Any) -> float | int:
    """q's ``weight wsum value`` on arrays: ``sum(weight * value)`` over pairs with no null.

    Integer inputs give an int, anything else a float.
    """
    wv, vv = _pairs(weight, value)
    total = np.sum(wv * vv)
    return int(total) if np.issubdtype(total.dtype, np.integer) else float(total)


def wavg_array(weight: Any, value: Any) -> float | None:
    """q's ``weight wavg value`` on arrays: ``sum(weight * value) / sum(weight)`` over pairs with no null.

    None when no pair is complete; NaN or infinity when the weights sum to 0, as q.
    """
    wv, vv = _pairs(weight, value)
    if not len(wv):
        return None
    num = np.sum(wv * vv, dtype=np.float64)
    den = np.sum(wv, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))
