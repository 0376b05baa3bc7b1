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
import contextvars
import dis
import gc
import os
import queue
import select
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Hashable, Iterable
from types import CodeType, FrameType
from typing import Any

from ._records import Frame, Leak, RecordRef, Verdict
from ._tracking import SKIP_FILES, Origin, current_scope, origin_of, run_job

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


def seconds_text(seconds: float) -> str:
    """A duration to the millisecond, without trailing zeros: ``0.03``, ``3600``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{seconds:.1g}" if text == "0" and seconds > 0 else text


def _sleep(frame: FrameType) -> str:
    delay = frame.f_locals.get("delay")
    if isinstance(delay, int | float):
        return f"asyncio.sleep ({seconds_text(delay)}s)"
    return "asyncio.sleep"


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

# Thread pools, by the function each worker loops in, and the calls in it that wait for the
# next job. A worker whose loop is at one of those calls is idle, whatever sits above it (the
# primitive's own frames, or a wrapper such as blockbuster's around the blocking call); at
# any other line it is running a job. Modules are matched by name, so anyio and trio need
# not be imported.
POOL_LOOPS: dict[tuple[str, str], frozenset[str]] = {
    # asyncio's default executor, run_in_executor and to_thread.
    ("concurrent.futures.thread", "_worker"): frozenset({"get"}),
    # anyio.to_thread.run_sync on asyncio: idle workers are kept 10 s for reuse.
    ("anyio._backends._asyncio", "WorkerThread.run"): frozenset({"get"}),
    # trio.to_thread.run_sync (and anyio on trio): the thread cache keeps idle workers 10 s.
    ("trio._core._thread_cache", "WorkerThread._work"): frozenset({"acquire"}),
    # multiprocessing.pool.ThreadPool.
    ("multiprocessing.pool", "worker"): frozenset({"get"}),
}
_RUN_JOB_CODE = _code(run_job)
# Plumbing every thread or pool job has, hidden from reports as Go hides its
# runtime frames: thread bootstrap, and the detector's own job wrapper.
HIDDEN = {
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
        if f.f_code not in HIDDEN
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


def _holder_of(waiter: object, frame: FrameType) -> str | None:
    """Where the awaiting frame keeps the future it waits on: an attribute of its ``self``
    (``RequestHandler._waiter``) or a local variable. Read without running any code: the
    instance dict and slots only."""
    local_name = None
    for name, value in frame.f_locals.items():
        if value is waiter:
            local_name = name
            if name != "self":
                break
    owner = frame.f_locals.get("self")
    if owner is not None:
        attributes = getattr(owner, "__dict__", None)
        if isinstance(attributes, dict):
            for name, value in attributes.items():
                if value is waiter:
                    return f"{type(owner).__qualname__}.{name}"
        for klass in type(owner).__mro__:
            for name in getattr(klass, "__slots__", ()):
                slot = klass.__dict__.get(name)
                if isinstance(slot, types.MemberDescriptorType):
                    try:
                        value = slot.__get__(owner, klass)
                    except AttributeError:  # an unset slot
                        continue
                    if value is waiter:
                        return f"{type(owner).__qualname__}.{name}"
    if local_name is not None:
        return f"{local_name} in {frame.f_code.co_qualname}"
    return None


def waiter_text(task: asyncio.Task[Any], frames: list[FrameType]) -> str | None:
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return None
    if isinstance(waiter, asyncio.Task):
        return f"asyncio.Task {waiter.get_name()!r}"
    if type(waiter).__name__ == "_GatheringFuture":
        return "asyncio.gather"
    holder = _holder_of(waiter, frames[-1]) if frames else None
    return "Future" if holder is None else f"Future ({holder})"


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
    return traceback_origin(getattr(task, "_source_traceback", None))


def traceback_origin(tb: Any) -> tuple[str | None, tuple[Frame, ...]]:
    """The creation site in an asyncio debug-mode creation traceback: its first frame outside
    asyncio's plumbing, from the innermost."""
    if not tb:
        return None, ()
    for entry in reversed(tb):
        if entry.filename not in SKIP_FILES:
            frame = Frame(entry.filename, entry.lineno or 0, entry.name, "")
            return f"{frame.function} at {frame.filename}:{frame.lineno}", (frame,)
    return None, ()


def inspect_task(task: asyncio.Task[Any], now: float, verdict: Verdict | None = None) -> Leak:
    frames = task_frames(task)
    blocked_on = describe_wait(frames) or waiter_text(task, frames)
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
        verdict=verdict,
        _ref=RecordRef(task),
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


_wait_lines: dict[CodeType, frozenset[int]] = {}


