"""Threads: plain, daemon, executor and to_thread, each released through an event."""

from __future__ import annotations

import asyncio
import multiprocessing.pool
import queue
import threading
import time

import pytest

from tidegate import leaks

SHORT = 0.2


def test_thread_finishing_late_is_not_a_leak() -> None:
    go = threading.Event()
    with leaks.check():
        threading.Thread(target=go.wait, name="late").start()
        threading.Timer(0.05, go.set).start()


async def test_sync_scope_in_a_running_loop_waits_for_its_threads() -> None:
    # The loop cannot run while a sync `with` waits, but threads can: they still get the
    # timeout. The thread ends only once the scope's exit has begun waiting.
    go = threading.Event()
    with leaks.check():
        threading.Thread(target=go.wait, name="late").start()
        threading.Timer(0.05, go.set).start()


def test_blocked_daemon_thread_is_reported_with_its_stack() -> None:
    jobs: queue.Queue[int] = queue.Queue()
    with pytest.raises(leaks.LeakError) as caught, leaks.check(timeout=SHORT):
        threading.Thread(target=jobs.get, name="getter", daemon=True).start()
    jobs.put(1)  # release it
    [leak] = caught.value.leaks
    assert (leak.kind, leak.name, leak.state) == ("thread", "getter", "daemon")
    assert leak.blocked_on == "queue.Queue.get"
    assert leak.frames[-2].function == "Queue.get"
    assert leak.created_at is not None
    assert leak.created_at.startswith("test_blocked_daemon_thread_is_reported_with_its_stack at")
    assert "thread getter [queue.Queue.get, " in str(caught.value)


def test_thread_started_before_the_scope_is_not_its_leak() -> None:
    go = threading.Event()
    older = threading.Thread(target=go.wait)
    older.start()
    try:
        with leaks.check(timeout=SHORT):
            pass
    finally:
        go.set()
        older.join()


async def test_executor_job_outliving_the_scope_is_a_leak() -> None:
    go = threading.Event()
    loop = asyncio.get_running_loop()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            job = loop.run_in_executor(None, go.wait)
    go.set()
    await job
    [leak] = caught.value.leaks
    assert leak.kind == "thread"
    assert leak.blocked_on == "threading.Event.wait"
    assert leak.created_at is not None
    assert leak.created_at.startswith("test_executor_job_outliving_the_scope_is_a_leak at")


async def wait_in_thread(go: threading.Event) -> None:
    await asyncio.to_thread(go.wait)


async def test_to_thread_job_is_attributed_to_the_calling_scope() -> None:
    go = threading.Event()
    with pytest.raises(leaks.LeakError) as caught:
        async with leaks.check(timeout=SHORT):
            task = asyncio.create_task(wait_in_thread(go))
            await asyncio.sleep(0)  # let the task submit its job
    kinds = sorted(leak.kind for leak in caught.value.leaks)
    go.set()
    await task
    assert kinds == ["task", "thread"]
    [thread] = [leak for leak in caught.value.leaks if leak.kind == "thread"]
    assert thread.created_at is not None and thread.created_at.startswith("wait_in_thread at")


async def test_idle_executor_workers_are_not_leaks() -> None:
    loop = asyncio.get_running_loop()
    async with leaks.check(timeout=SHORT):
        # Starts pool workers inside the scope; they stay, idle, after the job.
        assert await loop.run_in_executor(None, sum, [1, 2]) == 3
        assert await asyncio.to_thread(len, "abc") == 3


async def test_concurrent_scopes_attribute_executor_jobs() -> None:
    go = threading.Event()
    both_inside = asyncio.Barrier(2)
    outcome: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async def leaky() -> None:
        try:
            async with leaks.check(timeout=SHORT):
                loop.run_in_executor(None, go.wait)
                await both_inside.wait()
        except leaks.LeakError as error:
            outcome["leaky"] = len(error.leaks)

    async def clean() -> None:
        async with leaks.check(timeout=SHORT):
            await both_inside.wait()
        outcome["clean"] = 0

    async with asyncio.TaskGroup() as group:
        group.create_task(leaky())
        group.create_task(clean())
    go.set()
    assert outcome == {"leaky": 1, "clean": 0}


