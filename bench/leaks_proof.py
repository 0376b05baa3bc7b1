"""The proof of leak (``leaks.find(prove=True)``): what it costs, and how that grows.

1. 10k live tasks and 100 blocked forever (goal: classify all in <= 100 ms). "Live" two ways:
   - looping: tasks that wake on timers (a poller's ``while True: await sleep(...)``): no
     proof is needed, the loop's timers say they will run;
   - idle: tasks parked on a queue that a registry still holds (idle consumers, idle
     connections): suspended, so each needs the proof, which must find what holds it.
     This is the worst case for the proof.
2. Growth: with the number of idle tasks (the object graph around suspended tasks, which is
   what it walks), and with the rest of the heap (which it must not walk).
3. Memory: the peak the analysis allocates (tracemalloc), for 10k idle tasks.

Each figure is the median of ``--rounds`` proofs, each a first proof: what earlier rounds
proved is forgotten between rounds (a proven task stays proven, and would be skipped).
Every round checks the verdicts: exactly the blocked tasks proven.

Run: ``make bench ARGS='--only leaks_proof'`` or ``python -m bench.leaks_proof [--tasks N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from tidegate import leaks
from tidegate.leaks import _proof

try:
    import uvloop
except ImportError:  # pragma: no cover - no uvloop on Windows
    uvloop = None

REGISTRY: dict[int, asyncio.Queue[int]] = {}
HEAP: list[Any] = []


async def poll(period: float) -> None:
    while True:  # noqa: ASYNC110 - a poller's loop, woken by a timer each round
        await asyncio.sleep(period)


async def consume(queue: asyncio.Queue[int]) -> None:
    while True:
        await queue.get()


async def wait_forever() -> None:
    await asyncio.Event().wait()  # an event nobody else has


def start(live: int, blocked: int, shape: str) -> None:
    """Tasks held, as leaks are, only by the enclosing check() scope, which cancels them."""
    for n in range(live):
        if shape == "looping":
            asyncio.create_task(poll(60.0))  # noqa: RUF006
        else:
            queue = REGISTRY[n] = asyncio.Queue()
            asyncio.create_task(consume(queue))  # noqa: RUF006
    for _ in range(blocked):
        asyncio.create_task(wait_forever())  # noqa: RUF006


async def measure(
    live: int, blocked: int, shape: str, rounds: int, heap: int = 0
) -> dict[str, float]:
    """Medians of a first proof of every task (alone, and as ``find(prove=True)``, which also
    builds the records), with ``heap`` unrelated objects around."""
    HEAP[:] = [{"n": n} for n in range(heap)]
    async with leaks.check(timeout=60):  # its scope keeps the blocked tasks alive
        start(live, blocked, shape)
        await asyncio.sleep(0)
        proofs, finds, objects = [], [], 0
        me = asyncio.current_task()
        for _ in range(rounds):
            _proof._KEPT.waiters.clear()  # a first proof each round
            gc.collect()  # settle the heap before timing; the proof itself never collects
            tasks = [task for task in asyncio.all_tasks() if task is not me]
            began = time.perf_counter()
            proof = _proof.prove(tasks)
            proofs.append(time.perf_counter() - began)
            del tasks
            proven = sum(verdict == "proven" for verdict in proof.verdicts.values())
            if proven != blocked:
                raise AssertionError(f"{proven} proven, not {blocked}")
            objects = proof.objects
            _proof._KEPT.waiters.clear()
            began = time.perf_counter()
            records = leaks.find(prove=True, threads=False)
            finds.append(time.perf_counter() - began)
            if sum(record.verdict == "proven" for record in records) != blocked:
                raise AssertionError("find(prove=True) disagrees with the proof")
            del records
        await leaks.cancel_tasks(leaks.find(threads=False), timeout=60)
    REGISTRY.clear()
    HEAP.clear()
    return {
        "proof": statistics.median(proofs),
        "find": statistics.median(finds),
        "objects": objects,
    }


async def peak_memory(live: int, blocked: int) -> tuple[float, int]:
    async with leaks.check(timeout=60):
        start(live, blocked, "idle")
        await asyncio.sleep(0)
        _proof._KEPT.waiters.clear()
        me = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not me]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        proof = _proof.prove(tasks)
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        objects = proof.objects
        del tasks
        await leaks.cancel_tasks(leaks.find(threads=False), timeout=60)
    REGISTRY.clear()
    return peak, objects


def run(loop_name: str, coro: Any) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop" and uvloop is not None:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--blocked", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    loops = ["asyncio", "uvloop"] if uvloop is not None else ["asyncio"]
    n, b = args.tasks, args.blocked

    print(f"classify {n} live + {b} blocked tasks, median of {args.rounds} first proofs:")
    print("  (find(prove=True) also builds a record, with its stack, for every task)")
    for shape in ("looping", "idle"):
        for loop_name in loops:
            result = run(loop_name, measure(n, b, shape, args.rounds))
            print(
                f"  {shape:8s} {loop_name:8s} proof {result['proof'] * 1e3:7.1f} ms"
                f"  (goal <= 100 ms; {result['objects']:,} objects walked)"
                f"   find(prove=True) {result['find'] * 1e3:7.1f} ms"
            )

    print("growth with the suspended tasks' graph (idle tasks + 100 blocked, asyncio):")
    for live in (n // 10, n // 4, n // 2, n, 2 * n):
        result = run("asyncio", measure(live, b, "idle", args.rounds))
        per = result["proof"] / max(result["objects"], 1) * 1e6
        print(
            f"  {live:7,d} idle  proof {result['proof'] * 1e3:7.1f} ms  "
            f"{result['objects']:9,d} objects  {per:5.2f} us/object"
        )

    print(f"growth with the rest of the heap ({n} idle + {b} blocked, asyncio):")
    for heap in (0, 1_000_000, 3_000_000):
        result = run("asyncio", measure(n, b, "idle", args.rounds, heap=heap))
        print(f"  {heap:9,d} unrelated objects  proof {result['proof'] * 1e3:7.1f} ms")

    peak, objects = run("asyncio", peak_memory(n, b))
    print(
        f"memory: peak {peak / 2**20:.1f} MiB allocated by one proof of {n} idle + {b} blocked "
        f"({objects:,} objects, {peak / max(objects, 1):.0f} bytes/object)"
    )


if __name__ == "__main__":
    main()
