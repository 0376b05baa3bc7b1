"""Pattern 4: a worker pool over a task channel the dispatcher forgets to close."""

from __future__ import annotations

import pytest
from examples.leaks import worker_pool
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks

PATHS = ["a.png", "b.png", "c.png", "d.png", "e.png"]
RESIZED = sorted(f"small-{p}" for p in PATHS)


def resize(path: str) -> str:
    return f"small-{path}"


async def test_leaky_pool_returns_the_right_result_and_leaks_every_worker() -> None:
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            assert await worker_pool.resize_all_leaky(PATHS, resize, workers=3) == RESIZED
    try:
        names = sorted(leak.name for leak in caught.value.leaks)
        assert names == ["resize-worker-0", "resize-worker-1", "resize-worker-2"]
        report = str(caught.value)
        assert_blocks_in(report, worker_pool.resize_worker, "await jobs.get()")
        assert_created_by(report, worker_pool.resize_all_leaky)
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def test_closing_the_task_channel_ends_the_pool() -> None:
    async with leaks.check(timeout=CHECK):
        assert await worker_pool.resize_all_fixed(PATHS, resize, workers=3) == RESIZED
