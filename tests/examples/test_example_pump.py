"""Pattern 2: a pump whose receiver left blocks on its next send; the owned pump is stopped."""

from __future__ import annotations

import pytest
from examples.leaks import pump
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks


async def test_leaky_pump_blocks_on_its_next_send() -> None:
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            assert await pump.first_reading_leaky() == 0
    try:
        (leak,) = caught.value.leaks
        assert leak.name == "readings-pump"
        report = str(caught.value)
        assert_blocks_in(report, pump.pump, "await readings.send(reading)")
        assert_created_by(report, pump.start_readings)
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def test_owned_pump_stops_when_the_receiver_leaves() -> None:
    async with leaks.check(timeout=CHECK):
        assert await pump.first_reading_fixed() == 0


async def test_owned_pump_keeps_pumping_while_the_receiver_stays() -> None:
    async with leaks.check(timeout=CHECK), pump.open_readings() as readings:
        assert [await readings.recv() for _ in range(3)] == [0, 1, 2]
