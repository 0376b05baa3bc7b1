"""Pattern 5: a concurrent sum that returns after the first result leaks the other workers."""

from __future__ import annotations

import pytest
from examples.leaks import concurrent_sum
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks

NUMBERS = list(range(1, 101))


async def test_leaky_sum_is_wrong_and_leaks_all_workers_but_one() -> None:
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            partial = await concurrent_sum.sum_leaky(NUMBERS, parts=4)
    try:
        assert partial != sum(NUMBERS)  # the wrong answer that goes with the leak
        assert len(caught.value.leaks) == 3
        report = str(caught.value)
        assert_blocks_in(report, concurrent_sum.partial_sum, "await results.send(sum(part))")
        assert_created_by(report, concurrent_sum.sum_leaky)
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def test_owned_workers_are_all_summed() -> None:
    async with leaks.check(timeout=CHECK):
        assert await concurrent_sum.sum_fixed(NUMBERS, parts=4) == sum(NUMBERS)
