"""pytest plugin: every test (with ``--leaks`` or ini ``leaks = true``) runs in a ``check()``.

The check runs inside the test function itself, wrapped around it at call
time: for an async test that is inside the test's own task, before the async
runner (pytest-asyncio, anyio) tears its loop down and silently cancels
leftovers. A default-executor thread found leaked is detached from its loop,
so the runner's teardown does not wait for it forever.

Markers: ``@pytest.mark.leaks(timeout=..., ignore=[...])`` checks a test (with
its own options) even when the check is off; ``@pytest.mark.no_leak_check``
opts a test out.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Generator
from typing import Any

import pytest

from ._detector import LeakError, check, find
from ._records import Leak
from ._report import format_leak

# Per session: which test leaked what, and what was still running at its end.
_BY_TEST = pytest.StashKey[list[tuple[str, list[Leak]]]]()
_SESSION_THREADS = pytest.StashKey[set[threading.Thread]]()
_LEFTOVERS = pytest.StashKey[list[Leak]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tidegate-leaks")
    group.addoption(
        "--leaks",
        action="store_true",
        default=None,
        help="fail tests that leave asyncio tasks or threads running (tidegate.leaks)",
    )
    parser.addini(
        "leaks", "check every test for leaked tasks and threads", type="bool", default=False
    )
    parser.addini(
        "leaks_timeout", "seconds a test's tasks and threads get to finish", default="1.0"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaks(timeout=1.0, ignore=()): check this test for leaked tasks and threads"
    )
    config.addinivalue_line("markers", "no_leak_check: do not check this test for leaks")
    config.stash[_BY_TEST] = []
    config.stash[_SESSION_THREADS] = set(threading.enumerate())


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("leaks") or config.getini("leaks"))


def _options(item: pytest.Item) -> dict[str, Any] | None:
    if item.get_closest_marker("no_leak_check") is not None:
        return None
    marker = item.get_closest_marker("leaks")
    if marker is None and not _enabled(item.config):
        return None
    options: dict[str, Any] = {"timeout": float(item.config.getini("leaks_timeout"))}
    if marker is not None:
        options.update(marker.kwargs)
    return options


def _detach_stuck_executor(leaks: list[Leak]) -> None:
    # A leaked job in the loop's default executor would make the runner's
    # teardown (loop.shutdown_default_executor) wait for it forever. Give the
    # loop a fresh executor instead; the old one is shut down without waiting.
    if not any(leak.kind == "thread" and leak.name.startswith("asyncio_") for leak in leaks):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    executor = getattr(loop, "_default_executor", None)
    if executor is not None:
        loop._default_executor = None  # type: ignore[attr-defined]
        executor.shutdown(wait=False)


def _wrap(
    func: Callable[..., Any], options: dict[str, Any], leaked: list[Leak]
) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                async with check(**options):
                    return await func(*args, **kwargs)
            except LeakError as error:
                leaked.extend(error.leaks)
                _detach_stuck_executor(error.leaks)
                raise

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with check(**options):
                return func(*args, **kwargs)
        except LeakError as error:
            leaked.extend(error.leaks)
            raise

    return run


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    options = _options(item)
    if options is None or not isinstance(item, pytest.Function):
        yield
        return
    leaked: list[Leak] = []
    # Hypothesis keeps the real test body one level down.
    hypothesis = getattr(item.obj, "hypothesis", None)
    holder, attr = (hypothesis, "inner_test") if hypothesis is not None else (item, "obj")
    original = getattr(holder, attr)
    setattr(holder, attr, _wrap(original, options, leaked))
    try:
        yield
    finally:
        setattr(holder, attr, original)
        if leaked:
            item.config.stash[_BY_TEST].append((item.nodeid, leaked))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Like goleak's VerifyTestMain: a thread started during the session and
    # still running at its end is a leak even if no single test caught it.
    config = session.config
    if not _enabled(config):
        return
    before = config.stash.get(_SESSION_THREADS, set())
    leftovers = [leak for leak in find(tasks=False) if leak.target() not in before]
    config.stash[_LEFTOVERS] = leftovers
    if leftovers and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    by_test = config.stash.get(_BY_TEST, [])
    leftovers = config.stash.get(_LEFTOVERS, [])
    if not by_test and not leftovers:
        return
    terminalreporter.section("tidegate leaks")
    for nodeid, leaks in by_test:
        names = ", ".join(
            f"{leak.kind} {leak.name} [{leak.blocked_on or leak.state}]" for leak in leaks
        )
        terminalreporter.write_line(f"{nodeid} leaked: {names}")
    if leftovers:
        terminalreporter.write_line(f"still running at the end of the session ({len(leftovers)}):")
        for leak in leftovers:
            terminalreporter.write_line(format_leak(leak))
