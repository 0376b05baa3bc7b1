"""Creation tracking: who created each task and thread, and inside which scope.

A task records its origin in one attribute set by a task factory: the scope
that was current when it was created (a context variable, so it follows the
work into child tasks) and the creating frame's code object and line. That is
a few attribute reads per task, not a traceback: ``bench/leaks_bench.py``
measures the cost.

Threads get the same record from a wrapper around ``threading.Thread.start``;
jobs submitted to a ``ThreadPoolExecutor`` (``run_in_executor``,
``asyncio.to_thread``) are wrapped so a worker's stack shows which scope the
job it runs belongs to.

Tracking is on while someone uses it, and only then: each open scope holds it
(``hold``/``release``), and when the last one closes the thread patches and every
task factory installed here are removed again. An explicit ``track()`` keeps it on
for good (a process that wants creation sites in its dumps), until ``untrack()`` /
``untrack_threads()``.

The code under test sees what it would see without us: a loop's eager task factory
stays an eager task factory (one built by ``asyncio.create_eager_task_factory``, so code
that recognises it by its code object, as anyio does, still does), and the detector
never holds a finished task (see ``KeepAlive``).
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
import weakref
from collections.abc import Callable, Coroutine
from types import CodeType, CoroutineType, FrameType, FunctionType, GeneratorType
from typing import Any, NamedTuple

from ._records import RecordRef

ORIGIN_ATTR = "_tidegate_origin"


class KeepAlive(list[object]):
    """The coroutines of a scope's tasks: the one place the detector holds what keeps a task
    alive. Whoever reasons about what references a task (a reachability proof) discounts
    these lists: ``is_keepalive(referrer)``.

    Why: asyncio keeps only weak references to tasks, so a forgotten task parked on a future
    only it can reach is garbage the collector may destroy at any moment, coroutine and
    stack first; the leak would vanish from the report, or lose its stack.

    Why the coroutine and not the task: while the task waits, its coroutine's frame holds the
    future, whose callbacks hold the task, so the task lives as long as the coroutine does.
    The moment the task finishes its coroutine drops its frame, and with it every path to
    the task: a finished task is never kept alive by the detector (weak references to it
    die, ``gc.get_referrers`` does not find us, "Task exception was never retrieved" is
    logged on time). What stays is the finished coroutine's empty shell, dropped whenever
    the list doubles; a list subclass, so appending costs what a list append costs.
    """

    __slots__ = ()


def is_keepalive(obj: object) -> bool:
    """True if ``obj`` is one of the detector's own ``KeepAlive`` lists."""
    return type(obj) is KeepAlive


def _may_be_running(coro: object) -> bool:
    # A native coroutine or generator clears its frame when it finishes. Anything else
    # (a compiled coroutine) cannot tell us: keep it until the scope closes.
    if isinstance(coro, CoroutineType):
        return coro.cr_frame is not None
    if isinstance(coro, GeneratorType):
        return coro.gi_frame is not None
    return True


class Scope:
    """One entry into ``check()``; nested entries point to the one they are inside.

    ``keepalive`` holds the coroutine of each task created in the scope (see ``KeepAlive``);
    finished ones are dropped whenever it doubles. When the scope closes, the coroutines of
    tasks still pending pass to the innermost enclosing scope that is still ``open``.
    """

    __slots__ = ("__weakref__", "keep_limit", "keepalive", "open", "parent")

    def __init__(self, parent: Scope | None) -> None:
        self.parent = parent
        self.open = True
        self.keepalive = KeepAlive()
        self.keep_limit = _FIRST_KEEP_LIMIT

    def contains(self, other: Scope | None) -> bool:
        while other is not None:
            if other is self:
                return True
            other = other.parent
        return False

    def compact(self) -> None:
        # Inline for native coroutines (nearly all of them): it runs over every entry.
        native = CoroutineType
        self.keepalive[:] = [
            coro
            for coro in self.keepalive
            if (coro.cr_frame is not None if type(coro) is native else _may_be_running(coro))
        ]
        self.keep_limit = max(_FIRST_KEEP_LIMIT, 2 * len(self.keepalive))

    def close(self) -> None:
        """The scope has looked: hand what may still run to the innermost open parent."""
        self.open = False
        parent = self.parent
        while parent is not None and not parent.open:
            parent = parent.parent
        if parent is not None:
            parent.keepalive.extend(coro for coro in self.keepalive if _may_be_running(coro))
        self.keepalive = KeepAlive()


_FIRST_KEEP_LIMIT = 256


current_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "tidegate_leaks_scope", default=None
)


def kept_alive(scope: Scope | None) -> bool:
    """Whether a scope still keeps the coroutines of tasks created in ``scope``: it, or the
    enclosing scope its coroutines passed to when it closed, is open."""
    while scope is not None:
        if scope.open:
            return True
        scope = scope.parent
    return False


