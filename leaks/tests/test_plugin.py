"""The pytest plugin, run through pytester in this process: when a test is judged, what its
report says, and the options."""

from __future__ import annotations

from collections.abc import Callable

import pytest

# The `run` and `run_releasing` fixtures of conftest.py.
Run = Callable[..., pytest.RunResult]


LEAKY_AND_CLEAN = """
import asyncio

async def hang(event):
    await event.wait()

async def test_leaky():
    asyncio.create_task(hang(asyncio.Event()), name="forgotten")

async def test_clean():
    await asyncio.create_task(asyncio.sleep(0))

def test_sync_clean():
    pass
"""


def test_a_leak_fails_the_teardown_with_the_report(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(LEAKY_AND_CLEAN)
    result = run("--leaks", "-o", "leaks_timeout=0.2")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaky*",
            "*task forgotten [[]asyncio.Event.wait, 0.2s, proven[]]:*",
            "*in hang*",
            "*created by test_leaky at *",
            "*leaked by *test_leaky, judged after its teardown:",
            "*started by the test body: task forgotten",
            "*tidegate leaks*",
            "*test_leaky leaked: task forgotten [[]asyncio.Event.wait[]]*",
        ]
    )
    # The detector's own frames are hidden from the traceback.
    assert "pytest_runtest_teardown" not in result.stdout.str()
    assert "_report(check)" not in result.stdout.str()


