"""The loop watchdog the pytest plugin's blocking check and the gateway share.

Timeline of a block (THRESHOLD = 50 ms, the monitor looks every 10 ms): the loop ticks, then
`block_the_loop` sleeps 150 ms in the loop thread; from ~50 ms on the monitor sees no tick and
takes the loop thread's stack; the tick after the sleep records the block's length.
"""

from __future__ import annotations

import logging
import time

import pytest

from tidegate import leaks

INTERVAL = 0.01
THRESHOLD = 0.05


def block_the_loop() -> None:
    time.sleep(THRESHOLD * 3)


async def test_a_block_is_caught_with_its_site_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tidegate.leaks.watchdog")
    async with leaks.open_watchdog(interval=INTERVAL, threshold=THRESHOLD) as dog:
        await dog.wait_ticking()
        before = dog.statistics()["blocks_total"]  # a loaded machine may stall us anyway
        block_the_loop()
        await dog.wait_tick()  # the tick after the block records it
        block = await dog.wait_blocks(before + 1)
    assert block.function == "block_the_loop"
    assert block.site.startswith(f"{__file__}:")
    assert block.duration >= THRESHOLD
    error = leaks.LoopBlockedError([block], THRESHOLD)
    assert str(error).startswith("the event loop was blocked 1 time(s) for longer than 0.05s:")
    assert f"at {block.site} in block_the_loop:" in str(error)
    assert any("event loop blocked" in record.getMessage() for record in caplog.records)


async def test_wait_tick_needs_a_running_watchdog() -> None:
    dog = leaks.Watchdog(interval=INTERVAL, threshold=THRESHOLD)
    with pytest.raises(RuntimeError, match="not running"):
        await dog.wait_tick()
