"""The Venue base: its actions queue and the resubscription backoff."""

from __future__ import annotations

from feedhandlers.venue import ResyncBackoff

S = 1_000_000_000


def test_resync_backoff_doubles_while_a_book_keeps_failing_and_forgets_after_a_quiet_spell() -> None:
    backoff = ResyncBackoff(first=1.0, maximum=8.0, quiet=60.0)
    times = [0, 1, 3, 5, 9, 20, 40]  # seconds: each loss within 60 s of the one before
    assert [backoff.delay("BTC/USD", t * S) for t in times] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.delay("ETH/USD", 41 * S) == 0.0  # books back off independently
    assert backoff.delay("BTC/USD", 101 * S) == 0.0  # 61 s since its last loss: a fresh start
    assert backoff.delay("BTC/USD", 102 * S) == 1.0
