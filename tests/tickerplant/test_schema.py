"""Tests of the schema registry, evolution and wire checks (``tickerplant/schema.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerplant.exceptions import DataError, SchemaError
from tickerplant.schema import (
    TIMESTAMP,
    TP_TIME,
    Conformer,
    Registry,
    TableSchema,
    check_wire,
    evolve,
    stamp,
    type_name,
)

TS = pa.timestamp("ns", tz="UTC")

# The columns of tickerplant/schema.toml, written out: (name, type, nullable).
EXPECTED = {
    "trade": [
        ("time", TS, False),
        ("sym", pa.string(), False),
        ("exchange", pa.string(), True),
        ("price", pa.float64(), False),
        ("size", pa.float64(), False),
        ("side", pa.string(), True),
        ("trade_id", pa.string(), True),
        ("seq", pa.int64(), True),
        ("recv_time", TS, True),
        ("venue_sym", pa.string(), True),
    ],
    "quote": [
        ("time", TS, False),
        ("sym", pa.string(), False),
        ("exchange", pa.string(), True),
        ("bid_price", pa.float64(), True),
        ("bid_size", pa.float64(), True),
        ("ask_price", pa.float64(), True),
        ("ask_size", pa.float64(), True),
        ("recv_time", TS, True),
        ("venue_sym", pa.string(), True),
        ("derived", pa.bool_(), True),
    ],
    "l2": [
        ("time", TS, False),
        ("sym", pa.string(), False),
        ("exchange", pa.string(), True),
        ("side", pa.string(), False),
        ("price", pa.float64(), False),
        ("size", pa.float64(), False),
        ("is_snapshot", pa.bool_(), True),
        ("seq_first", pa.int64(), True),
        ("seq_last", pa.int64(), True),
        ("recv_time", TS, True),
        ("venue_sym", pa.string(), True),
    ],
    "feed_event": [
        ("time", TS, False),
        ("sym", pa.string(), True),
        ("venue_sym", pa.string(), True),
        ("exchange", pa.string(), False),
        ("kind", pa.string(), False),
        ("detail", pa.string(), True),
        ("expected", pa.int64(), True),
        ("got", pa.int64(), True),
    ],
}
VERSIONS = {"trade": 2, "quote": 2, "l2": 2, "feed_event": 1}
# Columns added in version 2 of the default tables (old logs replay with nulls in them).
ADDED_IN_V2 = {"trade": ["venue_sym"], "quote": ["venue_sym", "derived"], "l2": ["venue_sym"]}

MINIMAL = """
[tables.t]
version = 1
columns = [
  { name = "time", type = "timestamp" },
  { name = "sym", type = "string" },
]
"""


def table(*cols: str, version: str = "1", name: str = "t") -> str:
    """A one-table schema file."""
    return f"[tables.{name}]\nversion = {version}\ncolumns = [\n" + ",\n".join(cols) + "\n]\n"


TIME = '{ name = "time", type = "timestamp" }'
SYM = '{ name = "sym", type = "string" }'


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.default()


@pytest.fixture(scope="module")
def trade(registry: Registry) -> TableSchema:
    return registry["trade"]


def wire_of(cols: list[tuple[str, pa.DataType, bool]]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nl) for n, t, nl in cols])


def trade_batch(n: int = 3, schema: pa.Schema | None = None) -> pa.RecordBatch:
    """A batch of the trade wire schema (or the given subset / order of it)."""
    data: dict[str, pa.Array] = {
        "time": pa.array([1_000 + i for i in range(n)], TS),
        "sym": pa.array([f"S{i}" for i in range(n)], pa.string()),
        "exchange": pa.array(["X"] * n, pa.string()),
        "price": pa.array([100.0 + i for i in range(n)], pa.float64()),
        "size": pa.array([1.5] * n, pa.float64()),
        "side": pa.array(["buy" if i % 2 else None for i in range(n)], pa.string()),
        "trade_id": pa.array([str(i) for i in range(n)], pa.string()),
        "seq": pa.array(list(range(n)), pa.int64()),
        "recv_time": pa.array([2_000 + i for i in range(n)], TS),
        "venue_sym": pa.array([f"s-{i}" for i in range(n)], pa.string()),
    }
    if schema is None:
        schema = Registry.default()["trade"].wire
    return pa.RecordBatch.from_arrays([data[name] for name in schema.names], schema=schema)


# --- the default registry -------------------------------------------------------------------


def test_default_tables(registry: Registry) -> None:
    feeds = ["trade", "quote", "l2", "feed_event"]
    derived = ["bar_1s", "bar_1m", "vwap", "indicator", "spread_z", "late_data", "qc_alert", "orders", "fill",
               "position"]
    assert list(registry.tables) == feeds + derived  # file order
    for name in derived:  # every engine output carries the seq of the update that produced it
        assert registry[name].wire.field("src_seq").type == pa.int64()
    assert "trade" in registry
    assert "nope" not in registry
    assert registry.source == "the default schema"


@pytest.mark.parametrize("table", ["trade", "quote", "l2", "feed_event"])
def test_default_columns_exactly(registry: Registry, table: str) -> None:
    ts = registry[table]
    assert ts.name == table
    assert ts.version == VERSIONS[table]
    assert ts.wire.equals(wire_of(EXPECTED[table]))
    assert [(f.name, f.type, f.nullable) for f in ts.wire] == EXPECTED[table]
    assert ts.required == [n for n, _, nullable in EXPECTED[table] if not nullable]


@pytest.mark.parametrize("table", ["trade", "quote", "l2", "feed_event"])
def test_schema_appends_tp_time(registry: Registry, table: str) -> None:
    ts = registry[table]
    full = ts.schema
    assert full.names == [*ts.wire.names, TP_TIME]
    tp = full.field(TP_TIME)
    assert tp.type == pa.timestamp("ns", tz="UTC")
    assert tp.type.unit == "ns"
    assert tp.type.tz == "UTC"
    assert tp.nullable is False
    assert TP_TIME not in ts.wire.names
    assert full.remove(full.get_field_index(TP_TIME)).equals(ts.wire)


def test_unknown_table_names_known_ones(registry: Registry) -> None:
    with pytest.raises(DataError) as info:
        registry["nope"]
    msg = str(info.value)
    assert "unknown table 'nope'" in msg
    assert "feed_event, fill, indicator, l2, late_data" in msg
    assert "the default schema" in msg
    assert isinstance(info.value, ValueError)  # DataError is also a ValueError


def test_load(tmp_path: Path) -> None:
    assert list(Registry.load(None).tables) == list(Registry.default().tables)
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL)
    reg = Registry.load(path)
    assert list(reg.tables) == ["t"]
    assert reg.source == str(path)
    assert reg["t"].wire.names == ["time", "sym"]
    with pytest.raises(DataError, match=re.escape(f"tables in {path}: t")):
        reg["u"]
    with pytest.raises(SchemaError, match=r"cannot read schema file .*missing\.toml"):
        Registry.load(tmp_path / "missing.toml")


def test_parse_defaults_version_and_nullable() -> None:
    t = Registry.parse(MINIMAL.replace("version = 1\n", ""))["t"]
    assert t.version == 1
    assert all(f.nullable for f in t.wire)
    assert t.required == []


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("bool", pa.bool_()),
        ("int8", pa.int8()),
        ("int16", pa.int16()),
        ("int32", pa.int32()),
        ("int64", pa.int64()),
        ("uint8", pa.uint8()),
        ("uint16", pa.uint16()),
        ("uint32", pa.uint32()),
        ("uint64", pa.uint64()),
        ("float32", pa.float32()),
        ("float64", pa.float64()),
        ("string", pa.string()),
        ("timestamp", TS),
        ("date", pa.date32()),
    ],
)
def test_every_type(name: str, dtype: pa.DataType) -> None:
    t = Registry.parse(table(TIME, SYM, f'{{ name = "c", type = "{name}" }}'))["t"]
    assert t.wire.field("c").type == dtype
    assert type_name(dtype) == name


def test_type_name_of_undeclared_type() -> None:
    assert type_name(pa.large_string()) == "large_string"


# --- parse errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[tables.t\n", "<string>: not valid TOML", id="toml"),
        pytest.param("x = = 1", "not valid TOML", id="toml2"),
        pytest.param("", "declares no tables; add [tables.NAME] sections", id="empty"),
        pytest.param("[other]\nx = 1\n", "declares no tables", id="no-tables-key"),
        pytest.param("tables = 3\n", "declares no tables", id="tables-not-table"),
        pytest.param("[tables]\n", "declares no tables", id="tables-empty"),
        pytest.param(
            table(TIME, SYM, '{ name = "px", type = "decimal" }'),
            "table 't': column 'px' has unknown type 'decimal'; use one of bool, int8",
            id="unknown-type",
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "px", type = "Float64" }'),
            "column 'px' has unknown type 'Float64'",
            id="type-case",
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "px", type = 3 }'),
            "column 'px' has unknown type 3",
            id="type-int",
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "px", type = "float64" }', '{ name = "px", type = "int64" }'),
            "table 't': column 'px' is declared twice",
            id="duplicate",
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "tp_time", type = "timestamp" }'),
            "tp_time is added by the tickerplant; do not declare it",
            id="tp_time",
        ),
        pytest.param(
            table(SYM, '{ name = "px", type = "float64" }'),
            "table 't': every table needs a column 'time' of type timestamp",
            id="missing-time",
        ),
        pytest.param(
            table(TIME, '{ name = "px", type = "float64" }'),
            "every table needs a column 'sym' of type string",
            id="missing-sym",
        ),
        pytest.param(
            table('{ name = "time", type = "int64" }', SYM),
            "every table needs a column 'time' of type timestamp",
            id="time-wrong-type",
        ),
        pytest.param(
            table(TIME, '{ name = "sym", type = "int32" }'),
            "every table needs a column 'sym' of type string",
            id="sym-wrong-type",
        ),
        pytest.param(
            table(TIME, SYM, name='"1abc"'),
            "table '1abc': table names are letters, digits and _",
            id="table-digit",
        ),
        pytest.param(
            table(TIME, SYM, name='"a-b"'), "table 'a-b': table names are letters", id="table-dash"
        ),
        pytest.param(
            table(TIME, SYM, name='"' + "a" * 64 + '"'), "at most 63", id="table-too-long"
        ),
        pytest.param(table(TIME, SYM, name="tp_time"), "table names are letters", id="table-tp"),
        pytest.param(
            table(TIME, SYM, '{ name = "bad name", type = "int64" }'),
            "table 't': bad column name 'bad name'",
            id="col-space",
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "9lives", type = "int64" }'),
            "bad column name '9lives'",
            id="col-digit",
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "", type = "int64" }'), "bad column name ''", id="col-empty"
        ),
        pytest.param(
            table(TIME, SYM, '{ name = 5, type = "int64" }'), "bad column name 5", id="col-int"
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "' + "c" * 64 + '", type = "int64" }'),
            f"bad column name '{'c' * 64}'",
            id="col-too-long",
        ),
        pytest.param(
            table(TIME, SYM, '{ type = "int64" }'), "each column needs a name and a type", id="no-name"
        ),
        pytest.param(
            table(TIME, SYM, '{ name = "c" }'), "each column needs a name and a type", id="no-type"
        ),
        pytest.param(table(TIME, SYM, '"c"'), "each column needs a name and a type", id="col-str"),
        pytest.param(table(version="1"), "`columns` must be a non-empty list", id="no-columns"),
        pytest.param(
            "[tables.t]\nversion = 1\ncolumns = 3\n", "`columns` must be a non-empty", id="cols-int"
        ),
        pytest.param(
            table(TIME, SYM, version="0"),
            "table 't': version must be a positive integer, got 0",
            id="version0",
        ),
        pytest.param(
            table(TIME, SYM, version='"2"'), "version must be a positive integer, got '2'", id="v-str"
        ),
        pytest.param(
            table(TIME, SYM, version="1.5"), "version must be a positive integer, got 1.5", id="v-flt"
        ),
        pytest.param(
            "[tables]\nt = 3\n", "table 't': must be a table with `version` and `columns`", id="body"
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        Registry.parse(text)
    assert message in str(info.value)


def test_parse_error_names_source() -> None:
    with pytest.raises(SchemaError, match=r"^my\.toml: table 't': column 'px' is declared twice$"):
        Registry.parse(
            table(TIME, SYM, '{ name = "px", type = "int64" }', '{ name = "px", type = "int64" }'),
            "my.toml",
        )


@pytest.mark.parametrize("bad", ['["int64"]', '{ t = "int64" }'])
def test_parse_unhashable_type_is_schema_error(bad: str) -> None:
    with pytest.raises(SchemaError, match="unknown type"):
        Registry.parse(table(TIME, SYM, f'{{ name = "px", type = {bad} }}'))


def test_parse_non_bool_nullable_is_schema_error() -> None:
    with pytest.raises(SchemaError, match="nullable"):
        Registry.parse(table('{ name = "time", type = "timestamp", nullable = "false" }', SYM))


# --- evolution ------------------------------------------------------------------------------

V1 = wire_of(EXPECTED["trade"])


def trade_v(version: int, schema: pa.Schema) -> TableSchema:
    return TableSchema("trade", version, schema)


def test_evolve_add_nullable_column() -> None:
    cols = list(EXPECTED["trade"])
    cols.insert(3, ("venue", pa.string(), True))  # added in the middle
    cols.append(("fee", pa.float64(), True))
    target = trade_v(2, wire_of(cols))
    conf = evolve(V1, 1, target)
    assert isinstance(conf, Conformer)
    assert not conf.identity
    old = trade_batch(4, V1)
    new = conf(old)
    assert new.schema.equals(target.wire)
    assert new.num_rows == 4
    assert new.column("venue").null_count == 4
    assert new.column("fee").null_count == 4
    assert new.column("venue").type == pa.string()
    for name in V1.names:
        assert new.column(name).equals(old.column(name))


def test_evolve_reorders_by_name() -> None:
    cols = [*reversed(EXPECTED["trade"]), ("venue", pa.string(), True)]
    target = trade_v(3, wire_of(cols))
    old = trade_batch(2, V1)
    new = evolve(V1, 2, target)(old)
    assert new.schema.names == [c[0] for c in cols]
    for name in V1.names:
        assert new.column(name).equals(old.column(name))
    assert new.column("venue").to_pylist() == [None, None]


def test_evolve_relax_to_nullable() -> None:
    cols = [(n, t, True if n == "price" else nl) for n, t, nl in EXPECTED["trade"]]
    target = trade_v(2, wire_of(cols))
    new = evolve(V1, 1, target)(trade_batch(2, V1))
    assert new.schema.field("price").nullable
    assert new.column("price").to_pylist() == [100.0, 101.0]


def test_evolve_same_columns_same_version_is_identity() -> None:
    target = trade_v(1, V1)
    conf = evolve(V1, 1, target)
    assert conf.identity
    batch = trade_batch(3, V1)
    assert conf(batch) is batch


def test_evolve_same_columns_newer_version_is_identity() -> None:
    assert evolve(V1, 1, trade_v(5, V1)).identity


@pytest.mark.parametrize("version", [1, 0])
def test_evolve_changed_columns_without_bump(version: int) -> None:
    target = trade_v(version, V1.append(pa.field("venue", pa.string())))
    with pytest.raises(SchemaError) as info:
        evolve(V1, 1, target)
    msg = str(info.value)
    assert "table 'trade'" in msg
    assert "columns differ from version 1" in msg
    assert f"still says version {version}" in msg
    assert "bump `version` to 2" in msg


def test_evolve_reorder_without_bump_is_refused() -> None:
    target = trade_v(1, wire_of(list(reversed(EXPECTED["trade"]))))
    with pytest.raises(SchemaError, match="bump `version` to 2"):
        evolve(V1, 1, target)


@pytest.mark.parametrize(
    ("cols", "problem"),
    [
        pytest.param(
            [c for c in EXPECTED["trade"] if c[0] != "side"],
            "column 'side' was removed",
            id="removed",
        ),
        pytest.param(
            [(n, pa.float32() if n == "size" else t, nl) for n, t, nl in EXPECTED["trade"]],
            "column 'size' changed type float64 -> float32",
            id="type",
        ),
        pytest.param(
            [*EXPECTED["trade"], ("venue", pa.string(), False)],
            "new column 'venue' is not nullable",
            id="new-non-null",
        ),
        pytest.param(
            [(n, t, False if n == "exchange" else nl) for n, t, nl in EXPECTED["trade"]],
            "column 'exchange' became non-nullable",
            id="non-null",
        ),
    ],
)
def test_evolve_incompatible(cols: list[tuple[str, pa.DataType, bool]], problem: str) -> None:
    with pytest.raises(SchemaError) as info:
        evolve(V1, 1, trade_v(2, wire_of(cols)))
    msg = str(info.value)
    assert problem in msg
    assert "version 2 is not a compatible evolution of version 1" in msg
    assert "migrate" in msg
    assert "Only nullable columns may be added" in msg


def test_evolve_incompatible_names_every_problem() -> None:
    cols = [
        ("time", TS, False),
        ("sym", pa.string(), False),
        ("exchange", pa.string(), False),  # became non-nullable
        ("price", pa.float32(), False),  # changed type
        ("size", pa.float64(), False),
        # side, trade_id removed
        ("seq", pa.int64(), True),
        ("recv_time", TS, True),
        ("venue", pa.string(), False),  # new and not nullable
    ]
    with pytest.raises(SchemaError) as info:
        evolve(V1, 1, trade_v(2, wire_of(cols)))
    msg = str(info.value)
    for problem in (
        "column 'exchange' became non-nullable",
        "column 'price' changed type float64 -> float32",
        "column 'side' was removed",
        "column 'trade_id' was removed",
        "new column 'venue' is not nullable",
    ):
        assert problem in msg
    assert "migrate" in msg
    assert "tick eod" in msg


@pytest.mark.parametrize("name", sorted(ADDED_IN_V2))
def test_default_v2_is_a_compatible_evolution_of_v1(registry: Registry, name: str) -> None:
    """A version-1 log of a default table replays under version 2, nulls in the added columns."""
    target = registry[name]
    v1 = pa.schema([f for f in target.wire if f.name not in ADDED_IN_V2[name]])
    old = pa.RecordBatch.from_pylist([], schema=v1)
    conf = evolve(v1, 1, target)
    assert not conf.identity
    new = conf(pa.RecordBatch.from_arrays([pa.nulls(2, f.type) for f in v1], schema=v1))
    assert new.schema.equals(target.wire)
    for col in ADDED_IN_V2[name]:
        assert new.column(col).to_pylist() == [None, None]
    assert conf(old).num_rows == 0


def test_evolve_incompatible_reported_even_with_bump_missing() -> None:
    """Incompatibility wins over the version message: bumping would not help."""
    cols = [c for c in EXPECTED["trade"] if c[0] != "side"]
    with pytest.raises(SchemaError, match=r"was removed.*migrate"):
        evolve(V1, 1, trade_v(1, wire_of(cols)))


# --- check_wire -----------------------------------------------------------------------------


def test_check_wire_exact(trade: TableSchema) -> None:
    conf = check_wire(trade.wire, trade)
    assert conf.identity
    batch = trade_batch(2)
    assert conf(batch) is batch


def test_check_wire_missing_nullable_column(trade: TableSchema) -> None:
    received = trade.wire.remove(trade.wire.get_field_index("trade_id"))
    conf = check_wire(received, trade)
    assert not conf.identity
    out = conf(trade_batch(3, received))
    assert out.schema.equals(trade.wire)
    assert out.column("trade_id").to_pylist() == [None, None, None]
    assert out.column("price").to_pylist() == [100.0, 101.0, 102.0]


def test_check_wire_other_order(trade: TableSchema) -> None:
    received = pa.schema(list(reversed(list(trade.wire))))
    batch = trade_batch(3, received)
    out = check_wire(received, trade)(batch)
    assert out.schema.equals(trade.wire)
    assert out.equals(trade_batch(3))


def test_check_wire_unknown_column(trade: TableSchema) -> None:
    received = trade.wire.append(pa.field("venue", pa.string()))
    with pytest.raises(DataError) as info:
        check_wire(received, trade)
    msg = str(info.value)
    assert "table 'trade' has no column 'venue'" in msg
    assert "time, sym, exchange, price, size, side, trade_id, seq, recv_time, venue_sym" in msg


@pytest.mark.parametrize(
    ("column", "dtype", "message"),
    [
        ("price", pa.float32(), "column trade.price must be float64, got float32"),
        ("time", pa.timestamp("us", tz="UTC"), "column trade.time must be timestamp, got timestamp[us"),
        ("time", pa.timestamp("ns"), "column trade.time must be timestamp, got timestamp[ns]"),
        ("seq", pa.int32(), "column trade.seq must be int64, got int32"),
        ("sym", pa.large_string(), "column trade.sym must be string, got large_string"),
    ],
)
def test_check_wire_wrong_type(
    trade: TableSchema, column: str, dtype: pa.DataType, message: str
) -> None:
    idx = trade.wire.get_field_index(column)
    received = trade.wire.set(idx, pa.field(column, dtype))
    with pytest.raises(DataError, match=re.escape(message)):
        check_wire(received, trade)


@pytest.mark.parametrize("column", ["time", "sym", "price", "size"])
def test_check_wire_missing_required(trade: TableSchema, column: str) -> None:
    received = trade.wire.remove(trade.wire.get_field_index(column))
    with pytest.raises(DataError, match=f"table 'trade' needs column '{column}', which is missing"):
        check_wire(received, trade)


def test_check_wire_tp_time_is_not_a_wire_column(trade: TableSchema) -> None:
    with pytest.raises(DataError, match="has no column 'tp_time'"):
        check_wire(trade.schema, trade)


def test_check_wire_duplicate_column(trade: TableSchema) -> None:
    received = trade.wire.append(trade.wire.field("exchange"))
    with pytest.raises(DataError, match="exchange"):
        check_wire(received, trade)


# --- stamp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [0, 1, 5])
@pytest.mark.parametrize("tp_time", [0, 1_700_000_000_123_456_789, -1, 2**63 - 1])
def test_stamp(trade: TableSchema, rows: int, tp_time: int) -> None:
    batch = trade_batch(rows)
    out = stamp(batch, tp_time, trade.schema)
    assert out.schema.equals(trade.schema)
    assert out.num_rows == rows
    col = out.column(TP_TIME)
    assert col.type == TIMESTAMP
    assert col.null_count == 0
    assert col.cast(pa.int64()).to_pylist() == [tp_time] * rows
    for name in trade.wire.names:
        assert out.column(name).equals(batch.column(name))


def test_stamp_on_sliced_batch(trade: TableSchema) -> None:
    batch = trade_batch(10).slice(3, 4)
    out = stamp(batch, 42, trade.schema)
    assert out.column(TP_TIME).cast(pa.int64()).to_pylist() == [42] * 4
    assert out.column("price").to_pylist() == [103.0, 104.0, 105.0, 106.0]
    out.validate(full=True)


# --- property: conforming drops of nullable columns -----------------------------------------

TRADE = Registry.default()["trade"]
NULLABLE = [f.name for f in TRADE.wire if f.nullable]

_ts = st.integers(-(2**62), 2**62)
_values: dict[str, st.SearchStrategy[object]] = {
    "timestamp": _ts,
    "string": st.text(max_size=8),
    "float64": st.floats(allow_nan=False),
    "int64": st.integers(-(2**63), 2**63 - 1),
}


def column_strategy(field: pa.Field, n: int) -> st.SearchStrategy[pa.Array]:
    value = _values[type_name(field.type)]
    if field.nullable:
        value = st.none() | value
    return st.lists(value, min_size=n, max_size=n).map(lambda vs: pa.array(vs, field.type))


@settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    dropped=st.sets(st.sampled_from(NULLABLE)),
    data=st.data(),
)
def test_conform_dropped_nullable_columns(dropped: set[str], data: st.DataObject) -> None:
    kept = [f for f in TRADE.wire if f.name not in dropped]
    received = pa.schema(data.draw(st.permutations(kept), label="order"))
    n = data.draw(st.integers(0, 6), label="rows")
    arrays = [data.draw(column_strategy(f, n), label=f.name) for f in received]
    batch = pa.RecordBatch.from_arrays(arrays, schema=received)

    out = check_wire(received, TRADE)(batch)

    assert out.schema.equals(TRADE.wire)
    assert out.num_rows == n
    for name in TRADE.wire.names:
        col = out.column(name)
        if name in dropped:
            assert col.null_count == n
        else:
            assert col.equals(batch.column(name))
    out.validate(full=True)
    stamped = stamp(out, 7, TRADE.schema)
    assert stamped.schema.equals(TRADE.schema)
