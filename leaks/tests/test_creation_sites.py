"""Creation sites on both loops: the line that made a task or a job, even when the loop made
the call (a protocol callback) or the loop's create_task is compiled (uvloop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from tidegate import leaks

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
try:
    import uvloop
except ImportError:  # the detector's distribution alone: uvloop is the gateway's dependency
    pass
else:
    LOOPS["uvloop"] = uvloop.new_event_loop


def site_of(target: object) -> str:
    [record] = [leak for leak in leaks.snapshot() if leak.target() is target]
    assert record.created_at is not None
    return record.created_at


async def park(event: asyncio.Event) -> None:
    await event.wait()


async def handler_site() -> str:
    """Where the task serving one accepted connection was made."""
    arrived: asyncio.Queue[asyncio.Task[object] | None] = asyncio.Queue()
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.put_nowait(asyncio.current_task())
        await release.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        site = site_of(await arrived.get())
        release.set()
        writer.close()
        await writer.wait_closed()
    return site


async def job_site() -> str:
    """Where the thread running a to_thread job, inside a task of its own, was made."""
    started, go = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        go.wait()

    task = asyncio.create_task(asyncio.to_thread(job))
    try:
        await asyncio.to_thread(started.wait)
        # The worker that ran started.wait may not be idle yet: pick the one running `job`.
        [job_thread] = [
            leak
            for leak in leaks.find(tasks=False)
            if any(frame.matches("job") for frame in leak.frames)
        ]
        assert job_thread.created_at is not None
        return job_thread.created_at
    finally:
        go.set()
        await task


async def sites() -> dict[str, str]:
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    direct = loop.create_task(park(release))  # loop.create_task itself, not asyncio's helper
    try:
        return {
            "main": site_of(asyncio.current_task()),
            "direct": site_of(direct),
            "handler": await handler_site(),
            "job": await job_site(),
        }
    finally:
        release.set()
        await direct


@pytest.mark.parametrize("new_loop", LOOPS.values(), ids=LOOPS.keys())
def test_creation_sites_on_each_loop(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        leaks.track(runner.get_loop())
        try:
            found = runner.run(sites())
        finally:
            leaks.untrack(runner.get_loop())
            leaks.untrack_threads()
    assert found["main"].startswith("test_creation_sites_on_each_loop at ")
    assert found["direct"].startswith("sites at ")
    # The loop called the stream protocol back; the frames above it only started the loop.
    assert found["handler"].startswith("StreamReaderProtocol.connection_made at ")
    # The job's thread was started from inside a task of asyncio's own code: its site is
    # where that task was made.
    assert found["job"].startswith("job_site at ")
