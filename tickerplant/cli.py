"""The ``tick`` command: a thin shell; each command parses options and calls one function.

Heavy modules are imported inside the commands so ``tick --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="tickerplant: a kdb+/q-style market-data tick system.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
log_app = typer.Typer(help="Check, repair and print tickerplant log files.", no_args_is_help=True)
feed_app = typer.Typer(help="Feed handlers that publish to a tickerplant.", no_args_is_help=True)
hdb_app = typer.Typer(help="Serve the historical database (Parquet partitions) to SQL queries; `load` backfills.",
                      invoke_without_command=True)
app.add_typer(log_app, name="log")
app.add_typer(feed_app, name="feed")
app.add_typer(hdb_app, name="hdb")
rte_app = typer.Typer(help="Real-time engines: subscribers of the TP that publish derived tables back to it.",
                      no_args_is_help=True)
strategy_app = typer.Typer(help="Strategies: orders, simulated fills, position and P&L as TP tables.",
                           no_args_is_help=True)
app.add_typer(rte_app, name="rte")
app.add_typer(strategy_app, name="strategy")


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


class _RowPrinter:
    """Prints messages' rows as one table per table name: a header once, columns kept aligned."""

    def __init__(self) -> None:
        self.widths: dict[str, dict[str, int]] = {}

    def print(self, msg: Any, limit: int | None = None) -> int:
        frame = msg.data.to_pandas()
        if limit is not None:
            frame = frame.head(limit)
        frame.insert(0, "#seq", msg.seq)
        first = msg.table not in self.widths
        widths = self.widths.setdefault(msg.table, {})
        for col in frame.columns:  # display only: a Python loop over the printed cells is fine
            longest = max((len(str(v)) for v in frame[col].tolist()), default=0)
            widths[col] = max(widths.get(col, len(col)), longest)
        # Rendered with its header every time (pandas aligns differently without one), which
        # is then dropped after the first message.
        text = frame.to_string(index=False, col_space=widths)
        if first:
            print(f"-- {msg.table}")
        else:
            text = text.partition("\n")[2]
        if text:
            print(text, flush=True)
        return len(frame)


