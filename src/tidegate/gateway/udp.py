"""The UDP ingress: each datagram is verified and fanned out synchronously, in the callback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tidegate.gateway.push_api import NotPublished, PushFunction
from tidegate.protocol import DatagramVerifier, Rejected

__all__ = ["PushDatagramProtocol"]


class PushDatagramProtocol(asyncio.DatagramProtocol):
    """One push per datagram. Rejections are counted by reason, here and nowhere else, and
    otherwise ignored: a sender gets no reply, so an unauthenticated peer cannot use us to
    reflect traffic."""

    def __init__(
        self,
        *,
        verifier: DatagramVerifier,
        push: PushFunction,
        rejections: Counter[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._push = push
        self._rejections = rejections
        self._clock = clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            push, target = self._verifier.verify(data, self._clock())
        except Rejected as exc:
            self._rejections[exc.code.value] += 1
            return
        try:
            self._push(target, push.data, id=push.id, ingress="udp")
        except NotPublished as exc:
            # Cluster mode, the broker cannot take it: delivered nowhere, counted, never
            # queued for later; the same datagram may be sent again.
            self._rejections[exc.code] += 1
            self._verifier.forget(push)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors about earlier datagrams; the ingress never sends, so nothing to do.
        self._rejections["socket_error"] += 1
