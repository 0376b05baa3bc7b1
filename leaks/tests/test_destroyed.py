"""Tasks the garbage collector destroys while pending: reported with their await chain, what
they waited on and where they were created, as ``proven``, on asyncio and on uvloop.

Each case runs on a fresh loop. A task created outside every scope on a tracked loop (a
production process with ``track()``) is kept alive by nothing of ours; neither is a task on a
loop the detector does not track. The collector is run explicitly: with automatic collection
held off while the garbage is made, every object of it is in the youngest generation, so a
young collection (``gc.collect(0)``) can destroy it too.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tidegate import leaks
from tidegate.leaks import _destroyed

LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - the detector's distribution alone has no uvloop
    pass

NewLoop = Callable[[], asyncio.AbstractEventLoop]
DESTROYED_MESSAGE = "Task was destroyed but it is pending!"


async def park_inner(future: asyncio.Future[None]) -> None:
    await future


async def park_outer() -> None:
    # The future is this task's alone: once its creator lets go, the task is garbage.
    future = asyncio.get_running_loop().create_future()
    await park_inner(future)


def start_forgotten(name: str) -> None:
    asyncio.create_task(park_outer(), name=name)


@contextmanager
def no_automatic_collection() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_tracked_unscoped(new_loop: NewLoop, main: Callable[[], Awaitable[Any]]) -> Any:
    """``main`` on a fresh tracked loop, outside every scope (an empty context): what a
    process that called ``track()`` does. The loop's exception handler records what asyncio
    reports, so that the test can see asyncio's own message still arrives."""

    async def tracked() -> Any:
        leaks.track()
        try:
            return await main()
        finally:
            leaks.untrack()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        try:
            return runner.run(tracked(), context=contextvars.Context())
        finally:
            leaks.untrack_threads()


def reported_by_asyncio() -> list[str]:
    """Install a handler on the running loop that keeps the messages (not the contexts,
    which hold the task); returns the list it fills."""
    messages: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: messages.append(context["message"]))
    return messages


def destroyed_named(found: list[leaks.Leak], name: str) -> leaks.Leak:
    [record] = [leak for leak in found if leak.name == name]
    return record


@pytest.mark.parametrize("new_loop", LOOPS)
@pytest.mark.parametrize("generation", [0, 2], ids=["young", "full"])
def test_a_destroyed_task_is_reported_with_its_chain_wait_and_creator(
    new_loop: NewLoop, generation: int
) -> None:
    async def main() -> tuple[list[leaks.Leak], list[str]]:
        messages = reported_by_asyncio()
        with no_automatic_collection():
            start_forgotten("forgotten")
            await asyncio.sleep(0)  # it runs until it parks on its own future
            gc.collect(generation)
        return leaks.find(threads=False), messages

    found, messages = run_tracked_unscoped(new_loop, main)
    record = destroyed_named(found, "forgotten")
    assert record.state == "destroyed"
    assert record.verdict == "proven"
    assert [frame.function for frame in record.frames] == ["park_outer", "park_inner"]
    assert record.blocked_on == "Future (future in park_inner)"
    assert record.created_at is not None
    assert record.created_at.startswith("start_forgotten at ")
    assert record.target() is None
    text = leaks.format_leak(record)
    assert "[Future (future in park_inner), destroyed by the garbage collector, proven]" in text
    assert "await future" in text  # the source line of the innermost frame
    # asyncio's own report is still delivered to the loop's handler.
    assert DESTROYED_MESSAGE in messages


def eager_loops() -> list[Any]:
    # uvloop 0.23 on 3.13 passes `eager_start` to any task factory, which eager factories
    # refuse: no eager task starts on it at all, with or without the detector.
    if sys.version_info >= (3, 13):
        return LOOPS[:1]
    return LOOPS


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task factories are 3.12+")
@pytest.mark.parametrize("new_loop", eager_loops())
def test_an_eagerly_started_task_is_reported_too(new_loop: NewLoop) -> None:
    def eager_loop() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
        return loop

    async def main() -> list[leaks.Leak]:
        reported_by_asyncio()
        with no_automatic_collection():
            start_forgotten("eager")  # runs its first step at once, and parks
            gc.collect(0)
        return leaks.find(threads=False)

    record = destroyed_named(run_tracked_unscoped(eager_loop, main), "eager")
    assert (record.state, record.verdict) == ("destroyed", "proven")
    assert [frame.function for frame in record.frames] == ["park_outer", "park_inner"]


@pytest.mark.parametrize("new_loop", LOOPS)
def test_watching_a_task_does_not_stop_its_proof(new_loop: NewLoop) -> None:
    # The watch's weak references to a task and its future are the detector's own: the proof
    # discounts them. Once proven the task is kept, so no collection destroys it.
    async def main() -> list[list[tuple[str, str, leaks.Verdict | None]]]:
        with no_automatic_collection():
            held = [asyncio.create_task(park_outer(), name="watched")]
            await asyncio.sleep(0)
            gc.collect(0)  # read while held: watched from now on
            del held
            proven = leaks.find(prove=True, threads=False)
            gc.collect()
            after = leaks.find(threads=False)
            await leaks.cancel_tasks(after)
        return [
            [(leak.name, leak.state, leak.verdict) for leak in found] for found in (proven, after)
        ]

    assert run_tracked_unscoped(new_loop, main) == [[("watched", "waiting", "proven")]] * 2


