"""One test's leak check, for the pytest plugin: a scope for the test and one for its body,
the loops the test runs on, and the moment each of those loops closes.

Every async runner there is builds on ``asyncio.Runner``: pytest-asyncio's loop fixtures,
anyio's test runner, ``IsolatedAsyncioTestCase``, ``asyncio.run``. While a test is checked,
``Runner.get_loop``/``run``/``close`` are wrapped: a runner met outside the test's body makes its
loop one of the test's (tracked from then on), and the test's tasks on that loop are judged
just before ``close()`` would cancel what is left. Nothing here imports pytest.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import sys
import threading
from contextvars import Context
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import _destroyed
from ._detector import LeakError, _Entry
from ._filters import Ignore
from ._inspect import is_pool_worker, job_origin, thread_frames
from ._records import Leak
from ._report import waits_on
from ._tracking import Scope, current_scope, hold_loop, origin_of


@dataclass(frozen=True)
class Options:
    """A test's check options: from the ini, the markers and the conftest hook."""

    timeout: float
    ignore: tuple[Ignore, ...]
    action: str


def _is_runner_task(leak: Leak) -> bool:
    return bool(leak.frames) and (leak.frames[0].module, leak.frames[0].function) in _RUNNERS


# Default filter: the task an async test runner keeps for its whole life to run the test and
# its fixtures in, and leaves for its loop's close to cancel. anyio's TestRunner is one.
_RUNNERS = frozenset({("anyio._backends._asyncio", "TestRunner._run_tests_and_fixtures")})
RUNNER_TASKS = (Ignore("an async test runner's own task", _is_runner_task),)


# --- the loops a test runs on, and the moment each closes --------------------------------

# The tests being checked now, innermost last: one per session, plus any session a test runs
# in-process (pytester). The runner hooks below find the test here: a runner does not know
# which test it serves.
_active: list[TestCheck] = []
original_get_loop = asyncio.Runner.get_loop
_original_run = asyncio.Runner.run
_original_close = asyncio.Runner.close


def _get_loop(self: asyncio.Runner) -> asyncio.AbstractEventLoop:
    loop = original_get_loop(self)
    # Only a runner met outside the test's body is the test's (anyio's, made for a fixture or
    # for the call): one the body starts itself (asyncio.run, a nested session) runs code
    # under test, and closing its loop is that code's business.
    if _active and current_scope.get() is _active[-1].entry.scope:
        _active[-1].add_loop(loop)
    return loop


def _run(self: asyncio.Runner, coro: Any, *, context: Context | None = None) -> Any:
    # pytest-asyncio runs each async fixture through Runner.run: a function-scoped fixture on
    # a module- or session-wide loop makes that loop the test's from then on.
    if _active and current_scope.get() is _active[-1].entry.scope:
        _active[-1].add_loop(original_get_loop(self))
    return _original_run(self, coro, context=context)


def _close(self: asyncio.Runner) -> None:
    loop = getattr(self, "_loop", None)
    if _active and loop is not None:
        _active[-1].before_close(loop)
    _original_close(self)


def push(check: TestCheck) -> None:
    # Every async runner there is builds on asyncio.Runner: pytest-asyncio's loop fixtures,
    # anyio's test runner, IsolatedAsyncioTestCase, asyncio.run. A test's loop is met through
    # get_loop (tracked from then on) and judged just before close() cancels what is left.
    # Patched while a test is checked, and only then.
    if not _active:
        asyncio.Runner.get_loop = _get_loop  # type: ignore[method-assign]
        asyncio.Runner.run = _run  # type: ignore[method-assign]
        asyncio.Runner.close = _close  # type: ignore[method-assign]
    _active.append(check)


def pop(check: TestCheck) -> None:
    _active.remove(check)
    if not _active:
        asyncio.Runner.get_loop = original_get_loop  # type: ignore[method-assign]
        asyncio.Runner.run = _original_run  # type: ignore[method-assign]
        asyncio.Runner.close = _original_close  # type: ignore[method-assign]


def _detach_stuck_executor(loop: asyncio.AbstractEventLoop, leaks: list[Leak]) -> None:
    # A leaked job in the loop's default executor would make the runner's close
    # (loop.shutdown_default_executor) wait for it forever. Give the loop a fresh executor
    # instead; the old one is shut down without waiting.
    if not any(leak.kind == "thread" and leak.name.startswith("asyncio_") for leak in leaks):
        return
    executor = getattr(loop, "_default_executor", None)
    if executor is not None:
        loop._default_executor = None  # type: ignore[attr-defined]
        executor.shutdown(wait=False)


