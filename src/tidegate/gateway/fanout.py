"""Fan-out: encode a push once, queue the same bytes on every target in one pass."""

from __future__ import annotations

from collections.abc import Collection

from tidegate.gateway.registry import Sink

__all__ = ["fan_out"]


def fan_out(sinks: Collection[Sink], frame: bytes) -> int:
    """Queue `frame` on every sink; returns how many accepted it.

    A sink may close itself while we iterate (overflow policy "disconnect"), which removes it
    from the registry's live sets, so iterate over a copy. No await, no task: a push to 10k
    connections is one synchronous pass of writes and list appends.
    """
    if not sinks:
        return 0
    return [sink.send_frame(frame) for sink in tuple(sinks)].count(True)
