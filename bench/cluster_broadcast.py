"""Broadcast through more than one process: `--workers 2` against one process, and the cost
of the broker on one node, on the same total connections.

    .venv/bin/python -m bench.cluster_broadcast [--conns 4000] [--messages 1000]
                                                [--batch 50] [--repeat 3]

Three ways to serve the same clients, each a real `tidegate serve` process tree, in one run,
over the same client processes, interleaved:

- **one**: `tidegate serve` (in-process broker: the default);
- **one+nats**: `tidegate serve --broker nats://...` on a local nats-server (one node);
- **workers2**: `tidegate serve --workers 2` (two workers sharing the ports, their own
  nats-server).

The bench process posts `--messages` pushes to `all` through the HTTP ingress, in batches of
`--batch` per request; the rate is deliveries (frames read by clients) per second, from the
first request until the last client has read its last line. Client connections live in two
client processes; nothing is pinned (two workers need both cores), so the clients compete
with the servers for this machine's cores: the CPU seconds each side used are measured
(/proc) and printed, and "per server CPU second" divides the deliveries by the servers' CPU
time alone (workers, supervisor and nats-server). Goal (issue 12): workers2 >= 1.7x one on 2
cores, with the clients' cost accounted for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from bench.cluster_harness import Node, cpu_seconds, serve
from bench.gateway_harness import Pool, new_loop
from tidegate.gateway.natsd import NatsServer

PAYLOAD = {"text": "x" * 64}
MODES = ("one", "one+nats", "workers2")


async def run_once(
    node: Node, pool: Pool, conns: int, messages: int, batch: int
) -> dict[str, float]:
    client_pids = [worker.process.pid for worker in pool.workers]
    await pool.arm(messages)
    server_cpu = cpu_seconds(node.pids)
    client_cpu = cpu_seconds(client_pids)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for first in range(0, messages, batch):
            items = [{"to": "all", "data": PAYLOAD} for _ in range(min(batch, messages - first))]
            async with session.post(node.url("http") + "/v1/push", json=items) as response:
                assert response.status == 200, await response.text()
                await response.read()
    finished, _ = await pool.wait_done()
    elapsed = finished - started
    deliveries = conns * messages
    server_cpu = cpu_seconds(node.pids) - server_cpu
    return {
        "rate": deliveries / elapsed,
        "seconds": elapsed,
        "server_cpu": server_cpu,
        "client_cpu": cpu_seconds(client_pids) - client_cpu,
        "per_server_cpu": deliveries / server_cpu,
    }


async def main_async(conns: int, messages: int, batch: int, repeat: int) -> dict[str, Any]:
    nats = NatsServer().start()
    pool = Pool(2, pin=False)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        for _ in range(repeat):
            for mode in MODES:
                flags = ("--broker", nats.url) if mode == "one+nats" else ()
                workers = 2 if mode == "workers2" else 1
                async with serve(*flags, conns=conns, workers=workers) as node:
                    if mode == "one+nats":
                        node.pids.append(nats.pid or 0)
                    await pool.connect(node.addresses["tcp"], conns)
                    await asyncio.sleep(0.5)  # subscriptions confirmed, canaries settled
                    runs[mode].append(await run_once(node, pool, conns, messages, batch))
                    await pool.close_all()
    finally:
        pool.stop()
        nats.stop()
    result: dict[str, Any] = {"conns": conns, "messages": messages, "batch": batch}
    for mode, values in runs.items():
        result[mode] = {key: statistics.median(v[key] for v in values) for key in values[0]}
        print(mode, "runs:", [round(v["rate"]) for v in values], flush=True)
    pairs = zip(runs["workers2"], runs["one"], strict=True)
    result["workers2_vs_one"] = statistics.median(w["rate"] / o["rate"] for w, o in pairs)
    pairs = zip(runs["workers2"], runs["one"], strict=True)
    result["workers2_vs_one_per_server_cpu"] = statistics.median(
        w["per_server_cpu"] / o["per_server_cpu"] for w, o in pairs
    )
    pairs = zip(runs["one+nats"], runs["one"], strict=True)
    result["nats_vs_one"] = statistics.median(n["rate"] / o["rate"] for n, o in pairs)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=4000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50, help="pushes per HTTP request")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(main_async(args.conns, args.messages, args.batch, args.repeat))
    print(
        f"{'mode':>9} {'deliveries/s':>13} {'server cpu s':>12} {'client cpu s':>12}"
        f" {'per server cpu s':>16}"
    )
    for mode in MODES:
        r = result[mode]
        print(
            f"{mode:>9} {r['rate']:>13,.0f} {r['server_cpu']:>12.2f} {r['client_cpu']:>12.2f}"
            f" {r['per_server_cpu']:>16,.0f}"
        )
    print(
        f"workers2 / one: {result['workers2_vs_one']:.2f}x (goal >= 1.7x); per server CPU "
        f"second: {result['workers2_vs_one_per_server_cpu']:.2f}x; "
        f"one+nats / one: {result['nats_vs_one']:.2f}x"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
