"""Unicast latency across nodes: a push entering node A for a user connected to node B,
through a local nats-server.

    .venv/bin/python -m bench.cluster_latency [--conns 10000] [--rate 1000] [--seconds 5]

Two `tidegate serve --broker` processes on one nats-server. All clients are connected to
node B (so B holds one subscription per user); pushes go to random users as unsigned UDP
datagrams whose data carries the send time, at `--rate` per second:

- **cross**: into node A, so every push crosses A -> nats-server -> B;
- **direct**: into node B itself (B delivers locally and publishes for nobody else), the
  same gateway's latency without the hop, in the same run.

The client process that owns the user computes receive time - send time (both
`time.monotonic()`, one clock system-wide). Goal (issue 12): cross p99 <= 5 ms at 1k
pushes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import time
from typing import Any

import msgspec

from bench.cluster_harness import Node, get_json, serve
from bench.gateway_harness import Pool, new_loop, percentile, rss_bytes
from tidegate.gateway.natsd import NatsServer


async def subscriptions(node: Node) -> tuple[int, int]:
    counters = (await get_json(node.url("admin") + "/debug/vars"))["counters"]
    return counters["broker_subscriptions"], counters["broker_subscriptions_pending"]


async def pushes(
    pool: Pool, into: tuple[str, int], conns: int, rate: float, seconds: float, seed: int
) -> list[float]:
    total = int(rate * seconds)
    rng = random.Random(seed)
    targets = [rng.randrange(conns) for _ in range(total)]
    bounds = []
    first = 0
    for share in pool.shares:
        bounds.append((first, first + share))
        first += share
    await pool.arm_total([sum(lo <= t < hi for t in targets) for lo, hi in bounds], latency=True)
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
        sock.sendto(body.replace(b'"u:', b'"user:u', 1), into)
    sock.close()
    _, latencies = await pool.wait_done()
    assert len(latencies) == total, (len(latencies), total)
    return [x * 1000 for x in latencies]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


async def run(conns: int, rate: float, seconds: float) -> dict[str, Any]:
    nats = NatsServer().start()
    pool = Pool(2)
    try:
        async with (
            serve("--broker", nats.url, conns=0) as a,
            serve("--broker", nats.url, conns=conns) as b,
        ):
            assert nats.pid is not None
            nats_before = rss_bytes(nats.pid)
            await pool.connect(b.addresses["tcp"], conns)
            deadline = time.monotonic() + 60
            while await subscriptions(b) != (conns + 1, 0):  # its users and all, confirmed
                assert time.monotonic() < deadline, await subscriptions(b)
                await asyncio.sleep(0.1)
            # What the server holds per subscription (node B's users).
            nats_per_sub = (rss_bytes(nats.pid) - nats_before) / conns
            cross = await pushes(pool, a.addresses["udp"], conns, rate, seconds, seed=4)
            direct = await pushes(pool, b.addresses["udp"], conns, rate, seconds, seed=5)
            await pool.close_all()
    finally:
        pool.stop()
        nats.stop()
    return {
        "conns": conns,
        "rate": rate,
        "pushes": int(rate * seconds),
        "cross": summary(cross),
        "direct": summary(direct),
        "nats_server_bytes_per_subscription": nats_per_sub,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(run(args.conns, args.rate, args.seconds))
    for name in ("cross", "direct"):
        r = result[name]
        print(
            f"{name:>6}: {result['conns']} conns on node B, {result['rate']:.0f} pushes/s: "
            f"p50 {r['p50_ms']:.3f} ms, p90 {r['p90_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
            f"max {r['max_ms']:.3f} ms"
        )
    print(
        f"nats-server RSS per subscription (node B's {result['conns']} users): "
        f"{result['nats_server_bytes_per_subscription']:.0f} bytes"
    )
    print(f"goal: cross p99 <= 5 ms: {'met' if result['cross']['p99_ms'] <= 5 else 'NOT met'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
