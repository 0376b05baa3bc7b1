"""Pattern 4: a worker pool ranges over a task channel that the dispatcher forgets to close.

Go::

    func resizeAll(paths []string) []string {
        jobs := make(chan string)
        results := make(chan string)
        for i := 0; i < 3; i++ {
            go func() {
                for p := range jobs {      // never ends: jobs is never closed
                    results <- resize(p)
                }
            }()
        }
        go func() { for _, p := range paths { jobs <- p } }()  // forgot: close(jobs)
        var out []string
        for range paths { out = append(out, <-results) }
        return out                        // correct result, three goroutines leaked
    }

- `resize_all_leaky`: the port. Every job is done and the result is right, which is why this leak
  survives code review: the workers then wait forever in `jobs.get()`.
- `resize_all_fixed`: the dispatcher closes the channel (one `CLOSED` per worker, or
  `Queue.shutdown()` on 3.13+) and the workers belong to a `TaskGroup` that waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from examples.leaks.chan import CLOSED, Closed, fire_and_forget

Resize = Callable[[str], str]


async def resize_worker(
    jobs: asyncio.Queue[str | Closed], results: asyncio.Queue[str], resize: Resize
) -> None:
    """`for path := range jobs { results <- resize(path) }`."""
    while (path := await jobs.get()) is not CLOSED:  # LEAK: waits forever, jobs is never closed
        await results.put(resize(path))


async def resize_all_leaky(paths: list[str], resize: Resize, *, workers: int = 3) -> list[str]:
    jobs: asyncio.Queue[str | Closed] = asyncio.Queue()
    results: asyncio.Queue[str] = asyncio.Queue()
    for n in range(workers):
        fire_and_forget(
            asyncio.create_task(resize_worker(jobs, results, resize), name=f"resize-worker-{n}")
        )
    for path in paths:
        await jobs.put(path)
    # forgot: close(jobs)
    return sorted([await results.get() for _ in paths])


async def resize_all_fixed(paths: list[str], resize: Resize, *, workers: int = 3) -> list[str]:
    jobs: asyncio.Queue[str | Closed] = asyncio.Queue()
    results: asyncio.Queue[str] = asyncio.Queue()
    async with asyncio.TaskGroup() as pool:
        for n in range(workers):
            pool.create_task(resize_worker(jobs, results, resize), name=f"resize-worker-{n}")
        for path in paths:
            await jobs.put(path)
        for _ in range(workers):
            await jobs.put(CLOSED)  # close(jobs): every worker sees the end of the channel
    # The TaskGroup has waited for every worker, so every result is in `results`.
    return sorted(results.get_nowait() for _ in paths)
