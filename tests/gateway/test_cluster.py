"""Cluster mode on real nats-server processes: pushes cross nodes exactly once and in order,
names stay in their subjects, subscriptions follow local members and none is left behind on
the server.

"Exactly once" is checked with a sentinel: after the pushes under test, another node pushes a
sentinel to the same connections; since the broker delivers in order, a duplicate would arrive
before it, so each client's next frame after the expected ones must be the sentinel.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from tidegate.gateway import Gateway
from tidegate.gateway.natsd import NatsServer

from .helpers import Client, UdpSender, http_session, url, wait_until
from .nats_nodes import (
    broker,
    nats_server,
    open_nodes,
    server_shows,
    settled,
    subscriptions_of,
)

__all__ = ["nats_server"]


async def post(node: Gateway, document: Any) -> tuple[int, Any]:
    async with (
        http_session() as session,
        session.post(url(node.http_address, "/v1/push"), json=document) as response,
    ):
        return response.status, await response.json(content_type=None)


async def expect_sentinel(via: Gateway, to: str, *clients: Client) -> None:
    """Each client's next frame is a sentinel pushed through `via`: nothing came twice."""
    via.push(to, "sentinel", id="sentinel")
    for client in clients:
        frame = await client.recv()
        assert frame["id"] == "sentinel", f"unexpected frame before the sentinel: {frame}"


async def test_a_udp_push_reaches_the_user_on_every_node_once(nats_server: NatsServer) -> None:
    async with open_nodes(3, nats_server.url) as (a, b, c):
        on_a = await Client.hello(a.tcp_address, "bob")
        on_b = await Client.hello(b.tcp_address, "bob")
        carol = await Client.hello(b.tcp_address, "carol")
        await settled(a, b, c)
        sender = UdpSender(a.udp_address)
        sender.send(b'{"to":"user:bob","data":{"n":1},"id":"u1"}')
        for client in (on_a, on_b):
            assert await client.recv() == {
                "op": "msg",
                "to": "user:bob",
                "id": "u1",
                "data": {"n": 1},
            }
        await expect_sentinel(c, "user:bob", on_a, on_b)
        await carol.roundtrip()  # nothing for carol
        assert broker(a).echoes >= 1  # a served its own bob, then skipped its echo
        assert broker(b).received == 2  # u1 and the sentinel, once each
        sender.close()
        for client in (on_a, on_b, carol):
            await client.close()


async def test_a_room_spans_nodes_and_http_says_what_it_knows(nats_server: NatsServer) -> None:
    async with open_nodes(3, nats_server.url, http=("127.0.0.1", 0)) as nodes:
        members = []
        for i, node in enumerate(nodes):
            for j in range(i + 1):  # 1, 2 and 3 members on the three nodes
                member = await Client.hello(node.tcp_address, f"u{i}-{j}")
                await member.join("lobby")
                members.append(member)
        await settled(*nodes)
        status, reply = await post(nodes[1], {"to": "room:lobby", "data": "hi", "id": "r1"})
        assert (status, reply) == (200, {"id": "r1", "delivered": 2, "published": True})
        for member in members:
            assert (await member.recv())["id"] == "r1"
        await expect_sentinel(nodes[2], "room:lobby", *members)
        status, batch = await post(
            nodes[0], [{"to": "room:lobby", "data": 1}, {"to": "user:u2-2", "data": 2}]
        )
        assert status == 200
        assert [(item["delivered"], item["published"]) for item in batch] == [(1, True), (0, True)]
        for member in members:
            assert (await member.recv())["data"] == 1
        for member in members:
            await member.close()


async def test_broadcast_reaches_everyone_exactly_once(nats_server: NatsServer) -> None:
    async with open_nodes(3, nats_server.url) as nodes:
        clients = [
            await Client.hello(node.tcp_address, f"n{i}c{j}")
            for i, node in enumerate(nodes)
            for j in range(2)
        ]
        await settled(*nodes)
        for n in range(3):  # one push into each node
            assert nodes[n].push("all", n, id=f"all-{n}").delivered == 2
        for client in clients:
            got = sorted([(await client.recv())["id"] for _ in range(3)])
            assert got == ["all-0", "all-1", "all-2"]
        for node in nodes:
            await expect_sentinel(node, "all", *clients)
            assert sum(broker(other).received for other in nodes if other is not node) >= 2
        total = sum(node.statistics().deliveries for node in nodes)
        assert total == len(clients) * 6  # 3 pushes and 3 sentinels, each once per client
        for client in clients:
            await client.close()


async def test_pushes_through_one_node_keep_their_order_across_subjects(
    nats_server: NatsServer,
) -> None:
    async with open_nodes(2, nats_server.url) as (a, b):
        alice = await Client.hello(b.tcp_address, "alice")
        await alice.join("lobby")
        await settled(a, b)
        targets = ("user:alice", "room:lobby", "all")
        for n in range(300):
            a.push(targets[n % 3], n)
        received = [(await alice.recv())["data"] for _ in range(300)]
        assert received == list(range(300))
        await alice.close()


