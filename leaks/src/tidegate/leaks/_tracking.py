"""Creation tracking: who created each task and thread, and inside which scope.

A task records its origin in one attribute set by a task factory: the scope
that was current when it was created (a context variable, so it follows the
work into child tasks) and the creating frame's code object and line. That is
a few attribute reads per task, not a traceback: ``bench/leaks_bench.py``
measures the cost.

Threads get the same record from a wrapper around ``threading.Thread.start``;
jobs submitted to a ``ThreadPoolExecutor`` (``run_in_executor``,
``asyncio.to_thread``) are wrapped so a worker's stack shows which scope the
job it runs belongs to. Both patches are installed once per process, the
first time tracking is asked for, and can be removed with ``untrack_threads``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from types import CodeType, FrameType, FunctionType
from typing import Any, NamedTuple

ORIGIN_ATTR = "_tidegate_origin"


class Scope:
    """One entry into ``check()``; nested entries point to the one they are inside.

    ``kept`` holds a strong reference to each task created in the scope until the scope has
    looked at it. asyncio itself keeps only weak ones, so a forgotten task parked on a future
    only it can reach is garbage the collector may destroy at any moment, coroutine and stack
    first: the leak would vanish, or be reported without its stack. Done tasks are dropped
    from ``kept`` whenever it doubles, so a scope that spawns a million short tasks holds
    only the ones still running. When the scope closes, the tasks still pending pass to the
    innermost enclosing scope that is still ``open``.
    """

    __slots__ = ("keep_limit", "kept", "open", "parent")

    def __init__(self, parent: Scope | None) -> None:
        self.parent = parent
        self.open = True
        self.kept: list[Any] = []
        self.keep_limit = _FIRST_KEEP_LIMIT

    def contains(self, other: Scope | None) -> bool:
        while other is not None:
            if other is self:
                return True
            other = other.parent
        return False

    def compact(self) -> None:
        self.kept = [task for task in self.kept if not task.done()]
        self.keep_limit = max(_FIRST_KEEP_LIMIT, 2 * len(self.kept))

    def close(self) -> None:
        """The scope has looked: hand its still-pending tasks to the innermost open parent."""
        self.open = False
        parent = self.parent
        while parent is not None and not parent.open:
            parent = parent.parent
        if parent is not None:
            parent.kept.extend(task for task in self.kept if not task.done())
        self.kept = []


_FIRST_KEEP_LIMIT = 256


current_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "tidegate_leaks_scope", default=None
)


class Origin(NamedTuple):
    """Where a task, thread or executor job was created, and under which scope."""

    scope: Scope | None
    code: CodeType | None
    # The instruction offset, not the line: reading f_lineno costs a line-table
    # search per task, so the line is worked out only when a report needs it.
    lasti: int

    @property
    def lineno(self) -> int:
        if self.code is None:
            return 0
        for start, end, line in self.code.co_lines():
            if start <= self.lasti < end and line is not None:
                return line
        return self.code.co_firstlineno


def _library_files() -> frozenset[str]:
    # Frames in these files are plumbing between the user's call and the task's
    # birth (asyncio.create_task, TaskGroup.create_task, gather, ...); the
    # creation site is the first frame outside them.
    files = {__file__}
    # uvloop.run() wraps asyncio.Runner: the main task's creator is the line calling it.
    uvloop = importlib.util.find_spec("uvloop")
    if uvloop is not None and uvloop.origin is not None:
        files.add(uvloop.origin)
    prefix = os.path.dirname(asyncio.__file__)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name.startswith("asyncio.") or path.startswith(prefix)):
            files.add(path)
    return frozenset(files)


SKIP_FILES = _library_files()

# Where the event loop itself calls Python code: Handle._run runs every callback of asyncio's
# loop; uvloop's loop is compiled, so its callbacks sit right on the frame that started it,
# Runner.run. A walk that climbs out of plumbing into one of these has left the creator's call
# chain (a protocol's connection_made made the task, say), and the frames above are only
# whatever started the loop. Runner.run is also the real creator of the main task, when it is
# where the walk starts.
_HANDLE_RUN = asyncio.events.Handle._run.__code__
_RUNNER_RUN = asyncio.Runner.run.__code__


def creator_of(start: FrameType | None) -> tuple[CodeType | None, int]:
    """The code and instruction offset that created something, walking up from ``start``.

    Frames of asyncio's plumbing are skipped. Reaching the loop's own dispatch means the
    creator was code the loop called back: the task that was running, if any (a job started
    by ``to_thread``), else the callback's own frame.
    """
    frame, below = start, None
    while frame is not None:
        code = frame.f_code
        if (code is _HANDLE_RUN or code is _RUNNER_RUN) and below is not None:
            return _dispatched(below)
        if code.co_filename not in SKIP_FILES:
            return code, frame.f_lasti
        frame, below = frame.f_back, frame
    return None, 0


def _dispatched(callback: FrameType) -> tuple[CodeType | None, int]:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    raw = getattr(task, ORIGIN_ATTR, None)
    if raw is not None:
        return raw[1], raw[2]
    return callback.f_code, callback.f_lasti


def _origin_here(depth: int) -> Origin:
    return Origin(current_scope.get(), *creator_of(sys._getframe(depth + 1)))


def origin_of(obj: object) -> Origin | None:
    # Tasks carry a plain (scope, code, lasti) tuple: building the named tuple at birth
    # would cost every task a call; it is built here, when someone looks.
    raw: tuple[Scope | None, CodeType | None, int] | None = getattr(obj, ORIGIN_ATTR, None)
    return None if raw is None else Origin._make(raw)


TaskFactory = Callable[..., "asyncio.Future[Any]"]


def _tracking_factory(loop: asyncio.AbstractEventLoop, inner: TaskFactory | None) -> TaskFactory:
    """A task factory that stamps each task with its Origin, around any inner factory.

    It runs for every task, so it is a closure with everything it touches bound
    to locals, and it records a code object and a line, not a traceback.
    """
    get_frame = sys._getframe
    skip = SKIP_FILES
    handle_run, runner_run = _HANDLE_RUN, _RUNNER_RUN
    get_scope = current_scope.get
    # Where to start looking for the creator: above asyncio's own Python
    # loop.create_task when there is one. uvloop's is compiled and has no frame,
    # though Cython gives it a __code__: only a plain function makes one.
    method = getattr(loop.create_task, "__func__", None)
    depth = 2 if isinstance(method, FunctionType) else 1

    def stamp(task: asyncio.Future[Any]) -> None:
        frame: FrameType | None = get_frame(depth + 1)
        while (
            frame is not None
            and (code := frame.f_code).co_filename in skip
            and code is not handle_run
            and code is not runner_run
        ):
            frame = frame.f_back
        scope = get_scope()
        if frame is None:
            task._tidegate_origin = (scope, None, 0)  # type: ignore[attr-defined]
        elif (code := frame.f_code) is handle_run or code is runner_run:
            task._tidegate_origin = (scope, *creator_of(get_frame(depth + 1)))  # type: ignore[attr-defined]
        else:
            task._tidegate_origin = (scope, code, frame.f_lasti)  # type: ignore[attr-defined]
        if scope is not None:
            kept = scope.kept
            kept.append(task)
            if len(kept) > scope.keep_limit:
                scope.compact()

    if inner is None:
        new_task = asyncio.Task

        # Keyword arguments pass through untouched: 3.11 sends `context`, newer asyncio and
        # uvloop also `name` and `eager_start`.
        def tracking_factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
        ) -> asyncio.Future[Any]:
            # stamp(), inlined: this is the path every task of a plain loop takes.
            task = new_task(coro, loop=loop, **options)
            frame: FrameType | None = get_frame(depth)
            # Climb over plumbing, stopping at the loop's own dispatch (see creator_of).
            while (
                frame is not None
                and (code := frame.f_code).co_filename in skip
                and code is not handle_run
                and code is not runner_run
            ):
                frame = frame.f_back
            scope = get_scope()
            if frame is None:
                task._tidegate_origin = (scope, None, 0)  # type: ignore[attr-defined]
            elif (code := frame.f_code) is handle_run or code is runner_run:
                task._tidegate_origin = (scope, *creator_of(get_frame(depth)))  # type: ignore[attr-defined]
            else:
                task._tidegate_origin = (scope, code, frame.f_lasti)  # type: ignore[attr-defined]
            if scope is not None:
                kept = scope.kept
                kept.append(task)
                if len(kept) > scope.keep_limit:
                    scope.compact()
            return task

    else:
        wrapped = inner

        def tracking_factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
        ) -> asyncio.Future[Any]:
            task = wrapped(loop, coro, **options)
            stamp(task)
            return task

    tracking_factory.inner = inner  # type: ignore[attr-defined]
    return tracking_factory


def is_tracked(loop: asyncio.AbstractEventLoop) -> bool:
    return getattr(loop.get_task_factory(), "__name__", None) == "tracking_factory"


def track(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Record creation sites and scopes for tasks of ``loop`` (default: the running one)
    and for threads and executor jobs of the whole process. Idempotent."""
    track_threads()
    if loop is None:
        loop = asyncio.get_running_loop()
    if not is_tracked(loop):
        loop.set_task_factory(_tracking_factory(loop, loop.get_task_factory()))


