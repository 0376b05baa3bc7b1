"""Clients that stop reading: bounded buffers, overflow policies, the write deadline.

The stuck client is a StreamReader with a 64 KiB limit that is never read: asyncio stops
reading its socket at 128 KiB, so the kernel buffers fill and the gateway sees back-pressure.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from prometheus_client.exposition import generate_latest

from tidegate.gateway import Gateway, open_gateway
from tidegate.gateway.config import OVERFLOW_POLICIES

from .helpers import TIMEOUT, Client, config, parse_samples, wait_until

MIB = 1024 * 1024
PAYLOAD = "x" * (16 * 1024)
PUSHES = 20 * MIB // len(PAYLOAD) + 1  # >= 20 MiB per client


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def stuck_client(gw: Gateway, user: str) -> Client:
    assert gw.tcp_address is not None
    reader, writer = await asyncio.open_connection(*gw.tcp_address, limit=64 * 1024)
    client = Client(reader, writer)
    await client.send({"op": "hello", "user": user})
    assert (await client.recv())["op"] == "welcome"
    return client


async def read_until_closed(client: Client) -> None:
    try:
        while await asyncio.wait_for(client.reader.read(1 << 20), TIMEOUT):
            pass
    except ConnectionResetError:
        pass
    await client.close()


@pytest.mark.parametrize("policy", OVERFLOW_POLICIES)
async def test_20_mib_broadcast_with_a_client_that_never_reads(policy: str) -> None:
    cfg = config(overflow=policy, write_timeout=60.0)  # the deadline is tested separately
    async with open_gateway(cfg) as gw:
        normal = await Client.hello(gw.tcp_address, "normal")
        stuck = await stuck_client(gw, "stuck")
        received = 0
        progress = asyncio.Event()

        async def read_normal() -> None:
            nonlocal received
            while received < PUSHES:
                frame = await normal.recv()
                assert frame["data"] == [received, PAYLOAD]
                received += 1
                progress.set()

        worst = 0
        rss_before = resident_bytes()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(read_normal())
            for n in range(PUSHES):
                gw.push("all", [n, PAYLOAD])
                stats = gw.statistics()
                worst = max(worst, stats.max_buffered_bytes)
                # Pace on the normal client only, never on the stuck one.
                while received < n - 16:
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), TIMEOUT)
        rss_growth = resident_bytes() - rss_before
        assert received == PUSHES  # the normal client missed nothing
        assert worst <= cfg.buffer_bytes + 256  # + at most one error frame
        # The whole process (gateway and both clients) grew by far less than the 20 MiB it
        # pushed at the stuck client: nothing piles up outside the bounded buffer either.
        assert rss_growth < 8 * MIB
        stats = gw.statistics()
        if policy == "disconnect":
            assert stats.disconnects["slow_consumer"] == 1
            assert stats.drops == {}
            await read_until_closed(stuck)
            assert gw.connections() == 1
        else:
            assert stats.drops[policy] > 0
            assert gw.connections() == 2
            got = await drain_stuck(gw, stuck)
            assert got == sorted(set(got)) and len(got) + stats.drops[policy] == PUSHES
            if policy == "drop-oldest":
                assert got[-1] == PUSHES - 1  # the newest survived
            else:
                assert got[:5] == [0, 1, 2, 3, 4] and got[-1] < PUSHES - 1
            await stuck.close()
        await normal.close()


@pytest.mark.parametrize("policy", OVERFLOW_POLICIES)
async def test_room_and_unicast_pushes_with_a_room_member_that_never_reads(policy: str) -> None:
    # Room pushes go through the shared frames of each turn, unicasts to the reader in
    # between; the stuck member congests and takes each room push under its policy. The
    # reader gets everything in order; `delivered` counts exactly who took each push.
    cfg = config(overflow=policy, buffer_bytes=MIB, write_timeout=60.0)
    pushes = PUSHES  # >= 20 MiB: more than the kernel buffers hold
    async with open_gateway(cfg) as gw:
        normal = await Client.hello(gw.tcp_address, "normal")
        stuck = await stuck_client(gw, "stuck")
        await normal.join("r")
        await stuck.send({"op": "join", "room": "r"})
        assert (await stuck.recv())["op"] == "joined"
        received = 0
        progress = asyncio.Event()
        taken_by_stuck = 0

        async def read_normal() -> None:
            nonlocal received
            while received < pushes:
                frame = await normal.recv()
                assert frame["data"] == [received, PAYLOAD]
                received += 1
                progress.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(read_normal())
            for n in range(pushes):
                if n % 3 == 2:
                    assert gw.push("user:normal", [n, PAYLOAD]).delivered == 1
                else:
                    delivered = gw.push("room:r", [n, PAYLOAD]).delivered
                    assert delivered in (1, 2)
                    taken_by_stuck += delivered - 1
                assert gw.statistics().max_buffered_bytes <= cfg.buffer_bytes + 256
                while received < n - 16:
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), TIMEOUT)
        stats = gw.statistics()
        room_pushes = pushes - pushes // 3
        if policy == "disconnect":
            assert stats.disconnects["slow_consumer"] == 1 and stats.drops == {}
            await read_until_closed(stuck)
        else:
            assert stats.drops[policy] > 0
            got = await drain_stuck(gw, stuck)
            assert got == sorted(set(got)) and all(n % 3 != 2 for n in got)
            if policy == "drop-newest":
                assert len(got) == taken_by_stuck < room_pushes
            else:
                # Each evicted frame was taken first; refused ones never were.
                assert len(got) + stats.drops[policy] >= taken_by_stuck > len(got)
            await stuck.close()
        assert stats.deliveries == received + taken_by_stuck
        await normal.close()


async def drain_stuck(gw: Gateway, stuck: Client) -> list[int]:
    """Let the stuck client read again; a final marker push tells it when it has it all."""
    got: list[int] = []

    async def read() -> None:
        while True:
            frame = await stuck.recv()
            if frame["data"] == "end":
                return
            got.append(frame["data"][0])

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        await wait_until(lambda: gw.statistics().buffered_bytes == 0, what="backlog to drain")
        assert gw.push("user:stuck", "end").delivered == 1
    return got


async def test_write_deadline_cuts_a_client_that_drains_nothing() -> None:
    # Buffer big enough that only the deadline (0.2 s without progress) can cut it.
    cfg = config(buffer_bytes=64 * MIB, write_timeout=0.2)
    async with open_gateway(cfg) as gw:
        stuck = await stuck_client(gw, "stuck")
        for n in range(16 * MIB // len(PAYLOAD)):
            gw.push("user:stuck", [n, PAYLOAD])
        await wait_until(lambda: gw.statistics().disconnects.get("slow_consumer") == 1)
        await read_until_closed(stuck)
        stats = gw.statistics()
        assert stats.disconnects["slow_consumer"] == 1 and stats.connections == 0


async def test_liveness_does_not_wait_behind_blocked_writes() -> None:
    # The client never reads and never sends: its writes are stuck (drop-newest keeps it
    # connected, the write deadline is far away), yet the idle timeout still fires on time.
    cfg = config(overflow="drop-newest", heartbeat=0.1, write_timeout=60.0)
    async with open_gateway(cfg) as gw:
        stuck = await stuck_client(gw, "stuck")
        for n in range(8 * MIB // len(PAYLOAD)):
            gw.push("user:stuck", [n, PAYLOAD])
        assert gw.statistics().buffered_bytes > 0
        await wait_until(lambda: gw.statistics().disconnects.get("idle_timeout") == 1)
        await read_until_closed(stuck)


@pytest.mark.parametrize("policy", OVERFLOW_POLICIES)
async def test_end_of_stream_with_output_pending_releases_the_client_at_once(policy: str) -> None:
    # The client stops reading, the gateway queues megabytes for it, then the client sends
    # FIN. The session ends at once: nothing waits for the backlog to drain, and shutdown
    # afterwards does not hang on the half-closed socket. Every deadline is far away, so
    # only the end of stream can release it.
    cfg = config(overflow=policy, buffer_bytes=8 * MIB, write_timeout=60.0, close_linger=60.0)
    async with asyncio.timeout(TIMEOUT):
        async with open_gateway(cfg) as gw:
            stuck = await stuck_client(gw, "stuck")
            for n in range(4 * MIB // len(PAYLOAD)):
                gw.push("user:stuck", [n, PAYLOAD])
            assert gw.statistics().buffered_bytes > 1 * MIB
            stuck.writer.write_eof()
            await wait_until(lambda: gw.statistics().connections == 0, what="release")
            stats = gw.statistics()
            assert stats.disconnects["peer_eof"] == 1
            assert (stats.buffered_bytes, stats.users, stats.closing) == (0, 0, 0)
        await stuck.close()


def observed_pushes(gw: Gateway) -> float:
    samples = parse_samples(generate_latest(gw.metrics.registry).decode())
    return samples[("tidegate_push_write_latency_seconds_count", ())]


async def test_push_latency_is_observed_when_every_target_is_paused() -> None:
    # Once its transport is paused, frames for the stuck client only queue (drop-oldest keeps
    # delivering); nothing writes, yet each push is still observed at the end of its turn
    # instead of piling up unobserved.
    cfg = config(overflow="drop-oldest", buffer_bytes=4 * MIB, write_timeout=60.0)
    async with open_gateway(cfg) as gw:
        stuck = await stuck_client(gw, "stuck")
        try:
            while gw.statistics().buffered_bytes < 2 * MIB:  # past the transport's high water
                gw.push("user:stuck", PAYLOAD)
                await asyncio.sleep(0)  # one loop turn: the flush hands the frame over
            before = observed_pushes(gw)
            for _ in range(50):
                assert gw.push("user:stuck", PAYLOAD).delivered == 1
                await asyncio.sleep(0)
            assert observed_pushes(gw) == before + 50
        finally:
            await stuck.close()
