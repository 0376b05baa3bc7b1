"""Unicast latency at many connections and a steady push rate, through the UDP ingress.

    .venv/bin/python -m bench.gateway_latency [--conns 10000] [--rate 1000] [--seconds 5]

Each push goes to one random user as an unsigned UDP datagram whose data carries the send
time; the client process that owns the user computes receive time - send time (both
`time.monotonic()`, one clock system-wide). Goal (issue 4): p99 <= 2 ms at 10k connections
and 1k pushes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import time

import msgspec

from bench.gateway_harness import Pool, gateway_config, new_loop, percentile
from tidegate.gateway import open_gateway


async def run(conns: int, rate: float, seconds: float, workers: int) -> dict[str, float]:
    config = gateway_config(conns, udp=True)
    pool = Pool(workers)
    try:
        async with open_gateway(config) as gw:
            assert gw.tcp_address is not None and gw.udp_address is not None
            await pool.connect(gw.tcp_address, conns)
            total = int(rate * seconds)
            rng = random.Random(4)
            targets = [rng.randrange(conns) for _ in range(total)]
            bounds = []
            first = 0
            for share in pool.shares:
                bounds.append((first, first + share))
                first += share
            per_worker = [sum(lo <= t < hi for t in targets) for lo, hi in bounds]
            await pool.arm_total(per_worker, latency=True)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            started = loop.time()
            encode = msgspec.json.encode
            for i, user in enumerate(targets):
                delay = started + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = encode({"to": f"u:{user}", "data": [time.monotonic(), i]})
                sock.sendto(body.replace(b'"u:', b'"user:u', 1), gw.udp_address)
            sock.close()
            _, latencies = await pool.wait_done()
            assert len(latencies) == total, (len(latencies), total)
    finally:
        pool.stop()
    ms = [x * 1000 for x in latencies]
    return {
        "conns": conns,
        "rate": rate,
        "pushes": total,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(run(args.conns, args.rate, args.seconds, args.workers))
    print(
        f"{result['conns']:.0f} conns, {result['rate']:.0f} pushes/s: "
        f"p50 {result['p50_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, "
        f"p99 {result['p99_ms']:.3f} ms, max {result['max_ms']:.3f} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
