"""pytest plugin: with ``--leaks`` (or ini ``leaks = true``) each test is checked for the
tasks and threads it leaves running.

One check per test, judged once the test's own teardown is over: what the body and the
function-scoped fixtures started gets ``leaks_timeout`` seconds to end after those fixtures
and the test's ``tearDown``/``asyncTearDown`` have run, and whatever is still running then
fails the test's teardown with the report, which says whether the body or a fixture started
each one. Module- and session-scoped fixtures outlive the test: what they start is not its.

Tasks are judged on their own loop just before it closes (an async runner closing its loop
would cancel leftovers silently): when the runner that owns it (pytest-asyncio's, anyio's,
``IsolatedAsyncioTestCase``'s, ``asyncio.Runner``) closes it, when a loop fixture (aiohttp's
``loop``) is torn down, or, for a loop that outlives the test, at the end of its teardown.
Threads are judged at the end of teardown.

The body itself is only marked, never awaited into: the check changes nothing the code under
test sees, and under trio (pytest-trio, anyio's trio backend) only threads are checked.
A body that fails reports what it left running as a note on its failure; the verdict still
comes after teardown.

Options: ``leaks_timeout``, ``leaks_ignore`` (rules, one a line: ``top:NAME``, ``any:NAME``,
``created_by:NAME``, ``name:REGEX``), ``leaks_action = fail|warn``, and the
``pytest_leaks_ignore(item)`` hook for rules a conftest.py computes. Markers:
``@pytest.mark.leaks(timeout=..., ignore=[...])`` checks a test (with its own options) even
when the check is off; ``@pytest.mark.no_leak_check`` opts a test out.

``--leaks-blocking=SECONDS`` (ini ``leaks_blocking``, marker ``leaks_blocking(SECONDS)``)
fails an async test whose code blocked its event loop longer than that, with the blocking
stack, using the loop watchdog the gateway runs.

Under pytest-xdist the workers' findings travel to the controller with the test reports, so
the session summary lists them as in a single process. The check itself, and the runner
hooks that find a test's loops, are in ``_test_check``.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import functools
import inspect
import threading
import unittest
import warnings
from collections.abc import Callable, Generator, Iterable
from contextvars import Context, Token
from typing import Any

import pytest

from ._detector import LeakWarning, find, note_still_running
from ._filters import Ignore, parse_ignore
from ._report import format_leak
from ._test_check import RUNNER_TASKS, Options, TestCheck, original_get_loop, pop, push
from ._tracking import Scope, current_scope
from ._watchdog import LoopBlock, LoopBlockedError, Watchdog

# Per session: the summary lines (node id, text), and what was still running at its end.
_SUMMARY = pytest.StashKey[list[tuple[str, str]]]()
_SESSION_THREADS = pytest.StashKey[set[threading.Thread]]()
_LEFTOVERS = pytest.StashKey[list[str]]()
# Per test: its check, and its line in the summary.
_CHECK = pytest.StashKey["TestCheck"]()
_SUMMARY_LINE = pytest.StashKey[str]()
# On the config: the test whose fixtures are being set up and torn down.
_SETTING_UP = pytest.StashKey["TestCheck"]()
# The report property that carries a test's summary line (through xdist too).
_PROPERTY = "tidegate_leaks"


class LeakHooks:
    """Hooks the plugin adds; implement them in a conftest.py."""

    @pytest.hookspec
    def pytest_leaks_ignore(self, item: pytest.Item) -> Iterable[Ignore] | None:
        """Ignore rules for ``item``'s check, added to the ini's and the marker's (each
        conftest.py implementing it contributes, for the tests below it)."""
        return None


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(LeakHooks)


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
        "leaks_timeout",
        "seconds a test's tasks and threads get to finish after its teardown",
        default="1.0",
    )
    parser.addini(
        "leaks_ignore",
        "leak ignore rules, one a line: top:NAME, any:NAME, created_by:NAME, name:REGEX",
        type="linelist",
        default=[],
    )
    parser.addini(
        "leaks_action", "what a leak does to its test: fail (default) or warn", default="fail"
    )
    group.addoption(
        "--leaks-blocking",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fail async tests whose code blocks the event loop for longer than SECONDS",
    )
    parser.addini(
        "leaks_blocking",
        "fail async tests whose code blocks the event loop longer than this (seconds)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaks(timeout=1.0, ignore=()): check this test for leaked tasks and threads"
    )
    config.addinivalue_line("markers", "no_leak_check: do not check this test for leaks")
    config.addinivalue_line(
        "markers",
        "leaks_blocking(seconds): fail this async test if its code blocks the event loop for "
        "longer than seconds (None: do not check it)",
    )
    global _config
    _config = config
    config.stash[_SUMMARY] = []
    config.stash[_SESSION_THREADS] = set(threading.enumerate())
    if _action(config) not in ("fail", "warn"):
        raise pytest.UsageError(f"leaks_action must be fail or warn, not {_action(config)!r}")
    try:
        _ini_rules(config)
    except ValueError as error:
        raise pytest.UsageError(f"leaks_ignore: {error}") from None


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("leaks") or config.getini("leaks"))


def _action(config: pytest.Config) -> str:
    return str(config.getini("leaks_action")).strip().lower()


def _ini_rules(config: pytest.Config) -> list[Ignore]:
    return [parse_ignore(line) for line in config.getini("leaks_ignore") if line.strip()]


def _options(item: pytest.Item) -> Options | None:
    if item.get_closest_marker("no_leak_check") is not None:
        return None
    marker = item.get_closest_marker("leaks")
    if marker is None and not _enabled(item.config):
        return None
    timeout = float(item.config.getini("leaks_timeout"))
    rules = _ini_rules(item.config)
    for extra in item.ihook.pytest_leaks_ignore(item=item):
        rules.extend(extra or ())
    if marker is not None:
        timeout = float(marker.kwargs.get("timeout", timeout))
        rules.extend(marker.kwargs.get("ignore", ()))
    return Options(timeout, (*RUNNER_TASKS, *rules), _action(item.config))


# --- hooks -----------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    options = _options(item)
    if options is not None:
        check = TestCheck(item.nodeid, options)
        item.stash[_CHECK] = check
        item.config.stash[_SETTING_UP] = check
        push(check)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    # The test being set up: a wider fixture's request names no test.
    check = request.config.stash.get(_SETTING_UP, None)
    if check is not None and fixturedef.scope != "function":
        # A module- or session-wide fixture outlives the test whose setup happens to create
        # it: what it starts is not that test's.
        token = current_scope.set(check.entry.scope.parent)
        try:
            value = yield
        finally:
            current_scope.reset(token)
        return value
    value = yield
    if check is not None:
        if isinstance(value, asyncio.Runner):  # pytest-asyncio's loop fixture
            check.add_loop(value.get_loop())
        elif isinstance(value, asyncio.AbstractEventLoop):  # aiohttp's `loop`, and the like
            check.add_loop(value)
            # Its finalizer is registered already, so this one runs first: the tasks are
            # judged after every fixture that uses the loop is gone, before it closes.
            fixturedef.addfinalizer(functools.partial(check.before_close, value))
    return value


def _mark_body(
    func: Callable[..., Any],
    check: TestCheck | None,
    blocking: float | None,
    blocked: list[LoopBlockedError],
) -> Callable[..., Any]:
    """``func`` running in the body's scope. For the leak check nothing is awaited: under trio
    as under asyncio the body runs exactly as it would without it. The blocking check watches
    the body's loop (asyncio only), waits for one tick of its watchdog at the end, and puts
    what it found in ``blocked`` (or in a note on the body's own failure)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            loop = asyncio.events._get_running_loop()  # None under trio
            if check is not None and loop is not None:
                check.add_loop(loop)
            watchdog = None if blocking is None or loop is None else _watch(blocking)
            token = None if check is None else current_scope.set(check.body)
            failure: Exception | None = None
            try:
                return await func(*args, **kwargs)
            except Exception as error:
                failure = error
                if check is not None:
                    note_still_running(error, check.body_scan())
                raise
            finally:
                if token is not None:
                    current_scope.reset(token)
                if watchdog is not None and blocking is not None:
                    blocks = await _unwatch(watchdog)
                    if blocks and failure is not None:
                        failure.add_note(str(LoopBlockedError(blocks, blocking)))
                    elif blocks:
                        blocked.append(LoopBlockedError(blocks, blocking))

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        token = None if check is None else current_scope.set(check.body)
        try:
            return func(*args, **kwargs)
        except Exception as error:
            if check is not None:
                note_still_running(error, check.body_scan())
            raise
        finally:
            if token is not None:
                current_scope.reset(token)

    return run


def _watch(threshold: float) -> Watchdog:
    """A watchdog on the running loop, outside every scope: its ticker task and monitor
    thread are the check's, not the test's."""
    token = current_scope.set(None)
    try:
        watchdog = Watchdog(
            # No log: the test's failure says it all.
            threshold=threshold,
            interval=max(0.005, min(0.05, threshold / 2)),
            logger=None,
        )
        watchdog.start()
    finally:
        current_scope.reset(token)
    return watchdog


async def _unwatch(watchdog: Watchdog) -> list[LoopBlock]:
    try:
        await watchdog.wait_tick()  # a block caught in the act is recorded by then
    finally:
        await watchdog.close()
    return watchdog.worst_blocks()


def _blocking_threshold(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("leaks_blocking")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("seconds")
        return None if value is None else float(value)
    option = item.config.getoption("leaks_blocking") or item.config.getini("leaks_blocking")
    return float(option) if option else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    __tracebackhide__ = True
    check = item.stash.get(_CHECK, None)
    testcase = getattr(item, "_testcase", None)
    if check is not None and isinstance(testcase, unittest.TestCase):
        return (yield from _call_unittest(testcase, check))
    blocking = _blocking_threshold(item)
    if (check is None and blocking is None) or not isinstance(item, pytest.Function):
        return (yield)
    # Hypothesis keeps the real test body one level down.
    hypothesis = getattr(item.obj, "hypothesis", None)
    holder, attr = (hypothesis, "inner_test") if hypothesis is not None else (item, "obj")
    original = getattr(holder, attr)
    blocked: list[LoopBlockedError] = []
    setattr(holder, attr, _mark_body(original, check, blocking, blocked))
    try:
        result = yield
    finally:
        setattr(holder, attr, original)
    if blocked:
        # Raised here rather than in the body, whose traceback would run through asyncio's
        # frames: the report is the blocking stack itself.
        raise blocked[0]
    return result


def _call_unittest(testcase: unittest.TestCase, check: TestCheck) -> Generator[None, None, None]:
    """A unittest case runs setUp, the test and tearDown inside the call: all of it is the
    body. IsolatedAsyncioTestCase runs its coroutines in a context of its own, copied when
    the case was made: the body's scope is set there too, and the loop of its runner is the
    test's loop."""
    token = current_scope.set(check.body)
    context: Context | None = getattr(testcase, "_asyncioTestContext", None)
    inner: Token[Scope | None] | None = None
    if isinstance(context, Context):
        inner = context.run(current_scope.set, check.body)
    setup_runner = getattr(testcase, "_setupAsyncioRunner", None)
    if setup_runner is not None:

        def setup_and_track() -> None:
            setup_runner()
            runner = getattr(testcase, "_asyncioRunner", None)
            if isinstance(runner, asyncio.Runner):
                check.add_loop(original_get_loop(runner))

        testcase._setupAsyncioRunner = setup_and_track  # type: ignore[attr-defined]
    try:
        return (yield)
    finally:
        if setup_runner is not None:
            del testcase._setupAsyncioRunner  # type: ignore[attr-defined]
        if inner is not None and isinstance(context, Context):
            context.run(current_scope.reset, inner)
        current_scope.reset(token)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    __tracebackhide__ = True
    try:
        return (yield)
    finally:
        check = item.stash.get(_CHECK, None)
        if check is not None:
            del item.stash[_CHECK]
            if _SETTING_UP in item.config.stash:
                del item.config.stash[_SETTING_UP]
            try:
                found, summary = check.finish()
            finally:
                pop(check)
            if found:
                item.stash[_SUMMARY_LINE] = summary or ""
                _report(check)


def _report(check: TestCheck) -> None:
    __tracebackhide__ = True
    error = check.error()
    if check.options.action == "warn":
        warnings.warn(LeakWarning(str(error)), stacklevel=2)
        return
    raise error


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "teardown" and _SUMMARY_LINE in item.stash:
        report.user_properties.append((_PROPERTY, item.stash[_SUMMARY_LINE]))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs in the controller for xdist workers' reports too.
    for name, value in report.user_properties:
        if name == _PROPERTY:
            _summary_of(report).append((report.nodeid, str(value)))


# The session's config, for the hooks whose arguments do not include it.
_config: pytest.Config | None = None


def _summary_of(report: pytest.TestReport) -> list[tuple[str, str]]:
    assert _config is not None
    return _config.stash[_SUMMARY]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Like goleak's VerifyTestMain: a thread started during the session and
    # still running at its end is a leak even if no single test caught it.
    config = session.config
    if not _enabled(config):
        return
    before = config.stash.get(_SESSION_THREADS, set())
    found = [
        format_leak(leak)
        for leak in find(tasks=False, ignore=_ini_rules(config))
        if leak.target() not in before
    ]
    if hasattr(config, "workerinput"):  # an xdist worker: the controller sums up
        config.workeroutput[_PROPERTY] = found  # type: ignore[attr-defined]
        return
    config.stash.setdefault(_LEFTOVERS, []).extend(found)
    leftovers = config.stash[_LEFTOVERS]
    if leftovers and session.exitstatus == 0 and _action(config) == "fail":
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: a worker is done; keep what it found still running at its end."""
    output = getattr(node, "workeroutput", None) or {}
    if _config is not None and output.get(_PROPERTY):
        _config.stash.setdefault(_LEFTOVERS, []).extend(output[_PROPERTY])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    by_test = config.stash.get(_SUMMARY, [])
    leftovers = config.stash.get(_LEFTOVERS, [])
    if not by_test and not leftovers:
        return
    terminalreporter.section("tidegate leaks")
    for nodeid, names in by_test:
        terminalreporter.write_line(f"{nodeid} leaked: {names}")
    if leftovers:
        terminalreporter.write_line(f"still running at the end of the session ({len(leftovers)}):")
        for text in leftovers:
            terminalreporter.write_line(text)
