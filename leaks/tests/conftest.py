"""The detector's own tests: asyncio debug mode for every loop, and pytester for the plugin.

These run from the repository root (`make test`) and from this folder with only the
`tidegate-leaks` distribution, pytest and pytest-asyncio installed.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Callable, Iterator

import pytest

# Read by asyncio when each event loop is created, so set before any test runs.
os.environ["PYTHONASYNCIODEBUG"] = "1"

pytest_plugins = ["pytester"]

ASYNC_OPTS = ("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function")


Run = Callable[..., pytest.RunResult]


@pytest.fixture
def run(pytester: pytest.Pytester) -> Run:
    """pytest on pytester's files, in this process, with pytest-asyncio in auto mode."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest("-p", "no:cacheprovider", *ASYNC_OPTS, *args)

    return run


@pytest.fixture
def run_releasing(run: Run, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    """Like `run`, with leaks checked (timeout 0.2 s). Threads the inner tests park on
    `leak_release.event` are let go once this test ends."""
    release = threading.Event()
    monkeypatch.setitem(sys.modules, "leak_release", types.SimpleNamespace(event=release))

    def run_checked(*args: str) -> pytest.RunResult:
        return run("--leaks", "-o", "leaks_timeout=0.2", *args)

    try:
        yield run_checked
    finally:
        release.set()