def test_sync_decorator_and_threads_flag() -> None:
    go = threading.Event()

    @leaks.check(timeout=SHORT)
    def leaky() -> None:
        threading.Thread(target=go.wait, daemon=True).start()

    @leaks.check(timeout=SHORT, threads=False)
    def unchecked() -> None:
        threading.Thread(target=go.wait, daemon=True).start()

    with pytest.raises(leaks.LeakError):
        leaky()
    unchecked()
    go.set()


def park_on(event: threading.Event) -> None:
    event.wait()


@pytest.mark.parametrize("name", ["Event.wait", "threading.Event.wait", "Condition.wait"])
def test_ignore_top_function_sees_through_the_condition_under_a_thread_primitive(
    name: str,
) -> None:
    go = threading.Event()
    try:
        with leaks.check(timeout=SHORT, ignore=[leaks.ignore_top_function(name)]):
            threading.Thread(target=park_on, args=(go,), name="parked").start()
    finally:
        go.set()


def test_ignore_top_function_does_not_reach_the_callers_of_the_primitive() -> None:
    go = threading.Event()
    try:
        with (
            pytest.raises(leaks.LeakError),
            leaks.check(timeout=SHORT, ignore=[leaks.ignore_top_function("park_on")]),
        ):
            threading.Thread(target=park_on, args=(go,), name="parked").start()
    finally:
        go.set()


def pool_workers() -> list[leaks.Leak]:
    return [
        leak for leak in leaks.find() if any(frame.function == "worker" for frame in leak.frames)
    ]


def test_idle_thread_pool_workers_are_not_leaks_busy_ones_are() -> None:
    started, go = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        go.wait()

    with multiprocessing.pool.ThreadPool(2) as pool:
        assert pool.apply(sum, ([1, 2],)) == 3  # both workers now wait for the next job
        assert pool_workers() == []
        pool.apply_async(job)
        started.wait()
        [busy] = pool_workers()
        go.set()
    assert any(frame.function.endswith("job") for frame in busy.frames)


def test_idle_anyio_and_trio_workers_are_not_leaks() -> None:
    anyio = pytest.importorskip("anyio")
    pytest.importorskip("trio")

    async def to_thread() -> int:
        return await anyio.to_thread.run_sync(sum, [1, 2])  # type: ignore[no-any-return]

    for backend in ("asyncio", "trio"):
        with leaks.check(timeout=SHORT):
            assert anyio.run(to_thread, backend=backend) == 3


def test_a_thread_in_time_sleep_is_named() -> None:
    go = threading.Event()

    def nap() -> None:
        while not go.is_set():
            time.sleep(0.01)

    thread = threading.Thread(target=nap, name="napper")
    thread.start()
    try:
        [leak] = [leak for leak in leaks.find() if leak.name == "napper"]
        assert leak.blocked_on == "time.sleep"
        assert leak.frames[-1].function.endswith("nap")
    finally:
        go.set()
        thread.join()


# A wrapper around blocking calls, as blockbuster installs them: its frame sits on top of the
# stack of every thread parked in one. Made in a namespace named like blockbuster's module.
WRAPPERS: dict[str, object] = {"__name__": "blockbuster.blockbuster"}
exec(
    "def wrapper(func, *args):\n    return func(*args)\n",
    WRAPPERS,
)


def wait_through_a_wrapper(lock: threading.Lock) -> None:
    WRAPPERS["wrapper"](lock.acquire)  # type: ignore[operator]


def test_ignore_top_function_sees_through_a_wrapper_on_top() -> None:
    lock = threading.Lock()
    lock.acquire()
    try:
        rule = leaks.ignore_top_function("wait_through_a_wrapper")
        with leaks.check(timeout=SHORT, ignore=[rule]):
            threading.Thread(target=wait_through_a_wrapper, args=(lock,)).start()
    finally:
        lock.release()
