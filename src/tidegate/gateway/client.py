"""The transport seam: what a client connection and the gateway need from each other.

A transport adapter is one module with one connection class: TCP today (`tcp.py`), WebSocket
next. The class implements `Client` (what the gateway calls) and is built with a `ClientHost`
(everything it may call back); the rest of the package deals only in these two types, so a
new transport is a new module and a factory handed to its listener in `server.py`.

Calls go both ways on the loop thread and never await:

- gateway -> connection (`Client`): `send_frame` from the fan-out (own frames), `flush`,
  `take_shared` and `take_settled` from the turn batcher (batching.py: the shared frames of a
  loop turn, and `settled`), `sweep(now)` from the one sweeper, `close`/`abort` at shutdown,
  `buffered`/`is_open` for statistics;
- connection -> gateway (`ClientHost`): `admission` on accept, close and loss of the transport;
  `registry` when hello, join, leave and close change who it is; `turns` to write through or
  queue, to settle, and to say when it congests; `counters` for drops and disconnects;
  `clock` (loop time) for the protocol core; `call_soon` to go on with its input in a later
  loop turn (input is handled in slices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tidegate.gateway.batching import CallSoon, TurnBatcher
from tidegate.gateway.config import Config, Overflow
from tidegate.gateway.registry import Registry, Sink
from tidegate.gateway.stats import Counters
from tidegate.protocol import ErrorCode, Limits
from tidegate.protocol.connection import Authenticate

__all__ = ["Admission", "Client", "ClientHost", "ClientSettings"]


class Client(Sink, Protocol):
    """What the gateway needs from a client connection, whatever its transport."""

    @property
    def is_open(self) -> bool:
        """Past the handshake and not closing."""

    def buffered(self) -> int:
        """Outbound bytes held for this client right now (ours and the transport's)."""

    def kernel_queued(self) -> int:
        """Bytes in the kernel's send queue of its socket (0 where unknown)."""

    def sweep(self, now: float) -> None:
        """Check the timeouts (handshake, idle, token expiry, write deadline, the closing
        linger) against `now`, loop time; never waits on the transport."""

    def close(self, code: ErrorCode, reason: str) -> None:
        """Server-initiated close: error frame, flush, then the transport's close."""

    def abort(self) -> None:
        """Drop the transport now, unsent bytes and all."""


class Admission(Protocol):
    """The connection set, as a connection sees it (`connections.ConnectionSet`)."""

    def admit(self, client: Client) -> ErrorCode | None:
        """Count a new connection in, or say why it must be turned away."""

    def mark_closing(self, client: Client) -> None:
        """`client` began its close; it no longer counts towards `max_conns`."""

    def forget(self, client: Client) -> None:
        """`client`'s transport is gone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """The options a client connection reads, derived from `Config` once per gateway."""

    limits: Limits
    buffer_bytes: int
    overflow: Overflow
    write_timeout: float
    close_linger: float

    @classmethod
    def from_config(cls, config: Config) -> ClientSettings:
        return cls(
            limits=config.limits(),
            buffer_bytes=config.buffer_bytes,
            overflow=config.overflow,
            write_timeout=config.write_timeout,
            close_linger=config.close_linger,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHost:
    """What a client connection needs from the gateway that owns it: one per gateway, shared
    by all its connections."""

    settings: ClientSettings
    authenticate: Authenticate
    admission: Admission
    registry: Registry
    turns: TurnBatcher
    counters: Counters
    clock: Callable[[], float]  # the loop's time
    new_session: Callable[[], str]
    call_soon: CallSoon  # the loop's
