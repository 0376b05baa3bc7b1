"""The connection set's sweeper: every connection checked once per sweep, a slice per loop
turn, against a recorded timer chain instead of a loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from tidegate.gateway.client import Client
from tidegate.gateway.connections import SWEEP_SLICE, ConnectionSet
from tidegate.gateway.stats import Counters


@dataclass
class Timers:
    """Stands in for `loop.call_later`: the test runs the next callback when it says so."""

    due: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        entry = (delay, callback)
        self.due.append(entry)
        return cast(asyncio.TimerHandle, Cancellable(lambda: self.due.remove(entry)))

    def run_next(self) -> float:
        """Run the one pending callback; its delay."""
        ((delay, callback),) = self.due
        self.due.clear()
        callback()
        return delay


@dataclass
class Cancellable:
    cancel: Callable[[], None]


@dataclass(eq=False)
class SweptClient:
    sweeps: list[float] = field(default_factory=list)

    def sweep(self, now: float) -> None:
        self.sweeps.append(now)


def connection_set(clients: int) -> tuple[ConnectionSet, list[SweptClient], Timers]:
    connections = ConnectionSet(
        max_conns=clients, shortest_timeout=2.0, counters=Counters(), clock=lambda: 7.0
    )
    swept = [SweptClient() for _ in range(clients)]
    connections.live.update(cast(list[Client], swept[1:]))
    connections.closing.add(cast(Client, swept[0]))
    timers = Timers()
    connections.start_sweeping(timers.call_later)
    return connections, swept, timers


def test_a_sweep_checks_every_connection_once_a_slice_per_loop_turn() -> None:
    connections, swept, timers = connection_set(2 * SWEEP_SLICE + 3)
    assert timers.run_next() == connections.sweep_interval  # the first sweep, one slice
    assert sum(len(client.sweeps) for client in swept) == SWEEP_SLICE
    assert timers.run_next() == 0  # the next slice, at the next loop turn
    assert sum(len(client.sweeps) for client in swept) == 2 * SWEEP_SLICE
    assert timers.run_next() == 0
    assert all(client.sweeps == [7.0] for client in swept)  # live and closing, once each
    assert timers.run_next() == connections.sweep_interval  # the last slice set the next sweep
    assert sum(len(client.sweeps) for client in swept) == len(swept) + SWEEP_SLICE


def test_a_connection_gone_during_a_sweep_is_not_checked() -> None:
    connections, swept, timers = connection_set(SWEEP_SLICE + 1)
    timers.run_next()
    (unswept,) = [client for client in swept if not client.sweeps]
    connections.forget(cast(Client, unswept))
    timers.run_next()
    assert unswept.sweeps == []


def test_stopping_mid_sweep_cancels_the_next_slice() -> None:
    connections, swept, timers = connection_set(SWEEP_SLICE + 1)
    timers.run_next()
    connections.stop_sweeping()
    assert timers.due == []
    assert sum(len(client.sweeps) for client in swept) == SWEEP_SLICE
