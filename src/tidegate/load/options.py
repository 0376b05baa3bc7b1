"""The load tool's option values, parsed: addresses, durations, shares. Pure; each parser
raises ``ValueError`` with a message fit for one line after ``tidegate load:``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Final, TypeVar

from tidegate import addresses
from tidegate.durations import parse_duration

__all__ = [
    "FAULTS",
    "PUSH_KINDS",
    "argparse_type",
    "parse_address",
    "parse_count",
    "parse_rate",
    "parse_seconds",
    "parse_shares",
]

PUSH_KINDS: Final = ("user", "room", "all")
# reset: RST (SO_LINGER 0, close). halfclose: shutdown(SHUT_WR), then read to the end.
# vanish: keep the socket, send and read nothing (the server's idle timeout must reap it).
# stall: keep pinging, never read (a slow consumer). churn: close and reconnect, repeatedly.
FAULTS: Final = ("reset", "halfclose", "vanish", "stall", "churn")

V = TypeVar("V")


def argparse_type(parse: Callable[[str], V]) -> Callable[[str], V]:
    """``parse`` as an argparse type: its ValueError message is shown as is."""

    def convert(text: str) -> V:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def parse_address(text: str) -> tuple[str, int]:
    """An address to connect to: ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (loopback)."""
    address = addresses.parse_address(text)
    if address[1] == 0:
        raise ValueError(f"port 0 in {text!r}: give the port the server listens on")
    return address


def parse_seconds(text: str) -> float:
    """A duration that may be zero (``--drain 0``): see ``tidegate.durations``."""
    return parse_duration(text, zero=True)


def parse_rate(text: str) -> float:
    """Per second, ``>= 0``: ``100``, ``2.5``, ``1e3``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{text!r} is not a rate >= 0 (per second)")
    return value


def parse_count(text: str) -> int:
    """A whole number ``>= 0``."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{text!r} is not a whole number >= 0")
    return int(text)


def parse_shares(
    text: str, names: Iterable[str], *, what: str, total: float | None = None
) -> dict[str, float]:
    """``a=60,b=30``: a number per known name. With ``total``, the numbers may not add up to
    more (percentages of clients); without, they are weights and must not all be zero."""
    known = tuple(names)
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(
                f"{what}: {item!r} is not NAME=NUMBER with NAME one of {', '.join(known)}"
            )
        if name in shares:
            raise ValueError(f"{what}: {name} given twice")
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"{what}: {number.strip()!r} is not a number") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{what}: {name}={number.strip()} must be a number >= 0")
        shares[name] = value
    if total is not None and sum(shares.values()) > total:
        raise ValueError(f"{what}: the shares add up to more than {total:g}")
    if total is None and not any(shares.values()):
        raise ValueError(f"{what}: give at least one non-zero weight")
    return shares
