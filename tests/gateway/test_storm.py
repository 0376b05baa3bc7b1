"""Hundreds of clients that reset, half-close or vanish: everything returns to baseline."""

from __future__ import annotations

import asyncio

from tidegate.gateway import open_gateway

from .helpers import Client, config, http_get, wait_until

PER_KIND = 60  # x 5 kinds = 300 clients


async def test_storm_of_misbehaving_clients_returns_to_baseline() -> None:
    # heartbeat 0.5 s -> idle timeout 1 s reaps the clients that vanish silently; both
    # timeouts leave room to connect all 300 clients first on a slow machine.
    cfg = config(admin=("127.0.0.1", 0), heartbeat=0.5, handshake_timeout=1.0)
    async with open_gateway(cfg) as gw:
        status, baseline = await http_get(gw.admin_address, "/_count")
        assert status == 200 and int(baseline) >= 1

        async def opened(n: int, kind: str) -> Client:
            client = await Client.hello(gw.tcp_address, f"{kind}{n % 7}")
            await client.join(f"room{n % 5}")
            return client

        resets = [await opened(n, "reset") for n in range(PER_KIND)]
        half = [await opened(n, "half") for n in range(PER_KIND)]
        silent = [await opened(n, "silent") for n in range(PER_KIND)]
        mute = [await Client.connect(gw.tcp_address) for _ in range(PER_KIND)]  # no hello
        torn = [await opened(n, "torn") for n in range(PER_KIND)]
        assert gw.statistics().connections == 5 * PER_KIND
        gw.push("all", "before the storm")

        for client in resets:
            client.reset()
        for client in half:
            client.writer.write_eof()
        for client in torn:
            client.writer.write(b'{"op":"join","ro')  # half a frame, then RST
            client.reset()
        # silent and mute just stop; the idle and handshake timeouts must reap them.

        async def closed_by_server(client: Client) -> None:
            try:
                while await client.reader.read(1 << 16):
                    pass
            except ConnectionResetError:
                pass

        await asyncio.wait_for(
            asyncio.gather(*(closed_by_server(c) for c in [*half, *silent, *mute])), 5.0
        )
        await wait_until(lambda: gw.statistics().connections == 0, what="connections to drain")
        await wait_until(lambda: gw.statistics().closing == 0, what="closing to finish")
        stats = gw.statistics()
        assert (stats.users, stats.rooms, stats.buffered_bytes) == (0, 0, 0)
        assert stats.disconnects["idle_timeout"] == PER_KIND
        assert stats.disconnects["handshake_timeout"] == PER_KIND
        assert sum(stats.disconnects.values()) == 5 * PER_KIND

        status, after = await http_get(gw.admin_address, "/_count")
        assert after == baseline
        for client in [*resets, *half, *silent, *mute, *torn]:
            await client.close()