@app.command()
def tp(
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = 5010,
    bind: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    log_dir: Annotated[Path, typer.Option(help="Directory of the daily log files.")] = Path("tplogs"),
    schema: Annotated[Path | None, typer.Option(help="Schema TOML file (default: built-in trade/quote/l2).")] = None,
    batch_ms: Annotated[float, typer.Option(help="0 = zero-latency; N = log and publish every N ms.")] = 0.0,
    fsync: Annotated[str, typer.Option(help="always | group:<ms> | os")] = "group:5ms",
    compress: Annotated[bool, typer.Option(help="lz4-compress log chunks.")] = False,
    eod: Annotated[str, typer.Option(help="End-of-day time HH:MM in --tz.")] = "00:00",
    tz: Annotated[str, typer.Option(help="Time zone of --eod (IANA name).")] = "UTC",
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 1.0,
    max_frame: Annotated[int, typer.Option(help="Largest frame accepted, bytes.")] = 64 << 20,
    sub_buffer: Annotated[int, typer.Option(help="Bytes queued to one subscriber before it is cut off.")] = 64 << 20,
    auth_file: Annotated[Path | None, typer.Option(help="Token file: `<token> <roles>` per line.")] = None,
    clock_start: Annotated[str | None, typer.Option(hidden=True, help="Run the clock from this instant.")] = None,
    verbose: bool = False,
) -> None:
    """Run a tickerplant: log every update, fan it out to subscribers."""
    from tickerplant import server
    from tickerplant.clock import OffsetClock, SystemClock, parse_instant
    from tickerplant.exceptions import TickError

    _logging(verbose)
    try:
        server.parse_fsync(fsync)
        clock = OffsetClock(parse_instant(clock_start)) if clock_start else SystemClock()
        config = server.Config(host=bind, port=port, log_dir=log_dir, schema=schema, batch_ms=batch_ms,
                               fsync=fsync, compress=compress, eod=eod, tz=tz, heartbeat=heartbeat,
                               max_frame=max_frame, sub_buffer=sub_buffer, auth_file=auth_file, clock=clock)

        def ready(t: server.Tickerplant) -> None:
            # One machine-readable line on stdout: scripts and tests read the port from it.
            print(json.dumps({"listening": f"{bind}:{t.port}", "log": str(t.writer.path), "seq": t.last_seq}),
                  flush=True)

        server.run(config, ready)
    except (TickError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def sub(
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    table: Annotated[list[str] | None, typer.Option(help="Table(s) to subscribe to (default: all).")] = None,
    syms: Annotated[str | None, typer.Option(help="Comma-separated syms (default: all).")] = None,
    from_seq: Annotated[int | None, typer.Option(help="Replay from this sequence number, then live.")] = None,
    token: Annotated[str | None, typer.Option(help="Auth token.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many rows.")] = None,
    quiet: Annotated[bool, typer.Option(help="Print one summary line per second instead of rows.")] = False,
) -> None:
    """Subscribe and print live rows as a table."""
    import time

    from tickerplant import RejectedError, Subscriber

    sym_list = [s for s in syms.split(",") if s] if syms else None
    rows = 0
    table_printer = _RowPrinter()
    start = last = time.monotonic()
    window = 0
    try:
        with Subscriber(tp, tables=table, syms=sym_list, from_seq=from_seq, token=token, name="tick sub") as s:
            for msg in s:
                rows += msg.data.num_rows
                window += msg.data.num_rows
                if quiet:
                    now = time.monotonic()
                    if now - last >= 1:
                        print(f"seq {msg.seq}  rows {rows}  {window / (now - last):,.0f} rows/s", flush=True)
                        last, window = now, 0
                else:
                    keep = None if limit is None else max(limit - rows + msg.data.num_rows, 0)
                    table_printer.print(msg, keep)
                if limit is not None and rows >= limit:
                    break
    except RejectedError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    if quiet:
        print(f"{rows} rows in {time.monotonic() - start:.1f}s")


@log_app.command("check")
def log_check(path: Path, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Verify every chunk; count chunks, messages and rows; report the first bad offset."""
    from tickerplant import log
    from tickerplant.exceptions import LogError

    try:
        st = log.check(path)
    except (LogError, OSError) as exc:
        raise _fail(str(exc)) from None
    info: dict[str, Any] = {
        "path": st.path, "date": str(st.date), "ok": st.ok, "chunks": st.chunks, "messages": st.messages,
        "rows": st.rows, "first_seq": st.first_seq, "last_seq": st.last_seq, "rows_by_table": st.rows_by_table,
        "file_bytes": st.file_bytes, "valid_bytes": st.valid_bytes, "ended": st.ended,
    }
    if not st.ok:
        info.update(error=st.error, bad_offset=st.valid_bytes, torn_tail=st.torn, next_valid_chunk=st.next_valid)
    if as_json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>18}: {v}")
        if not st.ok:
            kind = "torn tail" if st.torn else f"corrupt middle (valid chunks resume at byte {st.next_valid})"
            typer.secho(f"BAD: {st.error} at byte {st.valid_bytes} after {st.messages} valid messages — {kind}. "
                        f"`tick log repair {path}` truncates to {st.valid_bytes} bytes and keeps the cut bytes.",
                        fg=typer.colors.RED)
    if not st.ok:
        raise typer.Exit(1)


@log_app.command("repair")
def log_repair(path: Path) -> None:
    """Truncate a torn or corrupt tail; the cut bytes are kept in a sidecar file."""
    from tickerplant import log
    from tickerplant.exceptions import LogError

    try:
        st, sidecar = log.repair(path)
    except (LogError, OSError) as exc:
        raise _fail(str(exc)) from None
    if sidecar is None:
        print(f"{path}: valid ({st.messages} messages, {st.rows} rows, last seq {st.last_seq}); nothing to do")
        return
    lost = "" if st.torn else f" WARNING: valid chunks followed at byte {st.next_valid}; they were cut too."
    print(f"{path}: {st.error} at byte {st.valid_bytes}. Truncated to {st.valid_bytes} bytes "
          f"({st.messages} valid messages, last seq {st.last_seq}); {st.file_bytes - st.valid_bytes} cut bytes "
          f"kept in {sidecar}.{lost}")


@log_app.command("cat")
def log_cat(
    path: Path,
    table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 20,
    schema: Annotated[Path | None, typer.Option(help="Conform to this schema file's current versions.")] = None,
) -> None:
    """Print the updates in a log as rows."""
    from tickerplant import log
    from tickerplant.exceptions import TickError
    from tickerplant.schema import Registry

    registry = Registry.load(schema) if schema else None
    printed = 0
    printer = _RowPrinter()
    try:
        for msg in log.replay(path, registry, tables=[table] if table else None):
            printed += printer.print(msg, limit - printed)
            if printed >= limit:
                break
    except TickError as exc:
        raise _fail(str(exc)) from None


@app.command("eod")
def eod_cmd(
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    token: Annotated[str | None, typer.Option(help="Auth token with the admin role.")] = None,
) -> None:
    """Force an end-of-day roll now."""
    from tickerplant import admin
    from tickerplant.exceptions import TickError

    try:
        result = admin.end_of_day(tp, token)
    except (TickError, OSError) as exc:
        raise _fail(str(exc)) from None
    print(f"closed {result['closed']} at seq {result['closed_seq']}; now {result['date']}, log {result['log']}")


@app.command()
def stats(
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    token: Annotated[str | None, typer.Option(help="Auth token with the admin role.")] = None,
) -> None:
    """Print a running tickerplant's counters as JSON."""
    from tickerplant import admin
    from tickerplant.exceptions import TickError

    try:
        print(json.dumps(admin.stats(tp, token), indent=2))
    except (TickError, OSError) as exc:
        raise _fail(str(exc)) from None


def _sim_names(text: str) -> int | list[str]:
    """``--symbols``/``--venues`` of ``tick feed sim``: a count, or comma-separated names."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    return [name.strip() for name in text.split(",") if name.strip()]


@feed_app.command("sim")
def feed_sim(
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    symbols: Annotated[str, typer.Option(
        help="A number of symbols (BTCUSD, ETHUSD, SOLUSD, ... then SYM9...) or comma-separated names.")] = "4",
    venues: Annotated[str, typer.Option(help="A number of venues (SIMA, SIMB, ...) or comma-separated names.")] = "3",
    rate: Annotated[float, typer.Option(help="Events (trades + quotes) per second.")] = 20_000,
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and options give the same market.")] = 0,
    l2: Annotated[int, typer.Option("--l2", metavar="DEPTH", help=(
        "Also publish L2 books, DEPTH levels a side (0: none): a snapshot per book, then an update per "
        "quote; quotes are then marked derived (the top of the book)."))] = 0,
    gaps: Annotated[float, typer.Option(metavar="P", help=(
        "Inject sequence gaps: the probability, per trade and per L2 update, that 1-3 consecutive trades of "
        "a venue (seq) or updates of a book (update id) are dropped; a book gap ends with the book re-sent "
        "as a snapshot."))] = 0.0,
    gap_events: Annotated[bool, typer.Option(help=(
        "With --gaps, also publish the feed_event rows a feed handler would: gap, and resync for a book."))] = False,
    stale: Annotated[float, typer.Option(metavar="P", help=(
        "Inject stale periods: the probability, per event, that its (venue, sym) then goes silent (no "
        "trade, quote or L2 row) for --stale-for seconds while the others go on."))] = 0.0,
    stale_for: Annotated[float, typer.Option(metavar="SECONDS", help="Length of an injected stale period.")] = 5.0,
    outliers: Annotated[float, typer.Option(metavar="P", help=(
        "Inject outlier prints: the probability, per trade, of a price 5 to 20 percent away from the "
        "venue's mid."))] = 0.0,
    injected: Annotated[Path | None, typer.Option(
        help="At the end, write every injected fault (the ground truth for QC) to this Parquet file.")] = None,
    token: Annotated[str | None, typer.Option(help="Auth token.")] = None,
) -> None:
    """Publish simulated trades, quotes and L2 books (random walks on several venues), optionally with faults.

    Without --gaps/--stale/--outliers the market is clean. Prints rows per table (and faults injected) as JSON.
    """
    from feedhandlers.sim import Simulator
    from tickerplant import Publisher
    from tickerplant.exceptions import TickError

    _logging(False)
    if not stale_for > 0:
        raise _fail(f"--stale-for must be a positive number of seconds, got {stale_for}")
    try:
        sim = Simulator(_sim_names(symbols), _sim_names(venues), seed=seed, l2_depth=l2, gaps=gaps,
                        gap_events=gap_events, stale=stale, stale_ns=int(stale_for * 1e9), outliers=outliers)
    except (TickError, ValueError) as exc:
        raise _fail(str(exc)) from None
    faults = gaps > 0 or stale > 0 or outliers > 0
    counts: dict[str, Any] = {}
    try:
        with Publisher(tp, token=token, name="feed sim") as pub:
            counts = dict(sim.run(pub.publish, rate, duration))
            pub.flush()
    except KeyboardInterrupt:
        pass
    except (TickError, OSError) as exc:
        raise _fail(str(exc)) from None
    finally:
        if injected is not None:
            import pyarrow.parquet as pq

            pq.write_table(sim.injected, injected)
    if counts:
        if faults:
            kinds = sim.injected.column("kind").to_pylist()
            counts["injected"] = {kind: kinds.count(kind) for kind in ("gap", "stale", "outlier")}
        print(json.dumps(counts))


def _feed_command(name: str) -> None:
    """Register ``tick feed <name>`` for one exchange adapter (same options for every venue)."""

    def command(
        tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
        symbols: Annotated[str, typer.Option(help="Comma-separated venue symbols, e.g. BTCUSDT,ETHUSDT.")] = "",
        channels: Annotated[str, typer.Option(help="Comma-separated: trade, quote, l2.")] = "trade,quote,l2",
        ws_url: Annotated[str | None, typer.Option(help="WebSocket endpoint (default: the venue's).")] = None,
        rest_url: Annotated[str | None, typer.Option(help="REST endpoint for book snapshots.")] = None,
        capture: Annotated[Path | None, typer.Option(
            help="Also record every raw frame to this file; a restarted handler appends to it.")] = None,
        depth: Annotated[int | None, typer.Option(
            help="Book depth to subscribe at, for venues that subscribe at a depth (kraken, bybit).")] = None,
        duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
        token: Annotated[str | None, typer.Option(help="Auth token.")] = None,
        verbose: bool = False,
    ) -> None:
        import asyncio

        from feedhandlers.shell import Feed, FeedConfig
        from feedhandlers.venues import make_venue
        from tickerplant.exceptions import TickError

        _logging(verbose)
        try:
            options = {} if depth is None else {"depth": depth}
            venue = make_venue(name, [s for s in symbols.split(",") if s], [c for c in channels.split(",") if c],
                               **options)
            config = FeedConfig(tp=tp, ws_url=ws_url, rest_url=rest_url, capture=capture, token=token)
            stats = asyncio.run(Feed(venue, config).run(duration))
        except KeyboardInterrupt:
            return
        except (TickError, ValueError, OSError) as exc:
            raise _fail(str(exc)) from None
        print(json.dumps(stats, default=str))

    command.__doc__ = f"Publish {name} market data (trades, quotes, L2 books, feed events) to a tickerplant."
    feed_app.command(name)(command)


def _register_feeds() -> None:
    from feedhandlers.venues import VENUES  # a dict of names: no adapter is imported here

    for name in VENUES:
        _feed_command(name)


_register_feeds()


@feed_app.command("replay")
def feed_replay(
    path: Annotated[Path, typer.Argument(help="A capture file written by tick feed <venue> --capture.")],
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    speed: Annotated[str, typer.Option(help="max, or a factor of the recorded speed (1 = as recorded).")] = "max",
    token: Annotated[str | None, typer.Option(help="Auth token.")] = None,
) -> None:
    """Re-publish a capture through the same parser as the live feed."""
    import asyncio

    from feedhandlers.capture import CaptureReader
    from feedhandlers.shell import FeedConfig, replay
    from feedhandlers.venues import make_venue
    from tickerplant.exceptions import TickError

    _logging(False)
    try:
        pace = None if speed == "max" else float(speed)
        with CaptureReader(path) as reader:
            header = reader.header
        meta = header.meta
        venue = make_venue(header.venue, list(meta.get("symbols", [])), list(meta.get("channels", [])),
                           **meta.get("options", {}))
        stats = asyncio.run(replay(path, venue, FeedConfig(tp=tp, token=token), pace))
    except (TickError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps(stats, default=str))


def _listening(address: tuple[str, int], **extra: Any) -> None:
    # One machine-readable line on stdout: scripts and tests read the port from it.
    print(json.dumps({"listening": f"{address[0]}:{address[1]}", **extra}), flush=True)


def _tokens(auth_file: Path | None) -> dict[str, set[str]] | None:
    from tickerplant.server import load_tokens

    return load_tokens(auth_file)


# Options both query services (tick rdb, tick hdb) take.
_AuthFile = Annotated[Path | None, typer.Option(help="Tokens allowed to query: `<token> query` per line.")]
_QueryTimeout = Annotated[float, typer.Option(help="Seconds a query may run.")]
_MaxRows = Annotated[int, typer.Option(help="Most rows a query may return.")]
_MaxBytes = Annotated[int, typer.Option(help="Most bytes (Arrow) a query may return.")]
_Workers = Annotated[int, typer.Option(help="Queries run at once.")]


@app.command()
def rdb(
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    hdb: Annotated[Path, typer.Option(help="HDB directory: end of day writes here; queries read it.")] = Path("hdb"),
    port: Annotated[int, typer.Option(help="Query port (0 = any free port).")] = 5011,
    bind: Annotated[str, typer.Option(help="Address to listen on for queries.")] = "127.0.0.1",
    log_dir: Annotated[Path | None, typer.Option(help="The TP's log directory (default: the TP's, if local).")] = None,
    schema: Annotated[Path | None, typer.Option(help="The TP's schema file (default: built-in).")] = None,
    token: Annotated[str | None, typer.Option(help="Token to subscribe to the TP with.")] = None,
    auth_file: _AuthFile = None,
    query_timeout: _QueryTimeout = 30.0,
    max_rows: _MaxRows = 1_000_000,
    max_bytes: _MaxBytes = 256 << 20,
    workers: _Workers = 10,
    verbose: bool = False,
) -> None:
    """Run a real-time database: replay today's log, then live; SQL over today and history."""
    from rdb import server
    from tickerplant.exceptions import TickError

    _logging(verbose)
    try:
        config = server.Config(tp=tp, hdb=hdb, host=bind, port=port, log_dir=log_dir, schema=schema, token=token,
                               tokens=_tokens(auth_file), query_timeout=query_timeout, max_rows=max_rows,
                               max_bytes=max_bytes, workers=workers)
        server.run(config, lambda r: _listening(r.address or (bind, port), tp=tp, hdb=str(hdb)))
    except (TickError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None


@hdb_app.callback()
def hdb_serve(
    ctx: typer.Context,
    dir: Annotated[Path | None, typer.Option("--dir", help="HDB directory.")] = None,
    port: Annotated[int, typer.Option(help="Query port (0 = any free port).")] = 5012,
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    schema: Annotated[Path | None, typer.Option(help="Schema file (default: built-in).")] = None,
    auth_file: _AuthFile = None,
    query_timeout: _QueryTimeout = 30.0,
    max_rows: _MaxRows = 1_000_000,
    max_bytes: _MaxBytes = 256 << 20,
    workers: _Workers = 10,
    verbose: bool = False,
) -> None:
    """Serve the HDB to SQL queries (history only; an RDB serves today and history)."""
    if ctx.invoked_subcommand is not None:
        return
    if dir is None:
        raise _fail("tick hdb needs --dir DIR (the HDB directory), or a subcommand: tick hdb load --help")
    from hdb import service
    from tickerplant.exceptions import TickError

    _logging(verbose)
    try:
        service.run(dir, host=bind, port=port, schema=schema, timeout=query_timeout, max_rows=max_rows,
                    max_bytes=max_bytes, workers=workers, tokens=_tokens(auth_file),
                    ready=lambda a: _listening(a, hdb=str(dir)))
    except (TickError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None


@hdb_app.command("load")
def hdb_load(
    source: Annotated[Path, typer.Argument(help="A .parquet or .csv file of the table's columns.")],
    dir: Annotated[Path, typer.Option("--dir", help="HDB directory.")],
    table: Annotated[str, typer.Option(help="Table to load into (declared in the schema).")],
    date: Annotated[str, typer.Option(help="Partition date YYYY-MM-DD.")],
    schema: Annotated[Path | None, typer.Option(help="Schema file (default: built-in).")] = None,
    replace: Annotated[bool, typer.Option(help="Replace the day's partition if it exists.")] = False,
) -> None:
    """Backfill one day of a table from Parquet or CSV, validated against the schema."""
    import datetime as dt

    from hdb import load
    from tickerplant.exceptions import TickError
    from tickerplant.schema import Registry

    _logging(False)
    import pyarrow as pa

    # As in the RDB: the default allocator (mimalloc) made the write ~30% slower here (bench_eod).
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        day = dt.date.fromisoformat(date)
        result = load.load(dir, table, day, source, Registry.load(schema), replace=replace)
    except (TickError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    if result.rows == 0:
        print(f"{source} has no rows: nothing written")
    else:
        print(f"loaded {result.rows:,} rows into {result.path} in {result.seconds:.2f}s")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT (or WITH, EXPLAIN, DESCRIBE, SHOW) statement.")],
    connect: Annotated[str | None, typer.Option(help="RDB or HDB query service HOST:PORT.")] = None,
    hdb: Annotated[Path | None, typer.Option(help="Query an HDB directory directly (no service).")] = None,
    format: Annotated[str, typer.Option(help="table | csv | json | parquet")] = "table",
    out: Annotated[Path | None, typer.Option(help="Write the result to this file (parquet needs it).")] = None,
    token: Annotated[str | None, typer.Option(help="Auth token.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds the query may run.")] = None,
    max_rows: Annotated[int | None, typer.Option(help="Most rows to return.")] = None,
    schema: Annotated[Path | None, typer.Option(help="Schema file, with --hdb (default: built-in).")] = None,
) -> None:
    """Run SQL against an RDB/HDB service (--connect) or an HDB directory (--hdb)."""
    from tickerplant.exceptions import TickError

    if (connect is None) == (hdb is None):
        raise _fail("give exactly one of --connect HOST:PORT (an RDB or HDB service) or --hdb DIR")
    if format not in ("table", "csv", "json", "parquet"):
        raise _fail(f"--format {format!r} is not one of table, csv, json, parquet")
    if format == "parquet" and out is None:
        raise _fail("--format parquet needs --out FILE")
    try:
        if connect is not None:
            from tickerplant.query import connect as connect_to

            with connect_to(connect, token=token) as db:
                result = db.sql(sql, timeout=timeout, max_rows=max_rows).arrow()
        else:
            from hdb.engine import QueryEngine
            from tickerplant.schema import Registry

            with QueryEngine(hdb, Registry.load(schema)) as engine:
                result = engine.execute(sql, timeout=timeout, max_rows=max_rows)
        _write_result(result, format, out)
    except (TickError, OSError) as exc:
        raise _fail(str(exc)) from None


def _write_result(table: Any, format: str, out: Path | None) -> None:
    """Print or save a query result (a pyarrow Table)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if format == "parquet":
        pq.write_table(table, out, compression="zstd")
        print(f"wrote {table.num_rows:,} rows to {out}", file=sys.stderr)
        return
    if format == "csv":
        if out is not None:
            pcsv.write_csv(table, out)
        else:
            pcsv.write_csv(table, sys.stdout.buffer)
        return
    if format == "json":
        import pyarrow as pa

        # Dates as "YYYY-MM-DD" (pandas would make them midnight timestamps); timestamps keep their ns.
        dates = [pa.types.is_date(t) for t in table.schema.types]
        table = table.from_arrays([c.cast(pa.string()) if d else c for c, d in zip(table.columns, dates, strict=True)],
                                  names=table.column_names)
        text = table.to_pandas().to_json(orient="records", lines=True, date_format="iso", date_unit="ns").rstrip("\n")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_columns", 50):
            text = table.to_pandas().to_string(index=False) + f"\n({table.num_rows:,} rows)"
    if out is not None:
        out.write_text(text + "\n")
    else:
        print(text)


# -- real-time engines and strategies ------------------------------------------------------

_Tp = Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")]
_Token = Annotated[str | None, typer.Option(help="Auth token (subscribe and publish).")]
_Bound = Annotated[str, typer.Option(help="Out-of-orderness bound: watermark = max event time - bound.")]
_Idle = Annotated[str, typer.Option(help="A sym with no row for this long (TP time) stops holding the watermark.")]
_Lateness = Annotated[str, typer.Option(help="Allowed lateness: late rows re-fire their window until then.")]


def _duration(text: str, option: str) -> int:
    from rte.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _fail(f"{option}: {exc}") from None


def _run_engine(make: Callable[[], Any], tp: str, token: str | None, verbose: bool) -> None:
    """Build the engine (a ValueError is a bad option) and run it until SIGINT/SIGTERM; print its stats."""
    from dataclasses import asdict

    from rte.engine import run_forever
    from tickerplant.exceptions import TickError

    _logging(verbose)
    try:
        engine = make()
    except (ValueError, TypeError, TickError) as exc:
        raise _fail(str(exc)) from None
    try:
        stats = run_forever(engine, tp, token=token)
    except OSError as exc:
        raise _fail(f"cannot reach the TP at {tp} ({exc.strerror or exc}): start it (tick tp) or give --tp HOST:PORT"
                    ) from None
    except TickError as exc:
        raise _fail(str(exc)) from None
    print(json.dumps({"engine": engine.name, **asdict(stats)}))


@rte_app.command("bars")
def rte_bars(
    tp: _Tp = "127.0.0.1:5010",
    every: Annotated[str, typer.Option(help="Bar length; the table is bar_<every> (bar_1s, bar_1m).")] = "1m",
    lateness: _Lateness = "0s",
    bound: _Bound = "1s",
    idle: _Idle = "10s",
    token: _Token = None,
    verbose: bool = False,
) -> None:
    """OHLCV + VWAP bars per sym over event-time windows: trade -> bar_<every> (+ late_data)."""
    from rte.bars import BarEngine

    args = (_duration(every, "--every"), _duration(lateness, "--lateness"), _duration(bound, "--bound"),
            _duration(idle, "--idle"))
    _run_engine(lambda: BarEngine(*args), tp, token, verbose)


@rte_app.command("vwap")
def rte_vwap(
    tp: _Tp = "127.0.0.1:5010",
    window: Annotated[str, typer.Option(help="Window length.")] = "5m",
    slide: Annotated[str, typer.Option(help="A window starts every SLIDE (WINDOW must be a multiple).")] = "1m",
    lateness: _Lateness = "0s",
    bound: _Bound = "1s",
    idle: _Idle = "10s",
    token: _Token = None,
    verbose: bool = False,
) -> None:
    """VWAP per sym over sliding (hopping) event-time windows: trade -> vwap (+ late_data)."""
    from rte.bars import VwapEngine

    args = (_duration(window, "--window"), _duration(slide, "--slide"), _duration(lateness, "--lateness"),
            _duration(bound, "--bound"), _duration(idle, "--idle"))
    _run_engine(lambda: VwapEngine(*args), tp, token, verbose)


@rte_app.command("indicators")
def rte_indicators(
    tp: _Tp = "127.0.0.1:5010",
    rsi: Annotated[int, typer.Option(help="RSI period (Wilder, TA-Lib seeding).")] = 14,
    ema: Annotated[int, typer.Option(help="EMA period (TA-Lib seeding).")] = 20,
    vol: Annotated[str, typer.Option(help="Realized-volatility window (trailing, event time).")] = "5m",
    vwap: Annotated[str, typer.Option(help="Sliding VWAP window (trailing, event time).")] = "5m",
    token: _Token = None,
    verbose: bool = False,
) -> None:
    """Per-trade RSI, EMA, realized volatility and sliding VWAP per sym: trade -> indicator."""
    from rte.indicators import IndicatorEngine

    vol_ns, vwap_ns = _duration(vol, "--vol"), _duration(vwap, "--vwap")
    _run_engine(lambda: IndicatorEngine(rsi, ema, vol_ns, vwap_ns), tp, token, verbose)


@rte_app.command("spread")
def rte_spread(
    tp: _Tp = "127.0.0.1:5010",
    window: Annotated[str, typer.Option(help="Trailing window of the z-score (event time).")] = "5m",
    token: _Token = None,
    verbose: bool = False,
) -> None:
    """Each venue's mid against every other venue's, in bps, and its z-score: quote -> spread_z."""
    from rte.spread import SpreadEngine

    window_ns = _duration(window, "--window")
    _run_engine(lambda: SpreadEngine(window_ns), tp, token, verbose)


@rte_app.command("qc")
def rte_qc(
    tp: _Tp = "127.0.0.1:5010",
    stale: Annotated[str, typer.Option(help=(
        "Stale thresholds: one for every table (5s) or per table (quote=2s,trade=30s)."))] = "quote=2s,l2=2s,trade=30s",
    xsource: Annotated[str, typer.Option(help="Cross-venue: a mid this far from the others' median (bps).")] = "50bps",
    heartbeat: Annotated[str, typer.Option(help="A venue's heartbeat missing for this long is an alert.")] = "5s",
    future: Annotated[str, typer.Option(help="Event time this far ahead of the TP's clock is an alert.")] = "1s",
    jump_k: Annotated[float, typer.Option(help="A price jump beyond K x recent volatility is an alert.")] = 10.0,
    token: _Token = None,
    verbose: bool = False,
) -> None:
    """Feed quality checks -> qc_alert: gaps, heartbeats, stale, crossed/locked, cross-venue, bad ticks."""
    from rte.qc import QcConfig, QcEngine, parse_stale
    from rte.units import parse_bps

    def make() -> Any:
        config = QcConfig(stale=parse_stale(stale), xsource_bps=parse_bps(xsource),
                          heartbeat_ns=_duration(heartbeat, "--heartbeat"), future_ns=_duration(future, "--future"),
                          jump_k=jump_k)
        return QcEngine(config)

    _run_engine(make, tp, token, verbose)


@strategy_app.command("run")
def strategy_run(
    path: Annotated[Path, typer.Argument(help="A .py file with one Strategy subclass.")],
    tp: _Tp = "127.0.0.1:5010",
    name: Annotated[str | None, typer.Option(help="Strategy name in its rows (default: the class's).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        help="Override a class attribute: --param threshold_bps=20.")] = None,
    token: _Token = None,
    verbose: bool = False,
) -> None:
    """Run a strategy: it replays today's log (rebuilding its position), then trades live."""
    import ast

    from rte.strategy import load

    params: dict[str, Any] = {}
    for item in param or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise _fail(f"--param {item!r}: write NAME=VALUE, e.g. --param threshold_bps=20")
        try:
            params[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key.strip()] = value  # a bare word is a string: --param window=30s

    _run_engine(lambda: load(path)(name=name, **params), tp, token, verbose)


def main() -> None:
    app()
