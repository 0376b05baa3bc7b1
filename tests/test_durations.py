"""`parse_duration`: what `tidegate token --ttl` accepts."""

from __future__ import annotations

import pytest

from tidegate.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("1h30m", 5400), (" 1.5H ", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1x", "-1h", "1h 30m", "0s", "1h30"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
