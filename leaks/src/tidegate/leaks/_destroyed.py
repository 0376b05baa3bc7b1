"""Tasks the garbage collector destroys while pending: a report instead of a log line.

A pending task that nothing references any more is garbage. At the next collection that
reaches it CPython finalizes the whole cycle: its coroutine first (closed: its ``finally``
blocks run, its frames are gone), then the task, which logs "Task was destroyed but it is
pending!" (CPython issue 91887) through the loop's exception handler, with a task whose stack
is already empty. Such a task could never have run again: it is a proven leak, and the one
moment to read its await chain is before the collector starts.

So while tracking is on, a ``gc.callbacks`` hook reads, at the start of each collection, the
tasks that collection could destroy, and keeps a reading of each (the await chain, what it
waits on, where it was created). At the end of the collection, the tasks whose
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
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import Context
from types import CodeType
from typing import Any

from . import _inspect, _proof, _tracking
from ._records import Leak, RecordRef
from ._tracking import ORIGIN_ATTR, Origin, Scope, current_scope, kept_alive

# The records kept for ``find()``, ``check()`` and the plugin: the most recent ones.
HISTORY = 1000
# At most this many tasks are read at the start of one collection (a first reading costs
# ~16 us, mostly making the coroutines' frame objects; one still current costs nothing), so
# that a full collection among 10k idle tasks stalls ~16 ms more, not ~160 ms. The tasks
# created since the last collection come first: garbage dies young. Past the limit, a task
# the collection destroys is reported by asyncio's log line only (counted in ``unread``).
READ_LIMIT = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Destroyed:
    """One task the collector destroyed while pending: the record, its scope, its loop."""

    seq: int
    scope: Scope | None
    loop: weakref.ReferenceType[asyncio.AbstractEventLoop] | None
    leak: Leak


class _Watched:
    """A task that a collection may destroy, and the report read of it while it waited."""

    __slots__ = ("key", "ref", "report", "waiter")

    def __init__(self, task: asyncio.Future[Any]) -> None:
        self.key = id(task)
        # The detector's own weak references (``RecordRef``): the proof does not count them.
        self.ref: weakref.ReferenceType[asyncio.Future[Any]] = RecordRef(task)
        # The report, and the future it was read for: a task suspended on the same pending
        # future has not run since (it would have left it), so the report still holds.
        self.waiter: weakref.ReferenceType[asyncio.Future[Any]] | None = None
        self.report: _Reading | None = None


class _Watcher:
    def __init__(self) -> None:
        self.on = False
        # Weak references to the tasks a young collection may destroy, by generation; a
        # task's entry (with its report) is made only once it is found suspended and at risk.
        self.young: list[weakref.ReferenceType[asyncio.Future[Any]]] = []  # generation 0
        self.middle: list[weakref.ReferenceType[asyncio.Future[Any]]] = []  # generation 1
        self.by_task: dict[int, _Watched] = {}  # the entries, by id of the task
        self.collecting: list[_Watched] = []  # read at the start of this collection
        self.history: collections.deque[Destroyed] = collections.deque(maxlen=HISTORY)
        self.seq = itertools.count(1)
        self.last_seq = 0
        # Records a scope has reported already (its LeakError carried them): an enclosing
        # scope does not report them again.
        self.claimed: set[int] = set()
        # Tasks at risk left unread because a collection had read ``READ_LIMIT`` already.
        self.unread = 0

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

    def start(self, generation: int) -> None:
        born = _tracking.born
        if born:
            self.young.extend(born)
            born.clear()
        tasks: Iterable[asyncio.Future[Any] | None]
        if generation >= 2:
            # Every task, on every loop; the young ones first, and once.
            tasks = list(dict.fromkeys([*(ref() for ref in self.young), *_registry()]))
        elif generation == 1:
            tasks = [ref() for ref in itertools.chain(self.young, self.middle)]
        else:
            tasks = [ref() for ref in self.young]
        at_risk = [task for task in tasks if task is not None and _suspended_at_risk(task)]
        del tasks
        self.collecting = []
        if not at_risk:
            return
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1000.0)  # the loop's thread must not step a task meanwhile
        try:
            reads = 0
            for task in at_risk:
                entry = self.by_task.get(id(task))
                if entry is None or entry.ref() is not task:
                    entry = self.by_task[id(task)] = _Watched(task)
                if not _current(entry, task):
                    if reads >= READ_LIMIT:
                        self.unread += 1
                        continue
                    _read(entry, task)
                    reads += 1
                self.collecting.append(entry)
        finally:
            sys.setswitchinterval(switch)
            del at_risk

    def stop(self, generation: int) -> None:
        for entry in self.collecting:
            if entry.ref() is None:  # destroyed by this collection, pending
                if self.by_task.get(entry.key) is entry:
                    del self.by_task[entry.key]
                if entry.report is not None:
                    self._record(entry.report)
        self.collecting = []
        # Survivors move a generation up, as in the collector; dead and finished ones go.
        if generation == 0:
            self.middle.extend(ref for ref in self.young if _pending(ref))
            self.young = []
        else:
            self.young, self.middle = [], []
            for key in [k for k, e in self.by_task.items() if not _pending(e.ref)]:
                del self.by_task[key]

    def _record(self, reading: _Reading) -> None:
        seq = next(self.seq)
        self.last_seq = seq
        self.history.append(Destroyed(seq, reading.scope, reading.loop, reading.record()))


def _pending(ref: weakref.ReferenceType[asyncio.Future[Any]]) -> bool:
    task = ref()
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


def _suspended_at_risk(task: asyncio.Future[Any]) -> bool:
    # Runnable tasks are held by their loop: only a suspended one can be garbage.
    return getattr(task, "_fut_waiter", None) is not None and _at_risk(task)


@dataclasses.dataclass(frozen=True, slots=True)
class _Reading:
    """What a task was, read at the start of a collection: the raw await chain (code objects
    and instruction offsets), what it waits on, where it was created. Lines, frames and the
    record are worked out only if the collection destroys it (a quarter of the cost of a
    full record; a full collection reads every suspended task nothing of ours keeps)."""

    name: str
    ident: int
    chain: tuple[tuple[CodeType, int, str], ...]  # outermost first: code, offset, module
    blocked_on: str | None
    origin: tuple[Any, ...] | None  # the task's raw stamp, if tracked
    source_traceback: Any  # asyncio debug mode's creation traceback, if any
    scope: Scope | None
    loop: weakref.ReferenceType[asyncio.AbstractEventLoop] | None

    def record(self) -> Leak:
        frames = tuple(
            _inspect.frame_record(code, Origin(None, code, offset).lineno, module)
            for code, offset, module in self.chain
            if code not in _inspect.HIDDEN
        )
        origin = None if self.origin is None else Origin._make(self.origin)
        created_at, created_frames = _inspect.origin_text(origin)
        if created_at is None:
            created_at, created_frames = _inspect.traceback_origin(self.source_traceback)
        return Leak(
            kind="task",
            name=self.name,
            ident=self.ident,
            state="destroyed",
            frames=frames,
            created_at=created_at,
            created_frames=created_frames,
            blocked_on=self.blocked_on,
            blocked_for=None,
            verdict="proven",
        )


def _current(entry: _Watched, task: asyncio.Future[Any]) -> bool:
    """Whether ``entry`` holds a reading of ``task`` still true: it waits on the future it
    was read for, so it has not run since."""
    waiter = getattr(task, "_fut_waiter", None)
    return entry.report is not None and entry.waiter is not None and entry.waiter() is waiter


def _read(entry: _Watched, task: asyncio.Future[Any]) -> None:
    waiter = getattr(task, "_fut_waiter", None)
    frames = _inspect.task_frames(task)  # type: ignore[arg-type]
    entry.report = _Reading(
        name=task.get_name(),  # type: ignore[attr-defined]
        ident=id(task),
        chain=tuple((f.f_code, f.f_lasti, str(f.f_globals.get("__name__", "?"))) for f in frames),
        blocked_on=_inspect.describe_wait(frames) or _inspect.waiter_text(task, frames),  # type: ignore[arg-type]
        origin=getattr(task, ORIGIN_ATTR, None),
        source_traceback=getattr(task, "_source_traceback", None),
        scope=scope_of(task),
        loop=weakref.ref(task.get_loop()),
    )
    entry.waiter = None if waiter is None else RecordRef(waiter)


_WATCHER = _Watcher()
_tracking.switch_hooks.append(_WATCHER.switch)


# --- what readers ask ---------------------------------------------------------------------


def _history() -> list[Destroyed]:
    # A copy, taken in one C call: a collection can start at any allocation, in this thread
    # too, and its callback appends to the history, which would break an iteration over it.
    return list(_WATCHER.history)


def mark() -> int:
    """A position in the history: ``since(mark())`` later gives what was destroyed after."""
    return _WATCHER.last_seq


def since(seq: int, owns: Callable[[Scope | None], bool]) -> list[Destroyed]:
    """The tasks destroyed after ``seq`` whose scope ``owns`` says is its own, unless a scope
    reported them already."""
    claimed = _WATCHER.claimed
    return [d for d in _history() if d.seq > seq and d.seq not in claimed and owns(d.scope)]


def claim(reported: list[Destroyed]) -> None:
    """``reported`` are in a scope's report: enclosing scopes will not report them again."""
    claimed = _WATCHER.claimed
    claimed.update(d.seq for d in reported)
    if len(claimed) > 2 * HISTORY:  # forget the ones that left the history
        history = _history()
        oldest = history[0].seq if history else _WATCHER.last_seq + 1
        _WATCHER.claimed = {seq for seq in claimed if seq >= oldest}


def on_loops(loops: set[asyncio.AbstractEventLoop]) -> list[Leak]:
    """The tasks destroyed on ``loops`` (the ones ``find()`` looks at), oldest first."""
    found = []
    for destroyed in _history():
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
