"""Hostile senders on the UDP ingress: a flood the socket cannot hold, and ids made to eat the
replay cache. Judged by what the gateway exposes: its statistics and `/metrics`."""

from __future__ import annotations

import time

import msgspec

from tidegate.gateway import open_gateway
from tidegate.protocol import sign
from tidegate.protocol.ingress import ReplayCache

from .helpers import Client, UdpSender, config, http_get, metric, parse_samples, wait_until

SECRET = "udp-secret-for-hostile-tests-0123456789"


def signed(id: str, data: object = 1) -> bytes:
    body = msgspec.json.encode({"to": "user:alice", "data": data, "id": id, "ts": time.time()})
    return sign(SECRET.encode(), body)


async def test_a_flood_the_socket_cannot_hold_is_counted_as_kernel_drops() -> None:
    # 3000 datagrams sent while the loop is busy (this very coroutine, not yielding), into a
    # receive buffer of a few KiB: the kernel drops most of them. They used to appear
    # nowhere; now every datagram is either handled or counted as dropped.
    cfg = config(admin=("127.0.0.1", 0), udp_receive_buffer=8192)
    async with open_gateway(cfg) as gw:
        stats = gw.statistics()
        assert stats.udp_receive_drops == 0
        assert stats.udp_receive_buffer_bytes is not None and stats.udp_receive_buffer_bytes > 0
        sender = UdpSender(gw.udp_address)
        sent = 3000
        for n in range(sent):
            sender.send(b'{"to":"user:nobody","data":%d}' % n)
        sender.close()

        def all_accounted() -> bool:
            stats = gw.statistics()
            handled = stats.pushes.get("udp", 0)
            return stats.udp_receive_drops is not None and handled + stats.udp_receive_drops == sent

        await wait_until(all_accounted, what="every datagram handled or counted as dropped")
        drops = gw.statistics().udp_receive_drops
        assert drops is not None and drops > 0
        _, text = await http_get(gw.admin_address, "/metrics")
        samples = parse_samples(text)
        assert metric(samples, "tidegate_udp_receive_drops_total") == drops
        assert metric(samples, "tidegate_udp_receive_buffer_bytes") > 0


async def test_long_ids_are_refused_and_the_replay_cache_stays_within_its_bytes() -> None:
    # Ids of 60 KB used to be cached whole (+142 MiB for 2500 of them). Now an id over 128
    # bytes is bad_id and never cached; ids at the limit fill the cache up to replay_memory
    # and then are refused (replay_cache_full), fail closed.
    memory = 50 * ReplayCache.cost("x" * 128) + ReplayCache.cost("marker")
    cfg = config(admin=("127.0.0.1", 0), secret=SECRET, replay_memory=memory)
    async with open_gateway(cfg) as gw:
        alice = await Client.hello(gw.tcp_address, "alice")
        udp = UdpSender(gw.udp_address)
        for n in range(200):
            udp.send(signed(f"{n:060000d}"))
            if n % 2:  # two at a time: a default receive buffer holds about three of them
                await wait_until(lambda n=n: gw.statistics().rejections.get("bad_id") == n + 1)
        for n in range(60):
            udp.send(signed(f"{n:0128d}"))
        udp.send(signed("marker", data="marker"))
        received = 0
        while True:  # in order: the marker comes after every datagram above was handled
            frame = await alice.recv()
            if frame["data"] == "marker":
                break
            received += 1
        stats = gw.statistics()
        assert received == 50 and stats.rejections["bad_id"] == 200
        assert stats.rejections["replay_cache_full"] == 10
        assert stats.replay_cache_bytes == memory and stats.replay_cache_ids == 51
        _, text = await http_get(gw.admin_address, "/metrics")
        assert (
            metric(parse_samples(text), "tidegate_replay_cache_bytes") == stats.replay_cache_bytes
        )
        udp.close()
        await alice.close()


async def test_the_receive_buffer_asked_for_is_what_the_kernel_reports() -> None:
    async with open_gateway(config(udp_receive_buffer=64 * 1024)) as gw:
        granted = gw.statistics().udp_receive_buffer_bytes
        # Linux doubles the request for its bookkeeping (capped by net.core.rmem_max unless
        # the process may force it).
        assert granted is not None and granted >= 64 * 1024
