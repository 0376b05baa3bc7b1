"""Pattern 8: a thread on queue.Queue.get, and an executor job that outlives its caller."""

from __future__ import annotations

import queue

import pytest
from examples.leaks import thread_ports
from examples.leaks.chan import CLOSED, Closed
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks

TIMEOUT = CHECK / 4  # the caller's timeout in (b), well inside the check's wait


def test_leaky_daemon_thread_waits_for_a_close_that_never_comes() -> None:
    handled: list[str] = []
    jobs: queue.Queue[str | Closed] = queue.Queue()
    with pytest.raises(leaks.LeakError) as caught, leaks.check(timeout=CHECK):
        thread = thread_ports.start_job_thread_leaky(jobs, handled.append)
        jobs.put("a")  # the producer's last job; it forgets to close jobs
    try:
        (leak,) = caught.value.leaks
        assert (leak.kind, leak.name) == ("thread", "job-thread")
        assert leak.blocked_on is not None and "queue.Queue.get" in leak.blocked_on
        report = str(caught.value)
        assert_blocks_in(report, thread_ports.job_thread, "jobs.get()")
        assert_created_by(report, thread_ports.start_job_thread_leaky)
    finally:
        jobs.put(CLOSED)  # threads cannot be cancelled: close its channel to release it
        thread.join()
    assert handled == ["a"]


def test_owned_thread_is_closed_and_joined() -> None:
    handled: list[str] = []
    with leaks.check(timeout=CHECK), thread_ports.open_job_thread(handled.append) as jobs:
        jobs.put("a")
        jobs.put("b")
    assert handled == ["a", "b"]


async def test_leaky_executor_job_outlives_the_callers_timeout() -> None:
    upstream: queue.Queue[str] = queue.Queue()  # never answers until the test says so
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            with pytest.raises(TimeoutError):
                await thread_ports.fetch_leaky(upstream, timeout=TIMEOUT)
            # The caller has given up; its executor thread is still inside fetch_blocking.
    try:
        (leak,) = caught.value.leaks
        assert leak.kind == "thread"
        assert leak.blocked_on is not None and "queue.Queue.get" in leak.blocked_on
        report = str(caught.value)
        assert_blocks_in(report, thread_ports.fetch_blocking, "answer = upstream.get()")
        assert_created_by(report, thread_ports.fetch_leaky)
    finally:
        upstream.put("late answer")
        upstream.join()  # returns once the thread has taken it (microseconds; blocks the loop)


async def test_deadline_passed_down_ends_the_executor_job() -> None:
    upstream: queue.Queue[str] = queue.Queue()
    async with leaks.check(timeout=CHECK):
        # The thread's own deadline (TIMEOUT) elapses inside the call: nothing outlives it.
        assert await thread_ports.fetch_fixed(upstream, timeout=TIMEOUT) is None


async def test_deadline_passed_down_still_returns_the_answer() -> None:
    upstream: queue.Queue[str] = queue.Queue()
    upstream.put("answer")
    async with leaks.check(timeout=CHECK):
        assert await thread_ports.fetch_fixed(upstream, timeout=CHECK) == "answer"
