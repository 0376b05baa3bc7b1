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


async def test_running_shipper_ships_its_batch_when_cancelled() -> None:
    flushed: list[list[str]] = []
    async with (
        leaks.check(timeout=CHECK),
        idle_consumer.open_log_shipper(flushed.append, flush_every=CHECK * 10) as lines,
    ):
        lines.put_nowait("one line")
        await asyncio.sleep(0)  # one loop turn: the shipper starts and takes the line
        assert lines.empty() and flushed == []
    assert flushed == [["one line"]]  # its `finally` shipped the batch it was holding


async def test_ticker_flushes_on_schedule_under_steady_traffic() -> None:
    # A line arrives every quarter tick, so a timeout restarted per line would never expire.
    ticked = asyncio.Event()
    sent: list[str] = []
    shipped: list[str] = []

    def flush(batch: list[str]) -> None:
        shipped.extend(batch)
        assert shipped == sent[: len(shipped)]  # in order, nothing lost or repeated
        ticked.set()

    async with (
        leaks.check(timeout=CHECK),
        idle_consumer.open_log_shipper(flush, flush_every=FLUSH_EVERY) as lines,
        asyncio.timeout(100 * FLUSH_EVERY),
    ):
        while not ticked.is_set():
            sent.append(f"line {len(sent)}")
            lines.put_nowait(sent[-1])
            await asyncio.sleep(FLUSH_EVERY / 4)  # the traffic's pace, not a synchronisation
