"""Pattern 2: a pump sends forever into a channel whose only receiver read one value and left.

Go::

    func readings() <-chan int {
        ch := make(chan int)
        go func() {
            for i := 0; ; i++ {
                ch <- i           // blocks forever once the caller stops reading
            }
        }()
        return ch
    }

    first := <-readings()         // reads one value and leaves

- `first_reading_leaky`: the port; the `pump` task blocks forever in its next `send`.
- `first_reading_fixed`: the receiver owns the pump (`open_readings`, an async context manager):
  leaving the block cancels the pump and waits for it, the asyncio form of Go's
  `ctx, cancel := context.WithCancel(...); defer cancel()` with the pump selecting on
  `ctx.Done()`. An async generator closed with `contextlib.aclosing` is the other Pythonic form.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

from examples.leaks.chan import Unbuffered, fire_and_forget


async def pump(readings: Unbuffered[int]) -> None:
    for reading in itertools.count():
        await readings.send(reading)  # LEAK: blocks forever once the receiver has left


def start_readings() -> Unbuffered[int]:
    """Start a pump nobody owns and return its channel."""
    readings: Unbuffered[int] = Unbuffered()
    fire_and_forget(asyncio.create_task(pump(readings), name="readings-pump"))
    return readings


async def first_reading_leaky() -> int:
    readings = start_readings()
    return await readings.recv()  # and leaves; the pump is stuck on its next send


@contextlib.asynccontextmanager
async def open_readings() -> AsyncIterator[Unbuffered[int]]:
    """Start a pump owned by the `async with` block: leaving the block stops it."""
    readings: Unbuffered[int] = Unbuffered()
    async with asyncio.TaskGroup() as owner:
        pump_task = owner.create_task(pump(readings), name="readings-pump")
        try:
            yield readings
        finally:
            pump_task.cancel()  # the TaskGroup then waits for it to end


async def first_reading_fixed() -> int:
    async with open_readings() as readings:
        return await readings.recv()
