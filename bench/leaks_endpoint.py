"""``GET /debug/tasks/leaked`` under load: what one answer costs, and what a flood of
requests costs the loop (the proof is shared, so it must stay bounded).

With 10k live tasks idle on queues a registry holds (each needs the proof: the worst case of
``bench.leaks_proof``) and 100 blocked forever, served by ``aiohttp_app()`` on loopback:

1. one answer that takes a proof (the first), and one that shares it: the time of the call;
2. a flood: ``--clients`` clients ask again as soon as answered, for ``--seconds``; counted
   from the answers: requests served, proofs taken during the flood (each answer names its
   proof; the one taken before it is left out), the loop's time spent in them (the bound is
   one proof of d seconds per 20 d: 5% over time, more in a window that catches a proof
   whole), and the worst stall a 10 ms ticker saw (one proof).

Run: ``make bench ARGS='--only leaks_endpoint'`` or ``python -m bench.leaks_endpoint``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from typing import Any

import aiohttp
from aiohttp import web

from tidegate import leaks
from tidegate.leaks import _proof
from tidegate.leaks.endpoints import ROUTES, aiohttp_app

REGISTRY: dict[int, asyncio.Queue[int]] = {}
PROOF = re.compile(r"^proof (\d+): ([0-9.]+) ms", re.M)


async def consume(queue: asyncio.Queue[int]) -> None:
    while True:
        await queue.get()


async def wait_forever() -> None:
    await asyncio.Event().wait()  # an event nobody else has


def start(live: int, blocked: int) -> None:
    """Tasks held, as leaks are, only by the enclosing check() scope, which cancels them."""
    for n in range(live):
        queue = REGISTRY[n] = asyncio.Queue()
        asyncio.create_task(consume(queue))  # noqa: RUF006
    for _ in range(blocked):
        asyncio.create_task(wait_forever())  # noqa: RUF006


async def ticker(stop: asyncio.Event, worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        began = loop.time()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], loop.time() - began - 0.01)


async def flood(url: str, clients: int, seconds: float, earlier: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    proofs: dict[int, float] = {}
    served = [0]
    connector = aiohttp.TCPConnector(limit=clients)

    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while loop.time() < end:
                async with session.get(url) as response:
                    text = await response.text()
                match = PROOF.search(text)
                if response.status != 200 or match is None:
                    raise AssertionError(f"{response.status}: {text[:200]}")
                proofs[int(match[1])] = float(match[2]) / 1e3
                served[0] += 1

        stop, worst = asyncio.Event(), [0.0]
        began = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            tick = group.create_task(ticker(stop, worst))
            await asyncio.gather(*(client() for _ in range(clients)))
            stop.set()
            await tick
        wall = time.perf_counter() - began
    during = {number: spent for number, spent in proofs.items() if number > earlier}
    return {
        "served": served[0],
        "proofs": len(during),
        "proof_seconds": sum(during.values()),
        "longest": max(during.values(), default=0.0),
        "wall": wall,
        "worst_stall": worst[0],
    }


async def measure(live: int, blocked: int, clients: int, seconds: float) -> dict[str, Any]:
    leaked = ROUTES["/debug/tasks/leaked"]
    async with leaks.check(timeout=60):
        start(live, blocked)
        await asyncio.sleep(0)
        _proof._KEPT.waiters.clear()
        began = time.perf_counter()
        first = leaked({})
        first_seconds = time.perf_counter() - began
        if not first.text.startswith(f"total: {blocked} tasks proven"):
            raise AssertionError(first.text[:300])
        shared = []
        for _ in range(20):
            began = time.perf_counter()
            leaked({})
            shared.append(time.perf_counter() - began)
        runner = web.AppRunner(aiohttp_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}/debug/tasks/leaked"
            earlier = int(PROOF.search(first.text)[1])  # type: ignore[index]
            result = await flood(url, clients, seconds, earlier)
        finally:
            await runner.cleanup()
        await leaks.cancel_tasks(leaks.find(threads=False), timeout=60)
    REGISTRY.clear()
    head = [
        line for line in first.text.splitlines()[:4] if line.startswith(("proof", "incomplete"))
    ]
    return {"first": first_seconds, "shared": statistics.median(shared), "head": head, **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--blocked", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    r = asyncio.run(measure(args.tasks, args.blocked, args.clients, args.seconds))
    print(f"/debug/tasks/leaked with {args.tasks} idle + {args.blocked} blocked tasks (asyncio):")
    for line in r["head"]:
        print(f"  first answer: {line}")
    print(
        f"  an answer with a proof {r['first'] * 1e3:7.1f} ms;"
        f" sharing it {r['shared'] * 1e3:7.2f} ms"
    )
    share = r["proof_seconds"] / r["wall"]
    print(
        f"  flood of {args.clients} clients for {r['wall']:.1f}s: {r['served']} answers"
        f" ({r['served'] / r['wall']:.0f}/s) from {r['proofs']} proofs taken during it (longest"
        f" {r['longest'] * 1e3:.0f} ms), which held the loop {r['proof_seconds'] * 1e3:.0f} ms,"
        f" {share:.1%} of the time (bound over time: 5%); worst stall of a 10 ms ticker"
        f" {r['worst_stall'] * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
