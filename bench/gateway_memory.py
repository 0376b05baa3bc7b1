"""Gateway memory per idle connection: RSS with N connections (hello done) minus empty.

    .venv/bin/python -m bench.gateway_memory [--conns 10000] [--cluster]

The gateway runs in this process (uvloop); the clients run in worker processes, so their
memory is not counted. Kernel socket buffers are not part of RSS. Goal (issue 4): <= 2 KiB
per idle connection. With `--cluster` the gateway is a node on a local nats-server
(`--broker`): each connection's user is then also one broker subscription of the node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
from collections.abc import Iterator
from typing import Any

from bench.gateway_harness import Pool, gateway_config, new_loop, rss_bytes
from tidegate.gateway import Config, Gateway, open_gateway
from tidegate.gateway.natsd import NatsServer


@contextlib.contextmanager
def broker(cluster: bool) -> Iterator[str | None]:
    if not cluster:
        yield None
        return
    server = NatsServer().start()
    try:
        yield server.url
    finally:
        server.stop()


async def settled(gw: Gateway, conns: int) -> None:
    """With a broker: every user's subscription confirmed (they cost memory too)."""
    stats = gw.broker.statistics()
    while stats is not None and (stats.subscriptions != conns + 1 or stats.subscriptions_pending):
        await asyncio.sleep(0.05)
        stats = gw.broker.statistics()


async def run(conns: int, workers: int, cluster: bool) -> dict[str, Any]:
    pool = Pool(workers)
    try:
        with broker(cluster) as url:
            config = dataclasses.replace(gateway_config(conns), broker=url)
            result = await measure(config, conns, pool)
    finally:
        pool.stop()
    return {"conns": conns, "cluster": cluster, **result}


async def measure(config: Config, conns: int, pool: Pool) -> dict[str, float]:
    async with open_gateway(config) as gw:
        assert gw.tcp_address is not None
        # Warm up allocator pools and lazy imports so the baseline is not flattered.
        await pool.connect(gw.tcp_address, 200)
        await pool.close_all()
        for _ in range(200):  # the gateway sees the FINs within a few loop turns
            if not gw.connections():
                break
            await asyncio.sleep(0.05)
        gc.collect()
        empty = rss_bytes()
        await pool.connect(gw.tcp_address, conns)
        await settled(gw, conns)
        gc.collect()
        full = rss_bytes()
        assert gw.connections() == conns
        await pool.close_all()
    return {
        "empty_rss_mib": empty / 2**20,
        "full_rss_mib": full / 2**20,
        "bytes_per_conn": (full - empty) / conns,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cluster", action="store_true", help="a node on a local nats-server")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(run(args.conns, args.workers, args.cluster))
    mode = "cluster node" if result["cluster"] else "one process"
    print(
        f"{mode}, {result['conns']:.0f} idle connections: "
        f"{result['bytes_per_conn']:.0f} bytes each "
        f"(RSS {result['empty_rss_mib']:.1f} -> {result['full_rss_mib']:.1f} MiB)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