# Weak references to the tasks created outside every scope while tracking is on, since the
# last garbage collection: nothing of ours keeps them alive, so the collector may destroy one
# while it is pending. ``_destroyed`` reads them before each collection (to keep a report of
# each in case it is destroyed) and empties the list. One list, appended to by the factories.
# The detector's own weak reference type, which the proof discounts: a plain one would make
# each task a root of the proof (anything weakly referenced can be handed back).
born: list[weakref.ReferenceType[asyncio.Future[Any]]] = []
_weak = RecordRef


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
    # This module, and the pytest plugin's wrappers around asyncio.Runner's methods. (Not the
    # rest of the package: the watchdog starts a thread of its own, and is its creator.)
    files = {__file__, os.path.join(os.path.dirname(__file__), "_test_check.py")}
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
# asyncio.create_task, the usual caller of loop.create_task: the factory steps over it at once.
_CREATE_TASK = asyncio.tasks.create_task.__code__


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

_EAGER_FACTORY_CODE: CodeType | None = getattr(
    getattr(asyncio, "eager_task_factory", None), "__code__", None
)


def _eager_constructor(factory: TaskFactory | None) -> Callable[..., Any] | None:
    """The task constructor of a factory made by ``asyncio.create_eager_task_factory``."""
    if factory is None or _EAGER_FACTORY_CODE is None:
        return None
    if getattr(factory, "__code__", None) is not _EAGER_FACTORY_CODE:
        return None
    closure = getattr(factory, "__closure__", None)
    constructor: Callable[..., Any] | None = closure[0].cell_contents if closure else None
    return constructor


def _stamper(depth: int) -> Callable[[asyncio.Future[Any], object], None]:
    """A function that stamps a task with its Origin and keeps its coroutine, for a caller
    ``depth`` frames above the frame that called the stamper's caller."""
    get_frame = sys._getframe
    skip = SKIP_FILES
    get_scope = current_scope.get
    born_append = born.append
    weak = _weak

    def stamp(task: asyncio.Future[Any], coro: object) -> None:
        frame = get_frame(depth + 1)
        scope = get_scope()
        code = frame.f_code
        if code.co_filename in skip:
            task._tidegate_origin = (scope, *creator_of(frame))  # type: ignore[attr-defined]
        else:
            task._tidegate_origin = (scope, code, frame.f_lasti)  # type: ignore[attr-defined]
        if task.done():
            return
        if scope is not None:
            keepalive = scope.keepalive
            keepalive.append(coro)
            if len(keepalive) > scope.keep_limit:
                scope.compact()
        elif watching:
            born_append(weak(task))

    return stamp


def _tracking_factory(loop: asyncio.AbstractEventLoop, inner: TaskFactory | None) -> TaskFactory:
    """A task factory that stamps each task with its Origin, around any inner factory.

    It runs for every task, so it is a closure with everything it touches bound
    to locals, and it records a code object and a line, not a traceback.
    """
    eager_constructor = _eager_constructor(inner)
    if eager_constructor is not None:
        # Still an eager factory, over a constructor that stamps: code that recognises
        # eager factories by their code and calls the constructor itself (anyio) stamps too.
        stamp_constructed = _stamper(1)

        def tracking_task(coro: Any, **options: Any) -> asyncio.Future[Any]:
            task = eager_constructor(coro, **options)
            stamp_constructed(task, coro)
            return task  # type: ignore[no-any-return]

        # Python 3.12+ (where eager factories exist): looked up, so 3.11's typing passes.
        make_eager: Callable[[Callable[..., Any]], TaskFactory]
        make_eager = asyncio.create_eager_task_factory  # type: ignore[attr-defined,unused-ignore]
        return make_eager(tracking_task)

    get_frame = sys._getframe
    skip = SKIP_FILES
    create_task = _CREATE_TASK
    get_scope = current_scope.get
    born_append = born.append
    weak = _weak
    # Where to start looking for the creator: above asyncio's own Python
    # loop.create_task when there is one. uvloop's is compiled and has no frame,
    # though Cython gives it a __code__: only a plain function makes one.
    method = getattr(loop.create_task, "__func__", None)
    depth = 2 if isinstance(method, FunctionType) else 1
    # The frames a debug-mode creation traceback has that asyncio's, made without a factory,
    # has not: this one, and asyncio's Python create_task, which trims itself only when it
    # makes the task itself.
    trim = depth

    if inner is None:
        new_task = asyncio.Task

        # Keyword arguments pass through untouched: 3.11 sends `context`, newer asyncio and
        # uvloop also `name` and `eager_start`.
        def tracking_factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
        ) -> asyncio.Future[Any]:
            # _stamper's stamp(), inlined: this is the path every task of a plain loop takes.
            task = new_task(coro, loop=loop, **options)
            if task._source_traceback:  # type: ignore[attr-defined]
                # Debug mode: the creation traceback ends where asyncio's own would.
                del task._source_traceback[-trim:]  # type: ignore[attr-defined]
            frame = get_frame(depth)
            if frame.f_code is create_task:  # asyncio.create_task: the usual way in
                frame = frame.f_back  # type: ignore[assignment]
            scope = get_scope()
            code = frame.f_code
            if code.co_filename in skip:  # more plumbing: the whole walk (see creator_of)
                task._tidegate_origin = (scope, *creator_of(frame))  # type: ignore[attr-defined]
            else:
                task._tidegate_origin = (scope, code, frame.f_lasti)  # type: ignore[attr-defined]
            if scope is not None:
                keepalive = scope.keepalive
                keepalive.append(coro)
                if len(keepalive) > scope.keep_limit:
                    scope.compact()
            elif watching:
                born_append(weak(task))
            return task

        return tracking_factory

    wrapped = inner
    stamp = _stamper(depth)

    def wrapping_factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
    ) -> asyncio.Future[Any]:
        task = wrapped(loop, coro, **options)
        stamp(task, coro)
        return task

    # Code that looks at the loop's factory finds the one it installed through __wrapped__.
    return functools.update_wrapper(wrapping_factory, inner)


