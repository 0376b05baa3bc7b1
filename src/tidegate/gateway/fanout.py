"""Local delivery: a push to the connections of this node, encoded once.

The broker (`broker.py`) decides which nodes a push goes to; on each node it ends here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from tidegate.gateway.batching import TurnBatcher
from tidegate.gateway.registry import Registry, Sink
from tidegate.gateway.stats import Counters
from tidegate.protocol import Target, encode_msg

__all__ = ["Deliver", "DeliverFrame", "LocalDelivery"]

# (target, id, data_json) -> connections reached on this node
Deliver = Callable[[Target, str, bytes], int]
# (target, encoded msg frame) -> connections reached on this node
DeliverFrame = Callable[[Target, bytes], int]


class LocalDelivery:
    """Looks the target up in the registry, encodes the `msg` frame once, and hands it on:
    to the turn's shared frames for a room or everyone (`TurnBatcher.share`: one append,
    whatever the number of members), to each connection for a user (`send_frame`). Counts the
    deliveries and marks the push for the latency histogram. No await, no task."""

    __slots__ = ("_counters", "_targets", "_turns")

    def __init__(self, *, registry: Registry, counters: Counters, turns: TurnBatcher) -> None:
        self._targets = registry.targets
        self._counters = counters
        self._turns = turns

    def deliver(self, target: Target, id: str, data_json: bytes) -> int:
        """Queue the push on this node's connections for `target`; returns how many took it."""
        sinks = self._targets(target)
        if not sinks:
            return 0
        mark = time.perf_counter()
        frame = encode_msg(to=target.wire, id=id, data_json=data_json)
        return self._send(target, sinks, frame, mark)

    def deliver_frame(self, target: Target, frame: bytes) -> int:
        """Queue a `msg` frame already encoded (by this node's broker, or another node's) on
        this node's connections for `target`; returns how many took it."""
        sinks = self._targets(target)
        if not sinks:
            return 0
        return self._send(target, sinks, frame, time.perf_counter())

    def _send(self, target: Target, sinks: Collection[Sink], frame: bytes, mark: float) -> int:
        if target.kind == "user":
            # A connection may close itself while we iterate (overflow policy "disconnect"),
            # which removes it from the registry's live sets: iterate over a copy.
            delivered = [sink.send_frame(frame) for sink in tuple(sinks)].count(True)
        else:
            delivered = self._turns.share(sinks, frame)
        if delivered:
            self._counters.deliveries += delivered
            self._turns.pushed(mark)
        return delivered
