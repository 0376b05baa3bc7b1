"""The detector: what is alive now, and what a scope left behind.

``check()`` marks a scope with a context variable. Tasks created under it,
directly or by its descendants, carry the scope in their origin (see
``_tracking``); threads and executor jobs too. On exit it waits, with capped
exponential backoff inside one total timeout, for them to finish; whatever is
still alive is a leak. A clean scope costs one scan of its own tasks and of the
process's threads, so it exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from . import _destroyed, _inspect, _proof
from ._filters import Ignore, excused
from ._records import Leak
from ._report import format_dump
from ._tracking import ORIGIN_ATTR, Scope, current_scope, hold, origin_of, release

P = ParamSpec("P")
R = TypeVar("R")

# Backoff between scans of a scope that still has something alive: short at
# first, so a task finishing a few milliseconds late costs little, and capped,
# so one finishing 50 ms late is noticed within ~50 ms.
FIRST_DELAY = 0.001
MAX_DELAY = 0.05

_known_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class LeakWarning(UserWarning):
    """A leak reported as a warning (the pytest plugin's ``leaks_action = warn``)."""


class LeakError(AssertionError):
    """Tasks or threads outlived the scope that started them. ``leaks`` lists them."""

    def __init__(self, leaks: list[Leak], *, waited: float = 0.0) -> None:
        super().__init__(leaks)
        self.leaks = leaks
        self.waited = waited

    def __str__(self) -> str:
        tasks = sum(1 for leak in self.leaks if leak.kind == "task")
        threads = len(self.leaks) - tasks
        proven = sum(1 for leak in self.leaks if leak.verdict == "proven")
        destroyed = sum(1 for leak in self.leaks if leak.state == "destroyed")
        of_which = f" ({proven} proven blocked forever)" if proven else ""
        head = (
            f"found {tasks} leaked task(s){of_which} and {threads} leaked thread(s) "
            f"still alive {self.waited:.2f}s after the scope ended"
        )
        if destroyed:
            head += f", {destroyed} of the tasks destroyed by the garbage collector while pending"
        head += ":\n\n"
        return head + format_dump(self.leaks)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _current_task() -> asyncio.Task[Any] | None:
    return asyncio.current_task() if _running_loop() is not None else None


def _open_loops() -> set[asyncio.AbstractEventLoop]:
    """The running loop and the loops the detector has seen, unless closed."""
    loop = _running_loop()
    if loop is not None:
        _known_loops.add(loop)
    return {known for known in list(_known_loops) if not known.is_closed()}


def _all_loop_tasks() -> set[asyncio.Task[Any]]:
    tasks: set[asyncio.Task[Any]] = set()
    for known in _open_loops():
        tasks |= asyncio.all_tasks(known)
    return tasks


def _task_records(tasks: list[asyncio.Task[Any]], now: float, *, prove: bool) -> list[Leak]:
    # Judged before they are read: the records' own weak references are the only ones the
    # detector adds, and the proof knows them.
    verdicts = _proof.prove(tasks).verdicts if prove else _proof.quick_verdicts(tasks)
    return [_inspect.inspect_task(task, now, verdicts.get(id(task))) for task in tasks]


def with_verdicts(found: list[Leak]) -> list[Leak]:
    """``found`` with a fresh proof's verdict on each task still alive."""
    targets = [leak.target() for leak in found if leak.kind == "task"]
    tasks = [task for task in targets if isinstance(task, asyncio.Future)]
    del targets
    if not tasks:
        return found
    verdicts = _proof.prove(tasks, limit=_proof.CHECK_LIMIT).verdicts
    return [
        dataclasses.replace(leak, verdict=verdicts[leak.ident])
        if leak.kind == "task" and leak.ident in verdicts
        else leak
        for leak in found
    ]


def snapshot() -> list[Leak]:
    """Every task (of the running loop and of loops the detector has seen) and every
    thread, as records with the same fields as a leak."""
    now = time.monotonic()
    records = _task_records(list(_all_loop_tasks()), now, prove=False)
    frames = sys._current_frames()
    records.extend(
        _inspect.inspect_thread(thread, frames.get(thread.ident or 0), now)
        for thread in threading.enumerate()
    )
    _inspect.CLOCK.forget_except({_inspect.clock_key(t) for t in _tracked_objects(records)})
    return records


def _tracked_objects(records: Iterable[Leak]) -> list[Any]:
    return [obj for leak in records if (obj := leak.target()) is not None]


def _scan_threads(now: float, belongs: Callable[[threading.Thread, list[Any]], bool]) -> list[Leak]:
    current = threading.current_thread()
    frames = sys._current_frames()
    found = []
    for thread in threading.enumerate():
        # Default filter: the thread asking cannot be waiting for itself to end.
        if thread is current or not thread.is_alive():
            continue
        stack = _inspect.thread_frames(frames.get(thread.ident or 0))
        if _inspect.is_pool_worker(stack) and _inspect.is_idle_worker(stack):
            # Default filter: an idle pool worker waits for the next job; the
            # pool reuses it, so it is not a leak.
            continue
        if belongs(thread, stack):
            found.append(_inspect.inspect_thread(thread, frames.get(thread.ident or 0), now))
    return found


def find(
    *,
    ignore: Iterable[Ignore] = (),
    tasks: bool = True,
    threads: bool = True,
    prove: bool = False,
) -> list[Leak]:
    """Every task of the running loop and every thread, except the caller and the
    default exclusions (idle pool workers, the main thread); never raises.

    With ``prove``, each task's ``verdict`` comes from a proof (see docs/leaks.md):
    ``proven`` means nothing that can still run can ever wake it. Without, a suspended
    task is ``suspected`` unless an earlier proof found it ``proven``.

    The tasks of those loops that the garbage collector destroyed while pending, while
    tracking was on, are listed too (``state == "destroyed"``, ``proven``), last.
    """
    now = time.monotonic()
    rules = tuple(ignore)
    found: list[Leak] = []
    if tasks:
        # Default filter: the task asking is still running its own code, not leaked.
        me = _current_task()
        found.extend(
            _task_records([task for task in _all_loop_tasks() if task is not me], now, prove=prove)
        )
        found.extend(_destroyed.on_loops(_open_loops()))
    if threads:
        # Default filter: the main thread runs the program itself; it ends with it.
        main = threading.main_thread()
        found.extend(_scan_threads(now, lambda thread, stack: thread is not main))
    return [leak for leak in found if not excused(leak, rules)]


async def find_async(
    *,
    timeout: float = 1.0,
    ignore: Iterable[Ignore] = (),
    tasks: bool = True,
    threads: bool = True,
    prove: bool = False,
) -> list[Leak]:
    """Like ``find``, but first gives what is alive up to ``timeout`` seconds to end."""
    deadline = time.monotonic() + timeout
    delay = FIRST_DELAY
    await asyncio.sleep(0)
    while True:
        found = find(ignore=ignore, tasks=tasks, threads=threads, prove=prove)
        remaining = deadline - time.monotonic()
        # A destroyed task will not end: only the live ones are waited for.
        if all(leak.state == "destroyed" for leak in found) or remaining <= 0:
            return found
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)


