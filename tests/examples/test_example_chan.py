"""`chan.Unbuffered` behaves like Go's unbuffered channel, which the leaky examples rely on."""

from __future__ import annotations

import asyncio

import pytest
from examples.leaks.chan import Unbuffered
from leak_report import CHECK

from tidegate import leaks

BRIEF = CHECK / 10  # a wait that must elapse to show that something does NOT happen


async def test_send_returns_only_once_a_receiver_has_taken_the_value() -> None:
    ch: Unbuffered[str] = Unbuffered()
    async with leaks.check(timeout=CHECK):
        sender = asyncio.create_task(ch.send("a"), name="sender")
        done, _ = await asyncio.wait({sender}, timeout=BRIEF)
        assert not done  # no receiver yet: the send is still waiting
        assert await ch.recv() == "a"
        await sender  # the receive released it


async def test_an_abandoned_send_takes_its_value_back() -> None:
    ch: Unbuffered[str] = Unbuffered()
    async with leaks.check(timeout=CHECK):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(BRIEF):
                await ch.send("abandoned")  # Go: select { case ch <- v: case <-time.After(d): }
        sender = asyncio.create_task(ch.send("b"), name="sender")
        assert await ch.recv() == "b"  # the abandoned value was never delivered
        await sender


async def test_senders_queue_up_and_are_released_in_order() -> None:
    ch: Unbuffered[int] = Unbuffered()
    async with leaks.check(timeout=CHECK), asyncio.TaskGroup() as senders:
        for n in range(3):
            senders.create_task(ch.send(n), name=f"sender-{n}")
        assert [await ch.recv() for _ in range(3)] == [0, 1, 2]
