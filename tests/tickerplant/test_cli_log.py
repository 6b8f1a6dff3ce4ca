"""``tick log check|repair|cat`` as a user runs them (real subprocesses of ``.venv/bin/tick``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ._procs import ROOT, TICK
from .test_log import write_log


def tick(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TICK), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_check_json_of_a_good_log(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1], [7, 100], [3]])
    r = tick("log", "check", w.path, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["ok"] is True
    assert info["date"] == "2026-03-02"
    assert (info["chunks"], info["messages"], info["rows"]) == (4, 4, 111)
    assert (info["first_seq"], info["last_seq"]) == (1, 4)
    assert info["rows_by_table"] == {"trade": 111}
    assert info["file_bytes"] == info["valid_bytes"] == w.path.stat().st_size
    assert "error" not in info


def test_check_repair_check_of_a_torn_log(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1], [7, 100], [3]])
    start, end = w.chunks[-1]
    data = w.path.read_bytes()
    w.path.write_bytes(data[: end - 16] + b"\xff" * 5)
    cut_bytes = end - 16 + 5 - start

    r = tick("log", "check", w.path, "--json")
    assert r.returncode == 1
    info = json.loads(r.stdout)
    assert info["ok"] is False and info["torn_tail"] is True and info["next_valid_chunk"] is None
    assert info["bad_offset"] == info["valid_bytes"] == start
    assert (info["messages"], info["last_seq"], info["rows"]) == (3, 3, 108)
    assert info["error"]

    r = tick("log", "check", w.path)  # human-readable
    assert r.returncode == 1
    assert f"at byte {start}" in r.stdout and "torn tail" in r.stdout and "tick log repair" in r.stdout

    r = tick("log", "repair", w.path)
    assert r.returncode == 0, r.stderr
    sidecar = w.path.with_name(f"{w.path.name}.cut-{start}")
    assert f"Truncated to {start} bytes" in r.stdout
    assert f"{cut_bytes} cut bytes" in r.stdout and str(sidecar) in r.stdout
    assert "3 valid messages" in r.stdout and "WARNING" not in r.stdout
    assert sidecar.read_bytes() == data[start : end - 16] + b"\xff" * 5
    assert w.path.read_bytes() == data[:start]

    r = tick("log", "check", w.path, "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["ok"] and (info["messages"], info["last_seq"], info["valid_bytes"]) == (3, 3, start)

    r = tick("log", "repair", w.path)
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_repair_of_a_corrupt_middle_warns_that_valid_chunks_were_cut(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1], [7, 100], [3]])
    data = bytearray(w.path.read_bytes())
    start, end = w.chunks[2]
    data[start + 60] ^= 0x10
    w.path.write_bytes(bytes(data))
    r = tick("log", "check", w.path)
    assert r.returncode == 1 and f"valid chunks resume at byte {end}" in r.stdout
    r = tick("log", "repair", w.path)
    assert r.returncode == 0
    assert "WARNING" in r.stdout and f"byte {end}" in r.stdout


def test_check_of_a_missing_or_foreign_file_fails_cleanly(tmp_path: Path) -> None:
    r = tick("log", "check", tmp_path / "nope.log")
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "x.log").write_bytes(b"not a log at all, just some bytes.......")
    r = tick("log", "check", tmp_path / "x.log")
    assert r.returncode == 2 and "not a tickerplant log" in r.stderr


def test_cat_prints_rows_with_a_header(tmp_path: Path) -> None:
    w = write_log(tmp_path / "a.log", [[1], [7, 100], [3]])
    r = tick("log", "cat", w.path, "--table", "trade", "--limit", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "-- trade"
    header = lines[1].split()
    assert header[0] == "#seq" and {"time", "sym", "price", "size", "trade_id", "tp_time"} <= set(header)
    rows = lines[2:]
    assert len(rows) == 5
    # #seq then the row id (trade_id) of each row: message 1 has row 0, message 2 rows 1..
    assert [row.split()[0] for row in rows] == ["1", "2", "2", "2", "2"]
    assert all(f" {i} " in row for i, row in enumerate(rows))
    r = tick("log", "cat", w.path, "--table", "quote")
    assert r.returncode == 0 and r.stdout == ""
