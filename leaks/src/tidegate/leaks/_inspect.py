"""Reading a live task or thread: its stack, what it waits on, where it came from.

The await chain of a task is walked through ``cr_await`` / ``gi_yieldfrom`` /
``ag_await`` down to the innermost coroutine, so the stack names every
coroutine between the task's entry point and the primitive it is parked on.
What it waits on comes from a table of known primitives, keyed by code object.
"""

from __future__ import annotations

import asyncio
import asyncio.queues
import asyncio.streams
import concurrent.futures.thread
import gc
import os
import queue
import sys
import threading
import types
import weakref
from collections.abc import Callable, Hashable, Iterable
from types import CodeType, FrameType
from typing import Any

from ._records import Frame, Leak
from ._tracking import SKIP_FILES, Origin, origin_of, run_job

# --- what a frame means: (description, is_building_block) -----------------
# A building block (a Condition inside Queue.get) yields to the caller that
# explains it better, when that caller is in the table too.

Describe = Callable[[FrameType], str]


def _fixed(text: str) -> Describe:
    return lambda frame: text


def _queue_put(kind: str) -> Describe:
    def describe(frame: FrameType) -> str:
        q = frame.f_locals.get("self")
        return f"{kind}.put (full, maxsize={getattr(q, 'maxsize', '?')})"

    return describe


def _queue_join(frame: FrameType) -> str:
    q = frame.f_locals.get("self")
    return f"asyncio.Queue.join ({getattr(q, '_unfinished_tasks', '?')} unfinished)"


def _sleep(frame: FrameType) -> str:
    delay = frame.f_locals.get("delay")
    return "asyncio.sleep" if delay is None else f"asyncio.sleep ({delay}s)"


def _code(fn: Any) -> CodeType | None:
    return getattr(getattr(fn, "__func__", fn), "__code__", None)


_ENTRIES: list[tuple[Any, Describe, bool]] = [
    (asyncio.Queue.put, _queue_put("asyncio.Queue"), False),
    (asyncio.Queue.get, _fixed("asyncio.Queue.get (empty)"), False),
    (asyncio.Queue.join, _queue_join, False),
    (asyncio.Event.wait, _fixed("asyncio.Event.wait"), True),
    (asyncio.Lock.acquire, _fixed("asyncio.Lock"), True),
    (asyncio.Condition.wait, _fixed("asyncio.Condition.wait"), False),
    (asyncio.Semaphore.acquire, _fixed("asyncio.Semaphore"), False),
    (asyncio.Barrier.wait, _fixed("asyncio.Barrier.wait"), False),
    (asyncio.sleep, _sleep, False),
    (asyncio.wait_for, _fixed("asyncio.wait_for"), True),
    (asyncio.wait, _fixed("asyncio.wait"), True),
    (asyncio.TaskGroup.__aexit__, _fixed("asyncio.TaskGroup (children running)"), True),
    (
        getattr(asyncio.StreamReader, "_wait_for_data", None),
        _fixed("asyncio.StreamReader.read"),
        False,
    ),
    (
        getattr(asyncio.streams.FlowControlMixin, "_drain_helper", None),
        _fixed("asyncio.StreamWriter.drain"),
        False,
    ),
    (asyncio.Server.serve_forever, _fixed("asyncio.Server.serve_forever"), False),
    (queue.Queue.get, _fixed("queue.Queue.get"), False),
    (queue.Queue.put, _queue_put("queue.Queue"), False),
    (queue.Queue.join, _fixed("queue.Queue.join"), False),
    (threading.Event.wait, _fixed("threading.Event.wait"), True),
    (threading.Condition.wait, _fixed("threading.Condition.wait"), True),
    (threading.Semaphore.acquire, _fixed("threading.Semaphore"), False),
    (threading.Thread.join, _fixed("threading.Thread.join"), False),
    (threading.Barrier.wait, _fixed("threading.Barrier.wait"), False),
    (concurrent.futures.Future.result, _fixed("concurrent.futures.Future.result"), False),
]
if sys.version_info >= (3, 12):  # wait_for became a thin shell around timeout()
    _ENTRIES.append((asyncio.Timeout.__aexit__, _fixed("asyncio.timeout"), True))

