"""Broadcast fan-out and burst coalescing, against a raw uvloop write loop in the same run.

    .venv/bin/python -m bench.gateway_broadcast [--conns 1000,10000] [--deliveries 300000]
                                                [--burst 50] [--repeat 5]

For each connection count, in one run and over the same client processes, each run sending
enough messages for about `--deliveries` deliveries (at least one burst):
- gateway, steady: one `push("all")` per loop turn (no coalescing possible);
- gateway, burst: `--burst` pushes per loop turn (several frames per connection per write);
- raw: `for transport in transports: transport.write(frame)` over the gateway's own
  sockets, one write per message (encoding the frame once per message, as the gateway does);
- raw joined: each message of a burst appended to a plain per-socket list, then each list
  joined and written once: one write per socket per burst, the ceiling of per-connection
  coalescing with no limits, policy or bookkeeping.
The rate is logical deliveries per second, from the first push until the last client has
read its last line. Goals (issue 4): steady/raw >= 0.9, burst/raw >= 3; burst/joined says how
close the gateway's coalescing comes to the machine's limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import msgspec

from bench.gateway_harness import Pool, gateway_config, new_loop
from tidegate.gateway import open_gateway
from tidegate.protocol import encode_msg

PAYLOAD = {"text": "x" * 64}


REPEAT = 5


async def timed(pool: Pool, n: int, messages: int, send: Callable[[], Awaitable[None]]) -> float:
    await pool.arm(messages)
    started = time.monotonic()
    await send()
    finished, _ = await pool.wait_done()
    return n * messages / (finished - started)


async def run(
    n: int, deliveries: int, burst_size: int, pool: Pool, repeat: int
) -> dict[str, float]:
    bursts = max(1, deliveries // (n * burst_size))
    messages = bursts * burst_size
    config = gateway_config(n)
    async with open_gateway(config) as gw:
        assert gw.tcp_address is not None
        await pool.connect(gw.tcp_address, n)
        # The raw loop writes to the very same sockets (the gateway's transports), so both
        # sides share clients, kernel state and noise; runs are interleaved for the same reason.
        transports = [sink.transport for sink in gw.registry.everyone]  # type: ignore[attr-defined]
        data_json = msgspec.json.encode(PAYLOAD)

        def raw_id(i: int) -> str:
            return f"{0xC0FFEE00 + i:08x}-{i:x}"  # as long as the gateway's own ids

        async def steady() -> None:
            for _ in range(messages):
                gw.push("all", PAYLOAD)
                await asyncio.sleep(0)  # the flush runs before we push again

        async def burst() -> None:
            for _ in range(bursts):
                for _ in range(burst_size):
                    gw.push("all", PAYLOAD)
                await asyncio.sleep(0)

        async def raw() -> None:
            for i in range(messages):
                frame = encode_msg(to="all", id=raw_id(i), data_json=data_json)
                for transport in transports:
                    transport.write(frame)
                await asyncio.sleep(0)

        async def raw_joined() -> None:
            for b in range(bursts):
                pending: list[list[bytes]] = [[] for _ in transports]
                for i in range(burst_size):
                    frame = encode_msg(to="all", id=raw_id(b * burst_size + i), data_json=data_json)
                    for frames in pending:
                        frames.append(frame)
                for transport, frames in zip(transports, pending, strict=True):
                    transport.write(b"".join(frames))
                await asyncio.sleep(0)

        rates: dict[str, list[float]] = {
            "raw": [],
            "raw_joined": [],
            "gateway_steady": [],
            "gateway_burst": [],
        }
        for _ in range(repeat):
            rates["raw"].append(await timed(pool, n, messages, raw))
            rates["raw_joined"].append(await timed(pool, n, messages, raw_joined))
            rates["gateway_steady"].append(await timed(pool, n, messages, steady))
            rates["gateway_burst"].append(await timed(pool, n, messages, burst))
        await pool.close_all()
    print(f"{n} conns, runs:", {k: [round(v) for v in vs] for k, vs in rates.items()})
    result: dict[str, float] = {
        "conns": n,
        "messages": messages,
        "burst": burst_size,
        "repeat": repeat,
    }
    result.update({name: statistics.median(values) for name, values in rates.items()})
    pairs = zip(rates["gateway_steady"], rates["raw"], strict=True)
    result["steady_ratio"] = statistics.median(g / r for g, r in pairs)
    pairs = zip(rates["gateway_burst"], rates["raw"], strict=True)
    result["burst_ratio"] = statistics.median(g / r for g, r in pairs)
    pairs = zip(rates["gateway_burst"], rates["raw_joined"], strict=True)
    result["burst_vs_joined"] = statistics.median(g / r for g, r in pairs)
    return result


async def main_async(
    conns: list[int], deliveries: int, burst: int, workers: int, repeat: int
) -> list[dict[str, float]]:
    pool = Pool(workers)
    try:
        return [await run(n, deliveries, burst, pool, repeat) for n in conns]
    finally:
        pool.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", default="1000,10000")
    parser.add_argument("--deliveries", type=int, default=300_000, help="per run, about")
    parser.add_argument("--burst", type=int, default=50, help="pushes per loop turn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=REPEAT, help="median of this many runs")
    args = parser.parse_args(argv)
    conns = [int(c) for c in args.conns.split(",")]
    with asyncio.Runner(loop_factory=new_loop) as runner:
        results = runner.run(
            main_async(conns, args.deliveries, args.burst, args.workers, args.repeat)
        )
    print(
        f"{'conns':>6} {'raw/s':>11} {'steady/s':>11} {'ratio':>6} {'burst/s':>11} {'ratio':>6}"
        f" {'joined/s':>11} {'burst/joined':>12}"
    )
    for r in results:
        print(
            f"{r['conns']:>6.0f} {r['raw']:>11,.0f} {r['gateway_steady']:>11,.0f} "
            f"{r['steady_ratio']:>6.2f} {r['gateway_burst']:>11,.0f} {r['burst_ratio']:>6.2f}"
            f" {r['raw_joined']:>11,.0f} {r['burst_vs_joined']:>12.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
