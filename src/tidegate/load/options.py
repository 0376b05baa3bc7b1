"""The load tool's option values, parsed: addresses, durations, shares. Pure; each parser
raises ``ValueError`` with a message fit for one line after ``tidegate load:``."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["FAULTS", "PUSH_KINDS", "parse_address", "parse_seconds", "parse_shares"]

PUSH_KINDS: Final = ("user", "room", "all")
# reset: RST (SO_LINGER 0, close). halfclose: shutdown(SHUT_WR), then read to the end.
# vanish: keep the socket, send and read nothing (the server's idle timeout must reap it).
# stall: keep pinging, never read (a slow consumer). churn: close and reconnect, repeatedly.
FAULTS: Final = ("reset", "halfclose", "vanish", "stall", "churn")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


_DURATION: Final = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?$")


def parse_seconds(text: str) -> float:
    """``2.5``, ``2.5s``, ``500ms`` or ``1m``: a non-negative, finite number of seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (like 10, 2.5s, 500ms or 1m)")
    value = float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is too long a duration")
    return value


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
