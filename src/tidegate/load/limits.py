"""Process set-up shared by the load tool's processes: the open-file limit and the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["open_files_limit", "raise_open_files", "run"]

T = TypeVar("T")


def raise_open_files() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now
    in force (one socket per client, so it bounds the clients one process can hold)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    return soft


def open_files_limit() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return 512
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it exists (Linux, macOS), else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
