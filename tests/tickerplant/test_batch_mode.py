"""Batch mode (``--batch-ms``): updates keep their own sequence numbers, commits are grouped."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa

from tests.tickerplant._procs import TPProcess
from tickerplant import Publisher, Subscriber, admin, log


def _rows(start: int, n: int) -> dict[str, list[object]]:
    return {
        "time": list(range(start, start + n)),
        "sym": ["BTCUSD" if i % 2 else "ETHUSD" for i in range(start, start + n)],
        "price": [100.0 + i for i in range(start, start + n)],
        "size": [1.0] * n,
        "seq": list(range(start, start + n)),
    }


def test_batch_mode_keeps_every_update_and_its_own_seq(tmp_path: Path) -> None:
    with TPProcess(tmp_path, args=["--batch-ms", "50"]) as tp:
        received: list[pa.RecordBatch] = []
        seqs: list[int] = []
        sub = Subscriber(tp.address, tables=["trade"], from_seq=1, reconnect=False)

        def consume() -> None:
            for msg in sub:
                received.append(msg.data)
                seqs.append(msg.seq)
                if sum(b.num_rows for b in received) >= 2000:
                    return

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        # A flush after every publish: 200 separate updates of 10 rows (a flush commits at once).
        with Publisher(tp.address, max_delay=0) as pub:
            for i in range(200):
                pub.publish("trade", _rows(i * 10, 10))
                pub.flush(durable=False)
        reader.join(30)
        sub.close()
        stats = admin.stats(tp.address)
        path = tp.log_path

    assert not reader.is_alive()
    ids = pa.Table.from_batches(received).column("seq").to_pylist()
    assert ids == list(range(2000))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert stats["upd_in"] == 200
    status = log.check(path)
    assert status.ok and status.rows == 2000 and status.messages == 200


def test_batch_mode_coalesces_concurrent_publishers(tmp_path: Path) -> None:
    with TPProcess(tmp_path, args=["--batch-ms", "100"]) as tp:
        pubs = [Publisher(tp.address, max_delay=0, name=f"p{i}") for i in range(3)]
        try:
            for round_ in range(20):
                for i, pub in enumerate(pubs):
                    pub.publish("trade", _rows((round_ * 3 + i) * 10, 10))
            for pub in pubs:
                pub.flush()
        finally:
            for pub in pubs:
                pub.close()
        stats = admin.stats(tp.address)
        path = tp.log_path
    status = log.check(path)
    assert status.ok and status.rows == 600 and stats["upd_in"] == status.messages
    # 60 updates arrived within a few 100 ms windows: they share commits (log chunks).
    assert stats["commits"] < status.messages / 2, (stats["commits"], status.messages)
