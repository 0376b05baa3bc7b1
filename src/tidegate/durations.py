"""Durations as people write them on a command line: ``45s``, ``30m``, ``1h``, ``1h30m``."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["parse_duration"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``45s``, ``30m``, ``1h``, ``2d`` or a sum such as ``1h30m``.

    Raises ``ValueError`` with a message fit for a command-line error.
    """
    spec = text.strip().lower()
    pos = 0
    total = 0.0
    while pos < len(spec):
        match = _PART.match(spec, pos)
        if match is None:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not spec or pos != len(spec):
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit s, m, h or d "
            "(e.g. 45s, 30m, 1h, 2d, 1h30m)"
        )
    if total <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return total
