"""tidegate.leaks costs, measured in one run so the ratios compare like with like.

1. Spawn: 100k ``create_task`` + await, plain asyncio vs creation tracking on
   inside a ``check()`` scope (goal: <= 1.3x).
2. A clean ``check()`` exit while 10k tasks live outside the scope (goal: <= 5 ms).
3. ``snapshot()`` and both report formats over 10k blocked tasks.

Run: ``make bench`` or ``python -m bench.leaks_bench [--tasks N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from tidegate import leaks


async def noop() -> None:
    return None


async def spawn_and_await(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n // 100):
        tasks = [asyncio.create_task(noop()) for _ in range(100)]
        for task in tasks:
            await task
    return time.perf_counter() - start


async def spawn_plain(n: int) -> float:
    leaks.untrack()
    return await spawn_and_await(n)


async def spawn_tracked(n: int) -> float:
    leaks.track()
    async with leaks.check(timeout=5):
        return await spawn_and_await(n)


def best_of(rounds: int, make: Callable[[], Awaitable[float]]) -> float:
    return min(asyncio.run(make()) for _ in range(rounds))  # type: ignore[arg-type]


async def clean_check_with_outsiders(outsiders: int, repeats: int) -> list[float]:
    release = asyncio.Event()
    parked = [asyncio.create_task(release.wait()) for _ in range(outsiders)]
    await asyncio.sleep(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        async with leaks.check():
            pass
        times.append(time.perf_counter() - start)
    release.set()
    await asyncio.gather(*parked)
    return times


async def blocked_worker(q: asyncio.Queue[int]) -> None:
    await q.put(1)


async def dump_costs(n: int) -> dict[str, float]:
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    q.put_nowait(0)
    tasks = [asyncio.create_task(blocked_worker(q)) for _ in range(n)]
    await asyncio.sleep(0)
    out: dict[str, float] = {}
    start = time.perf_counter()
    records = leaks.snapshot()
    out["snapshot"] = time.perf_counter() - start
    start = time.perf_counter()
    full = leaks.format_dump(records)
    out["format_dump (debug=2)"] = time.perf_counter() - start
    start = time.perf_counter()
    grouped = leaks.format_grouped(records)
    out["format_grouped (debug=1)"] = time.perf_counter() - start
    out["_dump_kib"] = len(full) / 1024
    out["_grouped_lines"] = grouped.count("\n")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--outsiders", type=int, default=10_000)
    args = parser.parse_args(argv)

    plain, tracked = [], []
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        plain.append(asyncio.run(spawn_plain(args.tasks)))
        tracked.append(asyncio.run(spawn_tracked(args.tasks)))
    p, t = min(plain), min(tracked)
    print(f"spawn {args.tasks} tasks + await (best of {args.rounds}):")
    print(f"  plain asyncio      {p * 1e3:8.1f} ms  ({p / args.tasks * 1e6:.2f} us/task)")
    print(f"  tracked, in check  {t * 1e3:8.1f} ms  ({t / args.tasks * 1e6:.2f} us/task)")
    print(f"  ratio              {t / p:8.2f}x   (goal <= 1.3x)")

    times = asyncio.run(clean_check_with_outsiders(args.outsiders, 50))
    print(f"clean check() with {args.outsiders} live tasks outside the scope:")
    print(
        f"  median {statistics.median(times) * 1e3:.3f} ms, max {max(times) * 1e3:.3f} ms"
        "   (goal <= 5 ms)"
    )

    costs = asyncio.run(dump_costs(args.outsiders))
    print(f"{args.outsiders} tasks blocked on asyncio.Queue.put:")
    for name, value in costs.items():
        if not name.startswith("_"):
            print(f"  {name:26s} {value * 1e3:8.1f} ms")
    print(
        f"  debug=2 dump {costs['_dump_kib']:.0f} KiB; "
        f"debug=1 grouped {costs['_grouped_lines']:.0f} lines"
    )


if __name__ == "__main__":
    main()
