"""A broker that stops carrying pushes cannot look healthy: the server killed, hung, a
subscription refused by a permissions reload or removed behind the broker's back, one server
of a NATS cluster gone. Each turns `/readyz` red and moves a metric within 5 s, and comes back
by itself; meanwhile clients keep their connections, HTTP pushes get 503 and UDP pushes are
counted as refused, delivered nowhere.

The kill and hang tests run with the default health settings (canary every 1 s, 2 s timeout),
so their "within 5 s" is the one the contract promises; the others use a fast tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from time import time
from typing import Any

import pytest

from tidegate.gateway import Gateway
from tidegate.gateway.natsd import NatsServer
from tidegate.protocol import sign

from .helpers import (
    Client,
    UdpSender,
    http_get,
    http_session,
    metric,
    parse_samples,
    url,
    wait_until,
)
from .nats_nodes import broker, nats_server, node_id, open_nodes, server_shows, settled

__all__ = ["nats_server"]

DEFAULT_HEALTH = {"canary_interval": 1.0, "canary_timeout": 2.0}
WITH_HTTP = {"http": ("127.0.0.1", 0), "admin": ("127.0.0.1", 0)}


async def readyz(node: Gateway) -> int:
    status, _ = await http_get(node.admin_address, "/readyz")
    return status


async def samples(node: Gateway) -> Any:
    status, body = await http_get(node.admin_address, "/metrics")
    assert status == 200
    return parse_samples(body)


async def post(node: Gateway, document: Any) -> tuple[int, Any, dict[str, str]]:
    async with (
        http_session() as session,
        session.post(url(node.http_address, "/v1/push"), json=document) as response,
    ):
        return response.status, await response.json(content_type=None), dict(response.headers)


async def red_within(nodes: list[Gateway], seconds: float) -> float:
    """Poll `/readyz` of every node until all answer 503; returns how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not all([await readyz(node) == 503 for node in nodes]):
        elapsed = loop.time() - start
        assert elapsed < seconds, f"/readyz still green after {elapsed:.1f} s"
        await asyncio.sleep(0.05)
    return loop.time() - start


async def green(*nodes: Gateway) -> None:
    await wait_until(lambda: all(node.ready() for node in nodes), timeout=10, what="ready")
    for node in nodes:
        if node.admin_address is not None:
            assert await readyz(node) == 200


async def test_the_broker_killed_and_restarted(nats_server: NatsServer) -> None:
    health = {**WITH_HTTP, **DEFAULT_HEALTH}
    async with open_nodes(2, nats_server.url, secret="udp-secret", **health) as (a, b):
        alice = await Client.hello(a.tcp_address, "alice")
        bob = await Client.hello(b.tcp_address, "bob")
        await settled(a, b)
        assert await readyz(a) == 200 and await readyz(b) == 200

        nats_server.kill()
        elapsed = await red_within([a, b], 5.0)
        after = await samples(a)
        assert metric(after, "tidegate_broker_up") == 0
        assert metric(after, "tidegate_broker_ready") == 0
        assert metric(after, "tidegate_broker_disconnects_total") == 1

        # Pushes are refused, delivered nowhere (not even on the node they entered).
        status, reply, headers = await post(a, {"to": "all", "data": "lost"})
        assert status == 503 and reply["error"] == "broker_unavailable", reply
        assert "not delivered anywhere" in reply["reason"]
        assert headers.get("Retry-After") == "1"
        sender = UdpSender(a.udp_address)
        signed = sign(b"udp-secret", b'{"to":"user:bob","data":"udp","id":"u1","ts":%d}' % time())
        sender.send(signed)
        await wait_until(lambda: a.statistics().rejections["broker_unavailable"] == 2)
        assert a.statistics().deliveries == 0
        # Clients keep their connections; new ones say hello, ping and join.
        await alice.roundtrip()
        late = await Client.hello(b.tcp_address, "late")
        await late.join("during")
        await late.roundtrip()

        nats_server.start()  # the same port; the gateways are not touched
        await green(a, b)
        await settled(a, b)
        assert broker(a).reconnects == 1 and broker(b).reconnects == 1
        # The datagram refused while the broker was away is not taken for a replay.
        sender.send(signed)
        assert (await bob.recv())["id"] == "u1"
        for to, client in (("user:bob", bob), ("room:during", late), ("user:alice", alice)):
            status, reply, _ = await post(a, {"to": to, "data": "back", "id": to})
            assert status == 200 and reply["published"] is True, reply
            frame = await client.recv()
            assert frame["id"] == to, f"a refused push was delivered: {frame}"
        print(f"/readyz red {elapsed:.2f} s after the broker was killed")
        sender.close()
        for client in (alice, bob, late):
            await client.close()


