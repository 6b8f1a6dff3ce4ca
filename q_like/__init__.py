"""q idioms over DuckDB and Arrow: the kdb+ functions people miss, with kdb+'s semantics.

No I/O: every function works on ``pyarrow`` tables and arrays (numpy arrays where noted) or
builds DuckDB SQL; the ones that run SQL take an optional ``duckdb`` connection and otherwise
use a private in-memory one. docs/q_like.md states each function's semantics and where they
differ from q.

===============================  ============================  ==========================
function                         kdb+                          module
===============================  ============================  ==========================
:func:`xbar`, :func:`xbar_array`  ``x xbar y``                  :mod:`q_like.xbar`
:func:`wavg`, :func:`wsum` (SQL)  ``x wavg y``, ``x wsum y``    :mod:`q_like.wavg`
:func:`wavg_array`, ...          (on arrays)
:func:`aj`, :func:`aj0`,         ``aj``, ``aj0``               :mod:`q_like.aj`
:func:`aj_sql`
:func:`wj`, :func:`wj1`          ``wj``, ``wj1``               :mod:`q_like.wj`
:func:`ohlc`, :func:`ohlc_sql`   ``select first price, ...     :mod:`q_like.bars`
                                 by sym, 5 xbar time``
:func:`last_by`                  ``select by sym from t``      :mod:`q_like.select_by`
:func:`msum`, :func:`mcount`,    ``msum``, ``mcount``,         :mod:`q_like.moving`
:func:`mavg`, :func:`mmax`,      ``mavg``, ``mmax``, ``mmin``,
:func:`mmin`, :func:`ema`        ``ema``
===============================  ============================  ==========================
"""

from q_like.aj import aj, aj0, aj_sql
from q_like.bars import ohlc, ohlc_sql
from q_like.moving import ema, mavg, mcount, mmax, mmin, msum
from q_like.select_by import last_by
from q_like.wavg import wavg, wavg_array, wsum, wsum_array
from q_like.wj import wj, wj1
from q_like.xbar import duration_ns, xbar, xbar_array

__all__ = [
    "aj",
    "aj0",
    "aj_sql",
    "duration_ns",
    "ema",
    "last_by",
    "mavg",
    "mcount",
    "mmax",
    "mmin",
    "msum",
    "ohlc",
    "ohlc_sql",
    "wavg",
    "wavg_array",
    "wj",
    "wj1",
    "wsum",
    "wsum_array",
    "xbar",
    "xbar_array",
]
