"""How the load commands end: their exit statuses, the errors that are one line for the user,
and the traceback of anything else (a bug).

====  =====================================================================================
0     NO LEAK (the demo: it showed the leak and the flat line)
1     LEAK (the demo: it did not show them)
2     a usage error, an address that did not answer or answered something else, a client
      process that failed: one line on stderr says which
3     an unexpected error, a bug in the tool: its traceback on stderr
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from .display import Display
from .limits import run

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LEAK",
    "EXIT_NO_LEAK",
    "EXIT_USAGE",
    "Exit",
    "UsageError",
    "check_writable",
    "one_line_error",
    "run_command",
]

EXIT_NO_LEAK: Final = 0
EXIT_LEAK: Final = 1
EXIT_USAGE: Final = 2
EXIT_ERROR: Final = 3
EXIT_INTERRUPTED: Final = 130

T = TypeVar("T")


class UsageError(Exception):
    """Bad options: one line for stderr."""


class Exit(Exception):
    """The command ends now with ``status``; it has said why on stderr."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def one_line_error(
    exc: BaseException, kinds: tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first error of ``exc`` when every error in it is one of ``kinds`` (the errors
    that are one line for the user), however task groups wrapped them on their way out;
    else None (a bug: its traceback must show)."""
    leaves = list(_leaves(exc))
    if leaves and all(isinstance(leaf, kinds) for leaf in leaves):
        return leaves[0]
    return None


def run_command(
    command: str,
    main: Coroutine[Any, Any, T],
    display: Display,
    *,
    known: tuple[type[BaseException], ...],
) -> T:
    """Run ``main`` on the tool's loop. An error of the ``known`` kinds is one line on stderr
    (``Exit(2)``), Ctrl-C is ``Exit(130)``, anything else is a bug: its traceback, then
    ``Exit(3)``. The display is closed before anything is printed."""
    try:
        return run(main)
    except KeyboardInterrupt:
        display.close()
        print(f"{command}: interrupted", file=sys.stderr)
        raise Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        display.close()
        error = one_line_error(exc, known)
        if error is None:
            traceback.print_exception(exc, file=sys.stderr)
            print(f"{command}: unexpected error, a bug: its traceback is above", file=sys.stderr)
            raise Exit(EXIT_ERROR) from None
        print(f"{command}: {error}", file=sys.stderr)
        raise Exit(EXIT_USAGE) from None


def check_writable(path: Path, flag: str) -> None:
    """Refuse now, before a long run, an output file that could not be written after it."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: no such directory: {folder}")
    writable = os.access(path, os.W_OK) if path.exists() else os.access(folder, os.W_OK | os.X_OK)
    if not writable:
        raise UsageError(f"{flag} {path}: permission denied")
