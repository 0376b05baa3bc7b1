"""Every leak of the examples, classified by the proof as it truly is, on asyncio and uvloop.

The leaky examples start their tasks with `chan.fire_and_forget`, which keeps each task in a
module-global set until it ends (the asyncio docs' idiom for unowned tasks, Go's `go f()`).
Through that set any code could cancel them, so while they are in it they are only
`suspected`; once the set lets go of them, the proof shows what blocks them: nothing that can
run reaches them (`proven`), or something still does (`suspected`), or they are not blocked
at all (`running`).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from example_clients import open_client, port_of
from examples.leaks import (
    chan,
    concurrent_sum,
    connection_handler,
    idle_consumer,
    incident,
    pump,
    thread_ports,
    worker_pool,
)
from leak_report import CHECK

from tidegate import leaks

LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - no uvloop on Windows
    pass

Release = Callable[[], Awaitable[None]]


async def settle() -> None:
    """Let every other task run until it parks (or a bound of rounds, for looping ones)."""
    me = asyncio.current_task()
    for _ in range(50):
        await asyncio.sleep(0)
        if all(t.done() or t._fut_waiter is not None for t in asyncio.all_tasks() if t is not me):  # type: ignore[attr-defined]
            return


async def slow_push(message: bytes, *, release: asyncio.Event) -> str:
    await release.wait()
    return "pushed"


async def incident_worker() -> None:
    release = asyncio.Event()

    async def push(message: bytes) -> str:
        return await slow_push(message, release=release)

    assert await incident.handle_broadcast_leaky(b"hi", push, timeout=CHECK / 4) == "timeout"
    release.set()  # the late push completes; the worker's send finds no receiver


async def readings_pump() -> None:
    assert await pump.first_reading_leaky() == 0


async def range_consumer() -> None:
    jobs: asyncio.Queue[str | chan.Closed] = asyncio.Queue()
    idle_consumer.start_job_consumer_leaky(jobs, lambda job: None)
    jobs.put_nowait("a")  # the producer's last job; it forgets close(jobs), and leaves


KEPT_JOBS: list[Any] = []


async def range_consumer_whose_producer_stays() -> Release:
    jobs: asyncio.Queue[str | chan.Closed] = asyncio.Queue()
    KEPT_JOBS.append(jobs)  # a producer that may still close it
    idle_consumer.start_job_consumer_leaky(jobs, lambda job: None)

    async def release() -> None:
        KEPT_JOBS.clear()

    return release


async def select_loop() -> None:
    lines: asyncio.Queue[str] = asyncio.Queue()
    idle_consumer.start_log_shipper_leaky(lines, lambda batch: None, flush_every=CHECK / 10)


async def resize_workers() -> None:
    assert await worker_pool.resize_all_leaky(["a", "b"], str.upper) == ["A", "B"]


async def partial_sums() -> None:
    assert await concurrent_sum.sum_leaky(list(range(1, 101)), parts=4) != 5050


async def connection_handlers() -> None:
    inbox: chan.Unbuffered[bytes] = chan.Unbuffered()  # nobody drains it
    server = await connection_handler.start_message_server_leaky(inbox)
    async with open_client(port_of(server), b"hello\n"):
        pass  # sent one line, then hung up
    server.close()  # stops listening; the handler blocks in its send
    for _ in range(20):  # the handler reads the line and parks in the send
        await asyncio.sleep(0)


async def connection_handlers_with_clients() -> Release:
    inbox: chan.Unbuffered[bytes] = chan.Unbuffered()
    server = await connection_handler.start_message_server_leaky(inbox)
    client = open_client(port_of(server), b"hello\n")
    await client.__aenter__()  # stays connected
    server.close()
    for _ in range(20):
        await asyncio.sleep(0)

    async def release() -> None:
        await client.__aexit__(None, None, None)

    return release


Scenario = Callable[[], Awaitable[Release | None]]

# scenario, its tasks' name prefix, verdict while `fire_and_forget` holds them, verdict after.
EXAMPLES: dict[str, tuple[Scenario, str, dict[str, str]]] = {
    "incident: broadcast worker on its unbuffered send": (
        incident_worker,
        "broadcast-worker",
        {"asyncio": "proven", "uvloop": "proven"},
    ),
    "pump: sender whose receiver left": (
        readings_pump,
        "readings-pump",
        {"asyncio": "proven", "uvloop": "proven"},
    ),
    "idle consumer: for-range on a channel nobody closes": (
        range_consumer,
        "job-consumer",
        {"asyncio": "proven", "uvloop": "proven"},
    ),
    "idle consumer: the same while its producer still holds the channel": (
        range_consumer_whose_producer_stays,
        "job-consumer",
        {"asyncio": "suspected", "uvloop": "suspected"},
    ),
    "idle consumer: for-select with a ticker": (
        select_loop,
        "log-shipper",
        {"asyncio": "running", "uvloop": "running"},
    ),
    "worker pool: workers on a channel nobody closes": (
        resize_workers,
        "resize-worker-",
        {"asyncio": "proven", "uvloop": "proven"},
    ),
    "concurrent sum: senders after the first": (
        partial_sums,
        "partial-sum-",
        {"asyncio": "proven", "uvloop": "proven"},
    ),
    # The client hung up: neither loop holds a transport that no longer reads or writes
    # (uvloop holds its handle's object only while one is under way), so the protocol, whose
    # accept callback holds the inbox, is held by the stuck handler alone.
    "connection handler: send into an inbox nobody drains": (
        connection_handlers,
        "conn ",
        {"asyncio": "proven", "uvloop": "proven"},
    ),
    # The same while the client stays connected: the loop reads for it, so the protocol, and
    # the inbox its accept callback holds, can still be reached.
    "connection handler: the same with its client still connected": (
        connection_handlers_with_clients,
        "conn ",
        {"asyncio": "suspected", "uvloop": "suspected"},
    ),
}


def classify(new_loop: Any, scenario: Scenario, prefix: str) -> tuple[set[str], set[str]]:
    """The verdicts of the scenario's tasks while `fire_and_forget` holds them, and after."""

    async def main() -> tuple[set[str], set[str]]:
        async with leaks.check(timeout=CHECK):  # its scope keeps the tasks alive meanwhile
            release = await scenario()
            await settle()
            held = {r.verdict for r in leaks.find(prove=True, threads=False) if _ours(r, prefix)}
            assert held, f"no task named {prefix}*"
            chan._detached.clear()  # the registry lets go (their done callbacks stay)
            found = [r for r in leaks.find(prove=True, threads=False) if _ours(r, prefix)]
            after = {r.verdict for r in found}
            if release is not None:
                await release()
            await leaks.cancel_tasks(found)
        return {v for v in held if v is not None}, {v for v in after if v is not None}

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main())


