"""Gateway memory per idle connection: RSS with N connections (hello done) minus empty.

    .venv/bin/python -m bench.gateway_memory [--conns 10000]

The gateway runs in this process (uvloop); the clients run in worker processes, so their
memory is not counted. Kernel socket buffers are not part of RSS. Goal (issue 4): <= 2 KiB
per idle connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json

from bench.gateway_harness import Pool, gateway_config, new_loop, rss_bytes
from tidegate.gateway import open_gateway


async def run(conns: int, workers: int) -> dict[str, float]:
    config = gateway_config(conns)
    pool = Pool(workers)
    try:
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
            gc.collect()
            full = rss_bytes()
            assert gw.connections() == conns
            await pool.close_all()
    finally:
        pool.stop()
    return {
        "conns": conns,
        "empty_rss_mib": empty / 2**20,
        "full_rss_mib": full / 2**20,
        "bytes_per_conn": (full - empty) / conns,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(run(args.conns, args.workers))
    print(
        f"{result['conns']:.0f} idle connections: {result['bytes_per_conn']:.0f} bytes each "
        f"(RSS {result['empty_rss_mib']:.1f} -> {result['full_rss_mib']:.1f} MiB)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