@contextlib.contextmanager
def stopped(server: NatsServer) -> Iterator[None]:
    """The server hangs (SIGSTOP): its sockets stay open, nothing moves."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


async def test_a_hung_broker_is_caught_by_the_canary(nats_server: NatsServer) -> None:
    async with open_nodes(2, nats_server.url, **WITH_HTTP, **DEFAULT_HEALTH) as (a, b):
        bob = await Client.hello(b.tcp_address, "bob")
        await settled(a, b)
        loop = asyncio.get_running_loop()
        with stopped(nats_server):
            start = loop.time()
            elapsed = await red_within([a, b], 5.0)
            await wait_until(lambda: broker(a).canary_failures > 0, what="a canary failure")
            assert loop.time() - start < 5.0
            assert metric(await samples(a), "tidegate_broker_canary_failures_total") > 0
            assert metric(await samples(a), "tidegate_broker_up") == 1  # no FIN: the canary told
            status, reply, _ = await post(a, {"to": "user:bob", "data": "lost"})
            assert status == 503, reply
        await green(a, b)
        status, reply, _ = await post(a, {"to": "user:bob", "data": "back", "id": "back"})
        assert status == 200 and reply["published"] is True
        assert (await bob.recv())["id"] == "back"
        print(f"/readyz red {elapsed:.2f} s after the broker hung")
        await bob.close()


def permissions(subscribe: list[str]) -> str:
    allowed = json.dumps(subscribe)
    return (
        "authorization { users = [ {user: gw, password: pw, permissions: "
        f'{{subscribe: {{allow: {allowed}}}, publish: {{allow: [">"]}}}}}} ] }}\n'
    )


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server whose permissions a test can change and reload."""
    config = tmp_path / "nats.conf"
    config.write_text(permissions(["tidegate.>"]))
    server = NatsServer(config=config, monitor=-1).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_subscription_refused_by_a_permissions_reload(
    guarded_server: NatsServer,
) -> None:
    creds = guarded_server.url.replace("nats://", "nats://gw:pw@")
    async with open_nodes(2, creds) as (a, b):
        bob = await Client.hello(b.tcp_address, "bob")
        await settled(a, b)
        assert guarded_server.config is not None
        guarded_server.config.write_text(permissions(["tidegate.all", "tidegate.canary.>"]))
        guarded_server.reload()
        await wait_until(lambda: not b.ready(), what="node b not ready")
        stats = broker(b)
        assert stats.subscriptions_deaf == 1 and stats.subscription_failures >= 1
        assert a.ready()  # a needs no user subject: it stays green
        # Still refused on every retry: it stays red.
        retries = stats.resubscribes
        await wait_until(lambda: broker(b).resubscribes >= retries + 2, what="retries")
        assert not b.ready()

        guarded_server.config.write_text(permissions(["tidegate.>"]))
        guarded_server.reload()
        await green(b)
        a.push("user:bob", "back", id="back")
        assert (await bob.recv())["id"] == "back"
        await bob.close()


async def test_a_subscription_removed_behind_the_brokers_back(nats_server: NatsServer) -> None:
    async with open_nodes(2, nats_server.url) as (a, b):
        bob = await Client.hello(b.tcp_address, "bob")
        await settled(a, b)
        nats = b.broker
        sub = next(s for s in nats._table if s.subject == "tidegate.u.bob")  # type: ignore[attr-defined]
        # The server forgets bob's subscription; the node is not told.
        await nats._nc.send_lines(b"UNSUB %d\r\n" % sub.sid)  # type: ignore[attr-defined]
        canary = f"tidegate.canary.{node_id(b)}"
        await server_shows(nats_server, b, ["tidegate.all", canary])
        loop = asyncio.get_running_loop()
        start = loop.time()
        await wait_until(lambda: broker(b).probe_failures >= 1, what="a lost probe")
        assert loop.time() - start < 5.0
        assert broker(b).subscription_failures >= 1
        await wait_until(lambda: broker(b).resubscribes >= 1, what="resubscribed")
        await green(b)
        await server_shows(nats_server, b, ["tidegate.all", canary, "tidegate.u.bob"])
        a.push("user:bob", "back", id="back")
        assert (await bob.recv())["id"] == "back"
        await bob.close()