def test_past_the_read_limit_a_destroyed_task_has_asyncio_s_line_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_destroyed, "READ_LIMIT", 1)

    async def main() -> tuple[list[leaks.Leak], list[str], int]:
        messages = reported_by_asyncio()
        unread = _destroyed._WATCHER.unread
        with no_automatic_collection():
            start_forgotten("read")
            start_forgotten("unread")
            await asyncio.sleep(0)
            gc.collect(0)
        found = [leak for leak in leaks.find(threads=False) if leak.state == "destroyed"]
        return found, messages, _destroyed._WATCHER.unread - unread

    found, messages, unread = run_tracked_unscoped(asyncio.new_event_loop, main)
    assert [leak.name for leak in found] == ["read"]
    assert unread == 1
    assert messages == [DESTROYED_MESSAGE] * 2


async def finish(event: asyncio.Event) -> None:
    await event.wait()


@pytest.mark.parametrize("new_loop", LOOPS)
def test_no_record_for_tasks_that_finish_or_are_still_referenced(new_loop: NewLoop) -> None:
    async def main() -> tuple[list[leaks.Leak], list[str]]:
        messages = reported_by_asyncio()
        release = asyncio.Event()
        finishing = [asyncio.create_task(finish(release)) for _ in range(20)]
        held = asyncio.create_task(park_outer(), name="held")
        await asyncio.sleep(0)
        gc.collect()
        release.set()
        await asyncio.gather(*finishing)
        del finishing
        gc.collect()
        found = leaks.find(threads=False)
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        return found, messages

    found, messages = run_tracked_unscoped(new_loop, main)
    assert [leak for leak in found if leak.state == "destroyed"] == []
    assert [leak.name for leak in found] == ["held"]  # alive, referenced here: not destroyed
    assert messages == []


@pytest.mark.parametrize("new_loop", LOOPS)
def test_check_reports_its_task_destroyed_on_a_loop_it_does_not_track(new_loop: NewLoop) -> None:
    # The loop is the code's own: the scope's tasks on it are kept alive by nothing. Their
    # scope is the one in their context; the creation site comes from asyncio's debug mode.
    async def main() -> None:
        reported_by_asyncio()
        start_forgotten("orphan")
        await asyncio.sleep(0)

    with pytest.raises(leaks.LeakError) as caught, leaks.check(timeout=0.1):
        loop = new_loop()
        loop.set_debug(True)
        loop.run_until_complete(main())
        loop.close()  # without cancelling what is left: the orphan is garbage
        gc.collect()

    [record] = caught.value.leaks
    assert (record.name, record.state, record.verdict) == ("orphan", "destroyed", "proven")
    assert [frame.function for frame in record.frames] == ["park_outer", "park_inner"]
    assert record.created_at is not None and "start_forgotten" in record.created_at
    assert "1 of the tasks destroyed by the garbage collector" in str(caught.value)


def test_a_destroyed_task_outside_the_scope_is_not_the_scope_s() -> None:
    async def main() -> None:
        reported_by_asyncio()
        start_forgotten("elsewhere")
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    # Created outside the scope below (the empty context has none).
    contextvars.Context().run(loop.run_until_complete, main())
    loop.close()
    with leaks.check(timeout=0.1):
        gc.collect()  # destroyed during the scope, but not started by it


# --- the pytest plugin: the test that created the task fails, not a later one -----------------

Run = Callable[..., pytest.RunResult]

OWN_LOOP_TESTS = """
import asyncio, gc, pytest
{imports}

async def hang(event):
    await event.wait()

async def start_and_forget(name):
    asyncio.create_task(hang(asyncio.Event()), name=name)
    await asyncio.sleep(0)

def leave_an_orphan(name):
    loop = {new_loop}()
    loop.run_until_complete(start_and_forget(name))
    loop.close()  # without cancelling what is left: the orphan is garbage

def test_own_loop_leaks():
    leave_an_orphan("orphan")

def test_later_collects():
    gc.collect()

@pytest.mark.no_leak_check
def test_unchecked_leaks():
    leave_an_orphan("unchecked-orphan")

def test_even_later_collects():
    gc.collect()

def test_own_loop_clean():
    loop = {new_loop}()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
"""

LOOP_MODULES = [
    pytest.param("", "asyncio.new_event_loop", id="asyncio"),
    pytest.param("import uvloop", "uvloop.new_event_loop", id="uvloop"),
]


# The inner session runs in this test's body: the unchecked inner test's orphan is this test's.
@pytest.mark.leaks(ignore=[leaks.ignore_name("unchecked-orphan")])
@pytest.mark.parametrize(("imports", "new_loop"), LOOP_MODULES)
def test_the_plugin_fails_the_test_that_created_the_destroyed_task(
    pytester: pytest.Pytester, run: Run, imports: str, new_loop: str
) -> None:
    if imports:
        pytest.importorskip("uvloop")
    pytester.makepyfile(OWN_LOOP_TESTS.format(imports=imports, new_loop=new_loop))
    result = run("--leaks", "-o", "leaks_timeout=0.2")
    # Only the test that left the orphan fails; the later ones that run the collector, and
    # the unchecked one's orphan destroyed during them, are nobody's business but its own.
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_own_loop_leaks*",
            "*1 of the tasks destroyed by the garbage collector while pending*",
            "*task orphan [[]asyncio.Event.wait, destroyed by the garbage collector, proven[]]:*",
            "*in hang*",
            "*await event.wait()*",
            "*created by start_and_forget at *",
            "*started by the test body: task orphan",
            "*test_own_loop_leaks leaked: task orphan [[]asyncio.Event.wait, destroyed by*",
        ]
    )
    assert "unchecked-orphan" not in result.stdout.str()
    assert "test_later_collects leaked" not in result.stdout.str()
