"""Assertions on `str(LeakError)`, the goroutine-dump style report, for the examples' tests.

(A plain module, not a package: `tests/examples/__init__.py` would make this directory the
package `examples` and shadow the repo-root `examples` package the tests exercise.)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Time unit of these tests: the check waits this long for stragglers before calling anything a
# leak; every timeout an example must let elapse is a fraction of it.
CHECK = 0.2


def line_of(func: Callable[..., Any], text: str) -> tuple[str, int]:
    """(file name, line number) of the one line of `func`'s source that contains `text`."""
    lines, first = inspect.getsourcelines(func)
    hits = [first + i for i, line in enumerate(lines) if text in line]
    assert len(hits) == 1, f"{text!r} found {len(hits)} times in {func!r}"
    return Path(inspect.getfile(func)).name, hits[0]


def assert_blocks_in(report: str, func: Callable[..., Any], text: str) -> None:
    """The report's stack shows `func` at its line containing `text` (the blocking line)."""
    filename, lineno = line_of(func, text)
    pattern = rf"{re.escape(filename)}:{lineno}\b.*\b{re.escape(func.__name__)}\b"
    assert re.search(pattern, report), f"{func.__name__} at {filename}:{lineno}?\n{report}"
    assert text in report, report  # the source line itself


def assert_created_by(report: str, func: Callable[..., Any] | str) -> None:
    """Some leak in the report was created by `func` (a function, or the name of a nested one)."""
    name = func if isinstance(func, str) else func.__name__
    # The creator is a qualified name (`outer.<locals>.inner`) followed by ` at file:line`.
    pattern = rf"^\s*created by (\S+\.)?{re.escape(name)} at "
    assert re.search(pattern, report, re.MULTILINE), f"created by {name}?\n{report}"