def _lines_calling(code: CodeType, names: frozenset[str]) -> frozenset[int]:
    """The lines of ``code`` that load one of ``names`` (to call it), worked out once."""
    lines = _wait_lines.get(code)
    if lines is None:
        lines = frozenset(
            instruction.positions.lineno
            for instruction in dis.get_instructions(code)
            if instruction.argval in names
            and instruction.opname.startswith("LOAD_")
            and instruction.positions is not None
            and instruction.positions.lineno is not None
        )
        _wait_lines[code] = lines
    return lines


def _pool_loop(frame: FrameType) -> frozenset[str] | None:
    return POOL_LOOPS.get((_module_of(frame), frame.f_code.co_qualname))


def pool_worker_index(frames: list[FrameType]) -> int | None:
    """Where in ``frames`` (outermost first) a pool worker's loop is, if this is one."""
    for index in range(len(frames) - 1, -1, -1):
        if _pool_loop(frames[index]) is not None:
            return index
    return None


def is_pool_worker(frames: list[FrameType]) -> bool:
    return pool_worker_index(frames) is not None


def is_idle_worker(frames: list[FrameType]) -> bool:
    """A pool worker between jobs: its loop is waiting for the next one."""
    index = pool_worker_index(frames)
    if index is None:
        return False
    loop = frames[index]
    names = _pool_loop(loop)
    assert names is not None
    return loop.f_lineno in _lines_calling(loop.f_code, names)


def job_origin(frames: list[FrameType]) -> Origin | None:
    """Whose job a pool worker runs: the origin ``ThreadPoolExecutor.submit`` recorded, or,
    for pools that carry the submitter's context into the worker (anyio, trio), the scope
    in that context."""
    for frame in frames:
        if frame.f_code is _RUN_JOB_CODE:
            origin = frame.f_locals.get("origin")
            return origin if isinstance(origin, Origin) else None
    for frame in frames:
        for value in frame.f_locals.values():
            if isinstance(value, contextvars.Context) and current_scope in value:
                return Origin(value[current_scope], None, 0)
    return None


# Blocking functions written in C: a thread inside one shows only the frame that called it.
# Known by identity, so `from time import sleep` is recognised as well as `time.sleep`.
_C_BLOCKING: dict[int, str] = {
    id(time.sleep): "time.sleep",
    id(select.select): "select.select",
    id(os.read): "os.read",
    id(os.waitpid): "os.waitpid",
}
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_line_loads: dict[tuple[CodeType, int], list[list[dis.Instruction]]] = {}


def _load_chains(code: CodeType, line: int) -> list[list[dis.Instruction]]:
    """The name chains (``time.sleep``, ``lock.acquire``) loaded on ``line`` of ``code``."""
    key = (code, line)
    chains = _line_loads.get(key)
    if chains is None:
        chains = []
        for instruction in dis.get_instructions(code):
            if instruction.positions is None or instruction.positions.lineno != line:
                continue
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_DEREF"):
                chains.append([instruction])
            elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and chains:
                chains[-1].append(instruction)
        _line_loads[key] = chains
    return chains


def _c_call(frame: FrameType) -> str | None:
    """The known blocking C function ``frame`` is calling, if any: from the names its
    current line loads, resolved through modules and lock objects only (no user code runs)."""
    for chain in reversed(_load_chains(frame.f_code, frame.f_lineno or 0)):
        first = chain[0]
        scope = frame.f_globals if first.opname in ("LOAD_GLOBAL", "LOAD_NAME") else frame.f_locals
        value = scope.get(str(first.argval))
        if value is None and first.opname == "LOAD_GLOBAL":
            value = frame.f_builtins.get(str(first.argval))
        for link in chain[1:]:
            if not isinstance(value, types.ModuleType):
                if isinstance(value, _LOCK_TYPES) and link.argval == "acquire":
                    return "threading.Lock.acquire"
                break
            value = value.__dict__.get(str(link.argval))
        if value is not None and id(value) in _C_BLOCKING:
            return _C_BLOCKING[id(value)]
    return None


def inspect_thread(thread: threading.Thread, top: FrameType | None, now: float) -> Leak:
    frames = thread_frames(top)
    blocked_on = describe_wait(frames)
    if blocked_on is None and frames:
        try:
            blocked_on = _c_call(frames[-1])
        except Exception:  # a frame torn down while we read it
            blocked_on = None
    spot = (id(frames[-1]), frames[-1].f_lineno) if frames else None
    ident = thread.ident or 0
    origin = job_origin(frames) if is_pool_worker(frames) else None
    if origin is None or origin.code is None:
        # Where the thread (or the pool's worker) was started.
        origin = origin_of(thread)
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