@pytest.fixture
def nats_cluster() -> Iterator[list[NatsServer]]:
    """Three nats-servers joined by routes (the second and third solicit the first; gossip
    joins them all), each with its monitoring port."""
    servers: list[NatsServer] = []
    try:
        first = NatsServer(monitor=-1, cluster=-1).start()
        servers.append(first)
        for _ in range(2):
            servers.append(NatsServer(monitor=-1, cluster=-1, routes=[first.cluster_url]).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


async def known_subjects(server: NatsServer) -> set[str]:
    """The interest `server` holds: its own clients' (`/connz?subs=1`) and what it learned
    from its routes (`/routez?subs=1`)."""
    subjects: set[str] = set()
    async with http_session() as session:
        for path, key in (("/connz?subs=1", "connections"), ("/routez?subs=1", "routes")):
            async with session.get(f"{server.monitor_url}{path}") as response:
                document = await response.json()
            for peer in document[key] or []:
                subjects.update(peer.get("subscriptions_list") or [])
    return subjects


async def interest_spread(servers: list[NatsServer], subjects: set[str]) -> None:
    """Wait until every server knows of `subjects`, from its clients or over its routes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    for server in servers:
        while not subjects <= await known_subjects(server):
            assert loop.time() < deadline, "interest did not spread over the routes"
            await asyncio.sleep(0.02)


async def test_a_nats_cluster_loses_one_server(nats_cluster: list[NatsServer]) -> None:
    urls = [server.url for server in nats_cluster]
    async with open_nodes(3, urls) as nodes:
        clients = [await Client.hello(node.tcp_address, f"u{i}") for i, node in enumerate(nodes)]
        for client in clients:
            await client.join("lobby")
        await settled(*nodes)
        await interest_spread(
            nats_cluster, {"tidegate.all", "tidegate.r.lobby", "tidegate.u.u0", "tidegate.u.u2"}
        )
        nodes[1].push("room:lobby", "one", id="one")
        nodes[0].push("user:u2", "two", id="two")
        for client in clients[:2]:
            assert (await client.recv())["id"] == "one"
        # Two nodes, two origins: no order between them.
        assert {(await clients[2].recv())["id"] for _ in range(2)} == {"one", "two"}

        nats_cluster[2].kill()
        # The other two keep delivering, between themselves, without a pause.
        for n in range(20):
            nodes[n % 2].push("room:lobby", n)
        for client in clients[:2]:
            got = [(await client.recv())["data"] for _ in range(20)]
            assert sorted(got) == list(range(20))
            # In order per node they entered (two origins interleave freely).
            assert [n for n in got if n % 2 == 0] == list(range(0, 20, 2))
            assert [n for n in got if n % 2 == 1] == list(range(1, 20, 2))
        # The third node reconnects to a server it learned from the cluster, and resubscribes.
        await wait_until(lambda: broker(nodes[2]).reconnects == 1, timeout=10, what="reconnect")
        await green(*nodes)
        await settled(nodes[2])
        await interest_spread(nats_cluster[:2], {"tidegate.u.u2"})
        nodes[0].push("user:u2", "three", id="three")
        # Room pushes from the other nodes race the third's reconnect: any of them may have
        # reached it (NATS keeps nothing for a subscriber that is away), each at most once
        # and in order per origin, all before "three".
        late: list[int] = []
        while (frame := await clients[2].recv())["id"] != "three":
            assert frame["to"] == "room:lobby" and frame["data"] in range(20), frame
            late.append(frame["data"])
        assert len(set(late)) == len(late)
        for origin in (0, 1):
            from_origin = [n for n in late if n % 2 == origin]
            assert from_origin == sorted(from_origin)
        for client in clients:
            await client.close()