def _ours(record: leaks.Leak, prefix: str) -> bool:
    return record.kind == "task" and record.name.startswith(prefix)


@pytest.mark.parametrize("new_loop", LOOPS)
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_every_example_leak_is_classified_as_it_is(
    new_loop: Any, example: str, request: pytest.FixtureRequest
) -> None:
    scenario, prefix, expected = EXAMPLES[example]
    loop_name = request.node.callspec.id.rsplit("-", 1)[-1]
    held, after = classify(new_loop, scenario, prefix)
    truly = expected[loop_name]
    # A task in the module-global set can be cancelled by anyone: never proven there.
    assert held == ({"running"} if truly == "running" else {"suspected"})
    assert after == {truly}


@pytest.mark.parametrize("new_loop", LOOPS)
def test_thread_leaks_carry_no_verdict(new_loop: Any) -> None:
    async def main() -> list[leaks.Leak]:
        jobs: queue.Queue[str | chan.Closed] = queue.Queue()
        upstream: queue.Queue[str] = queue.Queue()
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(timeout=CHECK):
                thread_ports.start_job_thread_leaky(jobs, lambda job: None)
                with pytest.raises(TimeoutError):
                    await thread_ports.fetch_leaky(upstream, timeout=CHECK / 4)
        jobs.put(chan.CLOSED)  # release both threads
        upstream.put("late")
        return caught.value.leaks

    with asyncio.Runner(loop_factory=new_loop) as runner:
        found = runner.run(main())
    assert {leak.kind for leak in found} == {"thread"}
    assert {leak.verdict for leak in found} == {None}
