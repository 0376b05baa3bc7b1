"""check(): scopes, waiting, attribution, records. Tasks are parked and released with
events, never sleeps; a timeout that must elapse is short and named."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
import weakref
from typing import Any

import pytest

from tidegate import leaks

SHORT = 0.2  # seconds a leak is given to end before it is reported


async def park(event: asyncio.Event) -> None:
    await event.wait()


async def put_twice(q: asyncio.Queue[int]) -> None:
    await q.put(1)
    await q.put(2)  # blocks forever: the one slot is taken and nobody reads


async def spawn_blocked_putter(q: asyncio.Queue[int]) -> asyncio.Task[None]:
    return asyncio.create_task(put_twice(q), name="putter")


async def test_clean_scope_exits_without_waiting() -> None:
    start = time.monotonic()
    async with leaks.check(timeout=30):
        await asyncio.create_task(asyncio.sleep(0))
    # A generous bound: waiting out any part of the 30 s timeout would fail it.
    assert time.monotonic() - start < 5


async def test_task_finishing_50ms_late_is_not_a_leak() -> None:
    done = asyncio.Event()
    async with leaks.check():  # default timeout, 1 s
        asyncio.create_task(park(done))
        asyncio.get_running_loop().call_later(0.05, done.set)


async def test_blocked_task_is_reported_with_whole_chain_and_creator() -> None:
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            await spawn_blocked_putter(q)
    [leak] = caught.value.leaks
    try:
        assert leak.kind == "task"
        assert leak.name == "putter"
        assert leak.blocked_on == "asyncio.Queue.put (full, maxsize=1)"
        assert leak.blocked_for is not None and leak.blocked_for >= SHORT / 2
        functions = [frame.function for frame in leak.frames]
        assert functions == ["put_twice", "Queue.put"]
        assert leak.stack[0].endswith("in put_twice")
        assert leak.created_at is not None
        assert leak.created_at.startswith("spawn_blocked_putter at ")
        assert __file__ in leak.created_at
        report = str(caught.value)
        assert "task putter [asyncio.Queue.put (full, maxsize=1), " in report
        assert "await q.put(2)" in report  # the blocking source line
        assert "created by spawn_blocked_putter at" in report
    finally:
        await leaks.cancel_tasks(caught.value.leaks)


async def outer(event: asyncio.Event) -> None:
    await middle(event)


async def middle(event: asyncio.Event) -> None:
    await inner(event)


async def inner(event: asyncio.Event) -> None:
    await event.wait()


async def test_stack_follows_every_awaited_coroutine() -> None:
    never = asyncio.Event()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(outer(never))
    [leak] = caught.value.leaks
    await leaks.cancel_tasks(caught.value.leaks)
    assert [f.function for f in leak.frames] == ["outer", "middle", "inner", "Event.wait"]
    assert leak.blocked_on == "asyncio.Event.wait"


async def ticks(event: asyncio.Event):  # type: ignore[no-untyped-def]
    yield 1
    await event.wait()
    yield 2


async def consume(event: asyncio.Event) -> None:
    async for _ in ticks(event):
        pass


async def test_stack_goes_through_async_generators() -> None:
    never = asyncio.Event()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(consume(never))
    [leak] = caught.value.leaks
    await leaks.cancel_tasks(caught.value.leaks)
    assert [f.function for f in leak.frames] == ["consume", "ticks", "Event.wait"]


async def test_grandchildren_belong_to_the_scope() -> None:
    never = asyncio.Event()

    async def parent() -> None:
        asyncio.create_task(park(never), name="grandchild")

    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            await asyncio.create_task(parent())
    assert [leak.name for leak in caught.value.leaks] == ["grandchild"]
    await leaks.cancel_tasks(caught.value.leaks)


async def test_concurrent_scopes_report_only_their_own() -> None:
    never = asyncio.Event()
    both_inside = asyncio.Barrier(2)
    results: dict[str, list[str]] = {}

    async def leaky() -> None:
        try:
            async with leaks.check(timeout=SHORT):
                asyncio.create_task(park(never), name="leaky-child")
                await both_inside.wait()
        except leaks.LeakError as error:
            results["leaky"] = [leak.name for leak in error.leaks]
            await leaks.cancel_tasks(error.leaks)
        else:
            results["leaky"] = []

    async def clean() -> None:
        released = asyncio.Event()
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(park(released), name="clean-child")
            await both_inside.wait()
            released.set()
        results["clean"] = []

    async with asyncio.TaskGroup() as group:
        group.create_task(leaky())
        group.create_task(clean())
    assert results == {"leaky": ["leaky-child"], "clean": []}


async def test_tasks_from_before_the_scope_are_not_its_leaks() -> None:
    never = asyncio.Event()
    older = asyncio.create_task(park(never))
    async with leaks.check(timeout=SHORT):
        pass
    older.cancel()
    await asyncio.gather(older, return_exceptions=True)


async def test_body_error_is_not_masked_by_a_leak_report() -> None:
    never = asyncio.Event()
    with pytest.raises(ZeroDivisionError):
        async with leaks.check(timeout=SHORT):
            task = asyncio.create_task(park(never))
            1 / 0  # noqa: B018
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_decorator_on_coroutine_function() -> None:
    never = asyncio.Event()
    spawned: list[asyncio.Task[None]] = []

    @leaks.check(timeout=SHORT)
    async def leaky() -> int:
        spawned.append(asyncio.create_task(park(never)))
        return 7

    @leaks.check(timeout=SHORT)
    async def clean() -> int:
        return 8

    assert await clean() == 8
    with pytest.raises(leaks.LeakError):
        await leaky()
    spawned[0].cancel()
    await asyncio.gather(*spawned, return_exceptions=True)


async def test_ignore_options() -> None:
    never = asyncio.Event()
    options = [
        leaks.ignore_top_function("Event.wait"),
        leaks.ignore_top_function("asyncio.locks.Event.wait"),
        leaks.ignore_any_function("middle"),
        leaks.ignore_created_by("spawn_outer"),
    ]

    def spawn_outer() -> asyncio.Task[None]:
        return asyncio.create_task(outer(never))

    spawned = []
    for option in options:
        async with leaks.check(timeout=SHORT, ignore=[option]):
            spawned.append(spawn_outer())
    with pytest.raises(leaks.LeakError):
        async with leaks.check(timeout=SHORT, ignore=[leaks.ignore_top_function("Queue.get")]):
            spawned.append(spawn_outer())
    current = leaks.ignore_current()
    assert not leaks.find(ignore=[current], threads=False)
    for task in spawned:
        task.cancel()
    await asyncio.gather(*spawned, return_exceptions=True)


async def test_find_and_snapshot() -> None:
    never = asyncio.Event()
    task = asyncio.create_task(park(never), name="parked")
    await asyncio.sleep(0)  # let it start and park
    found = leaks.find(threads=False)
    assert [leak.name for leak in found] == ["parked"]
    assert found[0].state == "waiting"
    everything = leaks.snapshot()
    names = {(leak.kind, leak.name) for leak in everything}
    assert ("task", "parked") in names
    assert ("thread", "MainThread") in names
    me = asyncio.current_task()
    assert me is not None and ("task", me.get_name()) in names
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_find_async_waits_for_late_tasks() -> None:
    done = asyncio.Event()
    task = asyncio.create_task(park(done))
    asyncio.get_running_loop().call_later(0.05, done.set)
    assert await leaks.find_async(timeout=2.0, threads=False) == []
    assert task.done()


async def test_grouped_report_counts_identical_stacks() -> None:
    never = asyncio.Event()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            for _ in range(5):
                asyncio.create_task(park(never))
            asyncio.create_task(outer(never))
    grouped = leaks.format_grouped(caught.value.leaks)
    await leaks.cancel_tasks(caught.value.leaks)
    assert grouped.startswith("total: 6 tasks, 0 threads\n")
    assert "\n5 tasks [asyncio.Event.wait, suspected]:\n" in grouped
    assert "\n1 task [asyncio.Event.wait, suspected]:\n" in grouped
    assert grouped.index("5 tasks") < grouped.index("1 task ")


async def test_sleeping_task_reports_delay() -> None:
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(asyncio.sleep(3600))
    await leaks.cancel_tasks(caught.value.leaks)
    assert caught.value.leaks[0].blocked_on == "asyncio.sleep (3600s)"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(3600, "3600"), (0.029774044001242145, "0.03"), (2.5, "2.5"), (1e-05, "1e-05")],
)
def test_durations_are_rounded_to_the_millisecond(seconds: float, shown: str) -> None:
    from tidegate.leaks._inspect import seconds_text

    assert seconds_text(seconds) == shown


class Handler:
    """Keeps the future it waits on in an attribute, as aiohttp's RequestHandler does."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