def untrack(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Remove the task factory ``track`` installed, restoring the one it wrapped."""
    if loop is None:
        loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    if is_tracked(loop):
        loop.set_task_factory(factory.inner)  # type: ignore[union-attr]


_original_start = threading.Thread.start
_original_submit = concurrent.futures.ThreadPoolExecutor.submit
_threads_tracked = False


def _tracking_start(self: threading.Thread) -> None:
    setattr(self, ORIGIN_ATTR, _origin_here(1))
    _original_start(self)


def run_job(origin: Origin, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Runs an executor job; its ``origin`` local tells the detector whose job it is."""
    return fn(*args, **kwargs)


def _tracking_submit(
    self: concurrent.futures.ThreadPoolExecutor,
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> concurrent.futures.Future[Any]:
    job = functools.partial(run_job, _origin_here(1), fn)
    return _original_submit(self, job, *args, **kwargs)


def track_threads() -> None:
    global _threads_tracked
    if not _threads_tracked:
        threading.Thread.start = _tracking_start  # type: ignore[method-assign]
        concurrent.futures.ThreadPoolExecutor.submit = _tracking_submit  # type: ignore[method-assign,assignment]
        _threads_tracked = True


def untrack_threads() -> None:
    global _threads_tracked
    threading.Thread.start = _original_start  # type: ignore[method-assign]
    concurrent.futures.ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
    _threads_tracked = False
