"""Running the plugin through pytester, in this process."""

from __future__ import annotations

import sys
import threading
import types

import pytest

ASYNC_OPTS = ("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *ASYNC_OPTS, *args)


def run_releasing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str
) -> pytest.RunResult:
    """Run with leaks checked; threads parked on `leak_release.event` are let go afterwards."""
    release = threading.Event()
    monkeypatch.setitem(sys.modules, "leak_release", types.SimpleNamespace(event=release))
    try:
        return run(pytester, "--leaks", "-o", "leaks_timeout=0.2", *args)
    finally:
        release.set()
