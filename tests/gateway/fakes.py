"""In-memory stand-ins for a gateway's surroundings: a transport, the loop turn, the clocks.

The transport records writes, hands them to a small "kernel" (`KERNEL` bytes of socket buffer)
and keeps the rest, and applies flow control like asyncio's (pause above the high-water mark
after a write, resume at the low-water mark after the peer read some); the loop turn ends when
the test says so, and time is a number the test moves. `Harness` wires the real parts of
one gateway (registry, counters, connection set, turn batcher, local delivery) around them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidegate.gateway import Config
from tidegate.gateway.batching import TurnBatcher
from tidegate.gateway.client import ClientHost, ClientSettings
from tidegate.gateway.connections import ConnectionSet
from tidegate.gateway.fanout import LocalDelivery
from tidegate.gateway.hello_authenticator import make_hello_authenticator
from tidegate.gateway.registry import Registry
from tidegate.gateway.stats import Counters
from tidegate.gateway.tcp import ClientProtocol
from tidegate.protocol import parse_target

BUFFER = 4000  # buffer_bytes: a clear connection's own queue holds up to 1000
KERNEL = 1000  # the socket buffer: what the peer has not read yet, beyond the transport


class FakeTransport(asyncio.Transport):
    """Records every write. Written bytes go to the kernel while it has room (`KERNEL`), the
    rest stays in the transport (`buffered`) until the peer reads (`drain()`). Records
    whether the protocol wants to read."""

    def __init__(self, protocol: asyncio.Protocol, *, kernel: int = KERNEL) -> None:
        super().__init__()
        self.protocol = protocol
        self.writes: list[bytes] = []
        self.kernel = kernel
        self.in_kernel = 0
        self.buffered = 0  # the transport's own buffer
        self.high = self.low = 0
        self.paused = False
        self.closed = False
        self.aborted = False
        self.eof = False  # write_eof() was called: FIN after what is buffered
        self.reading = True

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed twice"
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        assert high is not None and low is not None
        self.high, self.low = high, low

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed and not self.eof, "write after close or write_eof"
        self.writes.append(bytes(data))
        size = len(data)
        taken = 0 if self.buffered else min(size, self.kernel - self.in_kernel)
        self.in_kernel += taken
        self.buffered += size - taken
        if not self.paused and self.buffered > self.high:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self, size: int | None = None) -> None:
        """The peer read `size` bytes (all of them by default); the kernel takes what the
        transport held as room frees up."""
        sent = self.in_kernel + self.buffered
        left = 0 if size is None else sent - size
        assert left >= 0, "read more than was sent"
        self.in_kernel = min(left, self.kernel)
        self.buffered = left - self.in_kernel
        if self.paused and self.buffered <= self.low:
            self.paused = False
            self.protocol.resume_writing()

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    @property
    def ended(self) -> bool:
        """Our side is done: closed, or half-closed with FIN after the buffered bytes."""
        return self.closed or self.eof

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def sent(self) -> bytes:
        return b"".join(self.writes)


@dataclass
class LoopTurn:
    """Stands in for `loop.call_soon`: the callbacks run when the test ends the turn."""

    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def call_soon(self, callback: Callable[[], None]) -> LoopTurn.Handle:
        self.callbacks.append(callback)
        return LoopTurn.Handle(self, callback)

    def end(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()

    @dataclass
    class Handle:
        turn: LoopTurn
        callback: Callable[[], None]

        def cancel(self) -> None:
            self.turn.callbacks.remove(self.callback)


@dataclass
class Clock:
    now: float = 100.0
    step: float = 0.0  # added after each reading: a machine as slow as the test wants

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


@dataclass
class Harness:
    """One gateway's worth of real parts (registry, counters, connection set, batcher)
    around fake time and a fake loop turn."""

    config: Config
    clock: Clock = field(default_factory=Clock)  # the loop's time
    work_clock: Clock = field(default_factory=Clock)  # what the fan-out budget is measured by
    turn: LoopTurn = field(default_factory=LoopTurn)
    counters: Counters = field(default_factory=Counters)
    registry: Registry = field(init=False)
    latencies: list[float] = field(default_factory=list)
    kernel: int = KERNEL  # each connection's socket buffer

    def __post_init__(self) -> None:
        self.turns = TurnBatcher(
            call_soon=self.turn.call_soon,
            observe_latency=self.latencies.append,
            buffer_bytes=self.config.buffer_bytes,
            budget=self.config.fanout_budget,
            clock=self.work_clock,
            on_yield=self._count_yield,
            on_drain=self._count_drain,
        )
        self.registry = Registry(before_change=self.turns.membership_changing)
        self.delivery = LocalDelivery(
            registry=self.registry, counters=self.counters, turns=self.turns
        )
        self.connections = ConnectionSet(
            max_conns=self.config.max_conns,
            shortest_timeout=1.0,
            counters=self.counters,
            clock=self.clock,
        )
        self.connections.admitting = True
        self.host = ClientHost(
            settings=ClientSettings.from_config(self.config),
            authenticate=make_hello_authenticator(None),
            admission=self.connections,
            registry=self.registry,
            turns=self.turns,
            counters=self.counters,
            clock=self.clock,
            new_session=lambda: "s1",
            call_soon=self.turn.call_soon,
        )

    def _count_yield(self) -> None:
        self.counters.fanout_yields += 1

    def _count_drain(self) -> None:
        self.counters.fanout_drains += 1

    def push(self, to: str, data: object, id: str = "i") -> int:
        """Deliver a push as the gateway does; returns the connections that took it."""
        return self.delivery.deliver(parse_target(to), id, msgspec.json.encode(data))

    def connect(self, user: str | None = "alice") -> tuple[ClientProtocol, FakeTransport]:
        client = ClientProtocol(self.host)
        transport = FakeTransport(client, kernel=self.kernel)
        client.connection_made(transport)
        if user is not None:
            client.data_received(b'{"op":"hello","user":"%s"}\n' % user.encode())
            assert transport.writes.pop().startswith(b'{"op":"welcome"')
            transport.drain()  # the client read it
            self.turn.end()
        return client, transport


def harness(**options: Any) -> Harness:
    return Harness(Config(**{"buffer_bytes": BUFFER} | options))
