"""Pattern 8: thread ports, where a thread is the natural Python form of the goroutine.

A thread cannot be cancelled, so a thread blocked forever is a leak nobody can repair from the
outside: the only fixes are to wake it (close its channel) or to never let it block unbounded
(a deadline passed down into the blocking call).

(a) A thread on `queue.Queue.get`. Go::

        go func() {
            for job := range jobs { handle(job) }   // until close(jobs), which nobody calls
        }()

    `start_job_thread_leaky` starts it as a daemon thread, the usual Python way to "not hang at
    exit": the interpreter then simply abandons it, which hides the leak instead of fixing it.
    `open_job_thread` is the fix: the owner closes the channel (`CLOSED`) and joins the thread.

(b) An executor job that outlives the coroutine awaiting it. Go::

        func fetch(ctx context.Context) (string, error) {
            ch := make(chan string, 1)
            go func() { ch <- blockingFetch() }()   // no ctx: cannot be stopped
            select {
            case s := <-ch:
                return s, nil
            case <-ctx.Done():
                return "", ctx.Err()                // the goroutine keeps running
            }
        }

    `fetch_leaky` awaits `asyncio.to_thread` under a timeout. The timeout cancels the *await*,
    not the thread: the executor thread stays blocked in the upstream call, and the executor (and
    `loop.shutdown_default_executor()` at exit) waits for it. `fetch_fixed` passes the deadline
    down into the blocking call, as Go passes `ctx` (or sets `conn.SetDeadline`), so the thread
    ends on its own no later than the caller gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

from examples.leaks.chan import CLOSED, Closed

Handle = Callable[[str], None]


# (a) A thread on queue.Queue.get ---------------------------------------------------------------


def job_thread(jobs: queue.Queue[str | Closed], handle: Handle) -> None:
    """`for job := range jobs`: ends only when the producer closes `jobs`."""
    while (job := jobs.get()) is not CLOSED:  # LEAK: waits forever, nobody closes jobs
        handle(job)


def start_job_thread_leaky(jobs: queue.Queue[str | Closed], handle: Handle) -> threading.Thread:
    """Start a consumer thread nobody closes or joins (returned so a test can release it)."""
    thread = threading.Thread(
        target=job_thread, args=(jobs, handle), name="job-thread", daemon=True
    )
    thread.start()
    return thread


@contextlib.contextmanager
def open_job_thread(handle: Handle) -> Iterator[queue.Queue[str | Closed]]:
    """Fixed: a consumer thread that lives as long as the `with` block."""
    jobs: queue.Queue[str | Closed] = queue.Queue()
    thread = threading.Thread(target=job_thread, args=(jobs, handle), name="job-thread")
    thread.start()
    try:
        yield jobs
    finally:
        jobs.put(CLOSED)  # close(jobs)
        thread.join()  # and wait for the consumer to finish what is queued


# (b) An executor job outliving its caller ------------------------------------------------------


def fetch_blocking(upstream: queue.Queue[str]) -> str:
    """A blocking call with no deadline (a socket read, a driver call), here a queue."""
    answer = upstream.get()  # LEAK: still waiting here long after the caller gave up
    upstream.task_done()
    return answer


async def fetch_leaky(upstream: queue.Queue[str], *, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        return await asyncio.to_thread(fetch_blocking, upstream)  # the timeout abandons the thread


def fetch_blocking_until(upstream: queue.Queue[str], timeout: float) -> str | None:
    """The same call, given a deadline: returns None when the upstream has no answer in time."""
    try:
        answer = upstream.get(timeout=timeout)
    except queue.Empty:
        return None
    upstream.task_done()
    return answer


async def fetch_fixed(upstream: queue.Queue[str], *, timeout: float = 5.0) -> str | None:
    """Fixed: the deadline goes down into the thread, so the thread ends when the caller does.

    Trade-off: every blocking call on the path must accept a deadline (or a stop event it
    checks); where a library offers none, the thread cannot be bounded, only isolated.
    """
    return await asyncio.to_thread(fetch_blocking_until, upstream, timeout)
