import pytest

from rte.units import parse_bps, parse_duration


@pytest.mark.parametrize(("text", "ns"), [
    ("1m", 60_000_000_000), ("5m", 300_000_000_000), ("2s", 2_000_000_000), ("500ms", 500_000_000),
    ("1m30s", 90_000_000_000), ("1.5s", 1_500_000_000), ("1h", 3_600_000_000_000), ("250us", 250_000),
])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "m", "5 minutes", "5x", "-1s", "1s2"])
def test_parse_duration_refuses_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 500ms, 2s, 5m"):
        parse_duration(text)


def test_parse_bps() -> None:
    assert parse_bps("50bps") == 50.0
    assert parse_bps("12.5") == 12.5
    assert parse_bps("0.5%") == 50.0
    with pytest.raises(ValueError, match=r"e\.g\. 50bps"):
        parse_bps("fifty")