async def test_a_bare_future_is_named_by_the_attribute_that_holds_it() -> None:
    handler = Handler()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(handler.start(), name="handler")
    await leaks.cancel_tasks(caught.value.leaks)
    assert caught.value.leaks[0].blocked_on == "Future (Handler._waiter)"


async def hold_lock_then(lock: asyncio.Lock, waiter: asyncio.Future[None]) -> None:
    async with lock:
        await waiter


async def take_lock(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def test_lock_and_future_waits_are_named() -> None:
    lock = asyncio.Lock()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(hold_lock_then(lock, waiter), name="holder")
            await asyncio.sleep(0)  # one turn: the holder takes the lock first
            asyncio.create_task(take_lock(lock), name="contender")
    waiter.set_result(None)
    blocked = {leak.name: leak.blocked_on for leak in caught.value.leaks}
    await leaks.cancel_tasks(caught.value.leaks)
    # A bare future is named by where the awaiting frame keeps it.
    assert blocked == {"holder": "Future (waiter in hold_lock_then)", "contender": "asyncio.Lock"}


async def test_forgotten_task_is_not_garbage_collected_out_of_the_report() -> None:
    # Nobody references the task, and the event it waits on is reachable only from the task
    # itself: a reference cycle the collector could destroy at any moment, taking the task
    # (stack first) out of all_tasks() before the scope ends. The scope keeps it alive until
    # it has looked, so gc.collect() changes nothing.
    async def park_on_private_event() -> None:
        await asyncio.Event().wait()

    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            asyncio.create_task(park_on_private_event(), name="orphan")
            await asyncio.sleep(0)  # let it reach its wait
            gc.collect()
    [leak] = caught.value.leaks
    assert (leak.name, leak.state, leak.blocked_on) == ("orphan", "waiting", "asyncio.Event.wait")
    assert [frame.function for frame in leak.frames][-1] == "Event.wait"
    task = leak.target()
    assert task is not None
    task.cancel()  # end it, or this test's own leak check would report it too


async def quick() -> None:
    return None


# The next tests compare the same code with and without a check() around it, so they opt out
# of this suite's own per-test check.


async def finished_tasks_still_alive() -> int:
    finished: list[weakref.ref[asyncio.Task[None]]] = []
    for _ in range(20):
        batch = [asyncio.create_task(quick()) for _ in range(100)]
        await asyncio.gather(*batch)
        finished.extend(weakref.ref(task) for task in batch)
        del batch
    await asyncio.sleep(0)  # asyncio's own wake-up callbacks hold the last ones until they run
    return sum(ref() is not None for ref in finished)


@pytest.mark.no_leak_check
async def test_a_finished_task_is_not_kept_alive_weakref() -> None:
    plain = await finished_tasks_still_alive()
    async with leaks.check():
        tracked = await finished_tasks_still_alive()
    # Without a collection: the last reference dies with the task's refcount.
    assert tracked == plain == 0


async def referrers_of_a_finished_task() -> list[str]:
    task = asyncio.create_task(quick())
    await task
    await asyncio.sleep(0)
    gc.collect()
    return sorted(type(referrer).__name__ for referrer in gc.get_referrers(task))


@pytest.mark.no_leak_check
async def test_a_finished_task_is_not_referred_to_by_the_detector() -> None:
    plain = await referrers_of_a_finished_task()
    async with leaks.check():
        tracked = await referrers_of_a_finished_task()
    assert tracked == plain
    assert "KeepAlive" not in tracked and "list" not in tracked


async def fail_later(started: asyncio.Event) -> None:
    started.set()
    await asyncio.sleep(0)
    raise RuntimeError("nobody asks for me")


async def unretrieved_is_logged(caplog: pytest.LogCaptureFixture) -> bool:
    caplog.clear()
    started = asyncio.Event()
    task = asyncio.create_task(fail_later(started))
    await started.wait()
    await asyncio.wait([task])
    await asyncio.sleep(0)
    del task  # the last reference: asyncio logs the unretrieved exception at once
    return "Task exception was never retrieved" in caplog.text


@pytest.mark.no_leak_check
async def test_never_retrieved_exception_is_logged_when_the_task_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    plain = await unretrieved_is_logged(caplog)
    async with leaks.check():
        tracked = await unretrieved_is_logged(caplog)
    assert tracked and plain


@pytest.mark.no_leak_check
def test_tracking_is_removed_when_the_last_scope_closes() -> None:
    from tidegate.leaks import _tracking

    leaks.untrack_threads()  # in case an earlier test asked for tracking for good
    seen: list[object] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with leaks.check():
            async with leaks.check():
                seen.append(_tracking.threads_patched())
            seen.append(loop.get_task_factory())  # the outer scope still holds tracking
        seen.append(loop.get_task_factory())

    assert not _tracking.threads_patched()
    with asyncio.Runner() as runner:
        runner.run(body())
    assert seen[0] is True and seen[1] is not None and seen[2] is None
    assert not _tracking.threads_patched()
    assert _tracking.holders() == 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task factories are 3.12+")
@pytest.mark.no_leak_check  # so that the factory is restored when the last check closes
def test_an_eager_factory_stays_recognisably_eager() -> None:
    def eager_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        return loop

    async def body() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(timeout=SHORT):
                factory = loop.get_task_factory()
                assert factory is not None
                # What anyio looks at to recognise an eager factory, and the constructor
                # it then calls itself.
                assert factory.__code__ is asyncio.eager_task_factory.__code__  # type: ignore[attr-defined]
                constructor = factory.__closure__[0].cell_contents  # type: ignore[attr-defined]
                constructor(park(asyncio.Event()), loop=loop, name="constructed")
                asyncio.create_task(park(asyncio.Event()), name="created")
        assert sorted(leak.name for leak in caught.value.leaks) == ["constructed", "created"]
        await leaks.cancel_tasks(caught.value.leaks)
        assert loop.get_task_factory() is asyncio.eager_task_factory  # type: ignore[attr-defined]

    with asyncio.Runner(loop_factory=eager_loop) as runner:
        runner.run(body())


LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - no uvloop on Windows
    pass


@pytest.mark.parametrize("new_loop", LOOPS)
def test_tracking_keeps_names_and_wraps_an_existing_factory(new_loop: Any) -> None:
    # uvloop and newer asyncio hand the factory more keyword arguments (name, eager_start).
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(tracking_over_an_inner_factory())


async def tracking_over_an_inner_factory() -> None:
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def inner(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Task[Any]:
        made.append(options.get("name") or "")
        return asyncio.Task(coro, loop=loop, **options)

    loop.set_task_factory(inner)
    leaks.track()
    done = asyncio.Event()
    async with leaks.check(timeout=SHORT):
        task = asyncio.create_task(park(done), name="named")
        assert task.get_name() == "named"
        [record] = [r for r in leaks.find(threads=False) if r.name == "named"]
        assert record.created_at is not None and "tracking_over_an_inner" in record.created_at
        done.set()
    assert made, "the inner factory made the task"
    leaks.untrack()
    leaks.untrack_threads()
    assert loop.get_task_factory() is inner


@pytest.mark.no_leak_check
@pytest.mark.parametrize("new_loop", LOOPS)
def test_debug_mode_creation_traceback_is_the_same_with_tracking(new_loop: Any) -> None:
    async def creation_tail() -> list[tuple[str, str | None]]:
        task = asyncio.create_task(quick())
        await task
        return [(entry.name, entry.line) for entry in task._source_traceback[-2:]]  # type: ignore[attr-defined]

    async def both() -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
        plain = await creation_tail()
        async with leaks.check():
            tracked = await creation_tail()
        return plain, tracked

    with asyncio.Runner(loop_factory=new_loop, debug=True) as runner:
        plain, tracked = runner.run(both())
    assert tracked == plain
    assert plain[0][0] == "creation_tail"
