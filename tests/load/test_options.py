"""Option values of the load tool: each bad one is a ValueError with a one-line message."""

from __future__ import annotations

import pytest

from tidegate.load.options import FAULTS, PUSH_KINDS, parse_address, parse_seconds, parse_shares


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:7400", ("127.0.0.1", 7400)), ("[::1]:80", ("::1", 80)), ("h:1", ("h", 1))],
)
def test_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["7400", ":7400", "h:", "h:0", "h:65536", "h:x", ""])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("2.5s", 2.5), ("500ms", 0.5), ("1m", 60.0), (".5", 0.5), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["-1", "1h", "s", "nan", "inf", "1e400"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_seconds(text)


def test_mix_weights() -> None:
    assert parse_shares("user=60, room=30,all=10", PUSH_KINDS, what="--mix") == {
        "user": 60.0,
        "room": 30.0,
        "all": 10.0,
    }
    assert parse_shares("all=1", PUSH_KINDS, what="--mix") == {"all": 1.0}


def test_fault_percentages() -> None:
    shares = parse_shares(
        "reset=5,halfclose=5,vanish=5,stall=2,churn=10", FAULTS, what="f", total=100
    )
    assert sum(shares.values()) == 27
    assert parse_shares("", FAULTS, what="f", total=100) == {}


@pytest.mark.parametrize(
    ("text", "total", "message"),
    [
        ("user", None, "is not NAME=NUMBER"),
        ("bogus=1", None, "is not NAME=NUMBER with NAME one of user, room, all"),
        ("user=x", None, "'x' is not a number"),
        ("user=-1", None, "must be a number >= 0"),
        ("user=nan", None, "must be a number >= 0"),
        ("user=1,user=2", None, "user given twice"),
        ("user=0,all=0", None, "at least one non-zero weight"),
        ("user=60,all=50", 100, "add up to more than 100"),
    ],
)
def test_bad_shares(text: str, total: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_shares(text, PUSH_KINDS, what="--mix", total=total)
    assert str(caught.value).startswith("--mix: ") and "\n" not in str(caught.value)