async def test_subscriptions_follow_local_members_and_none_is_left_behind(
    nats_server: NatsServer,
) -> None:
    async with open_nodes(2, nats_server.url) as (a, b):
        baseline = await subscriptions_of(nats_server, b)
        canary = next(s for s in baseline if ".canary." in s)
        assert baseline == sorted(["tidegate.all", canary])
        laptop = await Client.hello(b.tcp_address, "alice")
        phone = await Client.hello(b.tcp_address, "alice")
        await laptop.join("lobby")
        await phone.join("lobby")
        await phone.join("kitchen")
        await settled(b)
        assert await subscriptions_of(nats_server, b) == sorted(
            [*baseline, "tidegate.u.alice", "tidegate.r.lobby", "tidegate.r.kitchen"]
        )
        assert broker(b).subscriptions == 4  # all, alice, lobby, kitchen: one each
        await phone.send({"op": "leave", "room": "kitchen"})
        assert await phone.recv() == {"op": "left", "room": "kitchen"}
        await phone.close()
        await laptop.roundtrip()
        await server_shows(nats_server, b, [*baseline, "tidegate.u.alice", "tidegate.r.lobby"])
        # Churn that never settles within a loop turn: the server sees only the outcome.
        for n in range(50):
            await laptop.send({"op": "join", "room": f"r{n}"})
            await laptop.send({"op": "leave", "room": f"r{n}"})
        for n in range(50):
            assert await laptop.recv() == {"op": "joined", "room": f"r{n}"}
            assert await laptop.recv() == {"op": "left", "room": f"r{n}"}
        await laptop.close()
        await wait_until(lambda: broker(b).subscriptions == 1, what="alice and lobby released")
        await server_shows(nats_server, b, baseline)
        assert len(await subscriptions_of(nats_server, a)) == 2  # all and its canary


HOSTILE_NAMES = [
    "a",
    "a.b",
    "a.*",
    "a.>",
    ">",
    "*",
    "a b",
    "tab\there",
    "new\nline",
    "ünïcödé",
    "日本語",
    "~",
    "~2E",
    "a~2Eb",
    "all",
    "..",
    "$SYS",
    "x" * 5000,
]


async def test_no_name_reaches_another_subject(nats_server: NatsServer) -> None:
    async with open_nodes(2, nats_server.url) as (a, b):
        users = [await Client.hello(b.tcp_address, name) for name in HOSTILE_NAMES]
        rooms = []
        for name in HOSTILE_NAMES:
            member = await Client.hello(b.tcp_address, f"member-of-{name[:40]}")
            await member.join(name)
            rooms.append(member)
        await settled(a, b)
        subjects = await subscriptions_of(nats_server, b)
        # users, members, rooms, all and the canary: each its own subject
        assert len(subjects) == len(set(subjects)) == 3 * len(HOSTILE_NAMES) + 2
        for subject in subjects:  # every token is literal: no wildcard, no empty token
            assert re.fullmatch(r"[A-Za-z0-9_~-]+(\.[A-Za-z0-9_~-]+)*", subject), subject
            assert len(subject) < 200
        for kind, clients in (("user", users), ("room", rooms)):
            for name, client in zip(HOSTILE_NAMES, clients, strict=True):
                a.push(f"{kind}:{name}", name)
                assert (await client.recv())["data"] == name
            # Nobody got anybody else's push: everyone's next frame is the broadcast.
            a.push("all", "sentinel")
            for client in users + rooms:
                assert (await client.recv())["data"] == "sentinel"
        for client in users + rooms:
            await client.close()


async def test_a_push_over_the_brokers_limit_is_refused_whole(
    nats_server: NatsServer, tmp_path: Any
) -> None:
    config_file = tmp_path / "small.conf"
    config_file.write_text("max_payload: 4096\n")
    small = NatsServer(config=config_file).start()
    try:
        async with open_nodes(2, small.url, http=("127.0.0.1", 0)) as (a, b):
            alice = await Client.hello(a.tcp_address, "alice")
            await settled(a, b)
            status, reply = await post(a, {"to": "all", "data": "x" * 5000})
            assert status == 413 and reply["error"] == "too_large", reply
            assert "4096" in reply["reason"]
            assert a.statistics().rejections["too_large"] == 1
            status, reply = await post(a, {"to": "all", "data": "fits", "id": "ok"})
            assert status == 200 and reply["published"] is True
            assert (await alice.recv())["id"] == "ok"  # the refused one reached nobody
            await alice.close()
    finally:
        small.stop()


def test_the_client_hooks_nats_py_must_keep() -> None:
    """The broker overrides or calls three private members of nats-py's client; an upgrade
    that changes them must fail here, not in production."""
    from nats.aio.client import Client as NatsClient

    parameters = list(inspect.signature(NatsClient._process_msg).parameters)
    assert parameters == ["self", "sid", "subject", "reply", "data", "headers"]
    assert inspect.iscoroutinefunction(NatsClient._process_msg)
    assert list(inspect.signature(NatsClient._send_command).parameters)[:2] == ["self", "cmd"]
    assert inspect.iscoroutinefunction(NatsClient._flush_pending)
