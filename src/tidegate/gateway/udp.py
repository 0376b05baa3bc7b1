"""The UDP ingress: each datagram is verified and fanned out synchronously, in the callback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tidegate.gateway.stats import Counters
from tidegate.protocol import DatagramVerifier, Push, Rejected, Target

__all__ = ["PushDatagramProtocol"]

Deliver = Callable[[Push, Target, str], object]


class PushDatagramProtocol(asyncio.DatagramProtocol):
    """One push per datagram. Rejections are counted by reason and otherwise ignored: a
    sender gets no reply, so an unauthenticated peer cannot use us to reflect traffic."""

    def __init__(
        self,
        *,
        verifier: DatagramVerifier,
        deliver: Deliver,
        counters: Counters,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._deliver = deliver
        self._counters = counters
        self._clock = clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            push, target = self._verifier.verify(data, self._clock())
        except Rejected as exc:
            self._counters.rejections[exc.code.value] += 1
            return
        self._deliver(push, target, "udp")

    def error_received(self, exc: Exception) -> None:
        # ICMP errors about earlier datagrams; the ingress never sends, so nothing to do.
        self._counters.rejections["socket_error"] += 1
