"""The records the detector returns: immutable snapshots of one task or thread."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["task", "thread"]

# What the proof says of a task (see ``_proof``): ``proven`` blocked forever, ``suspected``
# blocked on something live code could still complete, ``running`` not blocked.
Verdict = Literal["proven", "suspected", "running"]


class RecordRef(weakref.ref):  # type: ignore[type-arg]
    """The weak reference a record keeps to its task or thread. A type of its own (never
    shared with a plain ``weakref.ref`` to the same object), so the proof can tell the
    detector's weak references from the program's."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Frame:
    """One line of a stack: where a task or thread is, or was created."""

    filename: str
    lineno: int
    function: str  # qualified name, e.g. ``Queue.put``
    module: str  # e.g. ``asyncio.queues``

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"

    def matches(self, name: str) -> bool:
        """True if ``name`` is this frame's function: its qualified name, that name
        prefixed by the module, or, for a nested function, the part after ``<locals>``."""
        local = self.function.rpartition(".<locals>.")[2]
        return name in (self.function, local, f"{self.module}.{self.function}")


@dataclass(frozen=True, slots=True)
class Leak:
    """A task or thread that is alive, as the detector saw it at one instant.

    ``stack`` runs outermost first, innermost last; for a task it follows the
    whole await chain down to the primitive the task is suspended on.
    ``blocked_for`` is how long the detector has watched it wait on the same
    thing: a lower bound, since asyncio keeps no record of when a wait began.
    """

    kind: Kind
    name: str
    ident: int
    state: str
    frames: tuple[Frame, ...]
    created_at: str | None
    blocked_on: str | None
    blocked_for: float | None
    created_frames: tuple[Frame, ...] = ()
    # Tasks only; None for threads. ``find(prove=True)`` and ``check()`` prove; without a
    # proof a suspended task is at most ``suspected``.
    verdict: Verdict | None = None
    # A weak reference to the live object, so a test can cancel a leaked task
    # without the record keeping it alive.
    _ref: weakref.ReferenceType[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def stack(self) -> list[str]:
        return [str(frame) for frame in self.frames]

    def target(self) -> Any:
        """The live task or thread, or None once it is gone."""
        return None if self._ref is None else self._ref()