class _Current:
    """The default parent of a new scope: whichever is current."""


CURRENT = _Current()


def note_still_running(error: BaseException, found: list[Leak]) -> None:
    """Add to a failure what the failing scope had left running at that instant (not waited
    for, so some of it may have been about to end)."""
    if found and isinstance(error, Exception):
        error.add_note(
            f"tidegate.leaks: {len(found)} task(s)/thread(s) started here were still running "
            "when this error ended the scope (not waited for):\n\n" + format_dump(found)
        )


class _Entry:
    """The state of one entry into a ``Check``: a scope, and tracking held while it is open.

    ``parent`` is the scope it nests in (default: the current one); ``enter=False`` creates
    the scope without making it current (the caller sets ``current_scope`` where it needs it,
    in another context, say). ``close()`` must follow, once.
    """

    def __init__(
        self,
        *,
        parent: Scope | _Current | None = CURRENT,
        enter: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.scope = Scope(current_scope.get() if isinstance(parent, _Current) else parent)
        self._owns: Callable[[Scope | None], bool] = self.scope.contains
        self.token = current_scope.set(self.scope) if enter else None
        self.loop = loop if loop is not None else _running_loop()
        hold(self.loop)
        if self.loop is not None:
            _known_loops.add(self.loop)
        self.owner = _current_task()
        self.threads_before: weakref.WeakSet[threading.Thread] = weakref.WeakSet(
            threading.enumerate()
        )
        self.destroyed_mark = _destroyed.mark()
        self._closed = False

    def leave(self) -> None:
        """Stop being the current scope (what starts from now on is not ours)."""
        if self.token is not None:
            current_scope.reset(self.token)
            self.token = None

    def close(self) -> None:
        """The scope has been judged: pass on what may still run, and release tracking."""
        if not self._closed:
            self._closed = True
            self.scope.close()
            release()

    def _thread_is_ours(self, thread: threading.Thread, stack: list[Any]) -> bool:
        if _inspect.is_pool_worker(stack):
            origin = _inspect.job_origin(stack)
            if origin is not None:
                return self._owns(origin.scope)
        origin = origin_of(thread)
        if origin is not None:
            return self._owns(origin.scope)
        # Default filter: an untracked thread (started before tracking was on, or by C code)
        # that was already running when the scope began is not the scope's doing.
        return thread not in self.threads_before

    def scan(self, rules: tuple[Ignore, ...], tasks: bool, threads: bool) -> list[Leak]:
        now = time.monotonic()
        found: list[Leak] = []
        if tasks and self.loop is not None:
            # One pass over the loop's tasks, reading the scope each one
            # recorded at birth: 10k tasks cost ~2 ms (bench/leaks_bench.py),
            # and keeps the per-task cost of tracking to one attribute.
            owns = self._owns
            found.extend(
                _inspect.inspect_task(task, now)
                for task in asyncio.all_tasks(self.loop)
                # Default filter: the task that entered the scope is the scope's own body.
                if task is not self.owner
                # The raw (scope, code, lasti) stamp, read without building an Origin.
                and (origin := getattr(task, ORIGIN_ATTR, None)) is not None
                and owns(origin[0])
            )
        if threads:
            found.extend(_scan_threads(now, self._thread_is_ours))
        return [leak for leak in found if not excused(leak, rules)]

    def destroyed(self, rules: tuple[Ignore, ...]) -> list[_destroyed.Destroyed]:
        """The scope's tasks the garbage collector destroyed while pending, since it began."""
        return [
            d
            for d in _destroyed.since(self.destroyed_mark, self._owns)
            if not excused(d.leak, rules)
        ]

    def claim_destroyed(self, rules: tuple[Ignore, ...]) -> list[Leak]:
        """``destroyed()``, as records, now in this scope's report and no enclosing one's."""
        destroyed = self.destroyed(rules)
        _destroyed.claim(destroyed)
        return [d.leak for d in destroyed]

    def wait(
        self, rules: tuple[Ignore, ...], timeout: float, tasks: bool, threads: bool
    ) -> tuple[list[Leak], float]:
        """What is still alive after up to ``timeout`` seconds, and how long that took,
        waiting without a loop."""
        start = time.monotonic()
        # Sleeping here stalls a loop running in this thread, so waiting could not help
        # its tasks: they get one look. Threads run on their own and get the whole timeout.
        leaked_tasks = self.scan(rules, tasks=tasks, threads=False)
        deadline = start + timeout
        delay = FIRST_DELAY
        while True:
            leaked_threads = self.scan(rules, tasks=False, threads=threads)
            remaining = deadline - time.monotonic()
            if not leaked_threads or remaining <= 0:
                return with_verdicts(leaked_tasks + leaked_threads), time.monotonic() - start
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)

    async def wait_async(
        self, rules: tuple[Ignore, ...], timeout: float, tasks: bool, threads: bool
    ) -> tuple[list[Leak], float]:
        """Like ``wait``, from a coroutine of the loop: its tasks get the timeout too."""
        start = time.monotonic()
        deadline = start + timeout
        delay = FIRST_DELAY
        await asyncio.sleep(0)  # let just-cancelled tasks run their cleanup
        while True:
            found = self.scan(rules, tasks, threads)
            remaining = deadline - time.monotonic()
            if not found or remaining <= 0:
                return with_verdicts(found), time.monotonic() - start
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)