# --- which loops carry a tracking factory, and who wants tracking on ------------------------

# loop -> (the factory installed here, the factory it replaced)
_installed: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[TaskFactory, TaskFactory | None]
] = weakref.WeakKeyDictionary()
_pinned_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_holders = 0  # open scopes
_threads_pinned = False
_lock = threading.Lock()


def is_tracked(loop: asyncio.AbstractEventLoop) -> bool:
    entry = _installed.get(loop)
    return entry is not None and loop.get_task_factory() is entry[0]


def _install(loop: asyncio.AbstractEventLoop) -> None:
    if not is_tracked(loop):
        inner = loop.get_task_factory()
        factory = _tracking_factory(loop, inner)
        loop.set_task_factory(factory)
        _installed[loop] = (factory, inner)


def _uninstall(loop: asyncio.AbstractEventLoop) -> None:
    entry = _installed.pop(loop, None)
    # Restored only if it is still ours: code that installed another since keeps it.
    if entry is not None and not loop.is_closed() and loop.get_task_factory() is entry[0]:
        loop.set_task_factory(entry[1])


def track(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Record creation sites and scopes for tasks of ``loop`` (default: the running one)
    and for threads and executor jobs of the whole process, until ``untrack()`` and
    ``untrack_threads()``. Idempotent."""
    global _threads_pinned
    if loop is None:
        loop = asyncio.get_running_loop()
    with _lock:
        _threads_pinned = True
        _patch_threads()
        _install(loop)
        _pinned_loops.add(loop)


def untrack(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Remove the task factory tracking installed on ``loop``, restoring the one it wrapped."""
    if loop is None:
        loop = asyncio.get_running_loop()
    with _lock:
        _pinned_loops.discard(loop)
        _uninstall(loop)


def hold(loop: asyncio.AbstractEventLoop | None) -> None:
    """An open scope wants tracking: threads, and ``loop``'s tasks if given."""
    global _holders
    with _lock:
        _holders += 1
        _patch_threads()
        if loop is not None:
            _install(loop)


def hold_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Track ``loop``'s tasks too, for as long as tracking is held."""
    with _lock:
        if _holders or _threads_pinned or loop in _pinned_loops:
            _install(loop)


def release() -> None:
    """An open scope closed; the last one to close takes tracking off again, except what
    ``track()`` asked for."""
    global _holders
    with _lock:
        _holders -= 1
        if _holders > 0:
            return
        _holders = 0
        for loop in list(_installed):
            if loop not in _pinned_loops:
                _uninstall(loop)
        if not _threads_pinned:
            _unpatch_threads()


def holders() -> int:
    """How many open scopes hold tracking (for tests of the detector itself)."""
    return _holders


_original_start = threading.Thread.start
_original_submit = concurrent.futures.ThreadPoolExecutor.submit


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


def threads_patched() -> bool:
    return threading.Thread.start is _tracking_start


# Called with True when tracking comes on for the process, False when it goes off:
# ``_destroyed`` watches the collector while tracking is on (it registers itself here).
switch_hooks: list[Callable[[bool], None]] = []
watching = False


def _patch_threads() -> None:
    global watching
    threading.Thread.start = _tracking_start  # type: ignore[method-assign]
    concurrent.futures.ThreadPoolExecutor.submit = _tracking_submit  # type: ignore[method-assign,assignment]
    if not watching:
        watching = True
        for hook in switch_hooks:
            hook(True)


def _unpatch_threads() -> None:
    global watching
    threading.Thread.start = _original_start  # type: ignore[method-assign]
    concurrent.futures.ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
    if watching:
        watching = False
        born.clear()
        for hook in switch_hooks:
            hook(False)


def track_threads() -> None:
    """Record creation sites and scopes of threads and executor jobs until
    ``untrack_threads()``."""
    global _threads_pinned
    with _lock:
        _threads_pinned = True
        _patch_threads()


def untrack_threads() -> None:
    """Remove the thread patches (unless an open scope still holds them)."""
    global _threads_pinned
    with _lock:
        _threads_pinned = False
        if not _holders:
            _unpatch_threads()
