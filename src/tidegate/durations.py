"""Durations as people write them on a command line: seconds (``10``, ``2.5``), or numbers
with units summed (``500ms``, ``45s``, ``30m``, ``1h``, ``2d``, ``1h30m``). One parser for
every command: the gateway's timeouts, the load tool, the demo, token lifetimes."""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = ["parse_duration"]

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER: Final = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN: Final = re.compile(_NUMBER)
_PART: Final = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")


def parse_duration(text: str, *, zero: bool = False) -> float:
    """Seconds in ``text``: a plain number of seconds, or numbers each with a unit ``ms``,
    ``s``, ``m``, ``h`` or ``d`` added up (``1h30m``). Finite, and more than zero unless
    ``zero`` allows it.

    Raises ``ValueError`` with a message fit for a command-line error.
    """
    spec = text.strip().lower()
    if _PLAIN.fullmatch(spec):
        total = float(spec)
    else:
        total, pos = 0.0, 0
        while pos < len(spec) and (match := _PART.match(spec, pos)) is not None:
            total += float(match[1]) * _UNITS[match[2]]
            pos = match.end()
        if not spec or pos != len(spec):
            raise ValueError(
                f"invalid duration {text!r}: expected seconds, or numbers with a unit ms, s,"
                " m, h or d (e.g. 10, 2.5s, 500ms, 1h30m)"
            )
    if not math.isfinite(total):
        raise ValueError(f"invalid duration {text!r}: too long")
    if total == 0 and not zero:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return total
