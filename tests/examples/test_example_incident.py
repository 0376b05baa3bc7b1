"""Pattern 1, the incident: the leaky handler leaks its worker; both fixes leave nothing behind."""

from __future__ import annotations

import asyncio

import pytest
from examples.leaks import incident
from leak_report import CHECK, assert_blocks_in, assert_created_by

from tidegate import leaks

# The incident's 5 s, scaled: the handler gives up after this, well inside the check's wait.
TIMEOUT = CHECK / 4


class SlowPush:
    """A push_to_all that finishes only when the test says so (a slow set of subscribers)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, message: bytes) -> str:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return f"pushed {message!r}"


async def test_leaky_handler_leaves_worker_blocked_on_its_send() -> None:
    push = SlowPush()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=CHECK):
            # t=0: worker starts, push hangs; t=TIMEOUT: handler gives up and returns.
            assert await incident.handle_broadcast_leaky(b"hi", push, timeout=TIMEOUT) == "timeout"
            # Then the push completes, and the worker's send finds no receiver: blocked forever.
            push.release.set()
    try:
        (leak,) = caught.value.leaks
        assert (leak.kind, leak.name) == ("task", "broadcast-worker")
        report = str(caught.value)
        assert_blocks_in(report, incident.broadcast_worker, "await done.send(outcome)")
        assert_created_by(report, incident.handle_broadcast_leaky)
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def test_one_slot_buffer_lets_the_late_send_complete() -> None:
    push = SlowPush()
    async with leaks.check(timeout=CHECK):
        assert await incident.handle_broadcast_buffered(b"hi", push, timeout=TIMEOUT) == "timeout"
        push.release.set()  # the worker's late put lands in the free slot and the worker ends


async def test_buffered_handler_returns_the_result_in_time() -> None:
    push = SlowPush()
    push.release.set()
    async with leaks.check(timeout=CHECK):
        outcome = await incident.handle_broadcast_buffered(b"hi", push, timeout=CHECK)
    assert outcome == "pushed b'hi'"


async def test_owned_worker_is_cancelled_on_timeout() -> None:
    push = SlowPush()
    async with leaks.check(timeout=CHECK):
        assert await incident.handle_broadcast_owned(b"hi", push, timeout=TIMEOUT) == "timeout"
        assert push.cancelled  # ended before the handler returned: nothing to wait for


async def test_owned_handler_fans_out_without_waiting_on_a_full_mailbox() -> None:
    keeping_up: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    stuck: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
    stuck.put_nowait(b"unread")

    async def push_to_all(message: bytes) -> str:
        return incident.fan_out_nowait(message, [keeping_up, stuck])

    async with leaks.check(timeout=CHECK):
        outcome = await incident.handle_broadcast_owned(b"hi", push_to_all, timeout=CHECK)
    assert outcome == "delivered to 1 of 2"
    assert keeping_up.get_nowait() == b"hi"
