"""Per-loop-turn write batching: the one object that knows about loop turns.

The first frame a connection gets in a loop turn is written through at once; the frames that
follow in the same turn are queued on the connection, which asks `flush_at_end_of_turn` to be
flushed once, at the end of the turn, in one more write (tcp.py). `TurnBatcher` holds what
that takes: the turn counter connections compare against, the flush scheduled with one
`call_soon` per turn, the connections to flush, and the accepted pushes whose latency that
flush ends (`tidegate_push_write_latency_seconds`).

Nothing here awaits; the only timer is the `call_soon` handle, cancelled by `close()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["CallSoon", "Cancellable", "Flushable", "TurnBatcher"]


class Flushable(Protocol):
    def flush(self) -> None:
        """Hand everything queued to the transport in one write."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# loop.call_soon, or a test's stand-in that runs the end of the turn when told to.
CallSoon = Callable[[Callable[[], None]], Cancellable]


class TurnBatcher:
    """Flushes the connections that queued frames this turn, once, when the turn ends.

    `turn` counts flushes: a connection that wrote through in turn `t` queues its next frame
    until `turn` moves past `t`. `flush_pending` is a plain attribute because the fan-out
    path reads it once per delivery.
    """

    __slots__ = (
        "_call_soon",
        "_dirty",
        "_handle",
        "_marks",
        "_observe_latency",
        "flush_pending",
        "turn",
    )

    def __init__(self, *, call_soon: CallSoon, observe_latency: Callable[[float], None]) -> None:
        self._call_soon = call_soon
        self._observe_latency = observe_latency
        self._dirty: list[Flushable] = []
        # perf_counter() of each push that reached someone this turn; the flush at the end
        # of the turn has written all of their frames (or queued them behind flow control).
        self._marks: list[float] = []
        self._handle: Cancellable | None = None
        self.turn = 0
        self.flush_pending = False

    def flush_at_end_of_turn(self, client: Flushable) -> None:
        """Flush `client` when this loop turn ends (each client asks at most once a turn)."""
        self._dirty.append(client)
        if not self.flush_pending:
            self._schedule()

    def end_turn(self) -> None:
        """Make this turn end with a flush, so that `turn` moves on (after a write-through)."""
        if not self.flush_pending:
            self._schedule()

    def pushed(self, mark: float) -> None:
        """A push reached someone; its latency, from `mark` (perf_counter), ends with this
        turn's flush, even when every target is paused and nothing writes."""
        self._marks.append(mark)
        if not self.flush_pending:
            self._schedule()

    def _schedule(self) -> None:
        self.flush_pending = True
        self._handle = self._call_soon(self._flush)

    def _flush(self) -> None:
        self._handle = None
        self.flush_pending = False
        self.turn += 1
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.flush()
        if self._marks:
            marks, self._marks = self._marks, []
            now = time.perf_counter()
            observe = self._observe_latency
            for mark in marks:
                observe(now - mark)

    def close(self) -> None:
        """Cancel a flush still scheduled (the gateway is shut down, its clients are gone)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
