"""TcpListener: pause and resume between water marks, and stop() at any point of a resume."""

from __future__ import annotations

import asyncio

import pytest

from tidegate.gateway.listener import TcpListener

from .helpers import wait_until


class Refuse(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Refuse.made += 1
        transport.close()


async def open_listener() -> TcpListener:
    Refuse.made = 0
    return await TcpListener.open(("127.0.0.1", 0), Refuse, high_water=2, low_water=1)


async def test_pauses_at_high_water_and_resumes_at_low_water() -> None:
    listener = await open_listener()
    try:
        listener.update(2)
        assert not listener.accepting  # at once, in the same call
        listener.update(1)
        await wait_until(lambda: listener.accepting, what="resume")  # on a later loop turn
        _, writer = await asyncio.open_connection(*listener.address)
        writer.close()
        await writer.wait_closed()
    finally:
        listener.stop()
        await listener.wait_closed()


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_stop_in_the_middle_of_a_resume_leaves_nothing_accepting(turns: int) -> None:
    listener = await open_listener()
    address = listener.address
    listener.update(2)  # pause
    listener.update(0)  # the resumer wakes on a later turn and starts a server
    for _ in range(turns):
        await asyncio.sleep(0)
    listener.stop()
    await listener.wait_closed()
    assert not listener.accepting
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*address)
    assert Refuse.made == 0
