"""Pattern 3: a consumer loops on a channel that no writer will ever write to or close.

Go, the `for range` form and the `for-select` form::

    go func() {
        for job := range jobs {   // ends only when someone calls close(jobs)
            handle(job)
        }
    }()

    go func() {
        var batch []string
        for {
            select {              // no `case <-ctx.Done(): return`, so it never ends
            case line := <-lines:
                batch = append(batch, line)
            case <-tick.C:
                flush(batch)
                batch = nil
            }
        }
    }()

- `start_job_consumer_leaky` / `start_log_shipper_leaky`: the ports. When the producer is done
  (or was never started) the consumer waits forever in `Queue.get`; the shipper additionally
  wakes up every `flush_every` seconds, so it even looks busy.
- `consume_jobs` (fixed `for range`): the producer closes the channel. On Python 3.11/3.12 that is
  a `CLOSED` sentinel; on 3.13+ `Queue.shutdown()` does it (getters get `QueueShutDown`).
- `open_log_shipper` (fixed `for-select`): Python's `ctx.Done()` is cancellation; the shipper is
  owned by an `async with` block that cancels it on exit, and flushes what it holds when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from examples.leaks.chan import CLOSED, Closed, fire_and_forget

Handle = Callable[[str], None]
Flush = Callable[[list[str]], None]


async def job_consumer(jobs: asyncio.Queue[str | Closed], handle: Handle) -> None:
    """`for job := range jobs`: ends only when the producer closes `jobs`."""
    while (job := await jobs.get()) is not CLOSED:  # LEAK: waits forever if nobody closes jobs
        handle(job)


def start_job_consumer_leaky(jobs: asyncio.Queue[str | Closed], handle: Handle) -> None:
    fire_and_forget(asyncio.create_task(job_consumer(jobs, handle), name="job-consumer"))


async def consume_jobs(jobs_to_do: list[str], handle: Handle) -> None:
    """Fixed: the producer closes the channel when done, and waits for the consumer."""
    jobs: asyncio.Queue[str | Closed] = asyncio.Queue()
    async with asyncio.TaskGroup() as owner:
        owner.create_task(job_consumer(jobs, handle), name="job-consumer")
        for job in jobs_to_do:
            await jobs.put(job)
        await jobs.put(CLOSED)  # close(jobs)


async def log_shipper(lines: asyncio.Queue[str], flush: Flush, *, flush_every: float) -> None:
    """`for { select { case line := <-lines: ...; case <-tick.C: flush } }`, no way out."""
    batch: list[str] = []
    # A ticker fires on its own schedule, whatever the traffic: each wait ends at the next tick,
    # not `flush_every` after the last line (which a steady trickle would keep pushing back).
    next_tick = asyncio.get_running_loop().time() + flush_every
    try:
        while True:
            try:
                async with asyncio.timeout_at(next_tick):
                    line = await lines.get()  # LEAK: waits here forever, between ticks
            except TimeoutError:  # the tick
                next_tick += flush_every
                if batch:
                    flush(batch)
                    batch = []
            else:
                batch.append(line)
    finally:  # only reached when cancelled: ship what is left (the fixed version relies on it)
        while not lines.empty():
            batch.append(lines.get_nowait())
        if batch:
            flush(batch)


def start_log_shipper_leaky(lines: asyncio.Queue[str], flush: Flush, *, flush_every: float) -> None:
    fire_and_forget(
        asyncio.create_task(log_shipper(lines, flush, flush_every=flush_every), name="log-shipper")
    )


@contextlib.asynccontextmanager
async def open_log_shipper(
    flush: Flush, *, flush_every: float
) -> AsyncIterator[asyncio.Queue[str]]:
    """Fixed: the shipper lives as long as the `async with` block (cancellation is ctx.Done())."""
    lines: asyncio.Queue[str] = asyncio.Queue()
    async with asyncio.TaskGroup() as owner:
        shipper = owner.create_task(
            log_shipper(lines, flush, flush_every=flush_every), name="log-shipper"
        )
        try:
            yield lines
        finally:
            shipper.cancel()
    # A task cancelled before its first step never runs its body (nor its `finally`), so lines
    # queued right before the exit may still be here: ship them too.
    if not lines.empty():
        flush([lines.get_nowait() for _ in range(lines.qsize())])