class Check:
    """A scope that must not leave tasks or threads behind; see ``check()``."""

    def __init__(
        self, *, timeout: float, ignore: Iterable[Ignore], tasks: bool, threads: bool
    ) -> None:
        self.timeout = timeout
        self.ignore = tuple(ignore)
        self.tasks = tasks
        self.threads = threads
        self._entries: list[_Entry] = []

    def _fresh(self) -> Check:
        return Check(
            timeout=self.timeout, ignore=self.ignore, tasks=self.tasks, threads=self.threads
        )

    def __enter__(self) -> Check:
        self._entries.append(_Entry())
        return self

    async def __aenter__(self) -> Check:
        return self.__enter__()

    def _leave(self) -> _Entry:
        entry = self._entries.pop()
        entry.leave()
        return entry

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        entry = self._leave()
        try:
            if exc is not None:
                # The body's own error propagates; what it left running is a note on it.
                note_still_running(exc, entry.scan(self.ignore, self.tasks, self.threads))
                return
            found, waited = entry.wait(self.ignore, self.timeout, self.tasks, self.threads)
            if self.tasks:
                found.extend(entry.claim_destroyed(self.ignore))
            if found:
                raise LeakError(found, waited=waited)
        finally:
            entry.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        entry = self._leave()
        try:
            if exc is not None:
                note_still_running(exc, entry.scan(self.ignore, self.tasks, self.threads))
                return
            found, waited = await entry.wait_async(
                self.ignore, self.timeout, self.tasks, self.threads
            )
            if self.tasks:
                found.extend(entry.claim_destroyed(self.ignore))
            if found:
                raise LeakError(found, waited=waited)
        finally:
            entry.close()

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Use as a decorator: each call runs in a fresh scope."""
        if asyncio.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                async with self._fresh():
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            __tracebackhide__ = True
            with self._fresh():
                return func(*args, **kwargs)

        return run


def check(
    *,
    timeout: float = 1.0,
    ignore: Iterable[Ignore] = (),
    tasks: bool = True,
    threads: bool = True,
) -> Check:
    """Fail with ``LeakError`` if tasks or threads started in the scope outlive it.

    Use as ``with``, ``async with``, or a decorator of sync and async functions.
    On exit, waits up to ``timeout`` seconds in total for them to finish.
    """
    return Check(timeout=timeout, ignore=ignore, tasks=tasks, threads=threads)


async def cancel_tasks(leaks: Iterable[Leak], *, timeout: float = 1.0) -> None:
    """Cancel the leaked tasks among ``leaks`` and wait for them to finish."""
    targets = [
        task
        for leak in leaks
        if leak.kind == "task" and isinstance(task := leak.target(), asyncio.Task)
    ]
    for task in targets:
        task.cancel()
    if targets:
        await asyncio.wait(targets, timeout=timeout)