PRIMITIVES: dict[CodeType, tuple[Describe, bool]] = {
    code: (describe, block) for fn, describe, block in _ENTRIES if (code := _code(fn)) is not None
}

# An idle pool worker sits in this function between jobs.
_WORKER_CODE = _code(concurrent.futures.thread._worker)
_RUN_JOB_CODE = _code(run_job)
_WORK_ITEM_RUN_CODE = _code(concurrent.futures.thread._WorkItem.run)
# Plumbing every thread or pool job has, hidden from reports as Go hides its
# runtime frames: thread bootstrap, and the detector's own job wrapper.
_HIDDEN = {
    _code(fn)
    for fn in (
        run_job,
        concurrent.futures.thread._WorkItem.run,
        threading.Thread.run,
        getattr(threading.Thread, "_bootstrap", None),
        getattr(threading.Thread, "_bootstrap_inner", None),
    )
} - {None}


def frame_record(code: CodeType, lineno: int, module: str) -> Frame:
    return Frame(code.co_filename, lineno, code.co_qualname, module)


def _module_of(frame: FrameType) -> str:
    return str(frame.f_globals.get("__name__", "?"))


def to_frames(frames: Iterable[FrameType]) -> tuple[Frame, ...]:
    return tuple(
        frame_record(f.f_code, f.f_lineno or 0, _module_of(f))
        for f in frames
        if f.f_code not in _HIDDEN
    )


def describe_wait(frames: list[FrameType]) -> str | None:
    """What the innermost known primitive in ``frames`` (outermost first) is.

    A building block (the Condition inside ``queue.Queue.get``) gives way to a
    known caller directly above it, which says more.
    """
    found: str | None = None
    for frame in reversed(frames):
        entry = PRIMITIVES.get(frame.f_code)
        if entry is None:
            if found is not None:
                break
            continue
        describe, building_block = entry
        try:
            found = describe(frame)
        except Exception:  # a frame torn down while we read it
            found = frame.f_code.co_qualname
        if not building_block:
            break
    return found


# --- tasks -------------------------------------------------------------------


def _awaited_by(obj: object) -> tuple[FrameType | None, object]:
    """The frame of one link of an await chain, and the next link."""
    if isinstance(obj, types.CoroutineType):
        return obj.cr_frame, obj.cr_await
    if isinstance(obj, types.GeneratorType):
        return obj.gi_frame, obj.gi_yieldfrom
    if isinstance(obj, types.AsyncGeneratorType):
        return obj.ag_frame, obj.ag_await
    name = type(obj).__name__
    if name in ("async_generator_asend", "async_generator_athrow"):
        # These wrappers expose no attribute for their generator.
        for ref in gc.get_referents(obj):
            if isinstance(ref, types.AsyncGeneratorType):
                return ref.ag_frame, ref.ag_await
    return None, None


def task_frames(task: asyncio.Task[Any]) -> list[FrameType]:
    frames: list[FrameType] = []
    link: object = task.get_coro()
    for _ in range(256):  # a bound, in case of a cycle
        frame, link = _awaited_by(link)
        if frame is None:
            break
        frames.append(frame)
    return frames


def _waiter_text(task: asyncio.Task[Any]) -> str | None:
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return None
    if isinstance(waiter, asyncio.Task):
        return f"asyncio.Task {waiter.get_name()!r}"
    kind = type(waiter).__name__
    return "asyncio.gather" if kind == "_GatheringFuture" else "Future"


def task_state(task: asyncio.Task[Any]) -> str:
    if task.done():
        return "done"
    if getattr(task, "_fut_waiter", None) is not None:
        return "waiting"
    try:
        current = asyncio.current_task(task.get_loop())
    except RuntimeError:
        current = None
    return "running" if current is task else "runnable"


