"""Proven leaks on demand, at a bounded cost: what ``/debug/tasks/leaked`` answers and what
the gateway's ``tidegate_leaked_tasks`` metric counts.

A proof holds the loop while it runs (a few milliseconds in a quiet process, ~330 ms with
10k idle suspended tasks; docs/leaks.md), so no rate of requests may multiply it:

- one proof at a time in the process (a lock; the proof holds off other threads anyway);
- every caller on a loop shares its latest proof for ``reuse_seconds(duration)`` from the
  moment it began: at least ``MIN_REUSE``, and ``REUSE_FACTOR`` times what the proof took,
  so over time proofs take at most 1/20 (5%) of the loop's time whatever the request rate;
- a proof stops at ``LIMIT`` objects (sound: past it, tasks stay ``suspected``), which
  bounds a single stall to about half a second.

A proven task stays proven (the proof keeps it alive until it ends), so a result reused for
a second is still true; only tasks proven since are missing from it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from . import _destroyed, _inspect, _proof
from ._detector import _all_loop_tasks, _current_task, _open_loops, _running_loop
from ._records import Leak
from ._report import format_groups

MIN_REUSE: Final = 1.0
REUSE_FACTOR: Final = 20.0
LIMIT: Final = _proof.CHECK_LIMIT


def reuse_seconds(proof_seconds: float) -> float:
    """How long a proof that took ``proof_seconds`` is shared before the next may run."""
    return max(MIN_REUSE, REUSE_FACTOR * proof_seconds)


@dataclass(frozen=True, slots=True)
class ProvenLeaks:
    """One proof over every task of the loops the detector knows (the caller's excepted):
    the tasks it found proven blocked forever, and what it looked at and cost."""

    number: int  # proofs taken by this process so far, this one included
    leaks: tuple[Leak, ...]  # the proven tasks, as records
    tasks: int  # tasks looked at
    suspended: int  # of those, suspended on a future (not running, not woken by a timer)
    objects: int  # the objects the proof walked
    complete: bool  # False: it stopped at ``LIMIT`` objects (fewer proven, never wrong)
    trusted: bool  # False: this interpreter's reference counts cannot be trusted
    seconds: float  # how long the proof held the loop
    taken: float  # the clock when it was taken (``time.monotonic()`` by default)

    @property
    def alive(self) -> tuple[Leak, ...]:
        """The proven tasks that have not ended since (cancelled, say): a proven task stays
        proven until it ends, so these are still blocked forever now."""
        return tuple(leak for leak in self.leaks if _unfinished(leak.target()))

    @property
    def count(self) -> int:
        return len(self.alive)

    @property
    def reused_for(self) -> float:
        return reuse_seconds(self.seconds)


def _unfinished(task: object) -> bool:
    return isinstance(task, asyncio.Future) and not task.done()


_taken = itertools.count(1)


def prove_now(*, taken: float, limit: int = LIMIT) -> ProvenLeaks:
    """A fresh proof over every task of the known loops (the caller's excepted)."""
    me = _current_task()
    tasks = [task for task in _all_loop_tasks() if task is not me]
    proof = _proof.prove(tasks, limit=limit)
    proven = [task for task in tasks if proof.verdicts.get(id(task)) == "proven"]
    suspended = sum(1 for verdict in proof.verdicts.values() if verdict != "running")
    now = time.monotonic()
    records = tuple(_inspect.inspect_task(task, now, "proven") for task in proven)
    return ProvenLeaks(
        number=next(_taken),
        leaks=records,
        tasks=len(tasks),
        suspended=suspended,
        objects=proof.objects,
        complete=proof.complete,
        trusted=proof.trusted,
        seconds=proof.seconds,
        taken=taken,
    )


class ProofCache:
    """The latest proof of each loop, shared as the module docstring says. ``clock`` is
    injected so that the reuse can be tested without waiting."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ProvenLeaks] = (
            weakref.WeakKeyDictionary()
        )
        self._no_loop: ProvenLeaks | None = None

    def peek(self) -> ProvenLeaks | None:
        """The latest proof of the running loop, however old, without taking one."""
        loop = _running_loop()
        return self._no_loop if loop is None else self._by_loop.get(loop)

    def latest(self) -> ProvenLeaks:
        """The latest proof of the running loop if it may still be shared, else a new one."""
        with self._lock:
            loop = _running_loop()
            known = self.peek()
            now = self.clock()
            if known is not None and now - known.taken < known.reused_for:
                return known
            fresh = prove_now(taken=now)
            if loop is None:
                self._no_loop = fresh
            else:
                self._by_loop[loop] = fresh
            return fresh


_CACHE: Final = ProofCache()


def proven_leaks() -> ProvenLeaks:
    """The tasks proven blocked forever, from a proof at most ``reuse_seconds`` old (a new
    one if the latest is older): cheap to call as often as requests come."""
    return _CACHE.latest()


def destroyed_leaks() -> list[Leak]:
    """The tasks of the known loops that the garbage collector destroyed while pending (while
    tracking was on; the most recent ``_destroyed.HISTORY``): proven leaks that are gone,
    as read just before the collection. Cheap: no proof, read at each answer."""
    return _destroyed.on_loops(_open_loops())


def format_proven(
    result: ProvenLeaks, *, now: float | None = None, destroyed: list[Leak] | None = None
) -> str:
    """``result`` for people and for ``tidegate load``: a line of totals and one of what
    the proof cost, then the proven tasks grouped by identical stack, as ``debug=1``: those
    still alive, and those the collector destroyed (``destroyed``, default
    ``destroyed_leaks()``), which count as proven too."""
    now = time.monotonic() if now is None else now
    gone = destroyed_leaks() if destroyed is None else destroyed
    leaked = [*result.alive, *gone]
    plural = "" if len(leaked) == 1 else "s"
    head = [f"total: {len(leaked)} task{plural} proven blocked forever"]
    if gone:
        head.append(
            f"of which {len(gone)} destroyed by the garbage collector while pending: gone,"
            " shown as read just before"
        )
    if not result.trusted:
        head.append(
            "nothing can be proven on this interpreter: its reference counts cannot be trusted"
        )
    elif not leaked:
        head.append("none: no task waits on something that only blocked tasks can reach")
    head.append(
        f"proof {result.number}: {result.seconds * 1000:.1f} ms,"
        f" {max(0.0, now - result.taken):.1f}s ago,"
        f" over {result.tasks} tasks ({result.suspended} suspended, {result.objects} objects);"
        f" shared for {result.reused_for:.1f}s"
    )
    if not result.complete:
        head.append(
            f"incomplete: the proof stopped at {LIMIT} objects; tasks past them stay suspected"
        )
    _, groups = format_groups(leaked)
    return "\n".join([*head, *groups]) + "\n"
