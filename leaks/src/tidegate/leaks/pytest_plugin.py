"""pytest plugin: every test (with ``--leaks`` or ini ``leaks = true``) runs in a ``check()``.

The check runs inside the test function itself, wrapped around it at call
time: for an async test that is inside the test's own task, before the async
runner (pytest-asyncio, anyio) tears its loop down and silently cancels
leftovers. A default-executor thread found leaked is detached from its loop,
so the runner's teardown does not wait for it forever.

Fixtures are checked too. Each test's setup opens an outer scope, so tasks and
threads its fixtures start belong to it: when the test's own pytest-asyncio
runner (a function-scoped loop) is about to close, after every fixture has torn
down, that scope's tasks get the timeout to end, and its threads get it at the
end of teardown. What is left fails the test's teardown with the report.

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

from ._detector import LeakError, _Entry, check, find
from ._records import Leak
from ._report import format_leak
from ._tracking import current_scope, track

# Per session: which test leaked what, and what was still running at its end.
_BY_TEST = pytest.StashKey[list[tuple[str, list[Leak]]]]()
_SESSION_THREADS = pytest.StashKey[set[threading.Thread]]()
_LEFTOVERS = pytest.StashKey[list[Leak]]()
# Per test: the scope its function-scoped fixtures run in, with the test's options; kept on
# the config while the test runs, since a wider fixture's request names no test.
_FIXTURE_SCOPE = pytest.StashKey["_FixtureScope"]()


class _FixtureScope:
    """What a test's function-scoped fixtures start belongs to this scope. Only what was
    started directly in it is checked here: the body runs in a check of its own, nested
    inside, which reports (or, when the body fails, deliberately does not) what it started."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.entry = _Entry(nested=False)
        self.options = options

    def fail(self, item: pytest.Item, found: list[Leak], waited: float) -> None:
        item.config.stash[_BY_TEST].append((item.nodeid, found))
        _detach_stuck_executor(found)
        error = LeakError(found, waited=waited)
        error.add_note(f"started during setup or teardown of {item.nodeid} (by a fixture)")
        raise error


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    options = _options(item)
    if options is not None and isinstance(item, pytest.Function):
        item.config.stash[_FIXTURE_SCOPE] = _FixtureScope(options)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    fixture_scope = request.config.stash.get(_FIXTURE_SCOPE, None)
    if fixture_scope is not None and fixturedef.scope != "function":
        # A module- or session-wide fixture outlives the test whose setup happens to create
        # it: what it starts is not that test's.
        token = current_scope.set(fixture_scope.entry.scope.parent)
        try:
            runner = yield
        finally:
            current_scope.reset(token)
    else:
        runner = yield
    # pytest-asyncio's loop comes as a fixture holding an asyncio.Runner. Track its loop so
    # fixture tasks carry the test's scope, and look at them before the runner closes it
    # (its finalizer is registered already, so this one runs first).
    if isinstance(runner, asyncio.Runner) and fixture_scope is not None:
        track(runner.get_loop())
        if fixturedef.scope == "function":
            fixturedef.addfinalizer(
                functools.partial(_check_fixture_tasks, request.node, fixture_scope, runner)
            )
    return runner


def _check_fixture_tasks(
    item: pytest.Item, fixture_scope: _FixtureScope, runner: asyncio.Runner
) -> None:
    entry, options = fixture_scope.entry, fixture_scope.options
    entry.loop = runner.get_loop()
    if entry.loop.is_closed():  # the test closed it; pytest-asyncio only warns about that
        return
    rules = tuple(options.get("ignore", ()))

    async def wait() -> tuple[list[Leak], float]:
        entry.owner = asyncio.current_task()  # the waiting task is not one of the leaks
        found = await entry.wait_async(rules, options["timeout"], tasks=True, threads=False)
        # A fixture's job stuck in the default executor would hang the runner's close; the
        # thread itself is reported at the end of teardown.
        _detach_stuck_executor(entry.scan(rules, tasks=False, threads=True))
        return found

    found, waited = runner.run(wait())
    if found:
        fixture_scope.fail(item, found, waited)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        fixture_scope = item.config.stash.get(_FIXTURE_SCOPE, None)
        if fixture_scope is not None:
            del item.config.stash[_FIXTURE_SCOPE]
            _check_fixture_threads(item, fixture_scope)


def _check_fixture_threads(item: pytest.Item, fixture_scope: _FixtureScope) -> None:
    entry, options = fixture_scope.entry, fixture_scope.options
    current_scope.reset(entry.token)
    try:
        rules = tuple(options.get("ignore", ()))
        found, waited = entry.wait(rules, options["timeout"], tasks=False, threads=True)
        if found:
            fixture_scope.fail(item, found, waited)
    finally:
        entry.scope.close()


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
