"""Proof of leak: which suspended tasks nothing that can still run can ever reach.

A task suspended on a future can only be woken by code that reaches that future (to
complete it) or the task itself (to cancel it). This module finds the tasks no live code
can reach, the way CPython's cycle collector finds garbage, but only in the part of the
heap around the suspended tasks:

1. G: every object reachable from the suspended tasks through ``gc.get_referents``,
   except that "cut" objects (modules and their dicts, classes, code, event loops,
   threads, running frames, tasks that are not suspended) are kept as leaves.
2. For each object of G, count the references it receives from the objects of G that were
   expanded. ``sys.getrefcount`` minus that count minus the analysis' own references is
   what holds it from outside G: a global, a running frame of any thread, C code (uvloop's
   libuv handles, a selector), a timer. Such objects are roots; so is anything with a live
   weak reference (a weak reference can hand the object back).
3. Mark from the roots along the references inside G. A suspended task left unmarked is
   held only by other unmarked objects: nothing that can run reaches it or what it waits
   on, so it can never be woken. That is a proof, not a heuristic.

Cutting is always sound: a cut object's references are not counted, so what it holds shows
as held from outside and is a root. Cuts (and the size limit) trade precision for speed,
never soundness. For the same reason references the analysis cannot see (C code that does
not traverse) make objects roots, never garbage: that is what makes uvloop safe.

Known exceptions, by design: ``asyncio.all_tasks()`` and the loop's registry of async
generators hold weak references to every task and generator (they serve the loop's final
shutdown, which cancels everything), and the detector's own holders (a scope's list of
its tasks' coroutines, the records' weak references, this module's keep-alive registry)
are discounted.
Code that fetches tasks back through them (``all_tasks()``, ``gc.get_referrers``) could
still cancel a proven task: that is reflection, like reading a goroutine's stack in Go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import gc
import operator
import sys
import sysconfig
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any

from ._records import Leak, RecordRef, Verdict
from ._tracking import ORIGIN_ATTR, is_keepalive

# Beyond this many objects in G the search stops: the objects not yet expanded are cut,
# which is sound, so tasks whose proof needed more stay "suspected". 10k suspended tasks
# with their coroutines, futures and primitives are ~150k objects (bench/leaks_proof.py).
DEFAULT_LIMIT = 1_000_000
# check() proves only what its scope leaked; a smaller bound keeps a leaking test quick
# when its leaked tasks hold a large object graph.
CHECK_LIMIT = 250_000

# A proven task is kept alive (at most this many) until it ends: if the collector destroyed
# its cycle, the finally blocks of its coroutine would run and could wake the peers it
# deadlocks with; a proof that is later contradicted would be a flicker.
KEEP_LIMIT = 100_000

# The C task and the pure-Python one (what asyncio uses where _asyncio is missing).
_Task: tuple[type, ...] = (asyncio.Task, getattr(asyncio.tasks, "_PyTask", asyncio.Task))


@dataclass(frozen=True, slots=True)
class Proof:
    """The verdicts of one analysis, keyed by ``id(task)``, and what it cost."""

    verdicts: dict[int, Verdict]
    objects: int  # size of G
    complete: bool  # False when the limit stopped the search
    trusted: bool  # False where reference counts cannot be trusted: nothing is proven
    seconds: float

    def verdict(self, task: asyncio.Future[Any]) -> Verdict:
        return self.verdicts.get(id(task), "suspected")


# --- what the loop will do by itself -----------------------------------------------


def _loop_attributes(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """What a loop holds: its attributes, compiled (uvloop) or in its ``__dict__``."""
    held = gc.get_referents(loop)
    attributes = getattr(loop, "__dict__", None)
    if attributes is not None:
        held.extend(attributes.values())
    return held


def _loop_handles(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """The callbacks a loop has scheduled: its ready queue and its timers.

    asyncio keeps them in ``_ready`` and ``_scheduled``; uvloop in compiled attributes
    that only ``gc.get_referents`` sees, a deque and a set of its handles.
    """
    handles: list[Any] = []
    for queue in _loop_attributes(loop):
        if isinstance(queue, (list, set, collections.deque)):
            handles.extend(x for x in queue if type(x).__name__ in ("Handle", "TimerHandle"))
    return handles


def woken_by_loop(loops: Iterable[asyncio.AbstractEventLoop]) -> set[int]:
    """Ids of the futures and tasks a scheduled callback or timer of ``loops`` holds itself.

    Such a callback is how ``asyncio.sleep``, ``wait_for`` and ``asyncio.timeout`` wake a
    task: with the future it waits on (``_set_result_unless_cancelled(fut)``), or the task
    (``Timeout._on_timeout`` cancels it). A handle reaches the future
    through the callback's arguments or bound object, a few steps deep; functions,
    coroutines, frames and tasks are not looked into, only noted.
    """
    found: set[int] = set()
    seen: set[int] = set()
    frontier: list[Any] = []
    for loop in loops:
        frontier.extend(_loop_handles(loop))
    for _ in range(_WAKE_DEPTH):
        if not frontier:
            break
        nxt = []
        for obj in gc.get_referents(*frontier):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, asyncio.Future):
                found.add(id(obj))
            elif isinstance(obj, _PLAIN) or (
                hasattr(obj, "__dict__") and not isinstance(obj, _OPAQUE)
            ):
                nxt.append(obj)
        frontier = nxt
    return found


# handle -> bound method -> its object -> the object's dict -> a deque of waiters -> future
_WAKE_DEPTH = 5
_PLAIN = (types.MethodType, functools.partial, tuple, list, dict, set, collections.deque)
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
    types.FrameType,
    asyncio.AbstractEventLoop,
)


def suspended_on(task: asyncio.Future[Any]) -> asyncio.Future[Any] | None:
    """The pending future ``task`` is suspended on, or None if it is not suspended
    (done, runnable, running, or its future already done and its wakeup scheduled)."""
    if task.done():
        return None
    waiter = getattr(task, "_fut_waiter", None)
    # A running task has none: a step starts by clearing it.
    if waiter is None or waiter.done():
        return None
    return waiter  # type: ignore[no-any-return]


def _first_verdict(task: asyncio.Future[Any], woken: set[int]) -> Verdict:
    """The verdict before any proof: ``running``, ``suspected``, or ``proven`` for a task
    proven earlier that still waits on the same future (once proven, always proven)."""
    waiter = suspended_on(task)
    if waiter is None or id(waiter) in woken or id(task) in woken:
        return "running"
    return "proven" if _KEPT.still_proven(task, waiter) else "suspected"


def quick_verdicts(tasks: Iterable[asyncio.Future[Any]]) -> dict[int, Verdict]:
    """Verdicts without a new proof, by ``id(task)``: a suspended task is ``suspected``
    unless an earlier proof found it ``proven``."""
    tasks = list(tasks)
    _KEPT.prune()  # a proven task that was cancelled since is let go
    woken = woken_by_loop({task.get_loop() for task in tasks})
    return {id(task): _first_verdict(task, woken) for task in tasks}


# --- the detector's own references ---------------------------------------------------


class _Kept:
    """Proven tasks, held until they end (see ``KEEP_LIMIT``), with the future each was
    proven suspended on: while it still waits on that one, it stays proven."""

    def __init__(self) -> None:
        self.waiters: dict[asyncio.Future[Any], asyncio.Future[Any]] = {}

    def prune(self) -> None:
        """Let go of the tasks that ended or moved on, and of those whose loop is closed
        (nothing will ever run them, nor their finally blocks, and nobody will ask)."""
        for task in [
            t
            for t, w in self.waiters.items()
            if suspended_on(t) is not w or t.get_loop().is_closed()
        ]:
            del self.waiters[task]

    def add(self, task: asyncio.Future[Any], waiter: asyncio.Future[Any]) -> None:
        if len(self.waiters) < KEEP_LIMIT:
            self.waiters[task] = waiter

    def still_proven(self, task: asyncio.Future[Any], waiter: asyncio.Future[Any]) -> bool:
        return self.waiters.get(task) is waiter


_KEPT = _Kept()


def is_kept(task: asyncio.Future[Any]) -> bool:
    """Whether a proof keeps ``task`` alive (proven, and still waiting)."""
    return task in _KEPT.waiters


def own_holders(loops: Iterable[asyncio.AbstractEventLoop]) -> Iterator[Any]:
    """The containers through which the detector itself (and asyncio's registry) holds the
    tasks of ``loops``: their references are not the program's. Where the detector keeps
    tasks is ``_tracking``'s business and may change; this is the one place that knows."""
    yield _KEPT.waiters
    # asyncio's strong set of eagerly started tasks (3.12+): its half of all_tasks().
    eager = getattr(asyncio.tasks, "_eager_tasks", None)
    if isinstance(eager, set):
        yield eager
    # Each scope keeps the coroutines of its tasks alive (``Scope.keepalive``, a
    # ``KeepAlive`` list) until it has looked at them; scopes are found through the
    # origin each task carries, and their parents.
    seen: set[int] = set()
    for loop in loops:
        for task in asyncio.all_tasks(loop):
            origin = getattr(task, ORIGIN_ATTR, None)
            scope = origin[0] if isinstance(origin, tuple) and origin else None
            while scope is not None and id(scope) not in seen:
                seen.add(id(scope))
                keepalive = getattr(scope, "keepalive", None)
                if is_keepalive(keepalive):
                    yield keepalive
                scope = getattr(scope, "parent", None)


def _benign_weakref_callbacks(loops: Iterable[asyncio.AbstractEventLoop]) -> set[int]:
    """Ids of the callbacks of the weak references that wake nothing.

    asyncio's registry of all tasks, and the weak registries a loop keeps for itself: its
    async generators (closed by its final ``shutdown_asyncgens``, as ``asyncio.run``
    cancels all tasks at the end) and its transports by file descriptor (only asked
    whether one is closing before a descriptor is reused).
    """
    registries: list[Any] = [
        getattr(asyncio.tasks, name, None) for name in ("_all_tasks", "_scheduled_tasks")
    ]
    for loop in loops:
        registries.extend(
            held
            for held in _loop_attributes(loop)
            if isinstance(held, (weakref.WeakSet, weakref.WeakValueDictionary))
        )
    return {
        id(getattr(registry, "_remove", None))
        for registry in registries
        if isinstance(registry, (weakref.WeakSet, weakref.WeakValueDictionary))
    }


# --- what is cut ------------------------------------------------------------------

# Objects of these types are never expanded, nor even kept in G (a cut object in G could
# only be a root with no edges, which is what leaving it out amounts to):
_CUT_TYPES = (
    types.ModuleType,
    type,
    types.CodeType,
    threading.Thread,
    asyncio.AbstractEventLoop,
    # A task's context: contextvar values live in a tree shared with the context the task
    # was created in, so they are held from outside anyway.
    contextvars.Context,
)
# Atoms hold no references: never in G.
_ATOMS = (str, bytes, int, float, complex, bool, type(None), range)
_EXPAND, _CUT, _DICT, _FRAME, _TASK, _GEN = range(6)


def _count_when_held_once() -> int:
    """``sys.getrefcount``, through ``map``, of an object referenced once, met in a list of
    referents: that reference, the list's, the call's own (3 on CPython 3.11-3.13; measured,
    not assumed, since a wrong value would take a shared object for a private one)."""
    parent = [object()]
    return next(map(sys.getrefcount, gc.get_referents(parent)))


_HELD_ONCE = _count_when_held_once()
_RULES: dict[type, int] = {}
_KEPT_IN_G: dict[type, bool] = {}  # not cut by type alone


def _rule(tp: type) -> int:
    rule = _RULES.get(tp)
    if rule is None:
        if issubclass(tp, _CUT_TYPES):
            rule = _CUT
        elif issubclass(tp, dict):
            rule = _DICT
        elif issubclass(tp, types.FrameType):
            rule = _FRAME
        elif issubclass(tp, _Task):
            rule = _TASK
        elif issubclass(tp, (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)):
            rule = _GEN
        else:
            rule = _EXPAND
        _RULES[tp] = rule
        _KEPT_IN_G[tp] = rule != _CUT and tp not in _ATOMS
    return rule


def _executing(gen: Any, running_frames: set[int]) -> bool:
    """Whether a coroutine or generator is executing now, on some thread's stack.

    ``cr_running`` and ``gi_running`` say so; an async generator's ``ag_running`` is also
    true while it is suspended on an ``await`` inside an ``asend``, so its frame decides.
    """
    if isinstance(gen, types.CoroutineType):
        return gen.cr_running
    if isinstance(gen, types.GeneratorType):
        return gen.gi_running
    frame = getattr(gen, "ag_frame", None)
    return frame is not None and id(frame) in running_frames


def _running_frame_ids() -> set[int]:
    """Ids of the frames on every thread's stack. (No frame stays bound to a local here:
    the top one is this function's own, and would keep itself, and its callers with all
    their locals, alive in a cycle.)"""
    ids: set[int] = set()
    frame: types.FrameType | None
    for frame in sys._current_frames().values():
        while frame is not None:
            ids.add(id(frame))
            frame = frame.f_back
    return ids


class _Cuts:
    """Decides, for each object reached, whether its references are followed."""

    def __init__(self) -> None:
        self.module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
        self.running_frames = _running_frame_ids()

    def expanded(self, objects: list[Any], leaves: set[int]) -> list[Any]:
        """Those of ``objects`` whose references are followed; the ids of the others go
        to ``leaves``. Most are plain objects: their rule is looked up by type in C, and
        only the others cost a Python call."""
        for tp in set(map(type, objects)).difference(_RULES):
            _rule(tp)
        rules = list(map(_RULES.__getitem__, map(type, objects)))
        if not any(rules):  # all _EXPAND, the usual case
            return objects
        followed = [
            obj
            for obj, rule in zip(objects, rules, strict=True)
            if rule == _EXPAND or (rule != _CUT and self._special(obj, rule))
        ]
        if len(followed) < len(objects):
            leaves.update(set(_keys(objects)).difference(_keys(followed)))
        return followed

    def _special(self, obj: Any, rule: int) -> bool:
        if rule == _DICT:
            return id(obj) not in self.module_dicts
        if rule == _FRAME:
            return id(obj) not in self.running_frames
        if rule == _TASK:
            # A task that is not suspended will run: it is a root, what it holds is live.
            return bool(obj.done() or suspended_on(obj) is not None)
        return not _executing(obj, self.running_frames)  # _GEN


# --- trust --------------------------------------------------------------------------


def _refcounts_exact() -> bool:
    """Whether this interpreter's reference counts count every strong reference: CPython
    with the GIL. Free-threaded builds defer and bias counts; PyPy has none."""
    return sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED")


_checked: bool | None = None


def _accounting_checks_out() -> bool:
    """Whether the analysis, run once on a graph whose answer is known, gets it right on
    this interpreter: a suspended generator in a cycle with its own locals (and a value
    on its stack) is unreachable; one also held from a module global is not. A traversal
    that misses or double-counts a reference fails it, and then nothing is ever proven."""
    global _checked
    if _checked is None:
        seeds = _suspended_generators()
        graph = _Graph(seeds, [seeds], set(), 1000)
        _checked = graph.consistent and _key(seeds[0]) in graph.unmarked
        _checked = _checked and _key(seeds[1]) not in graph.unmarked
        del graph
        _ANCHOR.clear()
        for generator in seeds:
            generator.close()
    return _checked


_ANCHOR: list[Any] = []


def _parked(box: list[Any]) -> Generator[Any, Any, None]:
    kept = [box, len(box)]
    yield (kept, (yield))  # suspended with ``kept`` on its value stack


def _suspended_generators() -> list[Generator[Any, Any, None]]:
    free: list[Any] = []
    held: list[Any] = []
    seeds = [_parked(free), _parked(held)]
    for generator in seeds:
        next(generator)
    free.append(seeds[0])  # a cycle through its own local: held only by itself
    held.append(seeds[1])
    _ANCHOR.append(held)  # held from a module global
    return seeds


# --- the analysis -------------------------------------------------------------------


# Objects of G are keyed by their address shifted right: distinct objects are at least 16 bytes
# apart (8 on 32-bit builds), and raw addresses, all multiples of 16, make sets and dicts of
# hundreds of thousands of them collide far more than the near-consecutive shifted ones.
_SHIFT = 4 if sys.maxsize > 2**32 else 3
_shifted = _SHIFT.__rrshift__  # x -> x >> _SHIFT, called from C by map()


def _key(obj: Any) -> int:
    return id(obj) >> _SHIFT


def _keys(objects: Iterable[Any]) -> Iterator[int]:
    return map(_shifted, map(id, objects))


class _Graph:
    """G, built and marked; see the module docstring. Keys are ``_key(obj)``."""

    def __init__(self, seeds: list[Any], holders: list[Any], benign: set[int], limit: int):
        self.objects: dict[int, Any] = {}  # key -> object, every object of G
        self.leaves: set[int] = set()  # the objects of G that were not expanded
        self.roots: set[int] = set()
        self.weak_edges: dict[int, list[int]] = {}
        self.unmarked: set[int] = set()  # after marking: what nothing live reaches
        self.complete = True
        self.consistent = True
        self.outside: dict[int, int] = {}  # references from outside G, for explain()
        received = self._expand(seeds, holders, limit)
        _weak_references(self.objects, benign, self.weak_edges, self.roots)
        self._count(received, [*_keys(seeds), *_keys(holders)])
        del received
        if self.consistent:
            self._mark()

    def _expand(self, seeds: list[Any], holders: list[Any], limit: int) -> Counter[int]:
        """Fill G from ``seeds``; return how many references the objects of G that are
        referenced more than once receive from it.

        Each step is one C-level pass over a whole level of the graph (``get_referents``
        of many objects at once, ``map``, set algebra): Python runs per object that is not
        plain, never per reference. Holders are in G from the start, so they are never
        reached as new, and never expanded; their references are counted at the end.
        """
        cuts = _Cuts()
        graph, leaves = self.objects, self.leaves
        graph.update(zip(_keys(holders), holders, strict=True))
        leaves.update(graph)
        graph.update(zip(_keys(seeds), seeds, strict=True))
        received: Counter[int] = Counter()
        frontier = cuts.expanded(seeds, leaves)
        while frontier:
            if len(graph) >= limit:
                # The rest of the frontier stays unexpanded: sound, less precise.
                self.complete = False
                leaves.update(_keys(frontier))
                break
            referents = gc.get_referents(*frontier)
            kinds = list(map(type, referents))
            for tp in set(kinds).difference(_KEPT_IN_G):
                _rule(tp)
            referents = list(compress(referents, map(_KEPT_IN_G.__getitem__, kinds)))
            del kinds
            # One referrer (the one here), plus this list's reference and the call's: the
            # object is new, receives exactly one reference from G, and cannot be a root.
            # Only the others are counted and de-duplicated.
            counts = list(map(sys.getrefcount, referents))
            ids = list(_keys(referents))
            shared = list(compress(ids, map(_HELD_ONCE.__ne__, counts)))
            received.update(shared)
            new = set(shared).difference(graph)
            del shared
            frontier = list(compress(referents, map(_HELD_ONCE.__eq__, counts)))
            graph.update(zip(ids, referents, strict=True))  # shared ones already there: the same
            del referents, ids, counts
            frontier.extend(map(graph.__getitem__, new))
            del new
            frontier = cuts.expanded(frontier, leaves)
        del frontier
        received.update(_keys(filter(gc.is_tracked, gc.get_referents(*holders))))
        return received

    def _count(self, received: Counter[int], always: list[int]) -> None:
        """Roots: what is held from outside G. An object's count, less the references from
        G and the analysis' own; the probe, held exactly like every object counted (by the
        graph and the list), measures the latter. Objects held once, from G, are skipped."""
        graph = self.objects
        probe = object()
        probe_id = _key(probe)
        graph[probe_id] = probe
        del probe
        # (The holders' references reach tasks outside G too: those are not G's business.)
        ids = list(graph.keys() & (received.keys() | set(always)))
        ids.append(probe_id)
        everything = list(map(graph.__getitem__, ids))
        counts = list(map(sys.getrefcount, everything))
        own = counts[ids.index(probe_id)]
        del everything, graph[probe_id]
        # count - received - own, per object, in C.
        outside = list(map(operator.sub, counts, map(received.get, ids, repeat(0))))
        del counts
        self.roots.update(compress(ids, map(own.__lt__, outside)))
        self.roots.discard(probe_id)
        # A count the graph over-explains: something does not add up, trust none of it.
        self.consistent = not any(map(own.__gt__, outside))
        self.outside = dict(zip(ids, map(operator.sub, outside, repeat(own)), strict=False))

    def _mark(self) -> None:
        """Mark what the roots reach within G. Leaves ``unmarked``: the rest of G."""
        graph, leaves, weak_edges = self.objects, self.leaves, self.weak_edges
        unmarked = self.unmarked
        unmarked.update(graph)
        unmarked -= self.roots
        frontier = list(map(graph.__getitem__, self.roots - leaves))
        while frontier:
            referents = gc.get_referents(*frontier)
            # Only types that can be in G. (Expanding these very objects met every type
            # here; were one new, it is kept: marking too much is safe, too little is not.)
            kinds = map(type, referents)
            referents = list(compress(referents, map(_KEPT_IN_G.get, kinds, repeat(True))))
            ids = list(_keys(referents))
            reached = dict(
                compress(zip(ids, referents, strict=True), map(unmarked.__contains__, ids))
            )
            del referents, ids
            for ref_id in reached.keys() & weak_edges.keys():
                for target in weak_edges[ref_id]:
                    if target in unmarked:
                        reached[target] = graph[target]
            unmarked.difference_update(reached)
            frontier = list(map(reached.__getitem__, reached.keys() - leaves))
            del reached

    def path_to(self, target: int) -> list[Any]:
        """A chain of objects from a root to ``target`` (root first), or [] if unmarked.
        One object at a time: for explaining a verdict, not for deciding it."""
        parents: dict[int, int | None] = {root: None for root in self.roots}
        queue = collections.deque(self.roots)
        while queue and target not in parents:
            current = queue.popleft()
            children = []
            if current not in self.leaves:
                children = list(_keys(gc.get_referents(self.objects[current])))
            children.extend(self.weak_edges.get(current, ()))
            for child in children:
                if child in self.objects and child not in parents:
                    parents[child] = current
                    queue.append(child)
        if target not in parents:
            return []
        chain: list[Any] = []
        step: int | None = target
        while step is not None:
            chain.append(self.objects[step])
            step = parents[step]
        return chain[::-1]


def _weak_references(
    graph: dict[int, Any], benign: set[int], edges: dict[int, list[int]], roots: set[int]
) -> None:
    """Fill ``edges`` (weak reference in G -> its object) and ``roots`` (objects weakly
    referenced from outside G). A function of its own, so that no loop variable outlives
    it as a reference the count would take for an outside one."""
    weakly_held = list(compress(graph.values(), map(weakref.getweakrefcount, graph.values())))
    for target in weakly_held:
        for ref in weakref.getweakrefs(target):
            if type(ref) is RecordRef or id(getattr(ref, "__callback__", None)) in benign:
                continue
            if _key(ref) in graph:
                edges.setdefault(_key(ref), []).append(_key(target))
            else:
                roots.add(_key(target))


def _first_look(
    tasks: list[asyncio.Future[Any]], woken: set[int], verdicts: dict[int, Verdict]
) -> list[asyncio.Future[Any]]:
    """Record the verdicts that need no proof; return the tasks that need one."""
    candidates = []
    for task in tasks:
        verdict = verdicts[id(task)] = _first_verdict(task, woken)
        if verdict == "suspected":
            candidates.append(task)
    return candidates


_CONTAINERS = (list, tuple, set, frozenset, dict)


@contextlib.contextmanager
def _one_instant() -> Iterator[None]:
    """Hold off other threads and the cyclic collector (whose finalizers run arbitrary
    code), so that the counts and the references describe one instant of the heap."""
    switch = sys.getswitchinterval()
    collecting = gc.isenabled()
    sys.setswitchinterval(1000.0)
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        sys.setswitchinterval(switch)


def _graph_of(
    candidates: list[Any], callers: list[Any], loops: set[Any], limit: int
) -> _Graph | None:
    """G around ``candidates``, marked; None where counts cannot be trusted. ``callers``
    are the caller's containers of tasks: their references are the question, not roots.
    Called within ``_one_instant()``."""
    if not _refcounts_exact() or not _accounting_checks_out():
        return None
    holders = [candidates, *(c for c in callers if isinstance(c, _CONTAINERS))]
    holders.extend(own_holders(loops))
    graph = _Graph(candidates, holders, _benign_weakref_callbacks(loops), limit)
    return graph if graph.consistent else None


def prove(tasks: Iterable[asyncio.Future[Any]], *, limit: int = DEFAULT_LIMIT) -> Proof:
    """Classify ``tasks``: ``running``, ``suspected`` or ``proven`` (see docs/leaks.md).

    The container passed in is not counted as a reference to the tasks. Never wakes,
    cancels or destroys a task and never runs the collector; proven tasks are kept alive
    until they end, so that a proof never turns out wrong later.
    """
    start = time.perf_counter()
    given = tasks
    tasks = list(tasks)
    verdicts: dict[int, Verdict] = {}
    with _one_instant():
        _KEPT.prune()
        loops = {task.get_loop() for task in tasks}
        candidates = _first_look(tasks, woken_by_loop(loops), verdicts)
        graph = _graph_of(candidates, [tasks, given], loops, limit) if candidates else None
        del tasks, given
        if graph is not None:
            for candidate in candidates:
                if _key(candidate) in graph.unmarked:
                    verdicts[id(candidate)] = "proven"
                    _KEPT.add(candidate, getattr(candidate, "_fut_waiter"))  # noqa: B009
    seconds = time.perf_counter() - start
    if graph is None:
        return Proof(verdicts, 0, True, not candidates, seconds)
    return Proof(verdicts, len(graph.objects), graph.complete, True, seconds)


def explain(record: Leak, *, limit: int = DEFAULT_LIMIT) -> str:
    """Why the task of ``record`` has its verdict now: for a suspected one, a chain of
    references from something live to it. Takes the record, not the task, so that the
    caller holds no reference of its own. One object at a time: for one task, not 10k."""
    tasks = [record.target()]
    if not isinstance(tasks[0], asyncio.Future):
        return "gone" if tasks[0] is None else "not a task"
    with _one_instant():
        loops = {tasks[0].get_loop()}
        verdicts: dict[int, Verdict] = {}
        candidates = _first_look(tasks, woken_by_loop(loops), verdicts)
        verdict = verdicts[id(tasks[0])]
        if verdict == "running":
            if suspended_on(tasks[0]) is None:
                return "running: not suspended on a future"
            return "running: a scheduled callback or timer of its loop holds what it waits on"
        if verdict == "proven":
            return "proven earlier, and still suspended on the same future"
        graph = _graph_of(candidates, [tasks], loops, limit)
        if graph is None:
            return "suspected: reference counts cannot be trusted on this interpreter"
        chain = graph.path_to(record.ident >> _SHIFT)
        if not chain:
            return "proven: nothing that can still run reaches it or what it waits on"
        outside = graph.outside.get(_key(chain[0]), 0)
        del graph
    root = chain[0]
    how = (
        f"held by {outside} reference{'s' if outside != 1 else ''} from outside the suspended tasks"
        if outside > 0
        else "weakly referenced from outside the suspended tasks"
    )
    names = _global_names(root)
    if names:
        how += f" (module global {', '.join(names)})"
    lines = [f"suspected: reachable from {_describe(root)}, {how}:"]
    lines.extend(f"  -> {_describe(obj)}" for obj in chain[1:])
    return "\n".join(lines)


def _describe(obj: Any) -> str:
    if isinstance(obj, asyncio.Task):
        return f"task {obj.get_name()!r}"
    if isinstance(obj, (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)):
        return f"{type(obj).__name__} {obj.__qualname__}"
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        return f"{type(obj).__name__} {obj.__qualname__}"
    if isinstance(obj, weakref.ref):
        return f"weak reference to {type(obj()).__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _global_names(obj: Any) -> list[str]:
    return [
        f"{name}.{key}"
        for name, module in list(sys.modules.items())
        for key, value in list(getattr(module, "__dict__", {}).items())
        if value is obj
    ]
