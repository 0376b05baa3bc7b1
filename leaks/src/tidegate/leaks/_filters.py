"""Ignore options, in goleak's spirit: small values composed through ``ignore=``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from ._records import Frame, Leak


@dataclass(frozen=True)
class Ignore:
    """A rule that excuses a task or thread from being reported."""

    description: str
    excuses: Callable[[Leak], bool]

    def __repr__(self) -> str:
        return f"<{self.description}>"


# A thread parked on `threading.Event.wait` or `queue.Queue.get` is innermost in the
# `threading.Condition.wait` they are built on; the primitive is the caller above it. These
# modules' frames count as the top together, as the single coroutine frame of
# `asyncio.Event.wait` does for a task.
_BLOCKING_MODULES = frozenset({"threading", "queue"})

# Libraries that wrap blocking calls in Python functions of their own, so their frame sits on
# top of every stack parked in one: blockbuster (used by aiohttp's and anyio's suites) wraps
# lock acquires and sleeps to catch them in event loops. Their frames are seen through.
WRAPPER_MODULES = frozenset({"blockbuster.blockbuster"})


def _top_frames(leak: Leak) -> list[Frame]:
    top: list[Frame] = []
    for frame in reversed(leak.frames):
        if frame.module in WRAPPER_MODULES:
            top.append(frame)
            continue
        if top and top[-1].module not in WRAPPER_MODULES and frame.module not in _BLOCKING_MODULES:
            break
        top.append(frame)
        if frame.module not in _BLOCKING_MODULES:
            break
    return top


def ignore_top_function(name: str) -> Ignore:
    """Ignore what is parked in ``name`` (``func``, ``Class.method`` or ``module.func``):
    the innermost frame, or for a thread any of the stdlib blocking calls it is inside
    (``Event.wait`` as well as the ``Condition.wait`` under it)."""
    return Ignore(
        f"ignore_top_function({name!r})",
        lambda leak: any(frame.matches(name) for frame in _top_frames(leak)),
    )


def ignore_any_function(name: str) -> Ignore:
    """Ignore what has ``name`` anywhere on its stack."""
    return Ignore(
        f"ignore_any_function({name!r})",
        lambda leak: any(frame.matches(name) for frame in leak.frames),
    )


def ignore_created_by(name: str) -> Ignore:
    """Ignore tasks and threads whose creating function is ``name``."""
    return Ignore(
        f"ignore_created_by({name!r})",
        lambda leak: any(frame.matches(name) for frame in leak.created_frames),
    )


def ignore_name(pattern: str) -> Ignore:
    """Ignore tasks and threads whose name matches the regular expression ``pattern``
    (``re.search``: anchor it to match the whole name)."""
    compiled = re.compile(pattern)
    return Ignore(f"ignore_name({pattern!r})", lambda leak: compiled.search(leak.name) is not None)


_SPEC_KINDS: dict[str, Callable[[str], Ignore]] = {
    "top": ignore_top_function,
    "any": ignore_any_function,
    "created_by": ignore_created_by,
    "name": ignore_name,
}


def parse_ignore(spec: str) -> Ignore:
    """One ignore rule from text, as the ini option ``leaks_ignore`` takes it:
    ``top:NAME``, ``any:NAME``, ``created_by:NAME`` or ``name:REGEX``."""
    kind, sep, value = spec.strip().partition(":")
    make = _SPEC_KINDS.get(kind.strip())
    if not sep or make is None or not value.strip():
        choices = ", ".join(f"{name}:..." for name in _SPEC_KINDS)
        raise ValueError(f"bad leak ignore rule {spec!r}: expected one of {choices}")
    try:
        return make(value.strip())
    except re.error as error:
        raise ValueError(f"bad leak ignore rule {spec!r}: {error}") from None


def ignore_current() -> Ignore:
    """Ignore every task and thread alive now (call it before the code under test)."""
    alive: weakref.WeakSet[object] = weakref.WeakSet(threading.enumerate())
    with contextlib.suppress(RuntimeError):  # no running loop here: threads only
        alive.update(asyncio.all_tasks())
    return Ignore(f"ignore_current() [{len(alive)} alive]", lambda leak: leak.target() in alive)


def excused(leak: Leak, rules: tuple[Ignore, ...]) -> bool:
    return any(rule.excuses(leak) for rule in rules)
