"""`parse_duration`: what every duration option accepts (the gateway's timeouts, the load
tool, the demo, `tidegate token --ttl`)."""

from __future__ import annotations

import pytest

from tidegate.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("2.5", 2.5),
        (".5", 0.5),
        ("500ms", 0.5),
        ("45s", 45),
        ("1.5s", 1.5),
        ("30m", 1800),
        ("1h", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1m30s", 90),
        ("1s500ms", 1.5),
        (" 1.5H ", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected seconds"),
        ("h", "expected seconds"),
        ("1x", "expected seconds"),
        ("-1h", "expected seconds"),
        ("-1", "expected seconds"),
        ("1h 30m", "expected seconds"),
        ("1h30", "expected seconds"),
        ("nan", "expected seconds"),
        ("inf", "expected seconds"),
        ("1e3", "expected seconds"),
        ("9" * 400, "too long"),
        ("9" * 400 + "d", "too long"),
        ("0s", "longer than zero"),
        ("0", "longer than zero"),
    ],
)
def test_parse_duration_errors(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"invalid duration .*{why}"):
        parse_duration(text)


def test_zero_where_it_is_allowed() -> None:
    assert parse_duration("0", zero=True) == 0 and parse_duration("0ms", zero=True) == 0
