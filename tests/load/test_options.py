"""Option values of the load tool: each bad one is a ValueError with a one-line message."""

from __future__ import annotations

import pytest

from tidegate.load.options import (
    FAULTS,
    PUSH_KINDS,
    parse_address,
    parse_rate,
    parse_seconds,
    parse_shares,
)


def test_addresses_to_connect_to() -> None:
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address(":7400") == ("127.0.0.1", 7400)
    with pytest.raises(ValueError, match="port 0 in 'h:0': give the port the server listens on"):
        parse_address("h:0")
    with pytest.raises(ValueError, match="expected HOST:PORT, got 'h'"):
        parse_address("h")


def test_durations_may_be_zero_here() -> None:
    assert parse_seconds("0") == 0 and parse_seconds("1h30m") == 5400
    with pytest.raises(ValueError, match="invalid duration '-1'"):
        parse_seconds("-1")


@pytest.mark.parametrize(("text", "rate"), [("100", 100), ("2.5", 2.5), ("1e3", 1000), ("0", 0)])
def test_rates(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "1e400", "x", ""])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate >= 0"):
        parse_rate(text)


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
