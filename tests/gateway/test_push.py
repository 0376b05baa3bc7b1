"""Unicast, multi-device, rooms, all: through `Gateway.push`, UDP and HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from tidegate.gateway import Gateway, open_gateway
from tidegate.protocol import BadPush

from .helpers import TIMEOUT, Client, UdpSender, config, http_session, url


async def test_unicast_reaches_only_that_user() -> None:
    async with open_gateway(config()) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        bob = await Client.hello(gw.tcp_address, "bob")
        result = gw.push("user:alice", {"n": 1}, id="m1")
        assert result == ("m1", 1)
        assert await alice.recv_line() == (
            b'{"op":"msg","to":"user:alice","id":"m1","data":{"n":1}}\n'
        )
        await bob.roundtrip()  # bob got nothing before his pong
        assert gw.push("user:carol", 1).delivered == 0
        stats = gw.statistics()
        assert stats.pushes["local"] == 2 and stats.deliveries == 1
        assert stats.connections == 2 and stats.users == 2
        await alice.close()
        await bob.close()


async def test_every_device_of_a_user_receives() -> None:
    async with open_gateway(config()) as gw:
        phones = [await Client.hello(gw.tcp_address, "alice") for _ in range(3)]
        id, delivered = gw.push("user:alice", "hi")
        assert delivered == 3
        for phone in phones:
            assert await phone.recv() == {"op": "msg", "to": "user:alice", "id": id, "data": "hi"}
        await phones[0].close()
        await phones[1].roundtrip()
        assert gw.push("user:alice", "again").delivered == 2
        for phone in phones[1:]:
            await phone.close()


async def test_rooms_belong_to_connections() -> None:
    async with open_gateway(config()) as gw:
        laptop = await Client.hello(gw.tcp_address, "alice")
        phone = await Client.hello(gw.tcp_address, "alice")
        bob = await Client.hello(gw.tcp_address, "bob")
        await laptop.join("lobby")
        await bob.join("lobby")
        assert gw.push("room:lobby", [1, 2]).delivered == 2
        for member in (laptop, bob):
            assert (await member.recv())["data"] == [1, 2]
        await phone.roundtrip()  # the same user's other connection did not join
        await bob.send({"op": "leave", "room": "lobby"})
        assert await bob.recv() == {"op": "left", "room": "lobby"}
        assert gw.push("room:lobby", None).delivered == 1
        assert (await laptop.recv())["data"] is None
        assert gw.statistics().rooms == 1
        for client in (laptop, phone, bob):
            await client.close()


async def test_all_reaches_every_open_connection_but_not_handshakes() -> None:
    async with open_gateway(config()) as gw:
        clients = [await Client.hello(gw.tcp_address, f"u{i}") for i in range(5)]
        pending = await Client.connect(gw.tcp_address)  # no hello yet
        assert gw.push("all", {"x": True}).delivered == 5
        for client in clients:
            assert (await client.recv())["to"] == "all"
        await pending.send({"op": "hello", "user": "late"})
        assert (await pending.recv())["op"] == "welcome"
        await pending.roundtrip()
        for client in [*clients, pending]:
            await client.close()


async def test_frames_queued_in_one_turn_leave_together() -> None:
    async with open_gateway(config()) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        for n in range(100):
            gw.push("user:alice", n)
        for n in range(100):
            assert (await alice.recv())["data"] == n
        await alice.close()


async def test_mixed_targets_in_one_turn_arrive_in_the_order_they_were_accepted() -> None:
    async with open_gateway(config()) as gw:
        phone = await Client.hello(gw.tcp_address, "alice")
        laptop = await Client.hello(gw.tcp_address, "alice")
        bob = await Client.hello(gw.tcp_address, "bob")
        carol = await Client.hello(gw.tcp_address, "carol")
        await phone.join("r")
        await bob.join("r")
        await bob.join("q")
        targets = ["all", "user:alice", "room:r", "user:bob", "room:q", "user:carol"]
        reaches = {
            "all": [phone, laptop, bob, carol],
            "user:alice": [phone, laptop],
            "room:r": [phone, bob],
            "user:bob": [bob],
            "room:q": [bob],
            "user:carol": [carol],
        }
        expected: dict[Client, list[int]] = {c: [] for c in (phone, laptop, bob, carol)}
        for n in range(300):  # all in one loop turn: nothing awaits in between
            to = targets[(n * 7 + n // 5) % len(targets)]
            assert gw.push(to, n).delivered == len(reaches[to])
            for client in reaches[to]:
                expected[client].append(n)

        async def read(client: Client) -> list[int]:
            return [(await client.recv())["data"] for _ in expected[client]]

        for client in expected:
            assert await read(client) == expected[client]
            await client.roundtrip()  # nothing more was sent
            await client.close()


async def test_a_mixed_http_batch_replies_who_took_each_item_and_keeps_order() -> None:
    async with open_gateway(config(http=("127.0.0.1", 0))) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        bob = await Client.hello(gw.tcp_address, "bob")
        await bob.join("r")
        batch = [
            {"to": ["all", "room:r", "user:alice", "user:nobody"][n % 4], "data": n}
            for n in range(200)
        ]
        async with (
            http_session() as session,
            session.post(url(gw.http_address, "/v1/push"), json=batch) as response,
        ):
            assert response.status == 200
            replies = await response.json()
        assert [r["delivered"] for r in replies] == [[2, 1, 1, 0][n % 4] for n in range(200)]
        assert [(await alice.recv())["data"] for _ in range(100)] == [
            n for n in range(200) if n % 4 in (0, 2)
        ]
        assert [(await bob.recv())["data"] for _ in range(100)] == [
            n for n in range(200) if n % 4 in (0, 1)
        ]
        await alice.close()
        await bob.close()


async def test_an_http_batch_past_the_shared_bound_waits_for_the_flush_instead_of_draining() -> (
    None
):
    # 16 KiB per connection: the frames of one turn for rooms and everyone share 12 KiB, and
    # this batch to everyone is ~46 KiB. Pushed in one go, it would find the bound full three
    # times and have the flush finish at once each time (`fanout_drains`).
    async with open_gateway(config(http=("127.0.0.1", 0), buffer_bytes=16 * 1024)) as gw:
        clients = [await Client.hello(gw.tcp_address, f"u{n}") for n in range(3)]
        try:
            batch = [{"to": "all", "data": [n, "p" * 200]} for n in range(200)]
            async with (
                http_session() as session,
                session.post(url(gw.http_address, "/v1/push"), json=batch) as response,
            ):
                assert response.status == 200
                assert [r["delivered"] for r in await response.json()] == [3] * 200
            for client in clients:
                assert [(await client.recv())["data"][0] for _ in range(200)] == list(range(200))
            statistics = gw.statistics()
            assert statistics.fanout_drains == 0
            assert statistics.deliveries == 600 and not statistics.drops
        finally:
            for client in clients:
                await client.close()


async def test_push_api_errors_and_raw_data() -> None:
    async with open_gateway(config(http=("127.0.0.1", 0))) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        with pytest.raises(BadPush):
            gw.push("everyone", 1)
        gw.push("user:alice", msgspec.Raw(b'{"pre":"encoded"}'), id="r")
        assert (await alice.recv())["data"] == {"pre": "encoded"}
        # A push body goes through an ingress, which parses it and counts its refusals.
        status, reply = await post_push(gw, b'{"to":"user:alice","data":7,"id":"h1"}')
        assert (status, reply) == (200, {"id": "h1", "delivered": 1})
        assert (await alice.recv())["id"] == "h1"
        status, reply = await post_push(gw, b'{"to":"user:alice"}')
        assert (status, reply["error"]) == (400, "bad_body")
        stats = gw.statistics()
        assert stats.rejections == {"bad_body": 1}
        assert stats.pushes == {"local": 1, "http": 1}
        await alice.close()


async def post_push(gw: Gateway, body: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    async with (
        http_session() as session,
        session.post(url(gw.http_address, "/v1/push"), data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_unsigned_udp_on_loopback() -> None:
    async with open_gateway(config()) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        udp = UdpSender(gw.udp_address)
        try:
            udp.send(b'{"to":"user:alice","data":{"via":"udp"}}')
            frame = await alice.recv()
            assert frame["data"] == {"via": "udp"} and frame["id"]
            udp.send(b'{"to":"all","data":2,"id":"given"}')
            assert (await alice.recv())["id"] == "given"
        finally:
            udp.close()
        assert gw.statistics().pushes["udp"] == 2
        await alice.close()


async def test_many_pushes_to_many_clients_arrive_in_order() -> None:
    async with open_gateway(config()) as gw:
        clients = [await Client.hello(gw.tcp_address, f"u{i % 10}") for i in range(50)]
        for n in range(200):
            gw.push("all", n)

        async def read_all(client: Client) -> list[object]:
            return [(await client.recv())["data"] for _ in range(200)]

        results = await asyncio.wait_for(asyncio.gather(*(read_all(c) for c in clients)), TIMEOUT)
        assert all(r == list(range(200)) for r in results)
        for client in clients:
            await client.close()