class BlockClock:
    """Remembers since when each task or thread has been seen waiting at one spot."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, tuple[object, float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, key: Hashable, spot: object, now: float) -> float:
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or seen[0] != spot:
                self._seen[key] = (spot, now)
                return 0.0
            return now - seen[1]

    def forget_except(self, keys: set[Hashable]) -> None:
        """Drop what is known of tasks and threads no longer seen, so this stays small."""
        with self._lock:
            for key in [k for k in self._seen if k not in keys]:
                del self._seen[key]


CLOCK = BlockClock()


def clock_key(obj: asyncio.Task[Any] | threading.Thread) -> Hashable:
    if isinstance(obj, threading.Thread):
        return ("thread", obj.ident)
    return ("task", id(obj))


def origin_text(origin: Origin | None) -> tuple[str | None, tuple[Frame, ...]]:
    if origin is None or origin.code is None:
        return None, ()
    frame = Frame(origin.code.co_filename, origin.lineno, origin.code.co_qualname, "")
    return f"{frame.function} at {frame.filename}:{frame.lineno}", (frame,)


def _debug_origin(task: asyncio.Task[Any]) -> tuple[str | None, tuple[Frame, ...]]:
    # In asyncio debug mode each task keeps the traceback of its creation;
    # use it for tasks created before tracking began.
    tb = getattr(task, "_source_traceback", None)
    if not tb:
        return None, ()
    for entry in reversed(tb):
        if entry.filename not in SKIP_FILES:
            frame = Frame(entry.filename, entry.lineno or 0, entry.name, "")
            return f"{frame.function} at {frame.filename}:{frame.lineno}", (frame,)
    return None, ()


def inspect_task(task: asyncio.Task[Any], now: float) -> Leak:
    frames = task_frames(task)
    blocked_on = describe_wait(frames) or _waiter_text(task)
    state = task_state(task)
    # The future it waits on identifies one wait: a loop that wakes and parks
    # again at the same line starts a new one.
    spot = id(getattr(task, "_fut_waiter", None))
    waited = CLOCK.blocked_for(clock_key(task), spot, now) if state == "waiting" else None
    origin = origin_of(task)
    created_at, created_frames = origin_text(origin)
    if created_at is None:
        created_at, created_frames = _debug_origin(task)
    return Leak(
        kind="task",
        name=task.get_name(),
        ident=id(task),
        state=state,
        frames=to_frames(frames),
        created_at=created_at,
        created_frames=created_frames,
        blocked_on=blocked_on if state == "waiting" else None,
        blocked_for=waited,
        _ref=weakref.ref(task),
    )


# --- threads -----------------------------------------------------------------


_OWN_DIR = os.path.dirname(__file__) + os.sep


def thread_frames(frame: FrameType | None) -> list[FrameType]:
    """A thread's stack, outermost first, without the detector's own frames on top: the
    thread taking a snapshot (a signal handler interrupting the main thread, say) shows
    where it was, not the dump."""
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_DIR):
        frame = frame.f_back
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def is_pool_worker(frames: list[FrameType]) -> bool:
    return any(f.f_code is _WORKER_CODE for f in frames)


def is_idle_worker(frames: list[FrameType]) -> bool:
    """A pool worker between jobs: parked in ``_worker`` on its work queue."""
    return bool(frames) and frames[-1].f_code is _WORKER_CODE


def job_origin(frames: list[FrameType]) -> Origin | None:
    for frame in frames:
        if frame.f_code is _RUN_JOB_CODE:
            origin = frame.f_locals.get("origin")
            return origin if isinstance(origin, Origin) else None
    return None


def job_identity(frames: list[FrameType]) -> int | None:
    """The id of the work item a pool worker is running, if any."""
    for frame in frames:
        if frame.f_code is _WORK_ITEM_RUN_CODE:
            return id(frame.f_locals.get("self"))
    return None


def inspect_thread(thread: threading.Thread, top: FrameType | None, now: float) -> Leak:
    frames = thread_frames(top)
    blocked_on = describe_wait(frames)
    spot = (id(frames[-1]), frames[-1].f_lineno) if frames else None
    ident = thread.ident or 0
    origin = job_origin(frames) if is_pool_worker(frames) else origin_of(thread)
    created_at, created_frames = origin_text(origin)
    return Leak(
        kind="thread",
        name=thread.name,
        ident=ident,
        state="daemon" if thread.daemon else "running",
        frames=to_frames(frames),
        created_at=created_at,
        created_frames=created_frames,
        blocked_on=blocked_on,
        blocked_for=CLOCK.blocked_for(clock_key(thread), spot, now) if blocked_on else None,
        _ref=weakref.ref(thread),
    )
