"""Pattern 3: consumers on a channel nobody writes or closes (for-range and for-select forms)."""

from __future__ import annotations

import asyncio

import pytest
from examples.leaks import idle_consumer
from examples.leaks.chan import Closed
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks

FLUSH_EVERY = CHECK / 10  # the for-select form's ticker: it ticks several times during the check


async def test_leaky_range_consumer_waits_for_a_close_that_never_comes() -> None:
    handled: list[str] = []
    jobs: asyncio.Queue[str | Closed] = asyncio.Queue()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            idle_consumer.start_job_consumer_leaky(jobs, handled.append)
            jobs.put_nowait("a")  # the producer's last job; it forgets close(jobs)
    try:
        (leak,) = caught.value.leaks
        assert leak.blocked_on is not None and "Queue.get" in leak.blocked_on
        report = str(caught.value)
        assert_blocks_in(report, idle_consumer.job_consumer, "await jobs.get()")
        assert_created_by(report, idle_consumer.start_job_consumer_leaky)
        assert handled == ["a"]
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def test_closed_channel_ends_the_range_consumer() -> None:
    handled: list[str] = []
    async with leaks.check(timeout=CHECK):
        await idle_consumer.consume_jobs(["a", "b"], handled.append)
    assert handled == ["a", "b"]


async def test_leaky_select_loop_keeps_ticking_forever() -> None:
    flushed: list[list[str]] = []
    lines: asyncio.Queue[str] = asyncio.Queue()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            idle_consumer.start_log_shipper_leaky(lines, flushed.append, flush_every=FLUSH_EVERY)
            lines.put_nowait("one line")  # then the writer goes away; no done case to select
    try:
        (leak,) = caught.value.leaks
        assert leak.name == "log-shipper"
        report = str(caught.value)
        assert_blocks_in(report, idle_consumer.log_shipper, "line = await lines.get()")
        assert_created_by(report, idle_consumer.start_log_shipper_leaky)
        assert flushed == [["one line"]]  # it ticked and flushed: alive and busy, never done
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def test_owned_select_loop_is_cancelled_and_flushes() -> None:
    flushed: list[list[str]] = []
    async with (
        leaks.check(timeout=CHECK),
        idle_consumer.open_log_shipper(flushed.append, flush_every=CHECK) as lines,
    ):
        lines.put_nowait("one line")
        lines.put_nowait("two lines")
    assert flushed == [["one line", "two lines"]]  # cancellation shipped what was queued
