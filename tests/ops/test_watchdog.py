"""Loop watchdog: a blocked loop is caught in the act, from another thread, and reported once.

Timeline of a block (THRESHOLD = 50 ms, monitor polls every 10 ms): the loop ticks, then
`block_the_loop` sleeps 150 ms in the loop thread; from ~50 ms on the monitor sees no tick and
takes the loop thread's stack; when the sleep ends, the next tick records the block's length.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client.exposition import generate_latest

from tidegate.ops.metrics import OpsMetrics
from tidegate.ops.watchdog import Watchdog, open_watchdog

INTERVAL = 0.01
THRESHOLD = 0.05


def block_the_loop() -> None:
    time.sleep(THRESHOLD * 3)  # the bug under test: blocking I/O in a coroutine


def other_blocker() -> None:
    time.sleep(THRESHOLD * 3)


class Lags:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, amount: float, /) -> None:
        self.seen.append(amount)


async def test_block_is_recorded_with_its_site(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tidegate.ops.watchdog")
    lags = Lags()
    async with open_watchdog(interval=INTERVAL, threshold=THRESHOLD, lag_histogram=lags) as dog:
        await dog.wait_ticking()
        before = dog.statistics()["blocks_total"]  # a loaded machine may stall us anyway
        block_the_loop()
        block = await dog.wait_blocks(before + 1)

        assert block.function == "block_the_loop"
        assert block.site.startswith(f"{__file__}:")
        assert any("block_the_loop" in line for line in block.stack)
        assert block.duration >= THRESHOLD
        assert block in dog.worst_blocks()
        assert max(lags.seen) >= THRESHOLD

    messages = [r.getMessage() for r in caplog.records if r.name == "tidegate.ops.watchdog"]
    ours = [m for m in messages if " in block_the_loop;" in m]
    assert len(ours) == 1
    assert "event loop blocked" in ours[0]


async def test_logged_once_per_site_and_worst_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tidegate.ops.watchdog")
    async with open_watchdog(interval=INTERVAL, threshold=THRESHOLD, keep=2) as dog:
        await dog.wait_ticking()
        for blocker in (block_the_loop, block_the_loop, other_blocker):
            before = dog.statistics()["blocks_total"]
            blocker()
            assert (await dog.wait_blocks(before + 1)).function == blocker.__name__
        stats = dog.statistics()

    assert stats["blocks_total"] >= 3
    assert len(stats["worst_blocks"]) == 2  # keep=2
    durations = [b["duration"] for b in stats["worst_blocks"]]
    assert durations == sorted(durations, reverse=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "tidegate.ops.watchdog"]
    # block_the_loop blocked twice but is logged once; other_blocker once.
    assert sum(" in block_the_loop;" in m for m in messages) == 1
    assert sum(" in other_blocker;" in m for m in messages) == 1


async def test_lag_goes_into_the_metrics_histogram() -> None:
    metrics = OpsMetrics(dict)
    async with open_watchdog(
        interval=INTERVAL, threshold=1.0, lag_histogram=metrics.loop_lag
    ) as dog:
        await dog.wait_ticking()
    assert b"tidegate_event_loop_lag_seconds_count 0.0" not in generate_latest(metrics.registry)


async def test_close_stops_task_and_thread() -> None:
    dog = Watchdog(interval=INTERVAL, threshold=THRESHOLD)
    dog.start()
    await dog.wait_ticking()
    threads = [dog._thread]
    await dog.close()
    await dog.close()  # idempotent
    assert all(t is not None and not t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):
        dog.start()


def test_bad_options() -> None:
    with pytest.raises(ValueError):
        Watchdog(threshold=0)


def test_forgotten_watchdog_does_not_hold_up_exit() -> None:
    # Started and never closed: asyncio.run cancels the ticker at exit, which stops the
    # (non-daemon) monitor thread, so the interpreter could still exit.
    dogs: list[Watchdog] = []

    async def main() -> None:
        dog = Watchdog(interval=INTERVAL, threshold=THRESHOLD)
        dog.start()
        dogs.append(dog)
        await dog.wait_ticking()

    asyncio.run(main())
    thread = dogs[0]._thread
    assert thread is not None
    thread.join(timeout=5)
    assert not thread.is_alive()
