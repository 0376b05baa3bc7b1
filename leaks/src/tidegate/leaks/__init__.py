"""goleak for asyncio: find tasks and threads that outlive their scope.

Quick start::

    from tidegate import leaks

    async with leaks.check():       # or: with ..., or @leaks.check()
        await code_under_test()     # LeakError if it leaves a task or thread running

    leaks.find(prove=True)          # anywhere, no baseline: each task's verdict says
                                    # whether it is proven blocked forever

This package imports nothing else from tidegate, so any asyncio project can use it.
"""

from ._detector import (
    Check,
    LeakError,
    LeakWarning,
    cancel_tasks,
    check,
    find,
    find_async,
    snapshot,
)
from ._filters import (
    Ignore,
    ignore_any_function,
    ignore_created_by,
    ignore_current,
    ignore_name,
    ignore_top_function,
    parse_ignore,
)
from ._proof import explain
from ._proven import ProvenLeaks, format_proven, proven_leaks
from ._records import Frame, Leak, Verdict
from ._report import format_dump, format_grouped, format_leak
from ._signals import dump, install_signal_dump
from ._tracking import track, untrack, untrack_threads
from ._watchdog import LoopBlock, LoopBlockedError, Watchdog, open_watchdog

__all__ = [
    "Check",
    "Frame",
    "Ignore",
    "Leak",
    "LeakError",
    "LeakWarning",
    "LoopBlock",
    "LoopBlockedError",
    "ProvenLeaks",
    "Verdict",
    "Watchdog",
    "cancel_tasks",
    "check",
    "dump",
    "explain",
    "find",
    "find_async",
    "format_dump",
    "format_grouped",
    "format_leak",
    "format_proven",
    "ignore_any_function",
    "ignore_created_by",
    "ignore_current",
    "ignore_name",
    "ignore_top_function",
    "install_signal_dump",
    "open_watchdog",
    "parse_ignore",
    "proven_leaks",
    "snapshot",
    "track",
    "untrack",
    "untrack_threads",
]
