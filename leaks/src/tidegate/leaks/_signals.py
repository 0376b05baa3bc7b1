"""A Go-style SIGQUIT dump for Python: the whole process to stderr on a signal."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from ._detector import snapshot
from ._report import format_dump


def dump(file: TextIO | None = None) -> None:
    """Write every task and thread of the process, debug=2 style."""
    out = sys.stderr if file is None else file
    records = snapshot()
    tasks = sum(1 for leak in records if leak.kind == "task")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    out.write(
        f"=== tidegate dump pid={os.getpid()} at {stamp}: "
        f"{tasks} tasks, {len(records) - tasks} threads ===\n"
    )
    out.write(format_dump(records))
    out.flush()


def install_signal_dump(
    signum: int = signal.SIGUSR1, *, path: str | os.PathLike[str] | None = None
) -> Callable[[], None]:
    """On ``signum``, dump the process to stderr (or append to ``path``) and keep running.

    Returns a function that restores the previous handler. Must be called from
    the main thread, like ``signal.signal``.
    """

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if path is None:
            dump()
        else:
            with open(path, "a", encoding="utf-8") as file:
                dump(file)

    previous: Any = signal.signal(signum, on_signal)

    def uninstall() -> None:
        signal.signal(signum, previous)

    return uninstall