class TestCheck:
    """One test's check: a scope for the test (its function-scoped fixtures start in it), the
    body's scope nested inside, the loops the test ran on, and what was found on each."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, nodeid: str, options: Options) -> None:
        self.nodeid = nodeid
        self.options = options
        # Set in the main context: sync fixtures and hooks run there, and pytest-asyncio
        # copies it into the tasks of async fixtures.
        self.entry = _Entry()
        self.body = Scope(self.entry.scope)
        self.loops: dict[asyncio.AbstractEventLoop, bool] = {}  # loop -> judged yet
        self.found: list[Leak] = []
        self.by_body: dict[int, bool] = {}  # id(leak) -> started by the body
        self.waited = 0.0
        self.errors: list[BaseException] = []

    # -- loops ------------------------------------------------------------------------------

    def add_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop not in self.loops and not loop.is_closed():
            self.loops[loop] = False
            hold_loop(loop)

    def before_close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Judge the test's tasks on ``loop`` now, while it can still run them."""
        if self.loops.get(loop, True):
            return  # not a loop of this test, or judged already
        self.loops[loop] = True
        try:
            self._judge_tasks(loop)
        except BaseException as error:  # never break the runner's close
            self.errors.append(error)

    def _judge_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        rules, timeout = self.options.ignore, self.options.timeout
        entry = self.entry
        entry.loop = loop
        if loop.is_closed():
            return
        if loop.is_running():  # not ours to run: one look
            found, waited = entry.scan(rules, tasks=True, threads=False), 0.0
        else:

            async def wait() -> tuple[list[Leak], float]:
                entry.owner = asyncio.current_task()  # the waiting task is not a leak
                return await entry.wait_async(rules, timeout, tasks=True, threads=False)

            found, waited = loop.run_until_complete(wait())
            # A job stuck in the default executor would hang the close that follows; the
            # thread itself is judged at the end of teardown.
            _detach_stuck_executor(loop, entry.scan(rules, tasks=False, threads=True))
        entry.owner = None
        self._add(found, waited)

    def _add(self, found: list[Leak], waited: float) -> None:
        # Who started each one is read now: a task the runner cancels next is gone by the
        # time the report is written.
        self.found.extend(found)
        self.by_body.update((id(leak), self.started_by_body(leak)) for leak in found)
        self.waited = max(self.waited, waited)

    def _add_destroyed(self) -> None:
        """The test's tasks the collector destroyed while pending, during the test or now.

        Its tasks on loops it is known to run on are kept alive until judged (above); a task
        it left pending on a loop of its own (``new_event_loop`` and ``close`` without
        cancelling, a loop in a thread) is kept by nothing. If the test left any such task
        pending, one full collection now destroys what is garbage of it, here, rather than
        in whichever later test the collector happens to run: this test gets the report.
        """
        if next(_destroyed.unaccounted(self.entry.scope.contains), None) is not None:
            gc.collect()
        destroyed = self.entry.destroyed(self.options.ignore)
        _destroyed.claim(destroyed)
        for each in destroyed:
            self.found.append(each.leak)
            self.by_body[id(each.leak)] = self.body.contains(each.scope)

    # -- the body ---------------------------------------------------------------------------

    def body_scan(self) -> list[Leak]:
        """What the body started that is still running, at a glance (no waiting)."""
        entry = self.entry
        entry.loop = asyncio.events._get_running_loop()
        found = entry.scan(self.options.ignore, tasks=entry.loop is not None, threads=True)
        return [leak for leak in found if self.started_by_body(leak)]

    def started_by_body(self, leak: Leak) -> bool:
        target = leak.target()
        origin = None
        if isinstance(target, threading.Thread) and target.ident is not None:
            frames = thread_frames(_current_frame(target))
            if is_pool_worker(frames):
                origin = job_origin(frames)
        if origin is None:
            origin = origin_of(target)
        return origin is not None and self.body.contains(origin.scope)

    # -- the verdict ------------------------------------------------------------------------

    def finish(self) -> tuple[list[Leak], str | None]:
        """Judge what is left; returns the leaks and the session summary line."""
        try:
            for loop, judged in list(self.loops.items()):
                if not judged:
                    self.before_close(loop)
            found, waited = self.entry.wait(
                self.options.ignore, self.options.timeout, tasks=False, threads=True
            )
            self._add(found, waited)
            self._add_destroyed()
        finally:
            self.entry.leave()
            self.body.close()
            self.entry.close()
        if self.errors:
            raise self.errors[0]
        if not self.found:
            return [], None
        names = ", ".join(f"{leak.kind} {leak.name} [{waits_on(leak)}]" for leak in self.found)
        return self.found, names

    def error(self) -> LeakError:
        error = LeakError(self.found, waited=self.waited)
        by_body = [leak for leak in self.found if self.by_body[id(leak)]]
        by_fixtures = [leak for leak in self.found if not self.by_body[id(leak)]]
        lines = [f"leaked by {self.nodeid}, judged after its teardown:"]
        for who, leaks in (("the test body", by_body), ("a fixture", by_fixtures)):
            if leaks:
                listed = ", ".join(f"{leak.kind} {leak.name}" for leak in leaks)
                lines.append(f"  started by {who}: {listed}")
        error.add_note("\n".join(lines))
        return error


def _current_frame(thread: threading.Thread) -> FrameType | None:
    return sys._current_frames().get(thread.ident or 0)
