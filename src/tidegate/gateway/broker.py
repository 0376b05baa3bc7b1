"""The broker seam: how a push reaches every connection it targets, on this node and others.

`Gateway.push` hands each accepted push to its `Broker` and nothing else. The in-process
broker is the default: a push reaches the connections of this process, synchronously,
through `LocalDelivery`, and nothing else is paid. The NATS broker (`nats_broker.py`,
`--broker`) implements the same members: it delivers locally as well, carries the push to the
other nodes, and on each of them ends in that node's `LocalDelivery`; the fan-out code does
not change.
"""

from __future__ import annotations

from typing import Protocol

from tidegate.gateway.fanout import Deliver
from tidegate.gateway.push_api import Confirmation
from tidegate.gateway.stats import BrokerStatistics
from tidegate.protocol import Target

__all__ = ["Broker", "InProcessBroker"]


class Broker(Protocol):
    def publish(self, target: Target, id: str, data_json: bytes) -> int:
        """Deliver a push (`data_json`: one encoded JSON value) to `target` everywhere;
        returns the connections reached on this node. Never blocks. Raises `NotPublished`
        (delivering nowhere) when the push cannot reach the other nodes now."""

    def ready(self) -> bool:
        """Whether pushes reach every node now (`/readyz`)."""

    def confirmation(self) -> Confirmation | None:
        """How the HTTP ingress learns a push was published; None without other nodes."""

    def statistics(self) -> BrokerStatistics | None:
        """The broker's figures; None for the in-process broker (it has none)."""

    async def start(self) -> None:
        """Open what the broker needs; called by `Gateway.start()` before any listener."""

    async def close(self) -> None:
        """Release it; called by `Gateway.close()` after every connection is gone."""


class InProcessBroker:
    """One process, no network: `publish` is local delivery itself."""

    __slots__ = ("_deliver",)

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, target: Target, id: str, data_json: bytes) -> int:
        return self._deliver(target, id, data_json)

    def ready(self) -> bool:
        return True

    def confirmation(self) -> None:
        return None

    def statistics(self) -> None:
        return None

    async def start(self) -> None:
        """Nothing to open: every connection is in this process."""

    async def close(self) -> None:
        """Nothing to release."""
