"""Tasks the garbage collector destroys while pending: a report instead of a log line.

A pending task that nothing references any more is garbage. At the next collection that
reaches it CPython finalizes the whole cycle: its coroutine first (closed: its ``finally``
blocks run, its frames are gone), then the task, which logs "Task was destroyed but it is
pending!" (CPython issue 91887) through the loop's exception handler, with a task whose stack
is already empty. Such a task could never have run again: it is a proven leak, and the one
moment to read its await chain is before the collector starts.

So while tracking is on, a ``gc.callbacks`` hook reads, at the start of each collection, the
tasks that collection could destroy, and keeps a report of each (``inspect_task``: the await
chain, what it waits on, where it was created). At the end of the collection, the tasks whose
weak reference died were destroyed by it, pending: their reports become records with
``state="destroyed"`` and the verdict ``proven``. Nothing here keeps a task alive or changes
what the collector does; asyncio's own log line is still written.

Which tasks a collection can destroy, cheaply: CPython's collector is generational, and a
cycle is collected only by a collection of the oldest generation any of its objects is in; a
task starts in the youngest. A young collection (generation 0 or 1) can therefore destroy only
tasks created since the last collection of that generation: the tracking factories list the
tasks they create outside every scope (``_tracking.born``), and this module keeps them a
generation or two. A full collection reads every pending task of asyncio's registry, on any
loop (also loops the detector does not track). Not read: tasks a scope keeps alive (they cannot
be destroyed; the scope reports them), tasks the detector's proof keeps, and tasks whose owner
asked asyncio not to log their destruction (``_log_destroy_pending = False``).

Whose a destroyed task was is its scope: the one stamped at creation, or, on a loop that was
not tracked, the one in the task's context (``current_scope``). ``check()`` and the pytest
plugin take the records of their own scope; ``find()`` those of the loops it looks at.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import itertools
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import Context
from typing import Any

from . import _inspect, _proof, _tracking
from ._records import Leak, RecordRef
from ._tracking import ORIGIN_ATTR, Scope, current_scope, kept_alive

# The records kept for ``find()``, ``check()`` and the plugin: the most recent ones.
HISTORY = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Destroyed:
    """One task the collector destroyed while pending: the record, its scope, its loop."""

    seq: int
    scope: Scope | None
    loop: weakref.ReferenceType[asyncio.AbstractEventLoop] | None
    leak: Leak


class _Watched:
    """A task that a collection may destroy, and the report read of it while it waited."""

    __slots__ = ("armed", "key", "ref", "report", "waiter")

    def __init__(self, task: asyncio.Future[Any]) -> None:
        self.key = id(task)
        # The detector's own weak references (``RecordRef``): the proof does not count them.
        self.ref: weakref.ReferenceType[asyncio.Future[Any]] = RecordRef(task)
        # The report, and the future it was read for: a task suspended on the same pending
        # future has not run since (it would have left it), so the report still holds.
        self.waiter: weakref.ReferenceType[asyncio.Future[Any]] | None = None
        self.report: tuple[Leak, Scope | None, Any] | None = None
        self.armed = False  # read at the start of the current collection, and pending


class _Watcher:
    def __init__(self) -> None:
        self.on = False
        self.young: list[_Watched] = []  # generation 0: created since the last collection
        self.middle: list[_Watched] = []  # generation 1
        self.by_task: dict[int, _Watched] = {}  # every task watched, by id
        self.collecting: list[_Watched] = []
        self.history: collections.deque[Destroyed] = collections.deque(maxlen=HISTORY)
        self.seq = itertools.count(1)
        self.last_seq = 0
        # Records a scope has reported already (its LeakError carried them): an enclosing
        # scope does not report them again.
        self.claimed: set[int] = set()

    # -- on and off, with tracking ---------------------------------------------------------

    def switch(self, on: bool) -> None:
        if on and not self.on:
            gc.callbacks.append(self.callback)
        elif not on and self.on:
            gc.callbacks.remove(self.callback)
            self.young, self.middle, self.collecting = [], [], []
            self.by_task.clear()
        self.on = on

    # -- the collector's callback ----------------------------------------------------------

    def callback(self, phase: str, info: dict[str, int]) -> None:
        try:
            if phase == "start":
                self.start(info.get("generation", 2))
            else:
                self.stop(info.get("generation", 2))
        except Exception:  # never break a collection; at worst one report is lost
            self.collecting = []

    def _adopt_born(self) -> None:
        born = _tracking.born
        if born:
            fresh = [self._entry(ref) for ref in born]
            born.clear()
            self.young.extend(entry for entry in fresh if entry is not None)

    def _entry(self, ref: weakref.ReferenceType[asyncio.Future[Any]]) -> _Watched | None:
        task = ref()
        if task is None or task.done():
            return None
        entry = self.by_task.get(id(task))
        if entry is None or entry.ref() is not task:
            entry = self.by_task[id(task)] = _Watched(task)
        return entry

    def start(self, generation: int) -> None:
        self._adopt_born()
        if generation >= 2:
            for task in _registry():
                if id(task) not in self.by_task and not task.done():
                    self.by_task[id(task)] = _Watched(task)
            candidates = list(self.by_task.values())
        elif generation == 1:
            candidates = self.young + self.middle
        else:
            candidates = list(self.young)
        if not candidates:
            self.collecting = []
            return
        now = time.monotonic()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1000.0)  # the loop's thread must not step a task meanwhile
        try:
            for entry in candidates:
                entry.armed = _read(entry, now)
        finally:
            sys.setswitchinterval(switch)
        self.collecting = candidates

    def stop(self, generation: int) -> None:
        for entry in self.collecting:
            if entry.ref() is None:
                if self.by_task.get(entry.key) is entry:
                    del self.by_task[entry.key]
                if entry.armed and entry.report is not None:
                    self._record(*entry.report)
            entry.armed = False
        self.collecting = []
        # Survivors move a generation up, as in the collector; dead and finished ones go.
        if generation == 0:
            self.middle.extend(self.young)
            self.young = []
        else:
            self.young, self.middle = [], []
        self.middle = [e for e in self.middle if _alive_pending(e)]
        if generation >= 1:
            for key in [k for k, e in self.by_task.items() if not _alive_pending(e)]:
                del self.by_task[key]

    def _record(self, leak: Leak, scope: Scope | None, loop: Any) -> None:
        seq = next(self.seq)
        self.last_seq = seq
        record = dataclasses.replace(leak, state="destroyed", blocked_for=None, _ref=None)
        self.history.append(Destroyed(seq, scope, loop, record))


def _alive_pending(entry: _Watched) -> bool:
    task = entry.ref()
    return task is not None and not task.done()


def _registry() -> list[asyncio.Future[Any]]:
    """Every task asyncio knows that may be suspended, on any loop: its weak registry (3.12+
    keeps the eagerly started ones elsewhere only while they run their first step)."""
    registry: Iterable[asyncio.Future[Any]] | None = getattr(
        asyncio.tasks, "_scheduled_tasks", None
    )
    if registry is None:
        registry = getattr(asyncio.tasks, "_all_tasks", ())
    return list(registry)


def scope_of(task: asyncio.Future[Any]) -> Scope | None:
    """The scope ``task`` was created in: stamped at creation, else in its context."""
    origin = getattr(task, ORIGIN_ATTR, None)
    if origin is not None:
        return origin[0]  # type: ignore[no-any-return]
    context = _context_of(task)
    return None if context is None else context.get(current_scope)


def _context_of(task: asyncio.Future[Any]) -> Context | None:
    get_context = getattr(task, "get_context", None)  # Python 3.12+
    if get_context is not None:
        return get_context()  # type: ignore[no-any-return]
    for held in gc.get_referents(task):
        if isinstance(held, Context):
            return held
    return None


def _at_risk(task: asyncio.Future[Any]) -> bool:
    """Pending, and nothing of ours keeps it alive: the collector could destroy it."""
    if task.done() or not getattr(task, "_log_destroy_pending", True):
        return False
    origin = getattr(task, ORIGIN_ATTR, None)
    if origin is not None and kept_alive(origin[0]):
        return False
    return not _proof.is_kept(task)


def _read(entry: _Watched, now: float) -> bool:
    """Read ``entry``'s task if the coming collection could destroy it; True if it is
    pending and its report is current."""
    task = entry.ref()
    if task is None or not _at_risk(task):
        return False
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:  # runnable: its loop holds it
        return False
    if entry.waiter is None or entry.waiter() is not waiter:
        leak = _inspect.inspect_task(task, now, "proven")  # type: ignore[arg-type]
        loop = weakref.ref(task.get_loop())
        entry.report = (leak, scope_of(task), loop)
        entry.waiter = RecordRef(waiter)
    return True


_WATCHER = _Watcher()
_tracking.switch_hooks.append(_WATCHER.switch)


# --- what readers ask ---------------------------------------------------------------------


def mark() -> int:
    """A position in the history: ``since(mark())`` later gives what was destroyed after."""
    return _WATCHER.last_seq


def since(seq: int, owns: Callable[[Scope | None], bool]) -> list[Destroyed]:
    """The tasks destroyed after ``seq`` whose scope ``owns`` says is its own, unless a scope
    reported them already."""
    claimed = _WATCHER.claimed
    return [d for d in _WATCHER.history if d.seq > seq and d.seq not in claimed and owns(d.scope)]


def claim(reported: list[Destroyed]) -> None:
    """``reported`` are in a scope's report: enclosing scopes will not report them again."""
    claimed = _WATCHER.claimed
    claimed.update(d.seq for d in reported)
    if len(claimed) > 2 * HISTORY:  # forget the ones that left the history
        oldest = _WATCHER.history[0].seq if _WATCHER.history else _WATCHER.last_seq + 1
        _WATCHER.claimed = {seq for seq in claimed if seq >= oldest}


def on_loops(loops: set[asyncio.AbstractEventLoop]) -> list[Leak]:
    """The tasks destroyed on ``loops`` (the ones ``find()`` looks at), oldest first."""
    found = []
    for destroyed in _WATCHER.history:
        loop = None if destroyed.loop is None else destroyed.loop()
        if loop is not None and loop in loops:
            found.append(destroyed.leak)
    return found


def unaccounted(owns: Callable[[Scope | None], bool]) -> Iterator[asyncio.Future[Any]]:
    """Pending tasks of an owner's scope that nothing of ours keeps alive (on loops the
    detector does not track, mostly): the ones a collection could destroy now."""
    for task in _registry():
        if _at_risk(task) and owns(scope_of(task)):
            yield task


def is_watching() -> bool:
    return _WATCHER.on