def test_leaks_are_not_checked_unless_asked(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(LEAKY_AND_CLEAN)
    run().assert_outcomes(passed=3)


def test_ini_option_marker_and_opt_out(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makeini("[pytest]\nleaks = true\nleaks_timeout = 0.2\n")
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def hang(event):
            await event.wait()

        @pytest.mark.no_leak_check
        async def test_opted_out():
            asyncio.create_task(hang(asyncio.Event()))

        @pytest.mark.leaks(timeout=0.05)
        async def test_marked():
            asyncio.create_task(hang(asyncio.Event()), name="marked-leak")
        """
    )
    result = run()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*marked-leak [[]asyncio.Event.wait, *s, proven[]]*"])
    result.stdout.fnmatch_lines(["*test_marked leaked: task marked-leak*"])


def test_marker_alone_enables_the_check(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def hang(event):
            await event.wait()

        @pytest.mark.leaks(timeout=0.05)
        async def test_marked():
            asyncio.create_task(hang(asyncio.Event()))
        """
    )
    run().assert_outcomes(passed=1, errors=1)


CLEANED_BY_TEARDOWN = """
import asyncio, threading, pytest
import leak_release

async def hang(event):
    await event.wait()

class Server:
    # Like aiohttp's test server: a handler task per connection, made while the body runs,
    # closed by the fixture at teardown.
    def __init__(self):
        self.handlers = set()

    def connection_made(self):
        self.handlers.add(asyncio.create_task(hang(asyncio.Event()), name="keep-alive"))

    async def close(self):
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

@pytest.fixture
async def server():
    server = Server()
    yield server
    await server.close()

@pytest.fixture
def worker():
    stop = threading.Event()
    threads = []
    def start():
        threads.append(threading.Thread(target=stop.wait, name="pinger"))
        threads[-1].start()
    yield start
    stop.set()
    for thread in threads:
        thread.join()

async def test_body_connects(server):
    server.connection_made()

def test_body_starts_what_the_fixture_stops(worker):
    worker()

@pytest.fixture
async def server_cancelling_late():
    server = Server()
    yield server
    for task in server.handlers:
        task.cancel()  # not awaited: the check gives the loop time to finish them

async def test_body_connects_and_cancel_is_not_awaited(server_cancelling_late):
    server_cancelling_late.connection_made()
"""


def test_what_fixtures_clean_up_at_teardown_is_not_a_leak(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makepyfile(CLEANED_BY_TEARDOWN)
    result = run_releasing()
    result.assert_outcomes(passed=3)
    assert "tidegate leaks" not in result.stdout.str()


FIXTURES = """
import asyncio, threading, pytest
import leak_release

async def hang(event):
    await event.wait()

@pytest.fixture
async def leaky_server():
    asyncio.create_task(hang(asyncio.Event()), name="fixture-task")
    yield

@pytest.fixture
async def owned_server():
    task = asyncio.create_task(hang(asyncio.Event()), name="owned-task")
    yield
    task.cancel()  # not awaited: the check gives it the loop to finish

@pytest.fixture
async def leaky_job():
    asyncio.get_running_loop().run_in_executor(None, leak_release.event.wait)
    yield

@pytest.fixture
def leaky_thread():
    threading.Thread(target=leak_release.event.wait, name="fixture-thread").start()
    yield
    # forgot leak_release.event.set()

async def test_uses_leaky_fixture(leaky_server):
    pass

async def test_uses_owned_fixture(owned_server):
    pass

def test_uses_leaky_thread(leaky_thread):
    pass

async def test_uses_leaky_job(leaky_job):
    pass

async def test_body_and_fixture(leaky_server):
    asyncio.create_task(hang(asyncio.Event()), name="body-task")
"""


def test_fixture_leaks_are_judged_before_the_loop_cancels_them(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makepyfile(FIXTURES)
    # A hang in the loop's close would end in pytest-timeout's error instead.
    result = run_releasing("-o", "timeout=5")
    assert "Timeout" not in result.stdout.str()
    # Each body passes; four teardowns fail with the report, and the stuck executor job does
    # not hang the loop's close.
    result.assert_outcomes(passed=5, errors=4)
    result.stdout.fnmatch_lines_random(
        [
            "*ERROR at teardown of test_uses_leaky_fixture*",
            "*task fixture-task [[]asyncio.Event.wait, *[]]:*",
            "*created by leaky_server at *",
            "*started by a fixture: task fixture-task",
            "*ERROR at teardown of test_uses_leaky_thread*",
            "*thread fixture-thread [[]threading.Event.wait, *[]]*",
            "*test_uses_leaky_thread leaked: thread fixture-thread*",
            "*ERROR at teardown of test_uses_leaky_job*",
            "*thread asyncio_* [[]threading.Event.wait, *[]]*",
            "*ERROR at teardown of test_body_and_fixture*",
            "*started by the test body: task body-task",
        ]
    )
    assert "owned-task" not in result.stdout.str()


WIDER_FIXTURES = """
import threading, pytest
import leak_release

@pytest.fixture(scope="session")
def session_server():
    thread = threading.Thread(target=leak_release.event.wait, name="session-server")
    thread.start()
    yield
    leak_release.event.set()
    thread.join()

def test_first(session_server):
    pass

def test_second(session_server):
    pass
"""


def test_what_wider_fixtures_start_is_not_the_tests(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makepyfile(WIDER_FIXTURES)
    result = run_releasing()
    # The session fixture's thread outlives each test by design.
    result.assert_outcomes(passed=2)
    assert "tidegate leaks" not in result.stdout.str()


FAILING_BODY = """
import asyncio

async def hang(event):
    await event.wait()

async def test_fails_and_leaks():
    asyncio.create_task(hang(asyncio.Event()), name="left-by-a-failing-body")
    await asyncio.sleep(0)
    assert False, "the body's own failure"
"""


def test_a_failing_body_shows_its_failure_and_its_leak(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(FAILING_BODY)
    result = run("--leaks", "-o", "leaks_timeout=0.2")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the body's own failure",
            "*tidegate.leaks: 1 task(s)/thread(s) started here were still running when this "
            "error ended the scope (not waited for):",
            "*task left-by-a-failing-body [[]asyncio.Event.wait, *[]]:",
        ]
    )
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_fails_and_leaks*"])


def test_leaked_executor_thread_is_reported_and_does_not_hang(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    # The inner test blocks a default-executor thread on an event only this outer test can
    # set; without the plugin detaching it, the inner runner's close
    # (shutdown_default_executor) would wait for it forever.
    pytester.makepyfile(
        """
        import asyncio
        import leak_release

        async def test_stuck_job():
            asyncio.get_running_loop().run_in_executor(None, leak_release.event.wait)
        """
    )
    result = run_releasing("-p", "timeout", "--timeout=30")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*thread asyncio_* [[]threading.Event.wait*", "*created by test_stuck_job at*"]
    )


def test_session_end_lists_threads_no_test_caught(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makepyfile(
        """
        import threading, pytest
        import leak_release

        @pytest.mark.no_leak_check
        def test_starts_a_thread():
            threading.Thread(target=leak_release.event.wait, name="outlives-session").start()
        """
    )
    result = run_releasing()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*still running at the end of the session (1)*", "*thread outlives-session*"]
    )


def test_warn_action_reports_without_failing(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(LEAKY_AND_CLEAN)
    # A warning like any other: this suite's `filterwarnings = error` would make it an error,
    # as it would for any user's suite that sets it; `default::` keeps it a warning.
    result = run(
        *("--leaks", "-o", "leaks_timeout=0.1", "-o", "leaks_action=warn"),
        *("-W", "default::tidegate.leaks.LeakWarning"),
    )
    result.assert_outcomes(passed=3, warnings=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*LeakWarning: found 1 leaked task(s)*", "*test_leaky leaked: task forgotten*"]
    )


def test_bad_action_or_rule_is_a_usage_error(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(LEAKY_AND_CLEAN)
    result = run("--leaks", "-o", "leaks_action=shout")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*leaks_action must be fail or warn, not 'shout'*"])
    pytester.makeini("[pytest]\nleaks_ignore =\n    top:Event.wait\n    bottom:x\n")
    result = run("--leaks")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad leak ignore rule 'bottom:x': expected one of top:...*"])


IGNORED = """
import asyncio, threading
import leak_release

async def hang(event):
    await event.wait()

async def test_named_task():
    asyncio.create_task(hang(asyncio.Event()), name="heartbeat-7")

def test_thread_in_a_known_function():
    threading.Thread(target=leak_release.event.wait, name="poller").start()

async def test_task_ignored_by_conftest_hook():
    asyncio.create_task(hang(asyncio.Event()), name="from-the-hook")

async def test_not_ignored():
    asyncio.create_task(hang(asyncio.Event()), name="still-reported")
"""


def test_project_wide_ignores_from_the_ini_and_a_conftest_hook(
    pytester: pytest.Pytester, run_releasing: Run
) -> None:
    pytester.makeini(
        "[pytest]\nleaks_ignore =\n    name:^heartbeat-\\d+$\n    top:threading.Event.wait\n"
    )
    pytester.makeconftest(
        """
        from tidegate import leaks

        def pytest_leaks_ignore(item):
            if item.name == "test_task_ignored_by_conftest_hook":
                return [leaks.ignore_name("from-the-hook")]
            return None
        """
    )
    pytester.makepyfile(IGNORED)
    result = run_releasing()
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*test_not_ignored leaked: task still-reported*"])
    for name in ("heartbeat-7", "poller", "from-the-hook"):
        assert name not in result.stdout.str()


def test_session_summary_survives_xdist(pytester: pytest.Pytester, run: Run) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(LEAKY_AND_CLEAN)
    result = run("--leaks", "-o", "leaks_timeout=0.1", "-n", "2")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*tidegate leaks*", "*test_leaky leaked: task forgotten [[]asyncio.Event.wait[]]*"]
    )


BLOCKING = """
import asyncio, time, pytest

def slow_io():
    time.sleep(0.3)  # the bug under test: blocking I/O in a coroutine

async def test_blocks():
    slow_io()

async def test_awaits():
    await asyncio.sleep(0.3)

@pytest.mark.leaks_blocking(None)
async def test_blocks_but_opted_out():
    slow_io()

@pytest.mark.leaks_blocking(1.0)
async def test_blocks_under_its_own_threshold():
    slow_io()

def test_sync_tests_have_no_loop_to_block():
    slow_io()
"""


def test_blocking_the_loop_fails_the_test_with_the_blocking_stack(
    pytester: pytest.Pytester, run: Run
) -> None:
    # Timeline: 0.3 s blocks against a 0.1 s threshold; the monitor looks every 20 ms.
    pytester.makepyfile(BLOCKING)
    result = run("--leaks-blocking=0.1")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*LoopBlockedError: the event loop was blocked 1 time(s) for longer than 0.1s:",
            "*blocked for 0.[2-9]*s at *test_blocking_the_loop_fails_the_test*.py:4 in slow_io:",
            "*.py:7 in test_blocks",
            "*.py:4 in slow_io",
            "*FAILED *test_blocks*",
        ]
    )
    # The stack starts where the loop called the test; the detector's frames are left out.
    assert "pytest_plugin.py" not in result.stdout.str()
    assert "base_events.py" not in result.stdout.str().split("LoopBlockedError: ")[1]


def test_the_blocking_marker_alone_enables_the_check(pytester: pytest.Pytester, run: Run) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.leaks_blocking(0.1)
        async def test_marked():
            time.sleep(0.3)
        """
    )
    run().assert_outcomes(failed=1)


SESSION_LOOP = """
import asyncio, pytest, pytest_asyncio

async def hang(event):
    await event.wait()

@pytest_asyncio.fixture(loop_scope="session")
async def leaky_on_the_session_loop():
    asyncio.create_task(hang(asyncio.Event()), name="session-loop-leak")
    yield

@pytest.mark.asyncio(loop_scope="session")
async def test_uses_it(leaky_on_the_session_loop):
    pass

@pytest.mark.asyncio(loop_scope="session")
async def test_clean_on_the_same_loop():
    pass
"""


def test_a_function_fixture_on_a_session_loop_is_checked(
    pytester: pytest.Pytester, run: Run
) -> None:
    pytester.makepyfile(SESSION_LOOP)
    result = run("--leaks", "-o", "leaks_timeout=0.1")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*created by leaky_on_the_session_loop*", "*test_uses_it leaked: task session-loop-leak*"]
    )
