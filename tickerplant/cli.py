"""The ``tick`` command: a thin shell; each command parses options and calls one function.

Heavy modules are imported inside the commands so ``tick --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="tickerplant: a kdb+/q-style market-data tick system.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
log_app = typer.Typer(help="Check, repair and print tickerplant log files.", no_args_is_help=True)
feed_app = typer.Typer(help="Feed handlers that publish to a tickerplant.", no_args_is_help=True)
app.add_typer(log_app, name="log")
app.add_typer(feed_app, name="feed")


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


@feed_app.command("sim")
def feed_sim(
    tp: Annotated[str, typer.Option(help="Tickerplant HOST:PORT.")] = "127.0.0.1:5010",
    symbols: Annotated[int, typer.Option(help="Number of symbols.")] = 4,
    venues: Annotated[int, typer.Option(help="Number of venues.")] = 3,
    rate: Annotated[float, typer.Option(help="Events (trades + quotes) per second.")] = 20_000,
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
    seed: int = 0,
    token: Annotated[str | None, typer.Option(help="Auth token.")] = None,
) -> None:
    """Publish simulated trades and quotes (geometric random walks on several venues)."""
    from feedhandlers.sim import Simulator
    from tickerplant import Publisher
    from tickerplant.exceptions import TickError

    _logging(False)
    try:
        with Publisher(tp, token=token, name="feed sim") as pub:
            counts = Simulator(symbols, venues, seed=seed).run(pub.publish, rate, duration)
            pub.flush()
    except KeyboardInterrupt:
        return
    except (TickError, OSError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps(counts))


def main() -> None:
    app()
