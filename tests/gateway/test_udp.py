"""Signed UDP ingress: every rejection is counted by reason and delivers nothing.

Ordering is the synchronisation: datagrams from one socket over loopback arrive in order and
the gateway handles each one synchronously, so once a valid datagram sent *after* a rejected
one has reached the client, the rejection has been counted.
"""

from __future__ import annotations

import time

import msgspec
import pytest

from tidegate.gateway import Config, ConfigError, open_gateway
from tidegate.protocol import sign

from .helpers import Client, UdpSender, config

SECRET = "udp-secret"


def body(id: str, ts: float | None = None, to: str = "user:alice", data: object = 1) -> bytes:
    return msgspec.json.encode(
        {"to": to, "data": data, "id": id, "ts": time.time() if ts is None else ts}
    )


async def test_signed_push_and_rejections() -> None:
    async with open_gateway(config(secret=SECRET)) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        udp = UdpSender(gw.udp_address)
        key = SECRET.encode()
        marker = 0

        def send_marker() -> str:
            nonlocal marker
            marker += 1
            udp.send(sign(key, body(f"marker-{marker}", data="marker")))
            return f"marker-{marker}"

        async def expect_only_marker() -> None:
            expected = send_marker()
            frame = await alice.recv()
            assert frame["id"] == expected, frame

        try:
            good = sign(key, body("m1", data={"ok": True}))
            udp.send(good)
            assert (await alice.recv())["data"] == {"ok": True}

            upper = sign(key, body("m2"))
            udp.send(upper[:64].upper() + upper[64:])
            assert (await alice.recv())["id"] == "m2"

            rejected = {
                "replay": good,
                "bad_signature": sign(b"wrong", body("m3")),
                "missing_signature": body("m4"),
                "stale": sign(key, body("m5", ts=time.time() - 60)),
                "bad_json": sign(key, b"{not json"),
                "bad_target": sign(key, body("m6", to="team:x")),
                "bad_body": sign(key, b'{"to":"all","data":1}'),
            }
            for datagram in rejected.values():
                udp.send(datagram)
                await expect_only_marker()
        finally:
            udp.close()
        stats = gw.statistics()
        assert dict(stats.rejections) == dict.fromkeys(rejected, 1)
        assert stats.pushes["udp"] == 2 + marker
        await alice.close()


async def test_room_and_all_over_udp() -> None:
    async with open_gateway(config(secret=SECRET)) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        bob = await Client.hello(gw.tcp_address, "bob")
        await bob.join("lobby")
        udp = UdpSender(gw.udp_address)
        try:
            udp.send(sign(SECRET.encode(), body("r1", to="room:lobby")))
            assert (await bob.recv())["to"] == "room:lobby"
            udp.send(sign(SECRET.encode(), body("a1", to="all")))
            assert (await alice.recv())["id"] == "a1"
            assert (await bob.recv())["id"] == "a1"
        finally:
            udp.close()
        await alice.close()
        await bob.close()


async def test_unsigned_udp_refuses_non_loopback() -> None:
    with pytest.raises(ConfigError, match="without a secret"):
        async with open_gateway(config(udp=("0.0.0.0", 0))):
            pass
    # With a secret any address may be bound.
    async with open_gateway(config(udp=("0.0.0.0", 0), secret="s" * 32)) as gw:
        assert gw.udp_address is not None and gw.udp_address[1] > 0


def test_check_startable_allows_loopback_forms() -> None:
    for host in ("127.0.0.1", "127.0.0.53", "::1", "localhost"):
        Config(udp=(host, 0)).check_startable()
